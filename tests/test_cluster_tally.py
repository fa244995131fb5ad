"""Per-cluster counts, most voted member and last activity (migration 0015) equal a fresh aggregation."""

from __future__ import annotations

import asyncio
import random
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from forum.grouping.reports import refresh_growth
from tests.conftest import Api, run_sql

# What GET /api/clusters counted before the tally existed: unique voters over each cluster's live,
# non-rejected members, an employee when any of their votes there was cast as one.
FROM_SCRATCH = """
WITH members AS (
    SELECT m.cluster_id, p.id AS post_id, p.kind, p.created_at, p.updated_at, p.vote_total FROM cluster_membership m
    JOIN post p ON p.id = m.post_id WHERE m.state <> 'rejected' AND p.deleted_at IS NULL
), voters AS (
    SELECT mem.cluster_id, v.user_id, max(v.voter_kind) AS kind, min(v.created_at) AS first_vote
    FROM members mem JOIN vote v ON v.post_id = mem.post_id GROUP BY mem.cluster_id, v.user_id
)
SELECT c.id::text,
       (SELECT count(*) FROM voters WHERE cluster_id = c.id),
       (SELECT count(*) FROM voters WHERE cluster_id = c.id AND kind = 'internal'),
       (SELECT count(*) FROM members WHERE cluster_id = c.id),
       (SELECT count(*) FROM members WHERE cluster_id = c.id AND kind = 'idea'),
       (SELECT min(created_at) FROM members WHERE cluster_id = c.id),
       (SELECT max(updated_at) FROM members WHERE cluster_id = c.id),
       (SELECT (array_agg(post_id::text ORDER BY vote_total DESC, created_at, post_id))[1] FROM members
        WHERE cluster_id = c.id),
       (SELECT array_agg(user_id::text || '@' || first_vote::text ORDER BY user_id) FROM voters WHERE cluster_id = c.id)
FROM cluster c ORDER BY 1
"""
MAINTAINED = """
SELECT c.id::text, coalesce(t.voters, 0), coalesce(t.internal_voters, 0), coalesce(t.member_count, 0),
       coalesce(t.idea_count, 0), t.first_posted_at, t.last_activity_at, t.top_post_id::text,
       (SELECT array_agg(user_id::text || '@' || first_vote::text ORDER BY user_id) FROM cluster_voter
        WHERE cluster_id = c.id)
FROM cluster c LEFT JOIN cluster_tally t ON t.cluster_id = c.id ORDER BY 1
"""

# Growth per cluster and UTC day (migration 0017): counted members by their post's creation day, voters by
# the day of their first counted vote there; the maintained table may keep rows that fell to zero.
DAYS_FROM_SCRATCH = """
WITH members AS (
    SELECT m.cluster_id, p.created_at FROM cluster_membership m JOIN post p ON p.id = m.post_id
    WHERE m.state <> 'rejected' AND p.deleted_at IS NULL AND p.hidden_at IS NULL
), voters AS (
    SELECT m.cluster_id, v.user_id, min(v.created_at) AS first_vote FROM cluster_membership m
    JOIN post p ON p.id = m.post_id JOIN vote v ON v.post_id = m.post_id
    WHERE m.state <> 'rejected' AND p.deleted_at IS NULL AND p.hidden_at IS NULL GROUP BY m.cluster_id, v.user_id
)
SELECT cluster_id::text, day, sum(posts)::int, sum(voters)::int FROM (
    SELECT cluster_id, (created_at AT TIME ZONE 'UTC')::date AS day, 1 AS posts, 0 AS voters FROM members
    UNION ALL SELECT cluster_id, (first_vote AT TIME ZONE 'UTC')::date, 0, 1 FROM voters
) AS e GROUP BY 1, 2 ORDER BY 1, 2
"""
DAYS_MAINTAINED = """
SELECT cluster_id::text, day, posts, voters FROM cluster_day WHERE posts <> 0 OR voters <> 0 ORDER BY 1, 2
"""

# Growth stored on the tally row (migration 0018): its sums are its cluster_day rows' from growth_since on,
# growth_first_day is at most the first day with a count among them, and a row whose window is today's
# (growth_since <= S <= growth_first_day) holds what a fresh count of the last 30 days gives.
GROWTH_INVARIANT = """
SELECT t.cluster_id::text, t.growth_posts, t.growth_voters, s.posts, s.voters,
       coalesce(t.growth_first_day, 'infinity') <= coalesce(s.first_day, 'infinity')
FROM cluster_tally t CROSS JOIN LATERAL (
    SELECT coalesce(sum(posts), 0)::int AS posts, coalesce(sum(voters), 0)::int AS voters,
           min(day) FILTER (WHERE posts <> 0 OR voters <> 0) AS first_day
    FROM cluster_day d WHERE d.cluster_id = t.cluster_id AND d.day >= t.growth_since
) AS s ORDER BY 1
"""
SINCE = "(now() AT TIME ZONE 'UTC')::date - 30"
GROWTH_FRESH_STORED = f"""
SELECT cluster_id::text, growth_posts, growth_voters FROM cluster_tally
WHERE growth_since <= {SINCE} AND coalesce(growth_first_day, 'infinity') >= {SINCE} ORDER BY 1
"""
GROWTH_FROM_SCRATCH = f"""
WITH days(cluster_id, day, posts, voters) AS ({DAYS_FROM_SCRATCH.replace("ORDER BY 1, 2", "")})
SELECT t.cluster_id::text, coalesce(sum(d.posts), 0)::int, coalesce(sum(d.voters), 0)::int
FROM cluster_tally t LEFT JOIN days d ON d.cluster_id = t.cluster_id::text AND d.day >= {SINCE}
GROUP BY t.cluster_id ORDER BY 1
"""
# Counted members per cluster and channel (migration 0019): the triage list's channel filter.
CHANNELS_FROM_SCRATCH = """
SELECT m.cluster_id::text, p.channel, count(*)::int FROM cluster_membership m JOIN post p ON p.id = m.post_id
WHERE m.state <> 'rejected' AND p.deleted_at IS NULL AND p.hidden_at IS NULL GROUP BY 1, 2 ORDER BY 1, 2
"""
CHANNELS_MAINTAINED = "SELECT cluster_id::text, channel, members FROM cluster_channel WHERE members <> 0 ORDER BY 1, 2"
STALE = f"SELECT count(*) FROM cluster_tally WHERE growth_first_day < {SINCE} OR growth_since > {SINCE}"
# Time passing, as far as the tables can tell: every stored time and day moves back (no trigger runs).
SHIFTS = (
    "UPDATE post SET created_at = created_at - :days * interval '1 day'",
    "UPDATE vote SET created_at = created_at - :days * interval '1 day'",
    "UPDATE cluster_voter SET first_vote = first_vote - :days * interval '1 day'",
    "UPDATE cluster_membership SET post_created_at = post_created_at - :days * interval '1 day'",
    "UPDATE cluster_tally SET first_posted_at = first_posted_at - :days * interval '1 day',"
    " growth_since = growth_since - CAST(:days AS int), growth_first_day = growth_first_day - CAST(:days AS int)",
    "CREATE TEMP TABLE moved ON COMMIT DROP AS SELECT * FROM cluster_day",
    "DELETE FROM cluster_day",
    "INSERT INTO cluster_day SELECT cluster_id, day - CAST(:days AS int), posts, voters FROM moved",
)


def _days_pass(database_url: str, days: int) -> None:
    async def run() -> None:
        engine = create_async_engine(database_url, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("SET LOCAL session_replication_role = replica"))
                for statement in SHIFTS:
                    await conn.execute(text(statement), {"days": days})
        finally:
            await engine.dispose()

    asyncio.run(run())


def _refresh_growth(database_url: str) -> int:
    async def run() -> int:
        engine = create_async_engine(database_url, poolclass=NullPool)
        try:
            return await refresh_growth(async_sessionmaker(engine, expire_on_commit=False))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _check_growth(api: Api, database_url: str, headers: dict, step: str) -> None:
    """The stored growth keeps its invariant; the list answers a fresh count's growth, in a fresh count's
    growth order (growth, then voters, then id), whether or not the rows are stale."""
    for row in run_sql(database_url, GROWTH_INVARIANT):
        assert row[1:3] == row[3:5] and row[5], (step, row)
    fresh = {r[0]: (r[1], r[2]) for r in run_sql(database_url, GROWTH_FROM_SCRATCH)}
    for r in run_sql(database_url, GROWTH_FRESH_STORED):
        assert (r[1], r[2]) == fresh[r[0]], (step, r)
    voters = dict(run_sql(database_url, "SELECT cluster_id::text, voters FROM cluster_tally WHERE member_count > 0"))
    expected = sorted(voters, key=lambda c: (-sum(fresh[c]), -voters[c], c))
    for sort in ("growth", "voters", "new"):
        listed: list[dict] = []
        for offset in range(0, len(expected) + 1, 2):  # pages of 2: the growth sort's merge at every offset
            r = api.client.get(f"/api/clusters?sort={sort}&limit=2&offset={offset}", headers=headers)
            assert r.status_code == 200, r.text
            listed += r.json()["items"]
        assert {c["id"]: (c["growth_30d"]["new_posts"], c["growth_30d"]["new_voters"]) for c in listed} == {
            c: fresh[c] for c in expected
        }, (step, sort)
        if sort == "growth":
            assert [c["id"] for c in listed] == expected, step


def _clusters(database_url: str, posts: list[dict], groups: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(groups)]
    for cluster_id in ids:
        run_sql(
            database_url, "INSERT INTO cluster (id, created_at, updated_at) VALUES (:id, now(), now())", id=cluster_id
        )
    for i, post in enumerate(posts):
        run_sql(
            database_url,
            "INSERT INTO cluster_membership (post_id, cluster_id, similarity, state) VALUES (:p, :c, 0.9, 'suggested')",
            p=post["id"],
            c=ids[i % groups],
        )
    return ids


def test_maintained_counts_match_a_fresh_count_after_random_changes(api: Api, database_url: str) -> None:
    rng = random.Random(14)
    product = api.make_user("internal", "product")
    voters = [api.make_user("internal") for _ in range(3)] + [api.register() for _ in range(5)] + [product]
    author = api.register()
    posts = [api.post(author, title=f"Idea number {i}", kind="critique" if i % 3 == 0 else "idea") for i in range(9)]
    for i, post in enumerate(posts):  # as if captured from other channels (a post's channel never changes)
        channel = ("web", "support", "web", "sales")[i % 4]
        run_sql(database_url, "UPDATE post SET channel = :c WHERE id = :p", c=channel, p=post["id"])
    clusters = _clusters(database_url, posts, 3)
    h = product.headers

    def check(step: str) -> None:
        assert run_sql(database_url, MAINTAINED) == run_sql(database_url, FROM_SCRATCH), step
        assert run_sql(database_url, CHANNELS_MAINTAINED) == run_sql(database_url, CHANNELS_FROM_SCRATCH), step
        assert run_sql(database_url, DAYS_MAINTAINED) == run_sql(database_url, DAYS_FROM_SCRATCH), step
        for row in run_sql(database_url, GROWTH_INVARIANT):
            assert row[1:3] == row[3:5] and row[5], (step, row)

    check("after grouping")
    actions = (
        ["vote"] * 6 + ["unvote"] * 3 + ["merge", "unmerge", "move", "split", "reject", "delete", "restore", "edit"]
    )
    merged: list[str] = []

    def mix(steps: int, label: str) -> None:
        for step in range(steps):
            action = rng.choice(actions)
            post = rng.choice(posts)
            if action in ("vote", "unvote"):
                voter = rng.choice(voters)
                call = api.client.put if action == "vote" else api.client.delete
                r = call(f"/api/posts/{post['id']}/vote", headers=voter.headers)
                assert r.status_code in (200, 404, 409), r.text  # deleted; merged or closed
            elif action == "merge":
                target = rng.choice(posts)
                r = api.client.post(f"/api/posts/{post['id']}/merge", json={"into": target["id"]}, headers=h)
                if r.status_code == 200:
                    merged.append(post["id"])
            elif action == "unmerge" and merged:
                source = merged.pop(rng.randrange(len(merged)))
                assert api.client.post(f"/api/posts/{source}/unmerge", headers=h).status_code in (200, 404)
            elif action == "move":
                r = api.client.post(
                    f"/api/posts/{post['id']}/cluster", json={"cluster_id": rng.choice(clusters)}, headers=h
                )
                assert r.status_code in (200, 404, 409), r.text
            elif action == "split":
                cluster = api.client.get(f"/api/clusters/{rng.choice(clusters)}", headers=h)
                if cluster.status_code == 200 and len(cluster.json()["members"]) > 1:
                    members = [m["post_id"] for m in cluster.json()["members"]]
                    r = api.client.post(
                        f"/api/clusters/{cluster.json()['summary']['id']}/split",
                        json={"post_ids": rng.sample(members, 1)},
                        headers=h,
                    )
                    assert r.status_code in (200, 201), r.text
                    clusters.append(r.json()["cluster_id"])
            elif action == "reject":
                row = run_sql(
                    database_url,
                    "SELECT cluster_id::text FROM cluster_membership WHERE post_id = :p AND state <> 'rejected'",
                    p=post["id"],
                )
                if row:
                    api.client.post(f"/api/clusters/{row[0][0]}/members/{post['id']}/reject", headers=h)
            elif action == "delete":
                run_sql(database_url, "UPDATE post SET deleted_at = now() WHERE id = :p", p=post["id"])
            elif action == "restore":
                run_sql(database_url, "UPDATE post SET deleted_at = NULL WHERE id = :p", p=post["id"])
            elif action == "edit":
                r = api.client.patch(f"/api/posts/{post['id']}", json={"tags": ["edited"]}, headers=h)
                assert r.status_code in (200, 404), r.text
            check(f"{label} {step}: {action}")

    mix(120, "step")
    assert run_sql(database_url, "SELECT count(*) FROM cluster_voter")[0][0] > 0, "the mix left votes to count"

    # Growth's recent posts come from the memberships' copy of created_at (migration 0016): it follows a
    # post whose created_at moves (an import that backdates it), and the list counts what a fresh count does.
    backdated = next(p["id"] for p in posts if run_sql(database_url, "SELECT 1 FROM post WHERE id = :p", p=p["id"]))
    run_sql(database_url, "UPDATE post SET created_at = created_at - interval '40 days' WHERE id = :p", p=backdated)
    copies = (
        "SELECT count(*) FROM cluster_membership m JOIN post p ON p.id = m.post_id"
        " WHERE m.post_created_at IS DISTINCT FROM p.created_at"
    )
    assert run_sql(database_url, copies) == [(0,)]
    recent = dict(
        run_sql(
            database_url,
            "SELECT m.cluster_id::text, count(*) FROM cluster_membership m JOIN post p ON p.id = m.post_id"
            " WHERE m.state <> 'rejected' AND p.deleted_at IS NULL AND p.hidden_at IS NULL"
            " AND p.created_at >= now() - interval '30 days' GROUP BY 1",
        )
    )
    listed = api.client.get("/api/clusters?sort=growth&limit=100", headers=h).json()["items"]
    assert listed and {c["id"]: c["growth_30d"]["new_posts"] for c in listed} == {
        c["id"]: recent.get(c["id"], 0) for c in listed
    }
    assert any(c["growth_30d"]["new_posts"] for c in listed)

    # Days pass (migration 0018): the window moves past some of what the tally rows counted. Between a day
    # change and the worker's refresh the list recounts the stale rows; the refresh makes every row exact.
    mix(40, "day 0, step")
    _days_pass(database_url, 15)
    _check_growth(api, database_url, h, "15 days later")
    mix(40, "day 15, step")
    _days_pass(database_url, 16)  # the first 160 steps' posts and first votes are now 31 days old
    assert run_sql(database_url, STALE)[0][0] > 0, "the day change left stale rows to recount"
    _check_growth(api, database_url, h, "31 days later, stale rows")
    assert _refresh_growth(database_url) > 0
    assert run_sql(database_url, STALE) == [(0,)]
    _check_growth(api, database_url, h, "31 days later, refreshed")
    mix(30, "day 31, step")
    _check_growth(api, database_url, h, "31 days later, after more changes")

    run_sql(database_url, "DELETE FROM post WHERE id = :p", p=posts[0]["id"])  # a hard delete cascades
    check("after a hard delete")

    # The channel filter lists the clusters with a counted member from one of the channels, in the sort's
    # order, paged.
    scratch = run_sql(database_url, CHANNELS_FROM_SCRATCH)
    for asked in (["web"], ["support"], ["sales", "support"], ["social"]):
        every = api.client.get("/api/clusters?sort=voters&limit=100", headers=h).json()["items"]
        with_channel = {c for c, channel, _ in scratch if channel in asked}
        expected = [c["id"] for c in every if c["id"] in with_channel]
        query = "".join(f"&channel={c}" for c in asked)
        listed = []
        for offset in range(0, len(expected) + 1, 2):
            page = api.client.get(f"/api/clusters?sort=voters&limit=2&offset={offset}{query}", headers=h).json()
            assert page["total"] == len(expected), asked
            listed += [c["id"] for c in page["items"]]
        assert listed == expected, asked


def test_triage_list_reads_the_tally(api: Api, database_url: str) -> None:
    product = api.make_user("internal", "product")
    employee, customer = api.make_user("internal"), api.register()
    author = api.register()
    a, b, c = (api.post(author, title=t) for t in ("Dark mode please", "A dark theme", "Export to PDF"))
    big, small = _clusters(database_url, [a, c, b], 2)  # a and b in one cluster, c alone
    for voter in (employee, customer):
        for post in (a, b):
            assert api.client.put(f"/api/posts/{post['id']}/vote", headers=voter.headers).status_code == 200
    assert api.client.put(f"/api/posts/{c['id']}/vote", headers=customer.headers).status_code == 200

    for sort in ("voters", "members", "growth", "new"):
        page = api.client.get(f"/api/clusters?sort={sort}", headers=product.headers).json()
        by_id = {s["id"]: s for s in page["items"]}
        assert page["total"] == 2
        assert by_id[big]["unique_voters"] == {"total": 2, "internal": 1, "external": 1}, sort
        assert by_id[big]["member_count"] == 2 and by_id[big]["growth_30d"] == {"new_posts": 2, "new_voters": 2}
        assert by_id[small]["unique_voters"] == {"total": 1, "internal": 0, "external": 1}
    assert [s["id"] for s in api.client.get("/api/clusters?sort=voters", headers=product.headers).json()["items"]] == [
        big,
        small,
    ]
    assert api.client.get("/api/clusters?min_members=2", headers=product.headers).json()["total"] == 1
    detail = api.client.get(f"/api/clusters/{big}", headers=product.headers).json()
    assert detail["summary"]["unique_voters"]["total"] == 2

    assert api.client.delete(f"/api/posts/{a['id']}/vote", headers=employee.headers).status_code == 200
    summary = api.client.get(f"/api/clusters/{big}", headers=product.headers).json()["summary"]
    assert summary["unique_voters"] == {"total": 2, "internal": 1, "external": 1}, "still voted on b"
    assert api.client.delete(f"/api/posts/{b['id']}/vote", headers=employee.headers).status_code == 200
    summary = api.client.get(f"/api/clusters/{big}", headers=product.headers).json()["summary"]
    assert summary["unique_voters"] == {"total": 1, "internal": 0, "external": 1}


def test_votes_racing_membership_moves_neither_deadlock_nor_drift(api: Api, database_url: str) -> None:
    """Votes in a cluster while its members move both ways (migration 0018 takes the tally row before the
    voter and day rows on both paths, 0019 two clusters' tally rows in id order): every transaction
    commits, and the tally, days and stored growth stay exact."""
    voters = [api.register() for _ in range(6)]
    author = api.register()
    posts = [api.post(author, title=f"Racing idea {i}") for i in range(6)]
    clusters = _clusters(database_url, posts, 2)
    user_ids = [v.id for v in voters]

    async def run() -> None:
        engine = create_async_engine(database_url, pool_size=8)
        rng = random.Random(7)

        async def voter(user_id: str) -> None:
            for _ in range(25):
                post_id = rng.choice(posts)["id"]
                async with engine.begin() as conn:  # votes are written under their post's row lock (PostService)
                    await conn.execute(text("SELECT 1 FROM post WHERE id = :p FOR NO KEY UPDATE"), {"p": post_id})
                    deleted = await conn.execute(
                        text("DELETE FROM vote WHERE post_id = :p AND user_id = :u"), {"p": post_id, "u": user_id}
                    )
                    if not deleted.rowcount:
                        await conn.execute(
                            text("INSERT INTO vote (post_id, user_id, voter_kind) VALUES (:p, :u, 'external')"),
                            {"p": post_id, "u": user_id},
                        )

        async def mover() -> None:
            for _ in range(25):
                async with engine.begin() as conn:
                    await conn.execute(
                        text("UPDATE cluster_membership SET cluster_id = :c WHERE post_id = :p"),
                        {"c": rng.choice(clusters), "p": rng.choice(posts)["id"]},
                    )

        try:
            # Two movers: moves in opposite directions at once take the two tally rows in one order (0019).
            await asyncio.gather(*(voter(u) for u in user_ids), mover(), mover())
        finally:
            await engine.dispose()

    asyncio.run(run())
    assert run_sql(database_url, "SELECT count(*) FROM vote")[0][0] > 0
    assert run_sql(database_url, MAINTAINED) == run_sql(database_url, FROM_SCRATCH)
    assert run_sql(database_url, DAYS_MAINTAINED) == run_sql(database_url, DAYS_FROM_SCRATCH)
    for row in run_sql(database_url, GROWTH_INVARIANT):
        assert row[1:3] == row[3:5] and row[5], row

"""Concurrent requests keep counters and the ledger exact.

The Litestar TestClient serves requests from several threads at once (one event loop, one connection
pool), so a ThreadPoolExecutor of 16 workers gives real interleavings in PostgreSQL.

- Many people vote and unvote the same posts at once: the counters on each post (total, internal,
  external) and the per-day buckets equal a recount of the vote rows, and every person's final state is
  the one their last request asked for.
- Votes racing a merge: every voter of the duplicate ends up counted once on the target.
- Two merges of the same post into two targets: exactly one wins; opposite merges never deadlock.
- Merges racing ships (the concurrent ship-only case is in test_credits.py): one ship event, credits
  once, and a post has an active ship event exactly when it is ``shipped``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.conftest import Actor, Api, run_sql

WORKERS = 16


def _all_at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls on WORKERS threads; the first WORKERS start together. Results in call order."""
    arrived = threading.Semaphore(0)
    go = threading.Event()

    def run(call: Callable[[], Any]) -> Any:
        arrived.release()
        go.wait()
        return call()

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = [pool.submit(run, call) for call in calls]
        for _ in range(min(len(calls), WORKERS)):
            assert arrived.acquire(timeout=10)
        go.set()
        return [future.result() for future in futures]


def _register_many(api: Api, n: int, kind: str = "external") -> list[Actor]:
    """Accounts made in parallel (password hashing dominates the time)."""
    if kind == "external":
        return _all_at_once([lambda i=i: api.register(f"person{i}") for i in range(n)])
    return _all_at_once([lambda i=i: api.make_user(kind, "member", name=f"{kind}{i}") for i in range(n)])


def _counter_mismatches(database_url: str) -> list[Any]:
    """Posts whose counters or per-day buckets differ from a recount of their vote rows."""
    return run_sql(
        database_url,
        """
        WITH recount AS (
            SELECT p.id,
                   count(v.user_id) AS total,
                   count(v.user_id) FILTER (WHERE v.voter_kind = 'internal') AS internal,
                   count(v.user_id) FILTER (WHERE v.voter_kind = 'external') AS external
            FROM post p LEFT JOIN vote v ON v.post_id = p.id
            GROUP BY p.id
        ),
        days AS (
            SELECT coalesce(d.post_id, v.post_id) AS id, coalesce(d.day, v.day) AS day,
                   coalesce(d.votes, 0) AS bucket, coalesce(v.votes, 0) AS rows
            FROM post_vote_day d
            FULL JOIN (
                SELECT post_id, (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS votes
                FROM vote GROUP BY 1, 2
            ) v ON v.post_id = d.post_id AND v.day = d.day
        )
        SELECT p.id, p.title, p.vote_total, r.total, p.vote_internal, r.internal, p.vote_external, r.external,
               (SELECT json_agg(json_build_object('day', day, 'bucket', bucket, 'rows', rows))
                FROM days WHERE days.id = p.id AND bucket <> rows) AS bad_days
        FROM post p JOIN recount r ON r.id = p.id
        WHERE p.vote_total <> r.total OR p.vote_internal <> r.internal OR p.vote_external <> r.external
           OR EXISTS (SELECT 1 FROM days WHERE days.id = p.id AND bucket <> rows)
        """,
    )


def _ship_mismatches(database_url: str) -> list[Any]:
    """Posts with an active ship event but not shipped (or shipped without one), or whose live credits
    do not net to exactly one shipping."""
    return run_sql(
        database_url,
        """
        SELECT p.id, p.title, p.status,
               (SELECT count(*) FROM ship_event s WHERE s.post_id = p.id AND s.revoked_at IS NULL) AS active,
               (SELECT json_agg(json_build_object('user', c.user_id, 'reason', c.reason, 'net', c.net))
                FROM (SELECT user_id, reason, sum(points) AS net FROM credit_entry
                      WHERE post_id = p.id GROUP BY 1, 2) c) AS credits
        FROM post p
        WHERE (p.status = 'shipped')
              <> EXISTS (SELECT 1 FROM ship_event s WHERE s.post_id = p.id AND s.revoked_at IS NULL)
           OR (SELECT count(*) FROM ship_event s WHERE s.post_id = p.id AND s.revoked_at IS NULL) > 1
           OR EXISTS (SELECT 1 FROM credit_entry c WHERE c.post_id = p.id
                      AND NOT EXISTS (SELECT 1 FROM ship_event s WHERE s.id = c.ship_event_id AND s.revoked_at IS NULL)
                      GROUP BY c.ship_event_id HAVING sum(c.points) <> 0)
        """,
    )


def _credits(database_url: str, post_id: str) -> list[tuple[str, str, int]]:
    """Net live credits of a post: (user, reason, points), sorted."""
    rows = run_sql(
        database_url,
        "SELECT user_id::text, reason, sum(points)::int FROM credit_entry WHERE post_id = :p "
        "GROUP BY 1, 2 HAVING sum(points) <> 0 ORDER BY 1, 2",
        p=post_id,
    )
    return sorted(tuple(r) for r in rows)


# Votes ---------------------------------------------------------------------------------------------


def test_concurrent_votes_and_unvotes_keep_exact_counts(api: Api, database_url: str) -> None:
    author = api.register("author")
    people = _register_many(api, 14) + _register_many(api, 6, "internal")
    posts = [api.post(author, title=title)["id"] for title in ("Dark mode", "Offline maps", "Family accounts")]
    rng = random.Random(20240601)

    # Phase 1: every (person, post) is one sequence of requests, sequences run interleaved. The last
    # request of each sequence decides whether that person ends with a vote on that post.
    sequences = []
    for person in people:
        for post_id in posts:
            ops = [rng.choice(["PUT", "DELETE"]) for _ in range(rng.randint(2, 5))]
            sequences.append((person, post_id, ops))
    rng.shuffle(sequences)

    def play(person: Actor, post_id: str, ops: list[str]) -> list[tuple[str, int, bool]]:
        out = []
        for op in ops:
            r = api.client.request(op, f"/api/posts/{post_id}/vote", headers=person.headers)
            out.append((op, r.status_code, r.json().get("has_voted") if r.status_code == 200 else None))
        return out

    results = _all_at_once([lambda s=s: play(*s) for s in sequences])
    for (_, _, ops), answers in zip(sequences, results, strict=True):
        assert [a[1] for a in answers] == [200] * len(ops), answers
        assert [a[2] for a in answers] == [op == "PUT" for op in ops], "each answer tells that person's own state"

    expected = {post_id: {"total": 0, "internal": 0, "external": 0} for post_id in posts}
    for person, post_id, ops in sequences:
        if ops[-1] == "PUT":
            expected[post_id]["total"] += 1
            expected[post_id][person.kind] += 1
    for post_id in posts:
        assert api.client.get(f"/api/posts/{post_id}").json()["votes"] == expected[post_id]
    assert not _counter_mismatches(database_url)

    # Phase 2: each person fires a burst of contradictory requests on the same post at once. Nobody can
    # say who wins, but the counters must still equal the rows and each person must see their row.
    burst = [(person, posts[0], op) for person in people for op in ("PUT", "DELETE", "PUT", "DELETE", "PUT")]
    rng.shuffle(burst)
    statuses = _all_at_once(
        [
            lambda p=p, post_id=post_id, op=op: (
                api.client.request(op, f"/api/posts/{post_id}/vote", headers=p.headers).status_code
            )
            for p, post_id, op in burst
        ]
    )
    assert set(statuses) == {200}, sorted(set(statuses))
    assert not _counter_mismatches(database_url)
    voters = {row[0] for row in run_sql(database_url, "SELECT user_id::text FROM vote WHERE post_id = :p", p=posts[0])}
    for person in people:
        assert api.client.get(f"/api/posts/{posts[0]}", headers=person.headers).json()["has_voted"] == (
            person.id in voters
        )
    assert api.client.get(f"/api/posts/{posts[0]}").json()["votes"]["total"] == len(voters)


def test_votes_racing_a_merge_are_all_counted_on_the_target(api: Api, database_url: str) -> None:
    """While the product team merges a duplicate, people vote on it (staggered over the few milliseconds
    the merge takes). Each vote either lands before the merge (and is carried over to the target) or is
    refused with 409 (vote on the target): no vote may land on the duplicate after its merge, where it
    counts nowhere that matters."""
    product = api.make_user("internal", "product")
    author = api.register("author")
    people = _register_many(api, WORKERS - 1)
    lost: list[str] = []
    for round_ in range(6):
        source = api.post(author, title=f"Export to PDF, take {round_}")["id"]
        target = api.post(author, title=f"PDF export, take {round_}")["id"]

        def merge(source: str = source, target: str = target) -> int:
            r = api.client.post(f"/api/posts/{source}/merge", json={"into": target}, headers=product.headers)
            return r.status_code

        def vote(person: Actor, delay: float, source: str = source) -> int:
            time.sleep(delay)
            return api.client.put(f"/api/posts/{source}/vote", headers=person.headers).status_code

        statuses = _all_at_once([merge] + [lambda p=p, i=i: vote(p, i * 0.002) for i, p in enumerate(people)])
        assert statuses[0] == 200, "the merge succeeded"
        assert set(statuses[1:]) <= {200, 409}, sorted(set(statuses))
        voters = {
            post: {r[0] for r in run_sql(database_url, "SELECT user_id::text FROM vote WHERE post_id = :p", p=post)}
            for post in (source, target)
        }
        lost += [f"round {round_}: {voter} voted on the merged post only" for voter in voters[source] - voters[target]]
        assert statuses[1:].count(200) == len(voters[source]), "every accepted vote is a vote row on the duplicate"
    assert not _counter_mismatches(database_url)
    assert not lost, f"{len(lost)} vote(s) accepted on a duplicate after its merge, not counted on the target:\n" + (
        "\n".join(lost[:10])
    )


# Merges --------------------------------------------------------------------------------------------


def test_concurrent_merges_of_one_post_into_two_targets_one_wins(api: Api, database_url: str) -> None:
    product = api.make_user("internal", "product")
    admin = api.make_user("internal", "admin")
    author = api.register("author")
    voters = _register_many(api, 5)
    for round_ in range(4):
        source = api.post(author, title=f"Duplicate {round_}")["id"]
        targets = [api.post(author, title=f"Target {round_}{t}")["id"] for t in "ab"]
        for voter in voters:
            assert api.client.put(f"/api/posts/{source}/vote", headers=voter.headers).status_code == 200
        calls = [
            lambda source=source, target=target, actor=actor: api.client.post(
                f"/api/posts/{source}/merge", json={"into": target}, headers=actor.headers
            )
            for target in targets
            for actor in (product, admin)
        ]
        answers = _all_at_once(calls)
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [200, 409, 409, 409], [r.text for r in answers]
        winner = next(r.json()["target"]["id"] for r in answers if r.status_code == 200)
        loser = next(t for t in targets if t != winner)
        assert api.client.get(f"/api/posts/{source}").json()["merged_into"] == winner
        assert api.client.get(f"/api/posts/{winner}").json()["votes"]["total"] == len(voters)
        assert api.client.get(f"/api/posts/{loser}").json()["votes"]["total"] == 0
        history = api.client.get(f"/api/posts/{source}/history").json()["items"]
        assert [h["to_status"] for h in history] == ["open", "duplicate"], "one merge recorded"
        rows = run_sql(database_url, "SELECT count(*) FROM post_merge WHERE source_id = :s", s=source)
        assert rows[0][0] == 1
    assert not _counter_mismatches(database_url)


def test_opposite_merges_at_once_one_wins_without_deadlock(api: Api, database_url: str) -> None:
    product = api.make_user("internal", "product")
    author, voter = api.register("author"), api.register("voter")
    for round_ in range(4):
        a = api.post(author, title=f"Left {round_}")["id"]
        b = api.post(author, title=f"Right {round_}")["id"]
        api.client.put(f"/api/posts/{a}/vote", headers=voter.headers)
        answers = _all_at_once(
            [
                lambda s=s, t=t: api.client.post(f"/api/posts/{s}/merge", json={"into": t}, headers=product.headers)
                for s, t in ((a, b), (b, a), (a, b), (b, a))
            ]
        )
        assert sorted(r.status_code for r in answers) == [200, 409, 409, 409], [r.text for r in answers]
        merged = [p for p in (a, b) if api.client.get(f"/api/posts/{p}").json()["merged_into"]]
        assert len(merged) == 1, "exactly one of the two is the duplicate"
    assert not _counter_mismatches(database_url)


# Merges racing ships -------------------------------------------------------------------------------


def test_shipping_a_target_while_a_duplicate_is_merged_into_it(api: Api, database_url: str) -> None:
    """Ship T (four times at once) while S is merged into T: one ship event, credits once, and S's
    author is credited exactly when the merge came first."""
    product = api.make_user("internal", "product")
    admin = api.make_user("internal", "admin")
    pioneer, author, voter = api.register("pioneer"), api.register("author"), api.register("voter")
    outcomes = set()
    for round_ in range(4):
        source = api.post(pioneer, title=f"Offline mode {round_}")["id"]
        target = api.post(author, title=f"Work offline {round_}")["id"]
        assert api.client.put(f"/api/posts/{source}/vote", headers=voter.headers).status_code == 200
        ship = [
            lambda target=target, actor=actor: api.client.post(
                f"/api/posts/{target}/status", json={"status": "shipped"}, headers=actor.headers
            )
            for actor in (product, admin, product, admin)
        ]

        def merge(source: str = source, target: str = target) -> Any:
            return api.client.post(f"/api/posts/{source}/merge", json={"into": target}, headers=product.headers)

        answers = _all_at_once([*ship[:2], merge, *ship[2:]])
        merge_answer = answers.pop(2)
        assert merge_answer.status_code == 200, merge_answer.text
        assert sorted(r.status_code for r in answers) == [200, 409, 409, 409], [r.text for r in answers]
        credits = _credits(database_url, target)
        merged_first = (pioneer.id, "pioneer", 100) in credits
        if merged_first:  # S came first: its author is the pioneer, its voter carried over
            assert credits == sorted(
                [(pioneer.id, "pioneer", 100), (author.id, "author", 80), (voter.id, "early_voter", 20)]
            )
        else:  # shipped before the merge: only T's own contributors
            assert credits == [(author.id, "pioneer", 100)]
        outcomes.add(merged_first)
        events = run_sql(database_url, "SELECT count(*) FROM ship_event WHERE post_id = :p", p=target)
        assert events[0][0] == 1
    assert not _ship_mismatches(database_url), _ship_mismatches(database_url)
    assert not _counter_mismatches(database_url)


def test_merging_a_post_while_it_ships_never_leaves_a_duplicate_credited(api: Api, database_url: str) -> None:
    """Ship S while S is merged into T. Whichever comes first, a post ends with an active ship event
    (and live credits) exactly when its status is ``shipped``: a merged duplicate keeps no credits.

    Both orders are played out one after the other (they serialise on the post's row lock, so any
    concurrent run is one of them), then at once."""
    product = api.make_user("internal", "product")
    author, other = api.register("author"), api.register("other")

    def scenario(label: str, order: str) -> tuple[int, int]:
        source = api.post(author, title=f"Source {label}")["id"]
        target = api.post(other, title=f"Target {label}")["id"]

        def ship() -> Any:
            return api.client.post(f"/api/posts/{source}/status", json={"status": "shipped"}, headers=product.headers)

        def merge() -> Any:
            return api.client.post(f"/api/posts/{source}/merge", json={"into": target}, headers=product.headers)

        if order == "merge, then ship":
            answers = [merge(), ship()]
        elif order == "ship, then merge":
            answers = list(reversed([ship(), merge()]))
        else:
            answers = _all_at_once([merge, ship])
        merge_status, ship_status = (r.status_code for r in answers)
        assert merge_status in (200, 409) and ship_status in (200, 409), [r.text for r in answers]
        assert (merge_status, ship_status) != (409, 409), "one of them goes through"
        post = api.client.get(f"/api/posts/{source}").json()
        net = sum(points for _, _, points in _credits(database_url, source))
        assert (post["status"] == "shipped") == (net > 0), (
            f"{order}: merge {merge_status}, ship {ship_status}; the post is {post['status']!r} "
            f"(merged into {post['merged_into']}) and its credits net {net} points"
        )
        return merge_status, ship_status

    assert scenario("a", "merge, then ship") == (200, 409)
    scenario("b", "ship, then merge")
    for round_ in range(3):
        scenario(f"c{round_}", "at once")
    mismatches = _ship_mismatches(database_url)
    assert not mismatches, "posts whose ship events disagree with their status:\n" + "\n".join(map(str, mismatches))

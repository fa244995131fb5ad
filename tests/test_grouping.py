"""Duplicate grouping over HTTP: background embedding, similar posts, clusters and the team's decisions.

These tests use the deterministic hashing encoder (settings.embedding_model = "hashing"); the real model
is tested in test_embeddings.py and, end to end, in test_demo_grouping.py.
"""

from __future__ import annotations

import asyncio

from tests.conftest import Api, QueryCounter, run_sql


def _seed(api: Api, author, drain=None) -> dict[str, dict]:
    """Six posts; with ``drain``, each is embedded before the next arrives (grouping is online, in order)."""
    titles = {
        "dark": "Dark mode for the app",
        "dark2": "Please add a dark mode to the app",
        "night": "Night theme for the mobile app",
        "pdf": "Export invoices as PDF",
        "pay": "Pay with Apple Pay",
        "pay2": "Support Apple Pay and Google Pay payments",
    }
    posts = {}
    for key, title in titles.items():
        posts[key] = api.post(author, title=title)
        if drain is not None:
            drain()
    return posts


def test_posts_are_embedded_in_the_background_and_grouped(api: Api, drain, database_url: str) -> None:
    author = api.register()
    posts = _seed(api, author)
    assert all(api.client.get(f"/api/posts/{p['id']}").json()["cluster_id"] is None for p in posts.values()), (
        "accepting a post never waits for the model"
    )
    assert run_sql(database_url, "SELECT count(*) FROM pgqueuer WHERE status = 'queued'")[0][0] == 6
    assert drain()["embedded"] == 6
    cluster = {k: api.client.get(f"/api/posts/{p['id']}").json()["cluster_id"] for k, p in posts.items()}
    # Jobs ran concurrently, so arrival order is not guaranteed: only mutual nearest pairs are certain.
    assert cluster["dark"] == cluster["dark2"]
    assert cluster["pay"] == cluster["pay2"]
    assert len({cluster["dark"], cluster["pay"], cluster["pdf"]}) == 3
    listing = api.client.get("/api/posts?limit=100").json()["items"]
    assert {p["id"]: p["cluster_id"] for p in listing} == {posts[k]["id"]: cluster[k] for k in posts}

    # Jobs are idempotent: running again embeds nothing, and there is one vector per post.
    assert drain()["embedded"] == 0
    assert run_sql(database_url, "SELECT count(*), count(DISTINCT post_id) FROM post_embedding")[0] == (6, 6)


def test_editing_a_post_re_embeds_it_and_regroups_it(api: Api, drain, database_url: str) -> None:
    author = api.register()
    posts = _seed(api, author, drain)
    drain()
    before = run_sql(database_url, "SELECT content_hash FROM post_embedding WHERE post_id = :p", p=posts["pdf"]["id"])
    r = api.client.patch(
        f"/api/posts/{posts['pdf']['id']}", json={"title": "Support Google Pay payments"}, headers=author.headers
    )
    assert r.status_code == 200
    assert drain()["embedded"] == 1
    after = run_sql(database_url, "SELECT content_hash FROM post_embedding WHERE post_id = :p", p=posts["pdf"]["id"])
    assert before != after
    moved = api.client.get(f"/api/posts/{posts['pdf']['id']}").json()["cluster_id"]
    assert moved == api.client.get(f"/api/posts/{posts['pay']['id']}").json()["cluster_id"]


def test_a_post_accepted_while_no_worker_runs_is_embedded_when_one_starts(api: Api, drain, database_url) -> None:
    author = api.register()
    post = api.post(author, title="Offline maps for tunnels")
    run_sql(database_url, "DELETE FROM pgqueuer")  # as if the job had been lost
    assert drain()["embedded"] == 1, "the start-up sweep finds posts with no vector"
    assert api.client.get(f"/api/posts/{post['id']}").json()["cluster_id"] is not None


def test_similar_posts_as_you_type(api: Api, drain) -> None:
    author = api.register()
    employee = api.make_user("internal", "member")
    posts = _seed(api, author, drain)
    secret = api.post(employee, title="Dark mode for the internal admin app", visibility="internal")
    drain()
    r = api.client.post("/api/posts/similar", json={"title": "dark mode in the app please"})
    assert r.status_code == 200, r.text
    found = r.json()["items"]
    assert found[0]["post"]["id"] in {posts["dark"]["id"], posts["dark2"]["id"]}
    sims = [f["similarity"] for f in found]
    assert sims == sorted(sims, reverse=True) and all(0.3 <= s <= 1.0 for s in sims)
    ids = [f["post"]["id"] for f in found]
    assert secret["id"] not in ids, "internal posts never reach outsiders"
    assert posts["pdf"]["id"] not in ids, "unrelated posts stay out"
    inside = api.client.post("/api/posts/similar", json={"title": "dark mode admin app"}, headers=employee.headers)
    assert secret["id"] in [f["post"]["id"] for f in inside.json()["items"]]
    only_ideas = api.client.post("/api/posts/similar", json={"title": "dark mode", "kind": "critique"}).json()
    assert only_ideas["items"] == [] and only_ideas["total"] == 0
    one = api.client.post("/api/posts/similar", json={"title": "apple pay", "limit": 1}).json()["items"]
    assert len(one) == 1 and one[0]["post"]["id"] in {posts["pay"]["id"], posts["pay2"]["id"]}
    for bad in ({"title": ""}, {"title": "x", "limit": 21}, {"body": "no title"}, {"title": "a\u0000"}):
        assert api.client.post("/api/posts/similar", json=bad).status_code == 422, bad
    api.client.delete(f"/api/posts/{posts['dark']['id']}", headers=author.headers)
    after = api.client.post("/api/posts/similar", json={"title": "dark mode"}).json()["items"]
    after = [f["post"]["id"] for f in after]
    assert posts["dark"]["id"] not in after, "deleted posts are not suggested"


def test_as_you_type_reads_the_posts_in_the_search_statement(
    api: Api, drain, count_queries: QueryCounter, driver_statements: list[str]
) -> None:
    """Per route, one statement finds the nearest posts and reads their answers (author, vote, cluster):
    no second round trip for the posts' rows (issue 14: four typists at once). The search is prepared on
    asyncpg directly (as the vote path's statements), so both SQLAlchemy's statements and the driver's are counted."""
    author = api.register("Ada")
    posts = _seed(api, author, drain)
    voter = api.register()
    api.client.put(f"/api/posts/{posts['dark']['id']}/vote", headers=voter.headers)
    for headers in ({}, voter.headers):
        count_queries.statements.clear()
        driver_statements.clear()
        r = api.client.post("/api/posts/similar", json={"title": "dark mode in the app please"}, headers=headers)
        assert r.status_code == 200, r.text
        found = {f["post"]["id"]: f["post"] for f in r.json()["items"]}
        assert found[posts["dark"]["id"]]["has_voted"] is bool(headers)
        assert found[posts["dark"]["id"]]["author"]["display_name"] == "Ada"
        statements = count_queries.statements + driver_statements
        searches = [s for s in statements if "post_embedding" in s]
        post_reads = [s for s in statements if "FROM post" in s and "post_embedding" not in s]
        assert len(searches) == 1 and post_reads == [], statements
        assert not any("grouping_setting" in s for s in statements), "as-you-type reads no thresholds"


def test_as_you_type_sends_no_search_settings(api: Api, drain, count_queries: QueryCounter, monkeypatch) -> None:
    """Every pooled connection holds the HNSW settings a search of up to 10 posts wants (iterative scan,
    ``ef_search`` 40: forum.models.SEARCH_DEFAULTS), so as-you-type sends no ``set_config`` per request, and
    so no ``BEGIN``/``COMMIT`` either (issue 14: four typists), nor for reading a signed-in viewer (a light user
    on this read-only route); a larger limit still sets its own ``ef_search`` for its transaction, and every
    search runs with the settings it asks for."""
    import asyncpg

    in_effect: list[tuple[str, str]] = []
    sent: list[str] = []
    fetch, execute = asyncpg.Connection.fetch, asyncpg.Connection.execute

    async def observed_fetch(self, query, *args, **kwargs):
        if "post_embedding" in query:
            in_effect.append(
                (
                    await self.fetchval("SELECT current_setting('hnsw.iterative_scan')"),
                    await self.fetchval("SELECT current_setting('hnsw.ef_search')"),
                )
            )
        return await fetch(self, query, *args, **kwargs)

    async def observed_execute(self, query, *args, **kwargs):
        sent.append(query)
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "fetch", observed_fetch)
    monkeypatch.setattr(asyncpg.Connection, "execute", observed_execute)
    author = api.register("Ada")
    _seed(api, author, drain)
    cases = [(5, "40", {}), (5, "40", author.headers), (10, "40", author.headers), (20, "80", {})]
    for limit, ef_search, headers in cases:
        count_queries.statements.clear()
        in_effect.clear()
        sent.clear()
        r = api.client.post(
            "/api/posts/similar", json={"title": "dark mode in the app please", "limit": limit}, headers=headers
        )
        assert r.status_code == 200, r.text
        assert r.json()["items"]
        assert in_effect and set(in_effect) == {("relaxed_order", ef_search)}, in_effect
        settings = [s for s in count_queries.statements if "set_config" in s]
        if limit <= 10:
            assert settings == [], count_queries.statements
            assert not [q for q in sent if q.strip().upper() in ("BEGIN", "COMMIT")], sent
        else:
            assert len(settings) == 1, count_queries.statements


def test_clusters_ranked_by_unique_voters_split_internal_external(api: Api, drain) -> None:
    author = api.register()
    product = api.make_user("internal", "product")
    employee = api.make_user("internal", "member")
    customers = [api.register() for _ in range(3)]
    posts = _seed(api, author, drain)
    api.post(author, kind="critique", title="Apple Pay payments fail")  # joins the payments cluster
    drain()
    # One customer votes on both dark-mode posts: counted once for the cluster.
    for voter in (customers[0], employee):
        api.client.put(f"/api/posts/{posts['dark']['id']}/vote", headers=voter.headers)
    api.client.put(f"/api/posts/{posts['dark2']['id']}/vote", headers=customers[0].headers)
    api.client.put(f"/api/posts/{posts['pay']['id']}/vote", headers=customers[1].headers)

    assert api.client.get("/api/clusters").status_code == 401
    assert api.client.get("/api/clusters", headers=author.headers).status_code == 403
    page = api.client.get("/api/clusters?min_members=2", headers=product.headers).json()
    assert page["total"] == 2
    top, second = page["items"]
    assert top["member_count"] == 3 and top["unique_voters"] == {"total": 2, "internal": 1, "external": 1}
    assert top["idea_count"] == 3 and top["critique_count"] == 0
    assert top["growth_30d"] == {"new_posts": 3, "new_voters": 2}
    assert second["member_count"] == 3 and second["critique_count"] == 1
    assert second["unique_voters"]["total"] == 1
    assert api.client.get("/api/clusters", headers=product.headers).json()["total"] == 3, "singletons too"
    by_members = api.client.get("/api/clusters?sort=members&limit=1", headers=product.headers).json()
    assert by_members["items"][0]["member_count"] == 3 and by_members["total"] == 3

    detail = api.client.get(f"/api/clusters/{top['id']}", headers=product.headers).json()
    assert {m["post_id"] for m in detail["members"]} == {posts[k]["id"] for k in ("dark", "dark2", "night")}
    assert all(m["state"] == "suggested" and not m["manual"] for m in detail["members"])
    assert sorted(m["similarity"] for m in detail["members"])[-1] == 1.0, "one post started the cluster"
    assert all(0.5 <= m["similarity"] <= 1.0 for m in detail["members"])
    assert (
        api.client.get("/api/clusters/01a209e5-0000-7000-8000-000000000000", headers=product.headers).status_code == 404
    )


def test_manual_decisions_are_never_undone_by_automatic_grouping(api: Api, drain) -> None:
    author = api.register()
    product = api.make_user("internal", "product")
    posts = _seed(api, author, drain)
    drain()
    h = product.headers
    dark_cluster = api.client.get(f"/api/posts/{posts['dark']['id']}").json()["cluster_id"]
    pay_cluster = api.client.get(f"/api/posts/{posts['pay']['id']}").json()["cluster_id"]

    # Reject "night" from the dark-mode cluster: it stands alone and is never put back.
    r = api.client.post(f"/api/clusters/{dark_cluster}/members/{posts['night']['id']}/reject", headers=h)
    assert r.status_code == 200
    alone = r.json()["cluster_id"]
    assert alone != dark_cluster
    # Confirm "dark2"; move "pdf" into the payments cluster by hand.
    assert (
        api.client.post(f"/api/clusters/{dark_cluster}/members/{posts['dark2']['id']}/confirm", headers=h).status_code
        == 200
    )
    assert (
        api.client.post(
            f"/api/posts/{posts['pdf']['id']}/cluster", json={"cluster_id": pay_cluster}, headers=h
        ).status_code
        == 200
    )
    assert (
        api.client.post(
            f"/api/posts/{posts['pdf']['id']}/cluster", json={"cluster_id": pay_cluster}, headers=h
        ).status_code
        == 409
    )

    # Edits re-embed everything; automatic grouping must respect every decision above.
    for key in ("night", "dark2", "pdf"):
        api.client.patch(f"/api/posts/{posts[key]['id']}", json={"body": "edited"}, headers=author.headers)
    drain()
    cluster = {k: api.client.get(f"/api/posts/{p['id']}").json()["cluster_id"] for k, p in posts.items()}
    assert cluster["night"] != dark_cluster
    assert cluster["dark2"] == dark_cluster
    assert cluster["pdf"] == pay_cluster
    detail = api.client.get(f"/api/clusters/{dark_cluster}", headers=h).json()
    assert [m["post_id"] for m in detail["rejected"]] == [posts["night"]["id"]]
    confirmed = {m["post_id"]: (m["state"], m["manual"]) for m in detail["members"]}
    assert confirmed[posts["dark2"]["id"]] == ("confirmed", True)


def test_split_a_cluster(api: Api, drain) -> None:
    author = api.register()
    product = api.make_user("internal", "product")
    posts = _seed(api, author, drain)
    drain()
    dark_cluster = api.client.get(f"/api/posts/{posts['dark']['id']}").json()["cluster_id"]
    url = f"/api/clusters/{dark_cluster}/split"
    everyone = [posts[k]["id"] for k in ("dark", "dark2", "night")]
    assert api.client.post(url, json={"post_ids": everyone}, headers=product.headers).status_code == 422
    assert api.client.post(url, json={"post_ids": [posts["pdf"]["id"]]}, headers=product.headers).status_code == 422
    assert api.client.post(url, json={"post_ids": []}, headers=product.headers).status_code == 422
    assert api.client.post(url, json={"post_ids": [posts["night"]["id"]]}, headers=author.headers).status_code == 403
    r = api.client.post(url, json={"post_ids": [posts["night"]["id"]]}, headers=product.headers)
    assert r.status_code == 201, "a new cluster is created"
    new = r.json()["cluster_id"]
    assert r.headers["location"] == f"/api/clusters/{new}"
    assert api.client.get(f"/api/posts/{posts['night']['id']}").json()["cluster_id"] == new
    assert len(api.client.get(f"/api/clusters/{dark_cluster}", headers=product.headers).json()["members"]) == 2


def test_failed_jobs_are_held_listed_and_retried(api: Api, drain, database_url: str) -> None:
    from embeddings import HashingEncoder
    from forum.queue import failed_jobs, retry_failed

    class BrokenEncoder(HashingEncoder):
        def encode(self, texts):
            raise RuntimeError("model exploded")

    author = api.register()
    post = api.post(author, title="A post the model chokes on")
    drain(encoder=BrokenEncoder(), max_attempts=0)
    held = asyncio.run(failed_jobs(database_url))
    assert [job["payload"] for job in held] == [post["id"]]
    assert "model exploded" in str(held[0]["traceback"])
    assert asyncio.run(retry_failed(database_url)) == 1
    assert drain()["embedded"] == 1
    assert asyncio.run(failed_jobs(database_url)) == []
    assert api.client.get(f"/api/posts/{post['id']}").json()["cluster_id"] is not None


def test_average_link_keeps_chains_from_drifting(api: Api, drain, settings) -> None:
    """ "Night theme" is close to "Dark mode" (0.56) but far from "Please add a dark mode" (0.35): with the
    threshold at 0.5 it must not join their cluster, although its nearest neighbour alone would let it."""
    settings.duplicate_threshold = 0.5
    author = api.register()
    posts = _seed(api, author, drain)
    cluster = {k: api.client.get(f"/api/posts/{p['id']}").json()["cluster_id"] for k, p in posts.items()}
    assert cluster["dark"] == cluster["dark2"]
    assert cluster["night"] != cluster["dark"]
    settings.duplicate_threshold = 0.45
    api.client.patch(f"/api/posts/{posts['night']['id']}", json={"body": "a dark theme"}, headers=author.headers)
    drain()
    assert api.client.get(f"/api/posts/{posts['night']['id']}").json()["cluster_id"] == cluster["dark"]

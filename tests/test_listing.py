"""Listing: filters, sorts, full-text search, pagination, and a constant number of SQL queries."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tests.conftest import Api, QueryCounter, run_sql


def _titles(api: Api, query: str, headers: dict | None = None) -> list[str]:
    r = api.client.get(f"/api/posts?{query}", headers=headers or {})
    assert r.status_code == 200, r.text
    return [p["title"] for p in r.json()["items"]]


def test_filters(api: Api) -> None:
    alice, bob = api.register("alice"), api.register("bob")
    product = api.make_user("internal", "product")
    a = api.post(alice, title="Dark mode", tags=["app", "ui"])
    api.post(alice, kind="critique", title="Slow support", tags=["support"])
    c = api.post(bob, title="Family accounts", tags=["app"])
    api.client.post(f"/api/posts/{c['id']}/status", json={"status": "planned"}, headers=product.headers)
    api.client.post(f"/api/posts/{a['id']}/status", json={"status": "shipped"}, headers=product.headers)
    assert sorted(_titles(api, "kind=idea")) == ["Family accounts"], "a shipped post is off the board"
    assert sorted(_titles(api, "kind=idea&status=shipped&status=planned")) == ["Dark mode", "Family accounts"]
    assert _titles(api, "kind=critique") == ["Slow support"]
    assert _titles(api, "status=planned") == ["Family accounts"]
    assert sorted(_titles(api, "status=planned&status=shipped")) == ["Dark mode", "Family accounts"]
    assert sorted(_titles(api, "tag=app")) == ["Family accounts"]
    assert _titles(api, "tag=app&tag=UI&status=shipped") == ["Dark mode"]
    assert sorted(_titles(api, f"author={alice.id}")) == ["Slow support"]
    assert sorted(_titles(api, f"author={alice.id}&status=shipped&status=open")) == ["Dark mode", "Slow support"]
    assert _titles(api, f"author={bob.id}&kind=critique") == []
    for bad in ("kind=rant", "status=done", "author=nope", "sort=best", "limit=0", "limit=101", "offset=-1"):
        r = api.client.get(f"/api/posts?{bad}")
        assert r.status_code in (400, 422), bad
        assert r.headers["content-type"].startswith("application/problem+json")


def test_full_text_search_in_english_and_spanish(api: Api) -> None:
    user = api.register()
    api.post(user, title="Export invoices as PDF", body="Our accountants need monthly invoicing")
    api.post(user, title="Exportar facturas en PDF", body="Necesitamos las facturas del mes")
    api.post(user, title="Dark mode", body="Too bright at night")
    assert _titles(api, "q=invoice") == ["Export invoices as PDF"], "English stemming: invoice ~ invoices"
    assert _titles(api, "q=factura") == ["Exportar facturas en PDF"], "Spanish stemming"
    assert sorted(_titles(api, "q=pdf")) == ["Export invoices as PDF", "Exportar facturas en PDF"]
    assert _titles(api, "q=bright%20night") == ["Dark mode"], "body is searched"
    assert _titles(api, "q=%22dark%20mode%22%20-light") == ["Dark mode"], "phrases and exclusions"
    assert _titles(api, "q=nothing-matches-this") == []
    assert api.client.get("/api/posts?q=" + "x" * 201).status_code in (400, 422)
    assert api.client.get("/api/posts?q=%27%3B%20DROP%20TABLE%20post%3B--").status_code == 200


def test_the_board_lists_live_posts_and_a_status_filter_exactly_those(api: Api) -> None:
    product = api.make_user("internal", "product")
    author = api.register()
    h = product.headers
    posts = {status: api.post(author, title=f"Post {status}") for status in ("open", "under_review", "planned")}
    posts.update({s: api.post(author, title=f"Post {s}") for s in ("in_progress", "shipped", "declined")})
    for status, post in posts.items():
        if status != "open":
            api.client.post(f"/api/posts/{post['id']}/status", json={"status": status}, headers=h)
    duplicate = api.post(author, title="Post duplicate")
    api.client.post(f"/api/posts/{duplicate['id']}/merge", json={"into": posts["open"]["id"]}, headers=h)
    critique = api.post(author, kind="critique", title="Post addressed")
    api.client.post(f"/api/posts/{posts['planned']['id']}/critiques", json={"critique_id": critique["id"]}, headers=h)
    api.client.post(f"/api/posts/{posts['planned']['id']}/status", json={"status": "shipped"}, headers=h)

    live = ["Post in_progress", "Post open", "Post under_review"]
    for query in ("", "sort=new", "sort=top", "q=post", "q=post&sort=new"):
        page = api.client.get(f"/api/posts?{query}&limit=2").json()
        listed = sorted(_titles(api, f"{query}&limit=100"))
        assert listed == live and page["total"] == 3, (query, listed, page["total"])
    for status, titles in (
        ("duplicate", ["Post duplicate"]),
        ("shipped", ["Post planned", "Post shipped"]),
        ("declined", ["Post declined"]),
        ("addressed", ["Post addressed"]),
        ("open", ["Post open"]),
    ):
        for query in (f"status={status}", f"status={status}&q=post"):
            assert sorted(_titles(api, query)) == titles, query
            assert api.client.get(f"/api/posts?{query}").json()["total"] == len(titles)
    assert sorted(_titles(api, "status=duplicate&status=declined")) == ["Post declined", "Post duplicate"]


def test_search_matches_word_prefixes_any_case_in_bodies_and_ranks_by_words_matched(api: Api) -> None:
    user = api.register()
    api.post(user, title="Single sign-on authentication", body="Log in with the company account")
    api.post(user, title="Finer authorization for teams", body="Roles per project")
    api.post(user, title="Dark mode", body="The AUTH screen is too bright at night")
    api.post(user, title="Exportar facturas en PDF", body="Necesitamos la facturación del mes")
    api.post(user, title="Export invoices", body="As a spreadsheet, monthly")

    assert sorted(_titles(api, "q=auth")) == [
        "Dark mode",
        "Finer authorization for teams",
        "Single sign-on authentication",
    ], "a word prefix, in titles and bodies, whatever the case"
    assert _titles(api, "q=AUTHENTIC") == ["Single sign-on authentication"]
    assert _titles(api, "q=factur") == ["Exportar facturas en PDF"], "Spanish, by prefix"
    assert _titles(api, "q=factura") == ["Exportar facturas en PDF"], "Spanish, by stem"
    assert _titles(api, "q=invoicing") == ["Export invoices"], "English, by stem"
    # Not every word has to match: more matching words rank first.
    ranked = _titles(api, "q=export%20pdf%20monthly%20spreadsheet")
    assert ranked == ["Export invoices", "Exportar facturas en PDF"], ranked
    ranked = _titles(api, "q=dark%20bright%20authorization")
    assert ranked[0] == "Dark mode" and ranked[1:] == ["Finer authorization for teams"], ranked
    assert api.client.get("/api/posts?q=dark%20bright%20authorization").json()["total"] == 2
    assert _titles(api, "q=auth%20-bright&sort=new") == [
        "Finer authorization for teams",
        "Single sign-on authentication",
    ]
    assert _titles(api, "q=%22company%20account%22") == ["Single sign-on authentication"], "a quoted phrase"
    for nothing in ("%21%21%21", "-dark", "%22%22", "zzzz"):
        page = api.client.get(f"/api/posts?q={nothing}").json()
        assert (page["items"], page["total"]) == ([], 0), nothing


def test_sorts(api: Api, database_url: str) -> None:
    author = api.register()
    voters = [api.register() for _ in range(3)]
    old_popular = api.post(author, title="Old popular")
    recent = api.post(author, title="Recently liked")
    discussed = api.post(author, title="Much discussed")
    for voter in voters:
        api.client.put(f"/api/posts/{old_popular['id']}/vote", headers=voter.headers)
    for voter in voters[:2]:
        api.client.put(f"/api/posts/{recent['id']}/vote", headers=voter.headers)
    for i in range(3):
        api.client.post(f"/api/posts/{discussed['id']}/comments", json={"body": f"c{i}"}, headers=author.headers)
    # The old post's votes were cast a month ago: they count for top, not for trending.
    month_ago = datetime.now(UTC) - timedelta(days=30)
    run_sql(database_url, "UPDATE vote SET created_at = :t WHERE post_id = :p", t=month_ago, p=old_popular["id"])
    run_sql(
        database_url,
        "UPDATE post_vote_day SET day = :d WHERE post_id = :p",
        d=month_ago.date(),
        p=old_popular["id"],
    )

    assert _titles(api, "sort=top") == ["Old popular", "Recently liked", "Much discussed"]
    assert _titles(api, "sort=trending") == ["Recently liked", "Old popular", "Much discussed"]
    assert _titles(api, "sort=new") == ["Much discussed", "Recently liked", "Old popular"]
    assert _titles(api, "sort=discussed")[0] == "Much discussed"
    assert _titles(api, "") == _titles(api, "sort=trending"), "trending is the default"
    # Unvoting a month-old vote takes it off its own day, not today.
    api.client.delete(f"/api/posts/{old_popular['id']}/vote", headers=voters[0].headers)
    assert _titles(api, "sort=trending")[0] == "Recently liked"


def test_pagination_totals(api: Api) -> None:
    author = api.register()
    for i in range(7):
        api.post(author, title=f"Post number {i}")
    page = api.client.get("/api/posts?sort=new&limit=3&offset=3").json()
    assert page["total"] == 7 and page["limit"] == 3 and page["offset"] == 3
    assert [p["title"] for p in page["items"]] == ["Post number 3", "Post number 2", "Post number 1"]
    beyond = api.client.get("/api/posts?limit=3&offset=50").json()
    assert beyond["items"] == [] and beyond["total"] == 7
    seen = []
    for offset in range(0, 7, 2):
        seen += _titles(api, f"sort=top&limit=2&offset={offset}")
    assert sorted(seen) == sorted(f"Post number {i}" for i in range(7)), "stable order across pages"


def test_a_page_costs_a_constant_number_of_queries(
    api: Api, count_queries: QueryCounter, driver_statements: list[str]
) -> None:
    """A page without a text search is read by asyncpg directly (a statement compiled once per shape), so
    both SQLAlchemy's statements and the driver's are counted."""
    author = api.register()
    viewer = api.register()
    for i in range(30):
        post = api.post(author, title=f"Idea {i}", tags=["app"])
        if i % 2:
            api.client.put(f"/api/posts/{post['id']}/vote", headers=viewer.headers)
            api.client.post(f"/api/posts/{post['id']}/comments", json={"body": "+1"}, headers=viewer.headers)
    costs = {}
    seen: list[str] = []
    for limit in (1, 10, 25):  # pages with more after them (the whole list in one page is not counted)
        for sort in ("top", "new", "trending", "discussed"):
            count_queries.statements.clear()
            driver_statements.clear()
            r = api.client.get(f"/api/posts?limit={limit}&sort={sort}&tag=app", headers=viewer.headers)
            assert r.status_code == 200 and len(r.json()["items"]) == limit
            assert sum("FROM post" in s for s in driver_statements) == 1, driver_statements
            costs[(limit, sort)] = count_queries.count + len(driver_statements)
            seen += count_queries.statements + driver_statements
    assert len(set(costs.values())) == 1, costs
    # One query for the viewer (token → user), one for the page and one for its total.
    assert next(iter(costs.values())) <= 3, costs
    assert not any(re.search(r"(count|sum)\([^)]*vote\.", s, re.I) for s in seen), (
        "lists read the counters kept on the post, never count vote rows"
    )


def _walk(api: Api, query: str, headers: dict | None = None) -> list[str]:
    """Every title of a list, following ``next`` from the first page to the last."""
    titles: list[str] = []
    page = api.client.get(f"/api/posts?{query}", headers=headers or {}).json()
    while True:
        titles += [p["title"] for p in page["items"]]
        if page["next"] is None:
            return titles
        r = api.client.get(f"/api/posts?{query}&after={page['next']}", headers=headers or {})
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["offset"] == 0


def test_keyset_pages_follow_next_through_every_sort(api: Api, database_url: str) -> None:
    author, voter, other = api.register(), api.register(), api.register()
    posts = [api.post(author, title=f"Keyset post {i}", body="paging words") for i in range(9)]
    for post in posts[::2]:
        api.client.put(f"/api/posts/{post['id']}/vote", headers=voter.headers)
    for post in posts[::3]:
        api.client.put(f"/api/posts/{post['id']}/vote", headers=other.headers)
        api.client.post(f"/api/posts/{post['id']}/comments", json={"body": "yes"}, headers=other.headers)
    same_time = datetime.now(UTC) - timedelta(days=1)  # ties on every key but the id
    run_sql(
        database_url,
        "UPDATE post SET created_at = :t WHERE id = ANY(:ids)",
        t=same_time,
        ids=[p["id"] for p in posts[:4]],
    )
    for sort in ("top", "new", "trending", "discussed", "relevance"):
        query = f"sort={sort}&limit=2" + ("&q=paging" if sort == "relevance" else "")
        everything = _titles(api, f"sort={sort}&limit=100" + ("&q=paging" if sort == "relevance" else ""))
        assert len(everything) == 9
        assert _walk(api, query) == everything, sort
    first = api.client.get("/api/posts?sort=top&limit=9").json()
    assert first["next"] is None and first["total"] == 9, "the last page has no next"
    page = api.client.get("/api/posts?sort=top&limit=4").json()
    second = api.client.get(f"/api/posts?sort=top&limit=4&after={page['next']}").json()
    assert second["total"] == 9 and second["limit"] == 4 and len(second["items"]) == 4


def test_a_bad_cursor_is_a_clear_422(api: Api) -> None:
    author = api.register()
    for i in range(3):
        api.post(author, title=f"Cursor post {i}")
    cursor = api.client.get("/api/posts?sort=top&limit=1").json()["next"]
    for query, message in (
        ("sort=top&after=not-a-cursor", "not a cursor"),
        ("sort=top&after=W10", "not a cursor"),  # base64 of []
        (f"sort=new&after={cursor}", "another sort"),
        (f"sort=top&offset=1&after={cursor}", "either after or offset"),
    ):
        r = api.client.get(f"/api/posts?{query}")
        assert r.status_code == 422, (query, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert message in r.text and r.json()["errors"][0]["field"] == "after", r.text
        assert r.json()["type"] == "/problems/domain-rule"  # a string the schema allows, refused by a rule


def test_one_compiled_page_serves_every_viewer_and_value(api: Api) -> None:
    """Board pages reuse one statement per shape (sort, which filters, viewer scope): the values of this
    request (the viewer's votes, the filter's value, the cursor) must be this request's, never the first's."""
    author, ana, ben = api.register(), api.register(), api.register()
    apps = [api.post(author, title=f"App idea {i}", tags=["app"]) for i in range(3)]
    web = [api.post(author, title=f"Web idea {i}", tags=["web"]) for i in range(3)]
    api.client.put(f"/api/posts/{apps[0]['id']}/vote", headers=ana.headers)
    api.client.put(f"/api/posts/{web[1]['id']}/vote", headers=ben.headers)
    for who, voted in ((ana, apps[0]["id"]), (ben, web[1]["id"]), (ana, apps[0]["id"])):
        items = api.client.get("/api/posts?sort=new&limit=10", headers=who.headers).json()["items"]
        assert {p["id"] for p in items if p["has_voted"]} == {voted}
    for tag, titles in (("app", {p["title"] for p in apps}), ("web", {p["title"] for p in web})):
        assert set(_titles(api, f"tag={tag}&sort=top")) == titles
    first = api.client.get("/api/posts?sort=new&limit=2").json()
    second = api.client.get(f"/api/posts?sort=new&limit=2&after={first['next']}").json()
    third = api.client.get(f"/api/posts?sort=new&limit=2&after={second['next']}").json()
    walked = [p["title"] for page in (first, second, third) for p in page["items"]]
    assert walked == [f"Web idea {i}" for i in (2, 1, 0)] + [f"App idea {i}" for i in (2, 1, 0)]


def test_a_stale_total_is_counted_again_by_one_request_while_the_others_answer_with_it(api: Api, monkeypatch) -> None:
    """On a big board the total is cached; when it goes stale, one request counts it again and the pages
    served meanwhile answer with the stale one, instead of every page running the same slow count at once."""
    from dataclasses import astuple

    from forum.posts import services

    author = api.register()
    for i in range(5):
        api.post(author, title=f"Counted post {i}")
    monkeypatch.setattr(services, "TOTAL_CACHE_MIN", 0)
    key = (tuple(astuple(services.PostFilters())), "public")
    monkeypatch.setitem(services._totals, key, (0.0, 4_321))  # stale: counted long ago
    monkeypatch.setattr(services, "_recounting", {key})  # and being counted again by another request
    assert api.client.get("/api/posts?limit=2&offset=2").json()["total"] == 4_321
    services._recounting.clear()  # that count is done: the next stale page counts again
    assert api.client.get("/api/posts?limit=2&offset=2").json()["total"] == 5
    assert api.client.get("/api/posts?limit=2&offset=2").json()["total"] == 5, "and caches it"

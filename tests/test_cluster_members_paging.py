"""A cluster page answers its members a page at a time (``GET /api/clusters/{id}?limit=&after=``): the pages
together are every live member once, oldest first (ties by id), each with its stored explanation; the
rejected posts come with every page; a cursor the list never gave is refused; the web page follows the
same cursor.

With the deterministic hashing encoder (tests/conftest.py).
"""

from __future__ import annotations

import pytest

import forum.web.triage
from tests.conftest import Actor, Api, run_sql
from tests.test_web_pages import browser_login

TITLES = [
    "Dark mode for the app",
    "Please add a dark mode to the app",
    "A dark mode for the app would be great",
    "Dark mode in the app please",
    "I want a dark mode for the app",
    "Dark mode for the whole app",
    "Add dark mode to the app",
]


def _big_cluster(api: Api, drain, database_url: str) -> tuple[Actor, str, list[dict]]:
    product = api.make_user("internal", "product")
    author = api.register()
    posts = []
    for title in TITLES:
        posts.append(api.post(author, title=title))
        drain()
    cluster = api.client.get(f"/api/posts/{posts[0]['id']}").json()["cluster_id"]
    members = [p for p in posts if api.client.get(f"/api/posts/{p['id']}").json()["cluster_id"] == cluster]
    assert len(members) >= 5, "the dark-mode titles group together"
    # Two members posted at the same instant: the page order breaks the tie by id, and a cursor between
    # them must neither repeat nor skip one.
    run_sql(
        database_url,
        "UPDATE post SET created_at = (SELECT created_at FROM post WHERE id = :a) WHERE id = :b",
        a=members[1]["id"],
        b=members[2]["id"],
    )
    return product, cluster, members


def _pages(api: Api, product: Actor, cluster: str, limit: int) -> list[dict]:
    pages, after = [], None
    while True:
        url = f"/api/clusters/{cluster}?limit={limit}" + (f"&after={after}" if after else "")
        r = api.client.get(url, headers=product.headers)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        after = pages[-1]["next"]
        if after is None:
            return pages
        assert len(pages) < 50, "the cursor moves on"


def test_members_come_a_page_at_a_time_and_the_pages_hold_each_once(api: Api, drain, database_url: str) -> None:
    product, cluster, members = _big_cluster(api, drain, database_url)
    h = product.headers
    rejected = members[-1]
    r = api.client.post(f"/api/clusters/{cluster}/members/{rejected['id']}/reject", headers=h)
    assert r.status_code == 200, r.text
    live = [m for m in members if m is not rejected]

    whole = api.client.get(f"/api/clusters/{cluster}?limit=100", headers=h).json()
    assert whole["next"] is None and whole["summary"]["member_count"] == len(live)
    expected = [
        row[0]
        for row in run_sql(
            database_url,
            "SELECT p.id::text FROM cluster_membership m JOIN post p ON p.id = m.post_id"
            " WHERE m.cluster_id = :c AND m.state <> 'rejected' ORDER BY p.created_at, p.id",
            c=cluster,
        )
    ]
    assert [m["post_id"] for m in whole["members"]] == expected, "oldest first, ties by id"
    assert {m["post_id"] for m in whole["members"]} == {m["id"] for m in live}

    for limit in (1, 2, 3):
        pages = _pages(api, product, cluster, limit)
        assert all(len(p["members"]) == limit for p in pages[:-1]) and 1 <= len(pages[-1]["members"]) <= limit
        paged = [m for p in pages for m in p["members"]]
        assert [m["post_id"] for m in paged] == expected, f"limit {limit}: every member once, in order"
        assert paged == whole["members"], "the same members, explanations and all, as one big page"
        assert all(m["explanation"] is not None and m["explanation"]["nearest"] for m in paged)
        for p in pages:
            assert [m["post_id"] for m in p["rejected"]] == [rejected["id"]], "rejected posts on every page"
            assert p["summary"] == whole["summary"]

    default = api.client.get(f"/api/clusters/{cluster}", headers=h).json()
    assert default["members"] == whole["members"] and default["next"] is None, "50 by default: all of these"


def test_a_cursor_the_members_never_gave_is_refused(api: Api, drain, database_url: str) -> None:
    product, cluster, _ = _big_cluster(api, drain, database_url)
    h = product.headers
    first = api.client.get(f"/api/clusters/{cluster}?limit=1", headers=h).json()
    assert first["next"]
    post_cursor = api.client.get("/api/posts?limit=1").json()["next"]
    for bad in ("nonsense", "bm9uc2Vuc2U", post_cursor):
        r = api.client.get(f"/api/clusters/{cluster}?after={bad}", headers=h)
        assert r.status_code == 422 and r.json()["type"].endswith("/domain-rule"), (bad, r.text)
    for bad in ("limit=0", "limit=101"):
        assert api.client.get(f"/api/clusters/{cluster}?{bad}", headers=h).status_code == 422
    spec = api.client.get("/schema/openapi.json").json()
    params = {p["name"]: p for p in spec["paths"]["/api/clusters/{cluster_id}"]["get"]["parameters"]}
    assert params["limit"]["schema"]["maximum"] == 100 and params["limit"]["schema"]["default"] == 50
    assert "next" in params["after"]["description"]
    detail = spec["components"]["schemas"]["ClusterDetail"]
    assert "next" in detail["properties"]


def test_the_web_cluster_page_follows_the_members_cursor(
    api: Api, drain, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    product, cluster, members = _big_cluster(api, drain, database_url)
    monkeypatch.setattr(forum.web.triage, "MEMBERS_PAGE", 2)
    browser_login(api.client, product)
    seen: list[str] = []
    page = api.client.get(f"/triage/clusters/{cluster}")
    assert page.status_code == 200 and 'data-testid="members-first"' not in page.text
    while True:
        assert page.text.count('data-testid="member"') <= 2
        seen += [m["id"] for m in members if f'data-post-id="{m["id"]}"' in page.text]
        if 'data-testid="members-next"' not in page.text:
            break
        assert len(seen) < len(members) + 2
        after = page.text.split('data-testid="members-next"')[0].rsplit('href="?after=', 1)[1].split('"')[0]
        page = api.client.get(f"/triage/clusters/{cluster}?after={after}")
        assert page.status_code == 200 and 'data-testid="members-first"' in page.text
    assert sorted(seen) == sorted(m["id"] for m in members) and len(seen) == len(set(seen))

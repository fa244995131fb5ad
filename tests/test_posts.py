"""Posts: creation rules, editing, deletion, status lifecycle and history, and visibility."""

from __future__ import annotations

import pytest

from tests.conftest import Api


def test_create_post_shape_and_trimming(api: Api) -> None:
    author = api.register("lucia")
    post = api.post(
        author,
        kind="critique",
        title="   The app logs me out every day   ",
        body="  **Annoying** when renting a bike.  ",
        tags=["App", "app", " Login  flow "],
    )
    assert post["title"] == "The app logs me out every day"
    assert post["body"] == "**Annoying** when renting a bike.", "markdown is kept as text"
    assert post["tags"] == ["app", "login flow"]
    assert post["kind"] == "critique" and post["status"] == "open" and post["visibility"] == "public"
    assert post["author"] == {"id": author.id, "display_name": "lucia", "kind": "external"}
    assert post["votes"] == {"total": 0, "internal": 0, "external": 0}
    assert post["has_voted"] is False and post["comment_count"] == 0
    for key in ("id", "created_at", "updated_at"):
        assert post[key]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"title": "  ab  "}, "title"),
        ({"title": "x" * 161}, "title"),
        ({"title": "ok title\u0000"}, "title"),
        ({"body": "b" * 10_001}, "body"),
        ({"kind": "rant"}, "kind"),
        ({"visibility": "secret"}, "visibility"),
        ({"tags": ["t"] * 11}, "tags"),
        ({"tags": ["x" * 41]}, "tags[0]"),
        ({"tags": "notalist"}, "tags"),
        ({"title": 12}, "title"),
        ({"unexpected": True}, None),
    ],
)
def test_create_post_validation(api: Api, patch: dict, field: str | None) -> None:
    author = api.register()
    r = api.client.post("/api/posts", json={"kind": "idea", "title": "Valid title", **patch}, headers=author.headers)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert problem["status"] == 422 and problem["errors"]
    if field:
        assert problem["errors"][0]["field"] == field


def test_title_limits_are_inclusive(api: Api) -> None:
    author = api.register()
    assert api.post(author, title="abc")["title"] == "abc"
    assert len(api.post(author, title="t" * 160, body="b" * 10_000)["title"]) == 160


def test_anonymous_reads_but_cannot_write(api: Api) -> None:
    author = api.register()
    post = api.post(author)
    assert api.client.get(f"/api/posts/{post['id']}").status_code == 200
    assert api.client.post("/api/posts", json={"kind": "idea", "title": "Hello"}).status_code == 401
    assert api.client.put(f"/api/posts/{post['id']}/vote").status_code == 401
    assert api.client.post(f"/api/posts/{post['id']}/comments", json={"body": "hi"}).status_code == 401


def test_only_the_author_and_the_product_team_edit_title_and_body(api: Api) -> None:
    author, other = api.register(), api.register()
    employee = api.make_user("internal", "member")
    post = api.post(author, title="Original title")
    url = f"/api/posts/{post['id']}"
    assert api.client.patch(url, json={"title": "Hijacked"}, headers=other.headers).status_code == 403
    assert api.client.patch(url, json={"body": "Hijacked"}, headers=employee.headers).status_code == 403
    r = api.client.patch(url, json={"title": "  Better title ", "body": "More detail"}, headers=author.headers)
    assert r.status_code == 200
    assert (r.json()["title"], r.json()["body"]) == ("Better title", "More detail")
    assert r.json()["updated_at"] > post["updated_at"]
    assert api.client.patch(url, json={"title": "no"}, headers=author.headers).status_code == 422
    assert api.client.get(url).json()["title"] == "Better title"


def test_product_team_changes_tags_and_visibility_members_cannot(api: Api) -> None:
    author = api.register()
    product = api.make_user("internal", "product")
    post = api.post(author, tags=["app"])
    url = f"/api/posts/{post['id']}"
    assert api.client.patch(url, json={"visibility": "internal"}, headers=author.headers).status_code == 403
    r = api.client.patch(url, json={"tags": ["billing"], "visibility": "internal"}, headers=product.headers)
    assert r.status_code == 200 and r.json()["tags"] == ["billing"]
    assert api.client.get(url, headers=author.headers).status_code == 404, "now internal: gone for customers"


def test_soft_delete_by_author_or_admin(api: Api) -> None:
    author, other = api.register(), api.register()
    admin = api.make_user("internal", "admin")
    first, second = api.post(author, title="First post"), api.post(author, title="Second post")
    assert api.client.delete(f"/api/posts/{first['id']}", headers=other.headers).status_code == 403
    assert api.client.delete(f"/api/posts/{first['id']}", headers=author.headers).status_code == 204
    assert api.client.delete(f"/api/posts/{second['id']}", headers=admin.headers).status_code == 204
    for post in (first, second):
        assert api.client.get(f"/api/posts/{post['id']}").status_code == 404
        assert api.client.delete(f"/api/posts/{post['id']}", headers=author.headers).status_code == 404
    assert api.client.get("/api/posts").json()["total"] == 0


def test_status_lifecycle_and_history(api: Api) -> None:
    author = api.register()
    product = api.make_user("internal", "product", name="pm")
    post = api.post(author)
    url = f"/api/posts/{post['id']}/status"
    assert api.client.post(url, json={"status": "planned"}, headers=author.headers).status_code == 403
    steps = [
        ("under_review", "Looking at it"),
        ("planned", None),
        ("in_progress", "Sprint 12"),
        ("shipped", "v2.3"),
    ]
    for status, note in steps:
        r = api.client.post(url, json={"status": status, "note": note}, headers=product.headers)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == status
    assert api.client.post(url, json={"status": "shipped"}, headers=product.headers).status_code == 409
    assert api.client.post(url, json={"status": "duplicate"}, headers=product.headers).status_code == 422
    assert api.client.post(url, json={"status": "done"}, headers=product.headers).status_code == 422
    history = api.client.get(f"/api/posts/{post['id']}/history").json()["items"]
    assert [(h["from_status"], h["to_status"]) for h in history] == [
        (None, "open"),
        ("open", "under_review"),
        ("under_review", "planned"),
        ("planned", "in_progress"),
        ("in_progress", "shipped"),
    ]
    assert history[0]["actor"]["id"] == author.id
    assert {h["actor"]["id"] for h in history[1:]} == {product.id}
    assert [h["note"] for h in history[1:]] == ["Looking at it", None, "Sprint 12", "v2.3"]
    assert history == sorted(history, key=lambda h: h["created_at"])
    # Moving out of shipped is allowed and recorded (a release can be rolled back).
    r = api.client.post(url, json={"status": "in_progress", "note": "rolled back"}, headers=product.headers)
    assert r.status_code == 200
    assert api.client.get(f"/api/posts/{post['id']}/history").json()["items"][-1]["from_status"] == "shipped"


def test_internal_posts_exist_only_for_insiders(api: Api) -> None:
    customer = api.register("customer")
    employee = api.make_user("internal", "member", name="employee")
    product = api.make_user("external", "product", name="pm")
    r = api.client.post(
        "/api/posts",
        json={"kind": "idea", "title": "Customer tries internal", "visibility": "internal"},
        headers=customer.headers,
    )
    assert r.status_code == 403
    secret = api.post(employee, title="Internal tooling for refunds", visibility="internal", tags=["ops"])
    public = api.post(customer, title="Public refunds idea", tags=["ops"])
    url = f"/api/posts/{secret['id']}"
    for headers in ({}, customer.headers):
        for method, path, body in [
            ("GET", url, None),
            ("GET", f"{url}/history", None),
            ("GET", f"{url}/comments", None),
            ("PUT", f"{url}/vote", None),
            ("POST", f"{url}/comments", {"body": "hi"}),
        ]:
            r = api.client.request(method, path, json=body, headers=headers)
            assert r.status_code in (404, 401), (method, path, r.status_code)
            if headers:
                assert r.status_code == 404 and "internal" not in r.text.lower()
        listing = api.client.get("/api/posts?tag=ops&q=refunds", headers=headers).json()
        assert [p["id"] for p in listing["items"]] == [public["id"]] and listing["total"] == 1
        assert api.client.get("/api/posts?visibility=internal", headers=headers).json()["total"] == 0
    for insider in (employee, product):
        assert api.client.get(url, headers=insider.headers).status_code == 200
        assert api.client.get("/api/posts?tag=ops", headers=insider.headers).json()["total"] == 2

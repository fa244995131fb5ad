"""A customer never learns anything about an internal post through a page: not on the board, in search,
in a total, at its URL, in the composer's suggestions, in the inbox or on a profile. Employees see it,
clearly marked as internal (text, not colour alone)."""

from __future__ import annotations

from litestar.testing import TestClient

from tests.conftest import Api
from tests.test_web_pages import browser_login, form_post

SECRET = "Zeppelin reorganisation plan"
NOTE = "Internal note about margins"


def _world(api: Api, drain):
    employee = api.make_user(kind="internal", name="Elena")
    product = api.make_user(kind="internal", role="product", name="Pat")
    customer = api.register("Carla")
    public = api.post(customer, title="Zeppelin rides for tourists", body="A zeppelin tour over the city")
    internal = api.post(employee, title=SECRET, body="zeppelin tour pricing for the city", visibility="internal")
    r = api.client.post(
        f"/api/posts/{public['id']}/comments", json={"body": NOTE, "internal": True}, headers=employee.headers
    )
    assert r.status_code == 201, r.text
    drain()
    return employee, product, customer, public, internal


def _customer_pages(api: Api, public: dict, employee_id: str) -> dict[str, str]:
    client = api.client
    return {
        "board": client.get("/").text,
        "board top": client.get("/?sort=top").text,
        "search": client.get("/?q=zeppelin").text,
        "search internal words": client.get("/?q=reorganisation").text,
        "visibility filter": client.get("/?visibility=internal").text,
        "public post": client.get(f"/posts/{public['id']}").text,
        "profile": client.get(f"/users/{employee_id}").text,
        "roadmap": client.get("/roadmap").text,
        "suggestions": client.get("/new/similar", params={"title": "zeppelin tour pricing", "body": "city"}).text,
        "inbox": client.get("/inbox").text,
    }


def test_a_customer_never_sees_an_internal_post_or_note(api: Api, drain) -> None:
    employee, _, customer, public, internal = _world(api, drain)
    browser_login(api.client, customer)
    pages = _customer_pages(api, public, employee.id)
    for name, html in pages.items():
        assert SECRET not in html, name
        assert NOTE not in html, name
        assert internal["id"] not in html, name
        assert 'data-testid="internal-badge"' not in html, name
    assert "1 post<" in pages["board"] and "1 post<" in pages["search"]  # the total leaves it out
    assert "0 posts<" in pages["search internal words"] and "0 posts<" in pages["visibility filter"]
    assert "(1)" not in pages["public post"].split("Comments")[1][:40]  # the note is not counted either
    assert "(0)" in pages["profile"]  # the employee's internal post is not counted on their profile

    r = api.client.get(f"/posts/{internal['id']}")
    missing = api.client.get("/posts/0190b1f6-0000-7000-8000-000000000000")
    assert r.status_code == 404 == missing.status_code
    same = missing.text.replace("0190b1f6-0000-7000-8000-000000000000", internal["id"])
    assert r.text == same  # exactly the page of a post that never existed
    r = form_post(api.client, f"/posts/{internal['id']}/vote", {}, from_page="/")
    assert r.status_code == 404 and SECRET not in r.text


def test_anonymous_readers_see_no_internal_post_either(api: Api, drain) -> None:
    employee, _, _, public, internal = _world(api, drain)
    api.client.cookies.clear()
    for path in ("/", "/?q=zeppelin", f"/posts/{public['id']}", f"/users/{employee.id}", "/roadmap"):
        html = api.client.get(path).text
        assert SECRET not in html and NOTE not in html, path
    assert api.client.get(f"/posts/{internal['id']}").status_code == 404


def test_employees_see_internal_posts_and_notes_clearly_marked(api: Api, drain) -> None:
    employee, _, _, public, internal = _world(api, drain)
    browser_login(api.client, employee)
    board = api.client.get("/?q=zeppelin").text
    assert SECRET in board and 'data-testid="internal-badge"' in board and ">2 posts<" in board.replace(" ", " ")
    only_internal = api.client.get("/?visibility=internal").text
    assert SECRET in only_internal and "Zeppelin rides" not in only_internal
    post = api.client.get(f"/posts/{internal['id']}").text
    assert 'data-testid="internal-banner"' in post and "Only employees and the product team can see this post." in post
    notes = api.client.get(f"/posts/{public['id']}").text
    assert NOTE in notes and "Internal note" in notes
    suggestions = api.client.get("/new/similar", params={"title": "zeppelin tour pricing", "body": "city"}).text
    assert internal["id"] in suggestions
    compose = api.client.get("/new").text
    assert 'data-testid="visibility-internal"' in compose


def test_employees_choose_visibility_customers_cannot(api: Api) -> None:
    employee, customer = api.make_user(kind="internal"), api.register()
    browser_login(api.client, employee)
    r = form_post(
        api.client, "/new", {"kind": "idea", "title": "Staff only idea", "visibility": "internal"}, from_page="/new"
    )
    assert r.status_code == 303
    assert api.client.get(r.headers["location"]).status_code == 200
    post_id = r.headers["location"].rsplit("/", 1)[1]
    assert api.client.get(f"/api/posts/{post_id}", headers=employee.headers).json()["visibility"] == "internal"

    browser_login(api.client, customer)
    assert 'name="visibility"' not in api.client.get("/new").text
    r = form_post(
        api.client, "/new", {"kind": "idea", "title": "Sneaky internal", "visibility": "internal"}, from_page="/new"
    )
    assert r.status_code == 422 and 'data-testid="error-visibility"' in r.text
    r = form_post(api.client, f"/posts/{post_id}/comments", {"body": "x", "internal": "on"}, from_page="/")
    assert r.status_code == 404  # the internal post does not exist for them


def test_customers_cannot_write_internal_notes_through_the_form(api: Api) -> None:
    customer = api.register()
    post = api.post(customer, title="A public post")
    browser_login(api.client, customer)
    r = form_post(api.client, f"/posts/{post['id']}/comments", {"body": "Not a note", "internal": "on"}, from_page="/")
    assert r.status_code == 303
    comments = api.client.get(f"/api/posts/{post['id']}/comments").json()["items"]
    assert [c["internal"] for c in comments] == [False]


def test_the_inbox_hides_a_post_that_became_internal(api: Api, client: TestClient) -> None:
    customer, product = api.register(), api.make_user(kind="internal", role="product")
    post = api.post(customer, title="Night tariff for scooters")
    r = api.client.post(f"/api/posts/{post['id']}/status", json={"status": "planned"}, headers=product.headers)
    assert r.status_code == 200
    browser_login(api.client, customer)
    inbox = api.client.get("/inbox").text
    assert "Night tariff for scooters" in inbox and 'data-testid="unread-count">1<' in inbox

    r = api.client.patch(f"/api/posts/{post['id']}", json={"visibility": "internal"}, headers=product.headers)
    assert r.status_code == 200
    inbox = api.client.get("/inbox").text
    # Left out of the list and the header's count alike (InboxService renders the inbox per reader).
    assert "Night tariff for scooters" not in inbox and f"/posts/{post['id']}" not in inbox
    assert 'data-testid="empty-inbox"' in inbox and 'data-testid="unread-count"' not in inbox


def test_marking_notifications_read(api: Api) -> None:
    customer, product = api.register(), api.make_user(kind="internal", role="product")
    first, second = api.post(customer, title="First post"), api.post(customer, title="Second post")
    for post in (first, second):
        api.client.post(f"/api/posts/{post['id']}/status", json={"status": "planned"}, headers=product.headers)
    browser_login(api.client, customer)
    items = api.client.get("/api/me/notifications", headers=customer.headers).json()["items"]
    assert len(items) == 2
    r = form_post(api.client, "/inbox/read", {"notification": items[0]["id"]}, from_page="/inbox")
    assert r.status_code == 303 and r.headers["location"] == "/inbox"
    assert 'data-testid="unread-count">1<' in api.client.get("/").text
    form_post(api.client, "/inbox/read", {"notification": "all"}, from_page="/inbox")
    assert 'data-testid="unread-count"' not in api.client.get("/").text
    assert api.client.get("/api/me/notifications", headers=customer.headers).json()["unread"] == 0

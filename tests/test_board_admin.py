"""The product team runs the board: who voted, editing any post (with its history), hiding spam, the
roadmap and the managed tag list. Hidden posts exist for the product team only and count nowhere."""

from __future__ import annotations

import json

from tests.conftest import Actor, Api, run_sql

SPAM = "Zorblax cheap pills"


def _vote(api: Api, post_id: str, actor: Actor) -> None:
    r = api.client.put(f"/api/posts/{post_id}/vote", headers=actor.headers)
    assert r.status_code == 200, r.text


def _status(api: Api, post_id: str, status: str, product: Actor) -> None:
    r = api.client.post(f"/api/posts/{post_id}/status", json={"status": status}, headers=product.headers)
    assert r.status_code == 200, r.text


# Voters ---------------------------------------------------------------------------------------------


def test_the_product_team_sees_who_voted_and_nobody_else_does(api: Api) -> None:
    product = api.make_user("internal", "product")
    employee = api.make_user("internal", "member", name="Eve")
    author, customer = api.register("author"), api.register("Carla")
    post = api.post(author, title="Export invoices as PDF")
    _vote(api, post["id"], customer)
    _vote(api, post["id"], employee)
    url = f"/api/posts/{post['id']}/voters"
    page = api.client.get(url, headers=product.headers).json()
    assert page["total"] == 2 and page["offset"] == 0
    voters = [(v["user"]["id"], v["kind"]) for v in page["items"]]
    assert voters == [(customer.id, "external"), (employee.id, "internal")]
    assert page["items"][0]["user"]["display_name"] == "Carla"
    assert page["items"][0]["voted_at"] <= page["items"][1]["voted_at"] and page["items"][0]["merged_from"] is None
    second = api.client.get(f"{url}?limit=1&offset=1", headers=product.headers).json()
    assert [v["user"]["id"] for v in second["items"]] == [employee.id] and second["total"] == 2
    assert api.client.get(url).status_code == 401
    for outsider in (author, customer, employee):  # the author and an employee are not the product team
        r = api.client.get(url, headers=outsider.headers)
        assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    missing = api.client.get("/api/posts/00000000-0000-0000-0000-000000000000/voters", headers=product.headers)
    assert missing.status_code == 404


# Edits ----------------------------------------------------------------------------------------------


def test_the_product_team_edits_any_post_and_each_edit_is_recorded(api: Api, drain) -> None:
    product = api.make_user("internal", "product", name="Pat")
    author, other = api.register("author"), api.register("other")
    post = api.post(author, title="Dark mod for teh app", body="Too brigth")
    drain()
    hashes = run_sql(api.database_url, "SELECT content_hash FROM post_embedding WHERE post_id = :p", p=post["id"])
    url = f"/api/posts/{post['id']}"
    r = api.client.patch(url, json={"title": "Dark mode for the app"}, headers=product.headers)
    assert r.status_code == 200, r.text
    assert r.json()["title"] == "Dark mode for the app" and r.json()["body"] == "Too brigth"
    r = api.client.patch(url, json={"body": "Too bright at night"}, headers=author.headers)
    assert r.status_code == 200
    assert api.client.patch(url, json={"title": "Hijacked title"}, headers=other.headers).status_code == 403
    same = api.client.patch(url, json={"title": "Dark mode for the app"}, headers=product.headers)
    assert same.status_code == 200, "an edit that changes nothing is not recorded"

    edits = api.client.get(f"{url}/edits", headers=product.headers).json()
    assert edits["total"] == 2
    first, second = edits["items"]
    assert first["editor"]["id"] == product.id and first["editor"]["display_name"] == "Pat"
    assert (first["title_before"], first["title_after"]) == ("Dark mod for teh app", "Dark mode for the app")
    assert first["body_before"] is None and first["body_after"] is None
    assert second["editor"]["id"] == author.id
    assert (second["body_before"], second["body_after"]) == ("Too brigth", "Too bright at night")
    assert first["created_at"] <= second["created_at"]
    assert api.client.get(f"{url}/edits", headers=author.headers).status_code == 403

    drain()  # the edited text is embedded and grouped again, as any edit
    after = run_sql(api.database_url, "SELECT content_hash FROM post_embedding WHERE post_id = :p", p=post["id"])
    assert after and set(after) != set(hashes)
    assert api.client.get(url).json()["cluster_id"] is not None


def test_a_bad_edit_writes_nothing(api: Api) -> None:
    product = api.make_user("internal", "product")
    post = api.post(api.register(), title="Offline maps")
    url = f"/api/posts/{post['id']}"
    for bad in ({"title": "x"}, {"title": "ok title", "colour": "red"}, {"body": "a\x00b"}):
        r = api.client.patch(url, json=bad, headers=product.headers)
        assert r.status_code == 422, (bad, r.text)
    assert api.client.get(url).json()["title"] == "Offline maps"
    assert api.client.get(f"{url}/edits", headers=product.headers).json()["total"] == 0


# Hiding spam ----------------------------------------------------------------------------------------


def test_a_hidden_post_disappears_for_everyone_but_the_product_team(api: Api, drain) -> None:
    product = api.make_user("internal", "product")
    employee = api.make_user("internal", "member")
    spammer, customer = api.register("spammer"), api.register("customer")
    spam = api.post(spammer, title=f"{SPAM} online", tags=["billing"])
    kept = api.post(customer, title="Cheap shipping options", tags=["billing"])
    _vote(api, spam["id"], customer)
    drain()
    url = f"/api/posts/{spam['id']}"
    assert api.client.post(f"{url}/hide", headers=customer.headers).status_code == 403
    assert api.client.post(f"{url}/hide", headers=employee.headers).status_code == 403
    r = api.client.post(f"{url}/hide", headers=product.headers)
    assert r.status_code == 200 and r.json()["hidden"] is True
    assert api.client.post(f"{url}/hide", headers=product.headers).status_code == 409

    readers = {"anonymous": {}, "customer": customer.headers, "spammer": spammer.headers, "employee": employee.headers}
    for who, headers in readers.items():
        assert api.client.get(url, headers=headers).status_code == 404, who
        for sub in ("history", "comments", "merged", "credits", "critiques"):
            assert api.client.get(f"{url}/{sub}", headers=headers).status_code == 404, (who, sub)
        assert api.client.put(f"{url}/vote", headers=headers).status_code in (401, 404), who
        bodies = {
            "list": api.client.get("/api/posts", headers=headers).text,
            "search": api.client.get("/api/posts?q=zorblax", headers=headers).text,
            "tag": api.client.get("/api/posts?tag=billing", headers=headers).text,
            "similar": api.client.post("/api/posts/similar", json={"title": f"{SPAM}"}, headers=headers).text,
            "roadmap": api.client.get("/api/roadmap", headers=headers).text,
            "board page": api.client.get("/?q=zorblax", headers=headers).text,
            "roadmap page": api.client.get("/roadmap", headers=headers).text,
        }
        assert api.client.get(f"/posts/{spam['id']}", headers=headers).status_code == 404, who
        for where, body in bodies.items():
            assert "Zorblax" not in body and spam["id"] not in body, (who, where)
        tagged = api.client.get("/api/posts?tag=billing", headers=headers).json()
        assert tagged["total"] == 1 and [p["id"] for p in tagged["items"]] == [kept["id"]], who

    page = api.client.get(f"/posts/{spam['id']}", headers=product.headers)
    assert page.status_code == 200 and 'data-testid="hidden-banner"' in page.text
    assert 'data-testid="hidden-badge"' in api.client.get("/?q=zorblax", headers=product.headers).text
    staff = api.client.get(url, headers=product.headers).json()
    assert staff["hidden"] is True and staff["votes"]["total"] == 1
    assert api.client.get("/api/posts?q=zorblax", headers=product.headers).json()["total"] == 1
    vote = api.client.put(f"{url}/vote", headers=product.headers)
    assert vote.status_code == 409, "a hidden post takes no votes"
    for into, source in ((kept, spam), (spam, kept)):  # votes would count again, or vanish
        r = api.client.post(f"/api/posts/{source['id']}/merge", json={"into": into["id"]}, headers=product.headers)
        assert r.status_code == 409, r.text

    r = api.client.post(f"{url}/unhide", headers=product.headers)
    assert r.status_code == 200 and r.json()["hidden"] is False
    assert api.client.post(f"{url}/unhide", headers=product.headers).status_code == 409
    assert api.client.get(url).status_code == 200
    assert api.client.get("/api/posts?q=zorblax").json()["total"] == 1


def test_notifications_about_a_hidden_post_leave_the_inbox(api: Api) -> None:
    product = api.make_user("internal", "product")
    spammer, voter = api.register("spammer"), api.register("voter")
    spam = api.post(spammer, title=f"{SPAM} for sale")
    _vote(api, spam["id"], voter)
    _status(api, spam["id"], "under_review", product)
    assert api.client.get("/api/me/notifications", headers=voter.headers).json()["total"] == 1
    sql = "SELECT count(*) FROM notification WHERE post_id = :p"
    written = run_sql(api.database_url, sql, p=spam["id"])[0][0]
    assert api.client.post(f"/api/posts/{spam['id']}/hide", headers=product.headers).status_code == 200
    inbox = api.client.get("/api/me/notifications", headers=voter.headers).json()
    assert inbox["total"] == 0 and inbox["unread"] == 0
    _status(api, spam["id"], "declined", product)  # nobody but the product team hears of it
    assert run_sql(api.database_url, sql, p=spam["id"])[0][0] == written, "nothing new was written about it"


def test_votes_of_a_hidden_post_count_in_no_cluster_and_earn_no_credit(api: Api, drain) -> None:
    product = api.make_user("internal", "product")
    author, spammer = api.register("author"), api.register("spammer")
    voters = [api.register(f"voter{i}") for i in range(3)]
    idea = api.post(author, title="Dark mode for the mobile app")
    spam = api.post(spammer, title="Dark mode for the mobile app")  # the same words: the same cluster
    drain()
    cluster = api.client.get(f"/api/posts/{idea['id']}", headers=product.headers).json()["cluster_id"]
    assert cluster
    assert api.client.get(f"/api/posts/{spam['id']}", headers=product.headers).json()["cluster_id"] == cluster
    r = api.client.post(f"/api/clusters/{cluster}/members/{spam['id']}/confirm", headers=product.headers)
    assert r.status_code == 200, r.text
    _vote(api, idea["id"], voters[0])
    for voter in voters[1:]:
        _vote(api, spam["id"], voter)

    def summary() -> dict:
        return api.client.get(f"/api/clusters/{cluster}", headers=product.headers).json()

    before = summary()
    assert before["summary"]["unique_voters"]["total"] == 3 and before["summary"]["member_count"] == 2
    assert api.client.post(f"/api/posts/{spam['id']}/hide", headers=product.headers).status_code == 200
    after = summary()
    assert after["summary"]["unique_voters"]["total"] == 1 and after["summary"]["member_count"] == 1
    assert [m["post_id"] for m in after["members"]] == [idea["id"]]
    listed = api.client.get("/api/clusters", headers=product.headers).json()["items"]
    assert all(c["unique_voters"]["total"] <= 1 for c in listed)

    _status(api, idea["id"], "shipped", product)
    credited = api.client.get(f"/api/posts/{idea['id']}/credits").json()
    users = {c["user"]["id"] for c in credited["items"]}
    assert users == {author.id, voters[0].id}, "neither the spammer nor the spam's voters are credited"
    board = api.client.get("/api/leaderboard").text
    assert spammer.id not in board and voters[1].id not in board

    shipped = api.post(author, title="Offline maps in tunnels")
    _status(api, shipped["id"], "shipped", product)
    r = api.client.post(f"/api/posts/{shipped['id']}/hide", headers=product.headers)
    assert r.status_code == 409, "a shipped post's credits would vanish unrecorded"
    hidden = api.post(spammer, title=f"{SPAM} again")
    assert api.client.post(f"/api/posts/{hidden['id']}/hide", headers=product.headers).status_code == 200
    r = api.client.post(f"/api/posts/{hidden['id']}/status", json={"status": "shipped"}, headers=product.headers)
    assert r.status_code == 409


# Roadmap --------------------------------------------------------------------------------------------


def test_the_roadmap_pages_each_column_and_respects_visibility(api: Api) -> None:
    product = api.make_user("internal", "product")
    employee = api.make_user("internal", "member")
    customer = api.register("customer")
    planned = [api.post(customer, title=f"Planned idea {i}") for i in range(3)]
    for i, post in enumerate(planned):
        for voter in [api.register() for _ in range(i)]:
            _vote(api, post["id"], voter)
        _status(api, post["id"], "planned", product)
    secret = api.post(employee, title="Internal planned tool", visibility="internal")
    _status(api, secret["id"], "planned", product)
    building = api.post(customer, title="Being built")
    _status(api, building["id"], "in_progress", product)
    shipped = [api.post(customer, title=f"Shipped idea {i}") for i in range(2)]
    for post in reversed(shipped):  # the second ships first
        _status(api, post["id"], "shipped", product)
    spam = api.post(customer, title=f"{SPAM} planned")
    _status(api, spam["id"], "planned", product)
    assert api.client.post(f"/api/posts/{spam['id']}/hide", headers=product.headers).status_code == 200

    roadmap = api.client.get("/api/roadmap?limit=2").json()
    assert set(roadmap) == {"planned", "in_progress", "shipped"}
    assert [p["id"] for p in roadmap["planned"]["items"]] == [planned[2]["id"], planned[1]["id"]], "most votes first"
    assert roadmap["planned"]["total"] == 3 and roadmap["planned"]["limit"] == 2
    assert [p["id"] for p in roadmap["in_progress"]["items"]] == [building["id"]]
    assert [p["id"] for p in roadmap["shipped"]["items"]] == [shipped[0]["id"], shipped[1]["id"]], "last shipped first"

    page2 = api.client.get("/api/roadmap/planned?limit=2&offset=2").json()
    assert [p["id"] for p in page2["items"]] == [planned[0]["id"]] and page2["total"] == 3 and page2["offset"] == 2
    inside = api.client.get("/api/roadmap/planned", headers=employee.headers).json()
    assert inside["total"] == 4 and secret["id"] in {p["id"] for p in inside["items"]}
    staff = api.client.get("/api/roadmap/planned", headers=product.headers).json()
    assert staff["total"] == 5, "the product team sees internal and hidden posts too"
    for bad in ("/api/roadmap/open", "/api/roadmap/planned?limit=0", "/api/roadmap?offset=3"):
        r = api.client.get(bad)
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json"), bad

    page = api.client.get("/roadmap").text  # the web page uses the same service
    assert "Shipped idea 0" in page and "Internal planned tool" not in page and "Zorblax" not in page
    assert page.index("Shipped idea 0") < page.index("Shipped idea 1")


# Tags -----------------------------------------------------------------------------------------------


def test_the_product_team_manages_the_tag_list(api: Api) -> None:
    product = api.make_user("internal", "product")
    customer = api.register("customer")
    body = {"name": "  Billing   Issues ", "colour": "#1A2B3C", "description": "Invoices and payments"}
    assert api.client.post("/api/tags", json=body).status_code == 401
    assert api.client.post("/api/tags", json=body, headers=customer.headers).status_code == 403
    r = api.client.post("/api/tags", json=body, headers=product.headers)
    assert r.status_code == 201, r.text
    tag = r.json()
    assert (tag["name"], tag["colour"], tag["description"]) == ("billing issues", "#1a2b3c", "Invoices and payments")
    assert r.headers["location"] == f"/api/tags/{tag['id']}"
    assert api.client.get(r.headers["location"]).json() == tag
    again = api.client.post("/api/tags", json={**body, "name": "BILLING issues"}, headers=product.headers)
    assert again.status_code == 409 and again.headers["content-type"].startswith("application/problem+json")
    api.client.post("/api/tags", json={"name": "app", "colour": "#00ff00"}, headers=product.headers)
    listed = api.client.get("/api/tags").json()
    assert [t["name"] for t in listed["items"]] == ["app", "billing issues"] and listed["total"] == 2

    url = f"/api/tags/{tag['id']}"
    assert api.client.patch(url, json={"colour": "#ffffff"}, headers=customer.headers).status_code == 403
    r = api.client.patch(url, json={"colour": "#FFFFFF", "description": ""}, headers=product.headers)
    assert r.status_code == 200 and (r.json()["colour"], r.json()["description"]) == ("#ffffff", "")
    for bad in ({"colour": "red"}, {"colour": "#fff"}, {"name": "renamed"}, {"description": "x" * 501}):
        assert api.client.patch(url, json=bad, headers=product.headers).status_code == 422, bad
    for bad in ({"name": "x", "colour": "#12345g"}, {"name": "\u200b", "colour": "#123456"}, {"colour": "#123456"}):
        assert api.client.post("/api/tags", json=bad, headers=product.headers).status_code == 422, bad
    blank = api.client.post("/api/tags", json={"name": "\u200b\u200b", "colour": "#123456"}, headers=product.headers)
    assert blank.json()["type"] == "/problems/domain-rule" and blank.json()["errors"][0]["field"] == "name"
    assert api.client.get("/api/tags").json()["total"] == 2, "nothing was written"
    assert api.client.get(url).json()["colour"] == "#ffffff", "a refused change wrote nothing"

    # Posts tag by name, managed or not (as before the list existed).
    post = api.post(customer, title="Invoice totals are wrong", tags=["Billing Issues", "free text"])
    assert post["tags"] == ["billing issues", "free text"]
    r = api.client.delete(url, headers=product.headers)
    assert r.status_code == 409 and json.loads(r.text)["posts"] == 1
    assert api.client.get(url).status_code == 200
    api.client.patch(f"/api/posts/{post['id']}", json={"tags": ["free text"]}, headers=product.headers)
    assert api.client.delete(url, headers=customer.headers).status_code == 403
    assert api.client.delete(url, headers=product.headers).status_code == 204
    assert api.client.get(url).status_code == 404
    assert api.client.delete(url, headers=product.headers).status_code == 404

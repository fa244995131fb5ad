"""Feedback captured on a customer's behalf: an employee posts, votes or comments for a customer known by
email, naming the channel and the source; the customer is the author or voter for counts, credits and
"who asked first" (from when they said it); staff see who captured it, customers never do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import PASSWORD, Actor, Api, run_sql
from tests.test_web_pages import browser_login


def _ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat().replace("+00:00", "Z")


def _on_behalf(email: str, channel: str = "support", **extra: Any) -> dict[str, Any]:
    return {"email": email, "channel": channel, **extra}


def _count(api: Api, table: str, where: str = "true", **params: Any) -> int:
    return run_sql(api.database_url, f"SELECT count(*) FROM {table} WHERE {where}", **params)[0][0]


def test_an_employee_posts_for_a_new_customer_who_is_its_author(api: Api) -> None:
    agent = api.make_user("internal", "member", name="agent")
    said = _ago(days=3)
    body = {
        "kind": "idea",
        "title": "Quiero pagar con Bizum en la tienda",
        "on_behalf": _on_behalf(
            "Lucia@Example.com",
            "store",
            source_url="https://help.example.com/tickets/123",
            said_at=said,
            display_name="Lucía",
        ),
    }
    r = api.client.post("/api/posts", json=body, headers=agent.headers)
    assert r.status_code == 201, r.text
    post = r.json()
    assert r.headers["location"] == f"/api/posts/{post['id']}"
    assert post["author"]["display_name"] == "Lucía" and post["author"]["kind"] == "external"
    assert post["author"]["id"] != agent.id
    assert post["channel"] == "store"
    assert datetime.fromisoformat(post["created_at"]) == datetime.fromisoformat(said), "when the customer said it"
    capture = post["capture"]
    assert capture["captured_by"]["id"] == agent.id and capture["source_url"] == "https://help.example.com/tickets/123"
    assert capture["channel"] == "store" and datetime.fromisoformat(capture["captured_at"]) > datetime.fromisoformat(
        said
    )

    # Staff see the capture; the customer and everybody else never see who captured it nor the source.
    assert (
        api.client.get(f"/api/posts/{post['id']}", headers=agent.headers).json()["capture"]["captured_by"]["id"]
        == agent.id
    )
    public = api.client.get(f"/api/posts/{post['id']}").json()
    assert public["capture"] is None and public["channel"] == "store"
    r = api.client.post(
        "/api/auth/register", json={"email": "lucia@example.com", "password": PASSWORD, "display_name": "Lucía G."}
    )
    assert r.status_code == 201, "the customer claims the account made for their email"
    lucia = api.login("lucia@example.com", r.json()["id"])
    assert lucia.id == post["author"]["id"]
    mine = api.client.get(f"/api/posts/{post['id']}", headers=lucia.headers).json()
    assert mine["capture"] is None
    listed = api.client.get("/api/posts", params={"author": lucia.id}, headers=lucia.headers).json()["items"]
    assert [p["id"] for p in listed] == [post["id"]] and listed[0]["capture"] is None
    assert "help.example.com" not in api.client.get("/api/posts", headers=lucia.headers).text

    # The same email again reuses the account.
    again = api.client.post(
        "/api/posts",
        json={"kind": "critique", "title": "La tienda no acepta Bizum", "on_behalf": _on_behalf("lucia@example.com")},
        headers=agent.headers,
    ).json()
    assert again["author"]["id"] == lucia.id
    assert _count(api, "user_account", "email = 'lucia@example.com'") == 1


def test_customers_may_not_act_on_behalf_and_bad_input_writes_nothing(api: Api) -> None:
    customer = api.register("customer")
    agent = api.make_user("internal", "member", name="agent")
    post = api.post(customer, title="Invoices as PDF")
    users_before, posts_before = _count(api, "user_account"), _count(api, "post")

    idea = {"kind": "idea", "title": "Please add Apple Pay"}
    r = api.client.post("/api/posts", json={**idea, "on_behalf": _on_behalf("x@example.com")}, headers=customer.headers)
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    vote = {"on_behalf": _on_behalf("x@example.com")}
    assert api.client.put(f"/api/posts/{post['id']}/vote", json=vote, headers=customer.headers).status_code == 403
    comment = {"body": "They want it too", "on_behalf": _on_behalf("x@example.com")}
    assert (
        api.client.post(f"/api/posts/{post['id']}/comments", json=comment, headers=customer.headers).status_code == 403
    )
    assert _count(api, "user_account", "email = 'x@example.com'") == 0

    for bad in (
        _on_behalf("not-an-email"),
        _on_behalf("x@example.com", "web"),
        _on_behalf("x@example.com", "phone"),
        _on_behalf("x@example.com", source_url="ftp://tickets.example.com/1"),
        _on_behalf("x@example.com", source_url="javascript:alert(1)"),
        _on_behalf("x@example.com", said_at=(datetime.now(UTC) + timedelta(days=1)).isoformat()),
        {"channel": "support"},
    ):
        r = api.client.post("/api/posts", json={**idea, "on_behalf": bad}, headers=agent.headers)
        assert r.status_code == 422, (bad, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        r = api.client.put(f"/api/posts/{post['id']}/vote", json={"on_behalf": bad}, headers=agent.headers)
        assert r.status_code == 422, (bad, r.text)
    assert (_count(api, "user_account"), _count(api, "post")) == (users_before, posts_before)
    assert _count(api, "vote") == 0 and _count(api, "feedback_capture") == 0

    # An internal post does not exist for a customer: an employee cannot make them vote on it.
    internal = api.post(agent, title="Refund tool for agents", visibility="internal")
    r = api.client.put(f"/api/posts/{internal['id']}/vote", json=vote, headers=agent.headers)
    assert r.status_code == 422 and _count(api, "vote") == 0


def test_votes_and_comments_on_behalf_count_for_the_customer_from_when_they_said_it(api: Api) -> None:
    product = api.make_user("internal", "product", name="product")
    agent = api.make_user("internal", "member", name="agent")
    author, early_web_voter = api.register("author"), api.register("voter")
    post = api.post(author, title="Export invoices as PDF")
    assert api.client.put(f"/api/posts/{post['id']}/vote", headers=early_web_voter.headers).status_code == 200

    said = _ago(days=10)
    body = {"on_behalf": _on_behalf("caller@example.com", "sales", said_at=said)}
    r = api.client.put(f"/api/posts/{post['id']}/vote", json=body, headers=agent.headers)
    assert r.status_code == 200, r.text
    state = r.json()
    assert state["has_voted"] and datetime.fromisoformat(state["voted_at"]) == datetime.fromisoformat(said)
    assert state["votes"] == {"total": 2, "internal": 0, "external": 2}, "the customer's vote, not the employee's"
    again = api.client.put(f"/api/posts/{post['id']}/vote", json=body, headers=agent.headers).json()
    assert again["votes"]["total"] == 2, "idempotent"
    assert _count(api, "feedback_capture", "subject = 'vote'") == 1
    # Who voted, for the product team: the customer first (when they said it), with the channel it came from.
    voters = api.client.get(f"/api/posts/{post['id']}/voters", headers=product.headers).json()["items"]
    assert [(v["user"]["display_name"], v["channel"]) for v in voters] == [("caller", "sales"), ("voter", "web")]
    exported = api.client.get("/api/export/votes.csv", headers=product.headers).text.splitlines()
    assert exported[0].endswith(",channel") and sorted(line.rsplit(",", 1)[1] for line in exported[1:]) == [
        "sales",
        "web",
    ]
    assert api.client.get("/api/export/posts.csv", headers=product.headers).text.splitlines()[1].endswith(",web")
    # The portal's list of voters says so too, in the reader's language.
    browser_login(api.client, product)
    page = api.client.get(f"/posts/{post['id']}", headers={"Accept-Language": "es"}).text
    assert 'data-channel="sales"' in page and "por ventas" in page
    api.client.cookies.clear()

    r = api.client.post(
        f"/api/posts/{post['id']}/comments",
        json={"body": "Needs it for the quarterly close", "on_behalf": _on_behalf("caller@example.com", "sales")},
        headers=agent.headers,
    )
    assert r.status_code == 201, r.text
    comment = r.json()
    assert r.headers["location"] == f"/api/posts/{post['id']}/comments/{comment['id']}"
    assert comment["author"]["display_name"] == "caller" and comment["capture"]["captured_by"]["id"] == agent.id
    staff = api.client.get(f"/api/posts/{post['id']}/comments", headers=agent.headers).json()["items"]
    assert staff[0]["capture"]["channel"] == "sales"
    public = api.client.get(f"/api/posts/{post['id']}/comments", headers=author.headers).json()["items"]
    assert public[0]["capture"] is None and public[0]["author"]["display_name"] == "caller"

    # Credits: the customer said it ten days ago, before the web voter voted.
    r = api.client.post(f"/api/posts/{post['id']}/status", json={"status": "shipped"}, headers=product.headers)
    assert r.status_code == 200
    credits = api.client.get(f"/api/posts/{post['id']}/credits").json()["items"]
    voters = [(c["user"]["display_name"], c["rank"]) for c in credits if c["reason"] == "early_voter"]
    assert voters[0] == ("caller", 1) and voters[1][1] == 2


def test_who_asked_first_goes_by_when_the_customer_said_it(api: Api) -> None:
    product = api.make_user("internal", "product", name="product")
    web_author = api.register("web")
    typed = api.post(web_author, title="Dark mode for the app")
    captured = api.client.post(
        "/api/posts",
        json={
            "kind": "idea",
            "title": "Night theme for the mobile app",
            "on_behalf": _on_behalf("early@example.com", "social", said_at=_ago(days=30)),
        },
        headers=product.headers,
    ).json()
    r = api.client.post(f"/api/posts/{captured['id']}/merge", json={"into": typed["id"]}, headers=product.headers)
    assert r.status_code == 200, r.text
    merged = api.client.get(f"/api/posts/{typed['id']}/merged").json()["items"]
    assert [m["post_id"] for m in merged] == [captured["id"]]
    assert merged[0]["author"]["display_name"] == "early"
    api.client.post(f"/api/posts/{typed['id']}/status", json={"status": "shipped"}, headers=product.headers)
    credits = api.client.get(f"/api/posts/{typed['id']}/credits").json()["items"]
    assert (credits[0]["reason"], credits[0]["user"]["display_name"]) == ("pioneer", "early")


def _capture(api: Api, actor: Actor, title: str, channel: str) -> dict[str, Any]:
    r = api.client.post(
        "/api/posts",
        json={"kind": "idea", "title": title, "on_behalf": _on_behalf(f"{channel}@example.com", channel)},
        headers=actor.headers,
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_lists_and_clusters_are_filtered_and_counted_by_channel(api: Api, drain) -> None:
    product = api.make_user("internal", "product", name="product")
    customer = api.register("customer")
    web = api.post(customer, title="Export invoices to PDF files")
    support = _capture(api, product, "Export invoices to PDF files", "support")
    sales = _capture(api, product, "Keyboard shortcuts for the editor", "sales")
    api.client.put(
        f"/api/posts/{web['id']}/vote",
        json={"on_behalf": _on_behalf("fan@example.com", "store")},
        headers=product.headers,
    )
    api.client.put(f"/api/posts/{web['id']}/vote", headers=customer.headers)

    def ids(**params: Any) -> set[str]:
        page = api.client.get("/api/posts", params=params).json()
        return {p["id"] for p in page["items"]}

    assert ids(channel="support") == {support["id"]}
    assert ids(channel=["support", "sales"]) == {support["id"], sales["id"]}
    assert ids(channel="web") == {web["id"]}

    drain()
    cluster_id = api.client.get(f"/api/posts/{web['id']}", headers=product.headers).json()["cluster_id"]
    assert cluster_id == api.client.get(f"/api/posts/{support['id']}", headers=product.headers).json()["cluster_id"]
    clusters = api.client.get("/api/clusters", params={"channel": "support"}, headers=product.headers).json()["items"]
    assert [c["id"] for c in clusters] == [cluster_id]
    assert clusters[0]["channels"] == {"web": 1, "support": 1}
    assert clusters[0]["voter_channels"] == {"web": 1, "store": 1}
    assert api.client.get("/api/clusters", params={"channel": "store"}, headers=product.headers).json()["items"] == []
    detail = api.client.get(f"/api/clusters/{cluster_id}", headers=product.headers).json()
    assert detail["summary"]["channels"] == {"web": 1, "support": 1}

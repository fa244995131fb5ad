"""The ship-and-credit loop: credits across merged duplicates, notifications, signed webhooks,
critiques addressed, and a ledger that stays exact through un-shipping and concurrent ships."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import Actor, Api, run_sql

NOW = datetime.now(UTC)


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records what it receives."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                failing = receiver.fail_first > 0
                receiver.fail_first -= 1
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/forum"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[str]:
        return [headers["x-forum-event"] for headers, _ in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def _backdate_post(database_url: str, post_id: str, days: int) -> None:
    run_sql(database_url, "UPDATE post SET created_at = :t WHERE id = :p", t=NOW - timedelta(days=days), p=post_id)


def _vote(api: Api, database_url: str, voter: Actor, post_id: str, days_ago: float) -> None:
    assert api.client.put(f"/api/posts/{post_id}/vote", headers=voter.headers).status_code == 200
    run_sql(
        database_url,
        "UPDATE vote SET created_at = :t WHERE post_id = :p AND user_id = :u",
        t=NOW - timedelta(days=days_ago),
        p=post_id,
        u=voter.id,
    )


def _kinds(api: Api, actor: Actor) -> list[str]:
    return [n["kind"] for n in api.client.get("/api/me/notifications?limit=100", headers=actor.headers).json()["items"]]


def test_the_earliest_asker_is_the_pioneer_across_a_merge(api: Api, database_url: str, drain, receiver) -> None:
    admin = api.make_user("internal", "admin")
    product = api.make_user("internal", "product")
    pioneer, later = api.register("pioneer"), api.register("later")
    v_both, v_first, v_second = api.register("both"), api.register("first"), api.register("second")
    employee = api.make_user("internal", "member")
    hook = api.client.post(
        "/api/webhooks", json={"url": receiver.url, "events": ["post.shipped", "credit.awarded"]}, headers=admin.headers
    )
    assert hook.status_code == 201, hook.text
    secret = hook.json()["secret"]

    # A customer asks; a month later another customer asks for the same thing in other words.
    first = api.post(pioneer, title="Let me pause my scooter rental during a stop")
    second = api.post(later, title="Keep the scooter reserved while I grab a coffee")
    _backdate_post(database_url, first["id"], 45)
    _backdate_post(database_url, second["id"], 15)
    _vote(api, database_url, v_both, first["id"], 44)
    _vote(api, database_url, v_first, first["id"], 40)
    _vote(api, database_url, v_both, second["id"], 5)
    _vote(api, database_url, v_second, second["id"], 10)
    _vote(api, database_url, employee, second["id"], 1)

    # The product team merges the earlier post into the later one, then ships the later one.
    r = api.client.post(f"/api/posts/{first['id']}/merge", json={"into": second["id"]}, headers=product.headers)
    assert r.status_code == 200
    r = api.client.post(
        f"/api/posts/{second['id']}/status", json={"status": "shipped", "note": "In 4.2"}, headers=product.headers
    )
    assert r.status_code == 200, r.text

    credits = api.client.get(f"/api/posts/{second['id']}/credits").json()["items"]
    authors = [(c["user"]["id"], c["reason"], c["rank"], c["points"]) for c in credits if c["reason"] != "early_voter"]
    assert authors == [(pioneer.id, "pioneer", 1, 100), (later.id, "author", 2, 80)]
    pioneer_credit = credits[0]
    assert pioneer_credit["source_post_id"] == first["id"], "credited through the merged post"
    voters = [(c["user"]["id"], c["rank"], c["points"]) for c in credits if c["reason"] == "early_voter"]
    assert voters == [(v_both.id, 1, 20), (v_first.id, 2, 18), (v_second.id, 3, 16), (employee.id, 4, 14)], (
        "each voter once, ranked by their original vote time (v_both at 44 days, not 5)"
    )
    both_credit = next(c for c in credits if c["user"]["id"] == v_both.id)
    assert abs(datetime.fromisoformat(both_credit["contributed_at"]) - (NOW - timedelta(days=44))) < timedelta(
        seconds=1
    )

    # Everyone involved hears about it.
    assert "post_merged" in _kinds(api, pioneer)
    for person in (pioneer, later, v_both, v_first, v_second, employee):
        kinds = _kinds(api, person)
        assert "credit_awarded" in kinds, person.email
        assert "status_changed" in kinds, person.email
    assert "status_changed" not in _kinds(api, product), "nobody is told about their own change"

    # A webhook receiver on 127.0.0.1 gets a correctly signed post.shipped.
    drain()
    assert sorted(receiver.events()) == ["credit.awarded", "post.shipped"]
    headers, body = next((h, b) for h, b in receiver.requests if h["x-forum-event"] == "post.shipped")
    expected = hmac.new(secret.encode(), headers["x-forum-timestamp"].encode() + b"." + body, hashlib.sha256)
    assert headers["x-forum-signature"] == "sha256=" + expected.hexdigest()
    payload = json.loads(body)
    assert payload["event"] == "post.shipped" and payload["data"]["post_id"] == second["id"]
    assert [c["reason"] for c in payload["data"]["credits"]][:2] == ["pioneer", "author"]
    log = api.client.get(f"/api/webhooks/{hook.json()['id']}/deliveries", headers=admin.headers).json()
    assert {d["status"] for d in log["items"]} == {"succeeded"} and log["total"] == 2

    # Recognition in the open.
    changelog = api.client.get("/api/changelog").json()
    assert [e["post_id"] for e in changelog["items"]] == [second["id"]]
    assert changelog["items"][0]["credits"][0]["user"]["id"] == pioneer.id
    board = api.client.get("/api/leaderboard").json()["items"]
    assert [row["user"]["id"] for row in board[:2]] == [pioneer.id, later.id] and board[0]["points"] == 100
    external = api.client.get("/api/leaderboard?segment=internal").json()["items"]
    assert [row["user"]["id"] for row in external] == [employee.id]
    mine = api.client.get(f"/api/users/{pioneer.id}/credits").json()
    assert mine["total_points"] == 100 and mine["items"][0]["reason"] == "pioneer"


def _net_points(database_url: str) -> dict[str, int]:
    rows = run_sql(
        database_url, "SELECT user_id::text, sum(points) FROM credit_entry GROUP BY 1 HAVING sum(points) <> 0"
    )
    return dict(rows)


def test_ship_unship_reship_nets_one_ship(api: Api, database_url: str) -> None:
    product = api.make_user("internal", "product")
    author = api.register()
    voters = [api.register() for _ in range(3)]
    post = api.post(author, title="Offline maps")
    for voter in voters:
        api.client.put(f"/api/posts/{post['id']}/vote", headers=voter.headers)
    url = f"/api/posts/{post['id']}/status"
    assert api.client.post(url, json={"status": "shipped"}, headers=product.headers).status_code == 200
    after_one = _net_points(database_url)
    assert after_one == {author.id: 100, voters[0].id: 20, voters[1].id: 18, voters[2].id: 16}
    assert api.client.post(url, json={"status": "shipped"}, headers=product.headers).status_code == 409
    assert api.client.post(url, json={"status": "in_progress"}, headers=product.headers).status_code == 200
    assert _net_points(database_url) == {}, "un-shipping revokes everything"
    assert api.client.get(f"/api/posts/{post['id']}/credits").json()["items"] == []
    assert "credit_revoked" in _kinds(api, author)
    assert api.client.post(url, json={"status": "shipped"}, headers=product.headers).status_code == 200
    assert _net_points(database_url) == after_one
    ledger = run_sql(database_url, "SELECT count(*), count(*) FILTER (WHERE points < 0) FROM credit_entry")[0]
    assert tuple(ledger) == (12, 4), "append-only: 4 credits, 4 compensations, 4 credits again"
    assert api.client.get(f"/api/users/{author.id}/credits").json()["total_points"] == 100


def test_concurrent_ship_requests_credit_once(api: Api, database_url: str) -> None:
    product = api.make_user("internal", "product")
    author = api.register()
    post = api.post(author, title="Family accounts")
    url = f"/api/posts/{post['id']}/status"
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(
            pool.map(
                lambda _: api.client.post(url, json={"status": "shipped"}, headers=product.headers).status_code,
                range(6),
            )
        )
    assert sorted(statuses) == [200] + [409] * 5
    assert _net_points(database_url) == {author.id: 100}
    assert run_sql(database_url, "SELECT count(*) FROM ship_event")[0][0] == 1


def test_critiques_linked_to_an_idea_are_addressed_when_it_ships(api: Api, drain) -> None:
    product = api.make_user("internal", "product")
    customer, critic = api.register(), api.register("critic")
    idea = api.post(customer, title="Pay with Apple Pay")
    critique = api.post(critic, kind="critique", title="Apple Pay payments fail")
    other = api.post(critic, kind="critique", title="Support chat is slow")
    drain()
    h = product.headers
    suggestions = api.client.get(f"/api/posts/{idea['id']}/critique-suggestions", headers=h).json()["items"]
    assert suggestions[0]["post"]["id"] == critique["id"], "the similarity engine suggests the link"
    assert api.client.get(f"/api/posts/{idea['id']}/critique-suggestions", headers=customer.headers).status_code == 403
    url = f"/api/posts/{idea['id']}/critiques"
    assert api.client.post(url, json={"critique_id": critique["id"]}, headers=customer.headers).status_code == 403
    assert api.client.post(url, json={"critique_id": idea["id"]}, headers=h).status_code == 422
    assert (
        api.client.post(
            f"/api/posts/{critique['id']}/critiques", json={"critique_id": other["id"]}, headers=h
        ).status_code
        == 422
    )
    assert api.client.post(url, json={"critique_id": critique["id"]}, headers=h).status_code == 201
    assert api.client.post(url, json={"critique_id": critique["id"]}, headers=h).status_code == 409
    assert [p["id"] for p in api.client.get(url).json()["items"]] == [critique["id"]]
    remaining = api.client.get(f"/api/posts/{idea['id']}/critique-suggestions", headers=h).json()["items"]
    assert critique["id"] not in [s["post"]["id"] for s in remaining]

    api.client.post(f"/api/posts/{idea['id']}/status", json={"status": "shipped"}, headers=h)
    assert api.client.get(f"/api/posts/{critique['id']}").json()["status"] == "addressed"
    assert api.client.get(f"/api/posts/{other['id']}").json()["status"] == "open"
    assert "critique_addressed" in _kinds(api, critic)
    credits = api.client.get(f"/api/posts/{idea['id']}/credits").json()["items"]
    critic_credit = [c for c in credits if c["reason"] == "critic"]
    assert [(c["user"]["id"], c["points"]) for c in critic_credit] == [(critic.id, 30)]

    api.client.post(f"/api/posts/{idea['id']}/status", json={"status": "planned"}, headers=h)
    assert api.client.get(f"/api/posts/{critique['id']}").json()["status"] == "open", "restored when un-shipped"
    assert api.client.delete(f"{url}/{critique['id']}", headers=h).status_code == 204
    assert api.client.delete(f"{url}/{critique['id']}", headers=h).status_code == 404


def test_subscriptions_and_inbox(api: Api) -> None:
    product = api.make_user("internal", "product")
    author, voter, follower, stranger = (api.register() for _ in range(4))
    post = api.post(author, title="Dark mode")
    sub = f"/api/posts/{post['id']}/subscription"
    api.client.put(f"/api/posts/{post['id']}/vote", headers=voter.headers)
    assert api.client.get(sub, headers=voter.headers).json()["subscribed"] is True, "voters follow automatically"
    assert api.client.put(sub, headers=follower.headers).json()["subscribed"] is True
    assert api.client.delete(sub, headers=voter.headers).json()["subscribed"] is False
    api.client.delete(f"/api/posts/{post['id']}/vote", headers=voter.headers)
    api.client.put(f"/api/posts/{post['id']}/vote", headers=voter.headers)
    assert api.client.get(sub, headers=voter.headers).json()["subscribed"] is False, "an opt-out is remembered"

    api.client.post(f"/api/posts/{post['id']}/status", json={"status": "planned"}, headers=product.headers)
    assert _kinds(api, author) == ["status_changed"] and _kinds(api, follower) == ["status_changed"]
    assert _kinds(api, voter) == [] and _kinds(api, stranger) == []
    inbox = api.client.get("/api/me/notifications", headers=author.headers).json()
    assert inbox["unread"] == 1 and inbox["items"][0]["payload"]["to"] == "planned"
    note_id = inbox["items"][0]["id"]
    assert api.client.post(f"/api/me/notifications/{note_id}/read", headers=stranger.headers).status_code == 404
    assert api.client.post(f"/api/me/notifications/{note_id}/read", headers=author.headers).json()["marked"] == 1
    assert api.client.get("/api/me/notifications?unread=true", headers=author.headers).json()["total"] == 0
    api.client.post(f"/api/posts/{post['id']}/status", json={"status": "in_progress"}, headers=product.headers)
    assert api.client.post("/api/me/notifications/read-all", headers=follower.headers).json()["marked"] == 2
    assert api.client.get("/api/me/notifications").status_code == 401


def test_webhooks_are_admin_only_validated_and_retried(api: Api, drain, receiver) -> None:
    admin = api.make_user("internal", "admin")
    product = api.make_user("internal", "product")
    author = api.register()
    body = {"url": receiver.url, "events": ["post.created"]}
    assert api.client.post("/api/webhooks", json=body, headers=product.headers).status_code == 403
    for bad in (
        {"url": "ftp://x.example.com", "events": ["post.created"]},
        {"url": receiver.url, "events": []},
        {"url": receiver.url, "events": ["post.deleted"]},
    ):
        assert api.client.post("/api/webhooks", json=bad, headers=admin.headers).status_code == 422, bad
    hook = api.client.post("/api/webhooks", json=body, headers=admin.headers).json()
    assert "secret" not in api.client.get("/api/webhooks", headers=admin.headers).json()["items"][0], "shown once"
    receiver.fail_first = 1
    api.post(author, title="Webhook me")
    drain(initial_delay=timedelta(milliseconds=10))
    log = api.client.get(f"/api/webhooks/{hook['id']}/deliveries", headers=admin.headers).json()["items"]
    assert [(d["event"], d["status"], d["attempts"]) for d in log] == [("post.created", "succeeded", 2)]
    assert len(receiver.requests) == 2, "a failed delivery is retried"
    assert api.client.delete(f"/api/webhooks/{hook['id']}", headers=admin.headers).status_code == 204


def test_internal_credits_never_leak(api: Api) -> None:
    product = api.make_user("internal", "product")
    employee = api.make_user("internal", "member")
    customer = api.register()
    secret = api.post(employee, title="Internal refund tool", visibility="internal")
    api.client.post(f"/api/posts/{secret['id']}/status", json={"status": "shipped"}, headers=product.headers)
    for headers in ({}, customer.headers):
        assert api.client.get("/api/changelog", headers=headers).json()["total"] == 0
        assert api.client.get("/api/leaderboard", headers=headers).json()["items"] == []
        assert api.client.get(f"/api/users/{employee.id}/credits", headers=headers).json()["total_points"] == 0
        assert api.client.get(f"/api/posts/{secret['id']}/credits", headers=headers).status_code == 404
    assert api.client.get("/api/changelog", headers=employee.headers).json()["total"] == 1
    assert api.client.get("/api/leaderboard", headers=product.headers).json()["items"][0]["points"] == 100

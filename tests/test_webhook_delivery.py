"""Webhooks integrators can build on: votes, comments and cluster changes; test deliveries,
redeliveries, editing, and automatic disabling after failures, with a notice to every admin. Delivered
by the real job queue to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

from tests.conftest import Api, run_sql
from tests.test_credits import Receiver, receiver  # noqa: F401

FAST = {"initial_delay": timedelta(milliseconds=10)}


def _hook(api: Api, admin, url: str, *events: str, **extra) -> dict:
    r = api.client.post("/api/webhooks", json={"url": url, "events": list(events), **extra}, headers=admin.headers)
    assert r.status_code == 201, r.text
    return r.json()


def _received(hooks: Receiver, event: str) -> list[dict]:
    return [json.loads(body)["data"] for headers, body in hooks.requests if headers["x-forum-event"] == event]


def _deliveries(api: Api, admin, hook: dict) -> list[dict]:
    r = api.client.get(f"/api/webhooks/{hook['id']}/deliveries?limit=100", headers=admin.headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_votes_comments_and_cluster_changes_are_delivered_with_visibility(
    api: Api,
    drain,
    receiver: Receiver,  # noqa: F811
) -> None:
    admin = api.make_user("internal", "admin")
    product = api.make_user("internal", "product")
    employee = api.make_user("internal", "member")
    customer = api.register("customer")
    _hook(api, admin, receiver.url, "post.voted", "comment.created", "cluster.changed")
    first = api.post(customer, title="Dark mode for the app")
    drain()
    assert receiver.requests == [], "a post alone in a new cluster changes no cluster"
    second = api.post(customer, title="Please add a dark mode to the app")
    secret = api.post(employee, title="Internal admin console", visibility="internal")

    c = api.client
    assert c.put(f"/api/posts/{first['id']}/vote", headers=customer.headers).status_code == 200
    assert c.put(f"/api/posts/{first['id']}/vote", headers=customer.headers).status_code == 200  # no change
    assert c.delete(f"/api/posts/{first['id']}/vote", headers=customer.headers).status_code == 200
    assert c.delete(f"/api/posts/{first['id']}/vote", headers=customer.headers).status_code == 200  # no change
    assert c.put(f"/api/posts/{secret['id']}/vote", headers=employee.headers).status_code == 200
    comment = c.post(f"/api/posts/{first['id']}/comments", json={"body": "Yes please"}, headers=customer.headers)
    assert comment.status_code == 201, comment.text
    note = {"body": "Needs design", "internal": True}
    assert c.post(f"/api/posts/{secret['id']}/comments", json=note, headers=employee.headers).status_code == 201
    drain()

    # Deliveries run concurrently: they arrive in any order.
    votes = _received(receiver, "post.voted")
    assert sorted((v["post_id"], v["action"], v["visibility"], v["votes"]["total"]) for v in votes) == sorted(
        [
            (first["id"], "voted", "public", 1),
            (first["id"], "unvoted", "public", 0),
            (secret["id"], "voted", "internal", 1),
        ]
    )
    assert next(v for v in votes if v["post_id"] == first["id"])["voter"] == {
        "id": customer.id,
        "display_name": "customer",
        "kind": "external",
    }
    comments = _received(receiver, "comment.created")
    assert sorted((m["post_id"], m["visibility"], m["internal"], m["body"]) for m in comments) == sorted(
        [
            (first["id"], "public", False, "Yes please"),
            (secret["id"], "internal", True, "Needs design"),
        ]
    )
    assert comment.json()["id"] in {m["comment_id"] for m in comments}

    clusters = _received(receiver, "cluster.changed")
    assert len(clusters) == 1, clusters
    grouped = clusters[0]
    assert grouped["change"] == "grouped" and grouped["post"]["post_id"] == second["id"]
    assert {(m["post_id"], m["visibility"]) for m in grouped["members"]} == {
        (first["id"], "public"),
        (second["id"], "public"),
    }
    cluster_id = grouped["cluster_id"]
    assert c.get(f"/api/posts/{second['id']}").json()["cluster_id"] == cluster_id

    # The product team's decision is a change too: the rejected post leaves for a cluster of its own.
    r = c.post(f"/api/clusters/{cluster_id}/members/{second['id']}/reject", headers=product.headers)
    assert r.status_code == 200, r.text
    drain()
    rejected = [e for e in _received(receiver, "cluster.changed") if e["change"] == "rejected"]
    assert {e["cluster_id"] for e in rejected} == {cluster_id, r.json()["cluster_id"]}
    old = next(e for e in rejected if e["cluster_id"] == cluster_id)
    assert [m["post_id"] for m in old["members"]] == [first["id"]]

    # Moved back by hand (its own cluster, left empty, is not sent), then split off again.
    r = c.post(f"/api/posts/{second['id']}/cluster", json={"cluster_id": cluster_id}, headers=product.headers)
    assert r.status_code == 200, r.text
    r = c.post(f"/api/clusters/{cluster_id}/split", json={"post_ids": [second["id"]]}, headers=product.headers)
    assert r.status_code == 201, r.text
    drain()
    changes = [(e["change"], e["cluster_id"], len(e["members"])) for e in _received(receiver, "cluster.changed")]
    assert ("moved", cluster_id, 2) in changes and [c for c in changes if c[0] == "moved"] == [("moved", cluster_id, 2)]
    assert sorted(c for c in changes if c[0] == "split") == sorted(
        [("split", cluster_id, 1), ("split", r.json()["cluster_id"], 1)]
    )


def test_test_delivery_and_redelivery(api: Api, drain, receiver: Receiver) -> None:  # noqa: F811
    admin = api.make_user("internal", "admin")
    hook = _hook(api, admin, receiver.url, "post.created")
    other = _hook(api, admin, receiver.url, "post.shipped")
    r = api.client.post(f"/api/webhooks/{hook['id']}/test", headers=admin.headers)
    assert r.status_code == 202, r.text
    test = r.json()
    assert (test["event"], test["status"], test["attempts"]) == ("webhook.test", "pending", 0)
    # Still being delivered: a redelivery would send it twice.
    r = api.client.post(f"/api/webhooks/{hook['id']}/deliveries/{test['id']}/redeliver", headers=admin.headers)
    assert r.status_code == 409, r.text
    drain()
    headers, body = receiver.requests[0]
    assert headers["x-forum-event"] == "webhook.test" and headers["x-forum-delivery"] == test["id"]
    signature = hmac.new(
        hook["secret"].encode(), headers["x-forum-timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert headers["x-forum-signature"] == f"sha256={signature}"
    assert json.loads(body)["data"]["webhook_id"] == hook["id"]
    [logged] = _deliveries(api, admin, hook)
    assert (logged["status"], logged["attempts"], logged["last_status_code"]) == ("succeeded", 1, 204)

    r = api.client.post(f"/api/webhooks/{hook['id']}/deliveries/{test['id']}/redeliver", headers=admin.headers)
    assert r.status_code == 202, r.text
    again = r.json()
    assert again["id"] != test["id"] and again["redelivery_of"] == test["id"] and again["status"] == "pending"
    drain()
    headers, again_body = receiver.requests[1]
    assert headers["x-forum-delivery"] == again["id"] and headers["x-forum-redelivery-of"] == test["id"]
    assert json.loads(again_body) == json.loads(body), "the same payload"
    log = _deliveries(api, admin, hook)
    assert [(d["id"], d["status"]) for d in log] == [(again["id"], "succeeded"), (test["id"], "succeeded")]

    unknown = "01a209e5-0000-7000-8000-000000000000"
    for path in (
        f"/api/webhooks/{unknown}/test",
        f"/api/webhooks/{hook['id']}/deliveries/{unknown}/redeliver",
        f"/api/webhooks/{other['id']}/deliveries/{test['id']}/redeliver",  # another webhook's delivery
        f"/api/webhooks/{unknown}/deliveries/{test['id']}/redeliver",
    ):
        r = api.client.post(path, headers=admin.headers)
        assert r.status_code == 404, (path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    member = api.register()
    assert api.client.post(f"/api/webhooks/{hook['id']}/test", headers=member.headers).status_code == 403


def test_editing_a_webhook(api: Api, drain, receiver: Receiver, database_url: str) -> None:  # noqa: F811
    admin = api.make_user("internal", "admin")
    author = api.register()
    hook = _hook(api, admin, receiver.url, "post.shipped")
    path = f"/api/webhooks/{hook['id']}"
    new_secret = "a-brand-new-secret-of-some-length"
    r = api.client.patch(
        path, json={"events": ["post.created", "post.voted"], "secret": new_secret}, headers=admin.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["events"] == ["post.created", "post.voted"] and "secret" not in r.json()
    api.post(author, title="Now it is delivered")
    drain()
    headers, body = receiver.requests[0]
    expected = hmac.new(new_secret.encode(), headers["x-forum-timestamp"].encode() + b"." + body, hashlib.sha256)
    assert headers["x-forum-signature"] == f"sha256={expected.hexdigest()}", "signed with the new secret"

    before = api.client.get(path, headers=admin.headers).json()
    for bad in (
        {"url": "http://10.1.2.3/hook"},  # SSRF rules hold on edit too
        {"url": "ftp://example.com/x"},
        {"events": []},
        {"events": ["post.deleted"]},
        {"secret": "short"},
        {"active": "yes"},
        {"colour": "red"},
    ):
        r = api.client.patch(path, json=bad, headers=admin.headers)
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert api.client.get(path, headers=admin.headers).json() == before, "nothing partial written"
    assert run_sql(database_url, "SELECT secret FROM webhook")[0][0] == new_secret

    assert api.client.patch(path, json={"active": False}, headers=admin.headers).json()["active"] is False
    r = api.client.post(f"{path}/test", headers=admin.headers)
    assert r.status_code == 409 and "disabled" in r.json()["detail"]
    api.post(author, title="Not delivered while switched off")
    drain()
    assert len(receiver.requests) == 1
    unknown = "01a209e5-0000-7000-8000-000000000000"
    assert api.client.patch(f"/api/webhooks/{unknown}", json={"active": True}, headers=admin.headers).status_code == 404


def test_a_failing_webhook_is_disabled_and_every_admin_told(
    api: Api,
    drain,
    receiver: Receiver,  # noqa: F811
) -> None:
    admin, other_admin = api.make_user("internal", "admin"), api.make_user("internal", "admin")
    product = api.make_user("internal", "product")
    author = api.register()
    key = api.client.post("/api/keys", json={"name": "Bot", "scopes": ["admin"]}, headers=admin.headers).json()
    hook = _hook(api, admin, receiver.url, "post.created")
    path = f"/api/webhooks/{hook['id']}"
    worker = {**FAST, "max_attempts": 2, "webhook_max_failures": 2}

    # One delivery fails for good (both attempts), then one succeeds: the count starts again.
    receiver.fail_first = 1000
    api.post(author, title="First")
    drain(**worker)
    assert api.client.get(path, headers=admin.headers).json()["consecutive_failures"] == 1
    receiver.fail_first = 0
    api.post(author, title="Second")
    drain(**worker)
    assert api.client.get(path, headers=admin.headers).json()["consecutive_failures"] == 0

    receiver.fail_first = 1000
    for title in ("Third", "Fourth"):
        api.post(author, title=title)
        drain(**worker)
    state = api.client.get(path, headers=admin.headers).json()
    assert state["active"] is False and state["disabled_at"] is not None and state["consecutive_failures"] == 2
    api.post(author, title="Fifth")
    drain(**worker)
    statuses = [d["status"] for d in _deliveries(api, admin, hook)]
    assert statuses == ["failed", "failed", "succeeded", "failed"], "nothing is queued for a disabled webhook"

    for person in (admin, other_admin):
        inbox = api.client.get("/api/me/notifications", headers=person.headers).json()["items"]
        assert [(n["kind"], n["payload"]["webhook_id"]) for n in inbox] == [("webhook_disabled", hook["id"])]
        assert inbox[0]["payload"]["url"] == receiver.url and inbox[0]["post_id"] is None
    assert api.client.get("/api/me/notifications", headers=product.headers).json()["items"] == []
    page = api.client.get("/inbox", cookies={"forum_session": admin.token})
    assert page.status_code == 200 and f"The webhook to {receiver.url} was switched off after 2 failed" in page.text
    bot = {"Authorization": f"Bearer {key['key']}"}
    assert api.client.get("/api/me/notifications", headers=bot).json()["items"] == [], "not the service accounts"

    # Switched on again: a fresh start.
    receiver.fail_first = 0
    state = api.client.patch(path, json={"active": True}, headers=admin.headers).json()
    assert (state["active"], state["consecutive_failures"], state["disabled_at"]) == (True, 0, None)
    api.post(author, title="Sixth")
    drain(**worker)
    assert _deliveries(api, admin, hook)[0]["status"] == "succeeded"

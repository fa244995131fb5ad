"""A person learns of a post only if they may see it: walked path by path as customers.

The hard case is a post made internal *after* it gathered public posts around it: a customer's
duplicate merged into it, a customer's post confirmed in its cluster, a customer's critique it
answers. When it then ships, each customer is credited for their own post, described by it, and no
inbox, ledger, credit list, changelog, leaderboard, history note, ``merged_into`` or vote answer names
the internal post (its title or its id). Employees still see everything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.conftest import Actor, Api
from tests.test_credits import Receiver, receiver  # noqa: F401 (a fixture)

SECRET = "Quokkaquartz"


def _leaks(bodies: dict[str, str], secrets: list[str]) -> list[str]:
    found = []
    for where, body in bodies.items():
        for secret in secrets:
            if (at := body.find(secret)) >= 0:
                found.append(f"{where}: ...{body[max(0, at - 120) : at + len(secret) + 40]}...")
    return found


@dataclass
class Board:
    product: Actor
    employee: Actor
    dup_author: Actor
    member_author: Actor
    voter: Actor
    critic: Actor
    idea: dict[str, Any]
    dup: dict[str, Any]
    member: dict[str, Any]
    critique: dict[str, Any]

    @property
    def customers(self) -> list[Actor]:
        return [self.dup_author, self.member_author, self.voter, self.critic]

    @property
    def public_posts(self) -> list[dict[str, Any]]:
        return [self.dup, self.member, self.critique]


def _board(api: Api, drain) -> Board:
    """An idea gathers a customer's duplicate, a customer's post in its cluster and a customer's critique,
    then the product team makes it internal and ships it."""
    product = api.make_user("internal", "product")
    employee = api.make_user("internal", "member")
    dup_author, member_author = api.register("dup"), api.register("member")
    voter, critic = api.register("voter"), api.register("critic")
    idea = api.post(employee, title=f"{SECRET} instant refunds to cards", body="Agents press one button")
    dup = api.post(dup_author, title="Refund straight to my card")
    member = api.post(member_author, title="Faster refunds please")
    critique = api.post(critic, kind="critique", title="Refunds take weeks")
    h = product.headers
    assert api.client.put(f"/api/posts/{dup['id']}/vote", headers=voter.headers).status_code == 200
    assert api.client.post(f"/api/posts/{dup['id']}/merge", json={"into": idea["id"]}, headers=h).status_code == 200
    link = {"critique_id": critique["id"]}
    assert api.client.post(f"/api/posts/{idea['id']}/critiques", json=link, headers=h).status_code == 201
    drain()
    cluster = api.client.get(f"/api/posts/{idea['id']}", headers=h).json()["cluster_id"]
    assert cluster
    r = api.client.post(f"/api/posts/{member['id']}/cluster", json={"cluster_id": cluster}, headers=h)
    assert r.status_code == 200, r.text

    r = api.client.patch(f"/api/posts/{idea['id']}", json={"visibility": "internal"}, headers=h)
    assert r.status_code == 200, r.text
    r = api.client.post(f"/api/posts/{idea['id']}/status", json={"status": "shipped"}, headers=h)
    assert r.status_code == 200, r.text
    return Board(product, employee, dup_author, member_author, voter, critic, idea, dup, member, critique)


def _customer_views(api: Api, board: Board, who: Actor | None) -> dict[str, str]:
    headers = who.headers if who else {}
    urls = [
        "/api/posts?limit=100",
        "/api/posts?status=duplicate&status=addressed",
        "/api/changelog",
        "/api/leaderboard",
    ]
    urls.append("/api/leaderboard?segment=external")
    for post in board.public_posts:
        urls += [f"/api/posts/{post['id']}{s}" for s in ("", "/history", "/merged", "/credits", "/critiques")]
    for person in board.customers:
        urls.append(f"/api/users/{person.id}/credits")
    if who:
        urls.append("/api/me/notifications?limit=100")
    bodies = {f"GET {url}": api.client.get(url, headers=headers).text for url in urls}
    for post in board.public_posts:
        r = api.client.put(f"/api/posts/{post['id']}/vote", headers=headers)
        bodies[f"PUT vote {post['title']} -> {r.status_code}"] = r.text
    return bodies


def _inbox(api: Api, who: Actor) -> list[dict[str, Any]]:
    return api.client.get("/api/me/notifications?limit=100", headers=who.headers).json()["items"]


def test_an_internal_idea_that_ships_reaches_customers_only_through_their_own_posts(api: Api, drain) -> None:
    board = _board(api, drain)
    secrets = [SECRET, board.idea["id"]]
    for who in [None, *board.customers]:
        leaks = _leaks(_customer_views(api, board, who), secrets)
        assert not leaks, f"{len(leaks)} leak(s) to {who.email if who else 'anonymous'}:\n" + "\n".join(leaks)

    # Each customer is credited for their own post, and told about that post.
    own = {
        board.dup_author.id: board.dup,
        board.member_author.id: board.member,
        board.voter.id: board.dup,  # voted on the duplicate; the vote went with it
        board.critic.id: board.critique,
    }
    for person in board.customers:
        credited = [n for n in _inbox(api, person) if n["kind"] == "credit_awarded"]
        assert len(credited) == 1, person.email
        mine = own[person.id]
        assert credited[0]["post_id"] == credited[0]["payload"]["post_id"] == mine["id"]
        assert credited[0]["payload"]["title"] == mine["title"] and credited[0]["payload"]["points"] > 0
        ledger = api.client.get(f"/api/users/{person.id}/credits", headers=person.headers).json()
        assert ledger["total_points"] == credited[0]["payload"]["points"] > 0, person.email
        assert {(e["post_id"], e["post_title"]) for e in ledger["items"]} == {(mine["id"], mine["title"])}
        assert {e["source_post_id"] for e in ledger["items"]} == {mine["id"]}
        # Anybody else reads the same ledger, named the same way.
        assert api.client.get(f"/api/users/{person.id}/credits").json() == ledger
    board_points = {row["user"]["id"]: row["points"] for row in api.client.get("/api/leaderboard").json()["items"]}
    assert board_points[board.dup_author.id] == 80, "the second asker (after the employee), through their duplicate"
    assert set(own) <= set(board_points)

    # The critique was addressed, and says so without naming the idea.
    addressed = [n for n in _inbox(api, board.critic) if n["kind"] == "critique_addressed"]
    assert len(addressed) == 1 and addressed[0]["payload"] == {
        "post_id": board.critique["id"],
        "title": board.critique["title"],
    }
    critique_history = api.client.get(f"/api/posts/{board.critique['id']}/history").json()["items"]
    assert critique_history[-1]["note"] == "Addressed by an idea that shipped"
    assert api.client.get(f"/api/posts/{board.critique['id']}").json()["status"] == "addressed"

    # The duplicate says it was merged, not into what.
    dup = api.client.get(f"/api/posts/{board.dup['id']}", headers=board.dup_author.headers).json()
    assert (dup["status"], dup["merged_into"]) == ("duplicate", None)
    dup_history = api.client.get(f"/api/posts/{board.dup['id']}/history", headers=board.voter.headers).json()["items"]
    assert dup_history[-1]["note"] == "Merged into another post"
    r = api.client.put(f"/api/posts/{board.dup['id']}/vote", headers=board.critic.headers)
    assert r.status_code == 409 and "merged_into" not in r.json()

    # The employees still see everything, by name.
    h = board.employee.headers
    assert api.client.get(f"/api/posts/{board.dup['id']}", headers=h).json()["merged_into"] == board.idea["id"]
    title = board.idea["title"]
    assert api.client.get(f"/api/posts/{board.dup['id']}/history", headers=h).json()["items"][-1]["note"] == (
        f"Merged into “{title}”"
    )
    assert api.client.get(f"/api/posts/{board.critique['id']}/history", headers=h).json()["items"][-1]["note"] == (
        f"Addressed by “{title}”, now shipped"
    )
    credited = {
        c["user"]["id"] for c in api.client.get(f"/api/posts/{board.idea['id']}/credits", headers=h).json()["items"]
    }
    assert set(own) <= credited
    ledger = api.client.get(f"/api/users/{board.dup_author.id}/credits", headers=h).json()
    assert [(e["post_id"], e["post_title"]) for e in ledger["items"]] == [(board.idea["id"], title)]
    assert ledger["total_points"] == 80
    assert [e["post_id"] for e in api.client.get("/api/changelog", headers=h).json()["items"]] == [board.idea["id"]]


def test_unshipping_it_revokes_through_the_same_posts_and_names_nothing(api: Api, drain) -> None:
    board = _board(api, drain)
    r = api.client.post(
        f"/api/posts/{board.idea['id']}/status", json={"status": "planned"}, headers=board.product.headers
    )
    assert r.status_code == 200, r.text
    secrets = [SECRET, board.idea["id"]]
    for who in [None, *board.customers]:
        leaks = _leaks(_customer_views(api, board, who), secrets)
        assert not leaks, "\n".join(leaks)
    revoked = [n for n in _inbox(api, board.dup_author) if n["kind"] == "credit_revoked"]
    assert [(n["post_id"], n["payload"]["title"]) for n in revoked] == [(board.dup["id"], board.dup["title"])]
    ledger = api.client.get(f"/api/users/{board.dup_author.id}/credits").json()
    assert ledger["total_points"] == 0 and sorted(e["points"] for e in ledger["items"]) == [-80, 80]
    history = api.client.get(f"/api/posts/{board.critique['id']}/history").json()["items"]
    assert history[-1]["note"] == "The idea that addressed it is no longer shipped"
    assert api.client.get(f"/api/posts/{board.critique['id']}").json()["status"] == "open"
    note = api.client.get(f"/api/posts/{board.critique['id']}/history", headers=board.employee.headers).json()["items"][
        -1
    ]
    assert note["note"] == f"“{board.idea['title']}” is no longer shipped"


def test_notifications_about_a_post_made_internal_leave_the_inbox_and_its_counts(api: Api) -> None:
    product = api.make_user("internal", "product")
    author = api.register()
    employee = api.make_user("internal", "member")
    post = api.post(author, title=f"{SECRET} loyalty points")
    other = api.post(author, title="Gift cards")
    h = product.headers
    api.client.put(f"/api/posts/{post['id']}/subscription", headers=employee.headers)
    for target in (post, other):
        api.client.post(f"/api/posts/{target['id']}/status", json={"status": "planned"}, headers=h)
    inbox = api.client.get("/api/me/notifications", headers=author.headers).json()
    assert (inbox["total"], inbox["unread"]) == (2, 2)

    api.client.patch(f"/api/posts/{post['id']}", json={"visibility": "internal"}, headers=h)
    inbox = api.client.get("/api/me/notifications", headers=author.headers).json()
    assert (inbox["total"], inbox["unread"]) == (1, 1)
    assert [n["post_id"] for n in inbox["items"]] == [other["id"]]
    assert SECRET not in json.dumps(inbox) and post["id"] not in json.dumps(inbox)
    assert api.client.get("/api/me/notifications?unread=true", headers=author.headers).json()["total"] == 1
    assert api.client.post("/api/me/notifications/read-all", headers=author.headers).json()["marked"] == 1
    # The employee, who may see it, still has theirs.
    assert api.client.get("/api/me/notifications", headers=employee.headers).json()["total"] == 1


def test_webhooks_are_an_internal_channel_and_say_what_each_post_is(api: Api, drain, receiver: Receiver) -> None:  # noqa: F811
    """Webhooks belong to admins' integrations: they carry internal posts too, each event marked with the
    visibility of the posts it names, so that an integration relaying to customers can leave them out."""
    admin = api.make_user("internal", "admin")
    employee = api.make_user("internal", "member")
    events = ["post.created", "post.status_changed", "post.merged", "post.shipped", "credit.awarded"]
    assert api.client.post("/api/webhooks", json={"url": receiver.url, "events": events}, headers=admin.headers)
    secret = api.post(employee, title=f"{SECRET} console", visibility="internal")
    dup = api.post(employee, title="Another console", visibility="internal")
    h = admin.headers
    api.client.post(f"/api/posts/{dup['id']}/merge", json={"into": secret["id"]}, headers=h)
    api.client.post(f"/api/posts/{secret['id']}/status", json={"status": "shipped"}, headers=h)
    drain()
    payloads = {headers["x-forum-event"]: json.loads(body)["data"] for headers, body in receiver.requests}
    assert set(payloads) == set(events)
    for event, data in payloads.items():
        assert data["visibility"] == "internal", event
    assert payloads["post.merged"]["into_visibility"] == "internal"

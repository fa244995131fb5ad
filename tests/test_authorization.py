"""Who may do what, on every route (OWASP API1 broken object-level and API5 function-level authorization).

``test_authorization_matrix`` sends every route of the app, as each of six actors, and compares the answer
with the expected class (2xx, 401, 403 or 404):

- ``anonymous``: no token;
- ``external``: an external customer, the author of the public objects (post, comment, notifications);
- ``internal``: an employee, the author of the internal objects (internal post, internal note);
- ``product`` and ``admin``: the product team;
- ``other``: another external customer, who owns none of these objects.

``test_matrix_covers_every_route`` enumerates ``app.routes`` (and the OpenAPI paths): a new route
without a matrix entry, or an entry that leaves out an actor, fails it.

The other tests check that a denied request changed nothing, and that internal posts and notes never
leak to outsiders, through any list, search, count, history, notification or credit.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import Actor, Api, run_sql

ACTORS = ("anonymous", "external", "internal", "product", "admin", "other")
OUTSIDERS = ("anonymous", "external", "other")
OK = "2xx"
_unique = itertools.count()


def _expect(default: Any, **overrides: Any) -> dict[str, Any]:
    return {actor: overrides.get(actor, default) for actor in ACTORS}


EVERYONE = _expect(OK)
LOGGED_IN = _expect(OK, anonymous=401)
PRODUCT_TEAM = _expect(403, anonymous=401, product=OK, admin=OK)
ADMIN_ONLY = _expect(403, anonymous=401, admin=OK)
INSIDERS_READ = _expect(404, internal=OK, product=OK, admin=OK)  # an internal object does not exist for others
INSIDERS_WRITE = _expect(404, anonymous=401, internal=OK, product=OK, admin=OK)
STAFF_READ = _expect(404, product=OK, admin=OK)  # a hidden post does not exist for anybody else


def _matches(expected: Any, status: int) -> bool:
    return 200 <= status < 300 if expected == OK else status == expected


# The world the matrix runs in ------------------------------------------------------------------------


@dataclass
class World:
    api: Api
    actors: dict[str, Actor | None]
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def c(self) -> Any:
        return self.api.client

    def actor(self, name: str) -> Actor:
        actor = self.actors[name]
        assert actor is not None
        return actor

    def headers(self, name: str) -> dict[str, str]:
        actor = self.actors[name]
        return actor.headers if actor else {}

    def public_post(self, author: str = "external", **fields: Any) -> str:
        fields.setdefault("title", f"Public idea number {next(_unique)}")
        return self.api.post(self.actor(author), **fields)["id"]

    def internal_post(self, author: str = "internal", **fields: Any) -> str:
        fields.setdefault("title", f"Internal idea number {next(_unique)}")
        return self.api.post(self.actor(author), visibility="internal", **fields)["id"]

    def comment(self, post_id: str, author: str, *, internal: bool = False) -> str:
        r = self.c.post(
            f"/api/posts/{post_id}/comments",
            json={"body": f"Comment {next(_unique)}", "internal": internal},
            headers=self.headers(author),
        )
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def as_product(self, method: str, url: str, **kwargs: Any) -> Any:
        r = self.c.request(method, url, headers=self.headers("product"), **kwargs)
        assert 200 <= r.status_code < 300, (method, url, r.status_code, r.text)
        return r.json() if r.content else None

    def cluster_of(self, post_id: str) -> str:
        cluster_id = self.as_product("GET", f"/api/posts/{post_id}")["cluster_id"]
        assert cluster_id, f"post {post_id} was grouped"
        return cluster_id


def _build_world(api: Api) -> World:
    world = World(
        api,
        {
            "anonymous": None,
            "external": api.register("external"),
            "internal": api.make_user("internal", "member", name="employee"),
            "product": api.make_user("internal", "product", name="product"),
            "admin": api.make_user("internal", "admin", name="admin"),
            "other": api.register("other"),
        },
    )
    ids = world.ids
    ids["public"] = world.public_post(title="Export invoices as PDF", body="For the accountant")
    ids["internal"] = world.internal_post(title="Refund tool for support agents")
    ids["comment"] = world.comment(ids["public"], "external")
    ids["note"] = world.comment(ids["public"], "internal", internal=True)
    ids["critique"] = world.public_post(kind="critique", title="Invoices are hard to find")
    ids["internal_critique"] = world.internal_post(kind="critique", title="Refunds take agents too long")
    world.as_product("POST", f"/api/posts/{ids['public']}/critiques", json={"critique_id": ids["critique"]})
    world.as_product("POST", f"/api/posts/{ids['internal']}/critiques", json={"critique_id": ids["internal_critique"]})
    merged = world.public_post("other", title="Download invoices in PDF")
    world.as_product("POST", f"/api/posts/{merged}/merge", json={"into": ids["public"]})
    internal_merged = world.internal_post(title="Refunds from the support console")
    world.as_product("POST", f"/api/posts/{internal_merged}/merge", json={"into": ids["internal"]})
    world.as_product("POST", f"/api/posts/{ids['public']}/status", json={"status": "planned"})
    notifications = world.c.get("/api/me/notifications", headers=world.headers("external")).json()["items"]
    assert notifications, "the external author heard about the status change"
    ids["notification"] = notifications[0]["id"]
    _add_surveys(world)
    return world


def _add_surveys(world: World) -> None:
    """A survey for everyone and one for employees (both may be answered any time), a customer's
    answer, and a shipped post for the ship report."""
    ids = world.ids
    for key, audience in (("survey", "everyone"), ("internal_survey", "internal")):
        body = {"kind": "nps", "question_en": "Recommend us?", "audience": audience, "throttle_days": 0}
        ids[key] = world.as_product("POST", "/api/surveys", json=body)["id"]
    _survey_answer(world)
    ids["shipped"] = world.public_post(title="Shipped idea for the ship report")
    world.as_product("POST", f"/api/posts/{ids['shipped']}/status", json={"status": "shipped"})


def _survey_answer(w: World) -> str:
    r = w.c.post(
        f"/api/surveys/{w.ids['survey']}/answers",
        json={"score": 3, "comment": "Export invoices as PDF please"},
        headers=w.headers("external"),
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


# The matrix ----------------------------------------------------------------------------------------

Request = tuple[str, str, dict[str, Any] | None]  # method, url, json body


@dataclass
class Case:
    method: str
    route: str  # as in the OpenAPI paths
    label: str
    request: Callable[[World, str, Any], Request]
    expect: dict[str, Any]
    prepare: Callable[[World, str], Any] | None = None
    """Runs for every actor before the queue is drained once: fresh objects that need grouping."""


def _c(method: str, route: str, label: str, expect: dict[str, Any], prepare=None):
    def decorator(request: Callable[[World, str, Any], Request]) -> Case:
        return Case(method, route, label, request, expect, prepare)

    return decorator


def _fresh_webhook(w: World) -> str:
    r = w.c.post(
        "/api/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["post.created"]}, headers=w.headers("admin")
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _fresh_key(w: World) -> str:
    r = w.c.post("/api/keys", json={"name": "Matrix", "scopes": ["read"]}, headers=w.headers("admin"))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _finished_delivery(w: World) -> tuple[str, str]:
    hook = _fresh_webhook(w)
    r = w.c.post(f"/api/webhooks/{hook}/test", headers=w.headers("admin"))
    assert r.status_code == 202, r.text
    run_sql(w.api.database_url, "UPDATE webhook_delivery SET status = 'succeeded' WHERE id = :d", d=r.json()["id"])
    return hook, r.json()["id"]


def _linked_pair(w: World) -> tuple[str, str]:
    idea, critique = w.public_post(), w.public_post("other", kind="critique")
    w.as_product("POST", f"/api/posts/{idea}/critiques", json={"critique_id": critique})
    return idea, critique


def _grouped_pair(w: World, actor: str) -> tuple[str, str]:
    words = f"zq{next(_unique)}x ylem{next(_unique)} vorn{next(_unique)}"
    return w.public_post(title=f"Split {words}"), w.public_post("other", title=f"Split {words}")


def _lone_post(w: World, actor: str) -> str:
    return w.public_post(title=f"Lone qk{next(_unique)}w pj{next(_unique)}v")


def _lone_pair(w: World, actor: str) -> tuple[str, str]:
    return _lone_post(w, actor), _lone_post(w, actor)


def _suggestion(w: World, pair: tuple[str, str]) -> str:
    """A pending suggestion that the second post joins the first's cluster (as a "maybe" would leave)."""
    rows = run_sql(
        w.api.database_url,
        "INSERT INTO cluster_suggestion (id, post_id, cluster_id, score, state, created_at, updated_at) "
        "VALUES (gen_random_uuid(), :post, :cluster, 0.4, 'pending', now(), now()) "
        "ON CONFLICT (post_id, cluster_id) DO UPDATE SET state = 'pending' RETURNING id",
        post=pair[1],
        cluster=w.cluster_of(pair[0]),
    )
    return str(rows[0][0])


def _hidden_post(w: World) -> str:
    post = w.public_post()
    w.as_product("POST", f"/api/posts/{post}/hide")
    return post


def _tag(w: World) -> str:
    return w.as_product("POST", "/api/tags", json={"name": f"tag {next(_unique)}", "colour": "#123abc"})["id"]


CASES: list[Case] = [
    # system and accounts
    _c("GET", "/health", "liveness", EVERYONE)(lambda w, a, x: ("GET", "/health", None)),
    _c("POST", "/api/auth/register", "new account", EVERYONE)(
        lambda w, a, x: (
            "POST",
            "/api/auth/register",
            {"email": f"new{next(_unique)}@example.com", "password": "a long password", "display_name": "New"},
        )
    ),
    _c("POST", "/api/auth/login", "valid credentials", EVERYONE)(
        lambda w, a, x: (
            "POST",
            "/api/auth/login",
            {"email": w.actor("other").email, "password": "correct horse battery"},
        )
    ),
    _c("GET", "/api/me", "own account", LOGGED_IN)(lambda w, a, x: ("GET", "/api/me", None)),
    _c("PATCH", "/api/me", "rename", LOGGED_IN)(lambda w, a, x: ("PATCH", "/api/me", {"display_name": f"{a} renamed"})),
    _c("GET", "/api/users", "all users", ADMIN_ONLY)(lambda w, a, x: ("GET", "/api/users", None)),
    _c("GET", "/api/users/{user_id}", "public profile", EVERYONE)(
        lambda w, a, x: ("GET", f"/api/users/{w.actor('internal').id}", None)
    ),
    _c("PATCH", "/api/users/{user_id}", "another user's kind", ADMIN_ONLY)(
        lambda w, a, x: ("PATCH", f"/api/users/{w.api.register('target').id}", {"kind": "internal"})
    ),
    _c("PATCH", "/api/users/{user_id}", "promote yourself", ADMIN_ONLY)(
        lambda w, a, x: ("PATCH", f"/api/users/{(w.actors[a] or w.actor('external')).id}", {"role": "admin"})
    ),
    _c("GET", "/api/users/{user_id}/credits", "a user's ledger", EVERYONE)(
        lambda w, a, x: ("GET", f"/api/users/{w.actor('internal').id}/credits", None)
    ),
    # posts
    _c("GET", "/api/posts", "list", EVERYONE)(lambda w, a, x: ("GET", "/api/posts?q=invoices", None)),
    _c("POST", "/api/posts", "public post", LOGGED_IN)(
        lambda w, a, x: ("POST", "/api/posts", {"kind": "idea", "title": f"New idea by {a}"})
    ),
    _c("POST", "/api/posts", "internal post", _expect(403, anonymous=401, internal=OK, product=OK, admin=OK))(
        lambda w, a, x: ("POST", "/api/posts", {"kind": "idea", "title": f"Secret by {a}", "visibility": "internal"})
    ),
    _c("POST", "/api/posts", "on a customer's behalf", _expect(403, anonymous=401, internal=OK, product=OK, admin=OK))(
        lambda w, a, x: (
            "POST",
            "/api/posts",
            {
                "kind": "idea",
                "title": f"Captured by {a}",
                "on_behalf": {"email": f"c{a}@example.com", "channel": "support"},
            },
        )
    ),
    _c(
        "PUT",
        "/api/posts/{post_id}/vote",
        "on a customer's behalf",
        _expect(403, anonymous=401, internal=OK, product=OK, admin=OK),
    )(
        lambda w, a, x: (
            "PUT",
            f"/api/posts/{w.ids['public']}/vote",
            {"on_behalf": {"email": f"v{a}@example.com", "channel": "sales"}},
        )
    ),
    _c(
        "POST",
        "/api/posts/{post_id}/comments",
        "on a customer's behalf",
        _expect(403, anonymous=401, internal=OK, product=OK, admin=OK),
    )(
        lambda w, a, x: (
            "POST",
            f"/api/posts/{w.ids['public']}/comments",
            {"body": "Said on the phone", "on_behalf": {"email": f"k{a}@example.com", "channel": "support"}},
        )
    ),
    _c("POST", "/api/posts/similar", "as you type", EVERYONE)(
        lambda w, a, x: ("POST", "/api/posts/similar", {"title": "invoices in PDF"})
    ),
    _c("GET", "/api/posts/{post_id}", "public post", EVERYONE)(
        lambda w, a, x: ("GET", f"/api/posts/{w.ids['public']}", None)
    ),
    _c("GET", "/api/posts/{post_id}", "internal post", INSIDERS_READ)(
        lambda w, a, x: ("GET", f"/api/posts/{w.ids['internal']}", None)
    ),
    _c(
        "PATCH",
        "/api/posts/{post_id}",
        "title of the external's post",
        _expect(403, anonymous=401, external=OK, product=OK, admin=OK),
    )(lambda w, a, x: ("PATCH", f"/api/posts/{w.ids['public']}", {"title": f"Export invoices as PDF ({a})"})),
    _c(
        "PATCH",
        "/api/posts/{post_id}",
        "title of the internal's post",
        _expect(403, anonymous=401, external=404, other=404, internal=OK, product=OK, admin=OK),
    )(lambda w, a, x: ("PATCH", f"/api/posts/{w.ids['internal']}", {"title": f"Refund tool ({a})"})),
    _c("PATCH", "/api/posts/{post_id}", "tags", _expect(403, anonymous=401, external=OK, product=OK, admin=OK))(
        lambda w, a, x: ("PATCH", f"/api/posts/{w.ids['public']}", {"tags": ["billing", a]})
    ),
    _c("PATCH", "/api/posts/{post_id}", "visibility", PRODUCT_TEAM)(
        lambda w, a, x: ("PATCH", f"/api/posts/{w.public_post()}", {"visibility": "internal"})
    ),
    _c("DELETE", "/api/posts/{post_id}", "the external's post", _expect(403, anonymous=401, external=OK, admin=OK))(
        lambda w, a, x: ("DELETE", f"/api/posts/{w.public_post()}", None)
    ),
    _c(
        "DELETE",
        "/api/posts/{post_id}",
        "the internal's post",
        _expect(403, anonymous=401, external=404, other=404, internal=OK, admin=OK),
    )(lambda w, a, x: ("DELETE", f"/api/posts/{w.internal_post()}", None)),
    _c("PUT", "/api/posts/{post_id}/vote", "public post", LOGGED_IN)(
        lambda w, a, x: ("PUT", f"/api/posts/{w.ids['public']}/vote", None)
    ),
    _c("PUT", "/api/posts/{post_id}/vote", "internal post", INSIDERS_WRITE)(
        lambda w, a, x: ("PUT", f"/api/posts/{w.ids['internal']}/vote", None)
    ),
    _c("DELETE", "/api/posts/{post_id}/vote", "public post", LOGGED_IN)(
        lambda w, a, x: ("DELETE", f"/api/posts/{w.ids['public']}/vote", None)
    ),
    _c("DELETE", "/api/posts/{post_id}/vote", "internal post", INSIDERS_WRITE)(
        lambda w, a, x: ("DELETE", f"/api/posts/{w.ids['internal']}/vote", None)
    ),
    _c("POST", "/api/posts/{post_id}/status", "public post", PRODUCT_TEAM)(
        lambda w, a, x: ("POST", f"/api/posts/{w.public_post()}/status", {"status": "under_review"})
    ),
    _c("POST", "/api/posts/{post_id}/status", "internal post", PRODUCT_TEAM)(
        lambda w, a, x: ("POST", f"/api/posts/{w.internal_post()}/status", {"status": "under_review"})
    ),
    _c("GET", "/api/posts/{post_id}/history", "public post", EVERYONE)(
        lambda w, a, x: ("GET", f"/api/posts/{w.ids['public']}/history", None)
    ),
    _c("GET", "/api/posts/{post_id}/history", "internal post", INSIDERS_READ)(
        lambda w, a, x: ("GET", f"/api/posts/{w.ids['internal']}/history", None)
    ),
    # comments
    _c("GET", "/api/posts/{post_id}/comments", "public post", EVERYONE)(
        lambda w, a, x: ("GET", f"/api/posts/{w.ids['public']}/comments", None)
    ),
    _c("GET", "/api/posts/{post_id}/comments", "internal post", INSIDERS_READ)(
        lambda w, a, x: ("GET", f"/api/posts/{w.ids['internal']}/comments", None)
    ),
    _c("POST", "/api/posts/{post_id}/comments", "comment on a public post", LOGGED_IN)(
        lambda w, a, x: ("POST", f"/api/posts/{w.ids['public']}/comments", {"body": f"+1 from {a}"})
    ),
    _c("POST", "/api/posts/{post_id}/comments", "comment on an internal post", INSIDERS_WRITE)(
        lambda w, a, x: ("POST", f"/api/posts/{w.ids['internal']}/comments", {"body": f"+1 from {a}"})
    ),
    _c(
        "POST",
        "/api/posts/{post_id}/comments",
        "internal note",
        _expect(403, anonymous=401, internal=OK, product=OK, admin=OK),
    )(lambda w, a, x: ("POST", f"/api/posts/{w.ids['public']}/comments", {"body": "note", "internal": True})),
    _c(
        "DELETE",
        "/api/posts/{post_id}/comments/{comment_id}",
        "the external's comment",
        _expect(403, anonymous=401, external=OK, admin=OK),
    )(
        lambda w, a, x: (
            "DELETE",
            f"/api/posts/{w.ids['public']}/comments/{w.comment(w.ids['public'], 'external')}",
            None,
        )
    ),
    _c(
        "DELETE",
        "/api/posts/{post_id}/comments/{comment_id}",
        "the internal's note",
        _expect(403, anonymous=401, external=404, other=404, internal=OK, admin=OK),
    )(
        lambda w, a, x: (
            "DELETE",
            f"/api/posts/{w.ids['public']}/comments/{w.comment(w.ids['public'], 'internal', internal=True)}",
            None,
        )
    ),
    # merges
    _c("POST", "/api/posts/{post_id}/merge", "merge", PRODUCT_TEAM)(
        lambda w, a, x: ("POST", f"/api/posts/{w.public_post('other')}/merge", {"into": w.public_post()})
    ),
    _c(
        "POST",
        "/api/posts/{post_id}/unmerge",
        "unmerge",
        PRODUCT_TEAM,
        prepare=lambda w, a: w.as_product(
            "POST", f"/api/posts/{w.public_post('other')}/merge", json={"into": w.public_post()}
        )["source"]["id"],
    )(lambda w, a, source: ("POST", f"/api/posts/{source}/unmerge", None)),
    _c("GET", "/api/posts/{post_id}/merged", "public target", EVERYONE)(
        lambda w, a, x: ("GET", f"/api/posts/{w.ids['public']}/merged", None)
    ),
    _c("GET", "/api/posts/{post_id}/merged", "internal target", INSIDERS_READ)(
        lambda w, a, x: ("GET", f"/api/posts/{w.ids['internal']}/merged", None)
    ),
    # grouping (the prepared posts are embedded and grouped by one drain before the requests)
    _c("GET", "/api/clusters", "list", PRODUCT_TEAM)(lambda w, a, x: ("GET", "/api/clusters", None)),
    _c("GET", "/api/clusters/{cluster_id}", "detail", PRODUCT_TEAM)(
        lambda w, a, x: ("GET", f"/api/clusters/{w.cluster_of(w.ids['public'])}", None)
    ),
    _c("POST", "/api/clusters/{cluster_id}/members/{post_id}/confirm", "confirm", PRODUCT_TEAM)(
        lambda w, a, x: (
            "POST",
            f"/api/clusters/{w.cluster_of(w.ids['public'])}/members/{w.ids['public']}/confirm",
            None,
        )
    ),
    _c("POST", "/api/clusters/{cluster_id}/members/{post_id}/reject", "reject", PRODUCT_TEAM, prepare=_lone_post)(
        lambda w, a, post: ("POST", f"/api/clusters/{w.cluster_of(post)}/members/{post}/reject", None)
    ),
    _c("POST", "/api/clusters/{cluster_id}/split", "split", PRODUCT_TEAM, prepare=_grouped_pair)(
        lambda w, a, pair: ("POST", f"/api/clusters/{w.cluster_of(pair[0])}/split", {"post_ids": [pair[1]]})
    ),
    _c("GET", "/api/clusters/suggestions", "review queue", PRODUCT_TEAM)(
        lambda w, a, x: ("GET", "/api/clusters/suggestions", None)
    ),
    *(
        _c(
            "POST",
            f"/api/clusters/suggestions/{{suggestion_id}}/{decision}",
            decision,
            PRODUCT_TEAM,
            prepare=_lone_pair,
        )(
            lambda w, a, pair, decision=decision: (
                "POST",
                f"/api/clusters/suggestions/{_suggestion(w, pair)}/{decision}",
                None,
            )
        )
        for decision in ("accept", "dismiss")
    ),
    _c("POST", "/api/posts/{post_id}/cluster", "move", PRODUCT_TEAM, prepare=_lone_post)(
        lambda w, a, post: ("POST", f"/api/posts/{post}/cluster", {"cluster_id": w.cluster_of(w.ids["public"])})
    ),
    # critiques
    _c("GET", "/api/posts/{idea_id}/critiques", "public idea", EVERYONE)(
        lambda w, a, x: ("GET", f"/api/posts/{w.ids['public']}/critiques", None)
    ),
    _c("GET", "/api/posts/{idea_id}/critiques", "internal idea", INSIDERS_READ)(
        lambda w, a, x: ("GET", f"/api/posts/{w.ids['internal']}/critiques", None)
    ),
    _c("POST", "/api/posts/{idea_id}/critiques", "link", PRODUCT_TEAM)(
        lambda w, a, x: (
            "POST",
            f"/api/posts/{w.public_post()}/critiques",
            {"critique_id": w.public_post("other", kind="critique")},
        )
    ),
    _c(
        "DELETE",
        "/api/posts/{idea_id}/critiques/{critique_id}",
        "unlink",
        PRODUCT_TEAM,
        prepare=lambda w, a: _linked_pair(w),
    )(lambda w, a, pair: ("DELETE", f"/api/posts/{pair[0]}/critiques/{pair[1]}", None)),
    _c("GET", "/api/posts/{idea_id}/critique-suggestions", "suggestions", PRODUCT_TEAM)(
        lambda w, a, x: ("GET", f"/api/posts/{w.ids['public']}/critique-suggestions", None)
    ),
    # credits
    _c("GET", "/api/posts/{post_id}/credits", "public post", EVERYONE)(
        lambda w, a, x: ("GET", f"/api/posts/{w.ids['public']}/credits", None)
    ),
    _c("GET", "/api/posts/{post_id}/credits", "internal post", INSIDERS_READ)(
        lambda w, a, x: ("GET", f"/api/posts/{w.ids['internal']}/credits", None)
    ),
    _c("GET", "/api/changelog", "changelog", EVERYONE)(lambda w, a, x: ("GET", "/api/changelog", None)),
    _c("GET", "/api/leaderboard", "leaderboard", EVERYONE)(lambda w, a, x: ("GET", "/api/leaderboard", None)),
    # notifications and subscriptions
    _c("GET", "/api/me/notifications", "own inbox", LOGGED_IN)(lambda w, a, x: ("GET", "/api/me/notifications", None)),
    _c("GET", "/api/me/email-preferences", "own", LOGGED_IN)(
        lambda w, a, x: ("GET", "/api/me/email-preferences", None)
    ),
    _c("PATCH", "/api/me/email-preferences", "own", LOGGED_IN)(
        lambda w, a, x: ("PATCH", "/api/me/email-preferences", {"frequency": "daily"})
    ),
    _c("POST", "/api/me/notifications/read-all", "own inbox", LOGGED_IN)(
        lambda w, a, x: ("POST", "/api/me/notifications/read-all", None)
    ),
    _c(
        "POST",
        "/api/me/notifications/{notification_id}/read",
        "the external's notification",
        _expect(404, anonymous=401, external=OK),
    )(lambda w, a, x: ("POST", f"/api/me/notifications/{w.ids['notification']}/read", None)),
    *(
        _c(method, "/api/posts/{post_id}/subscription", f"{kind} post", expect)(
            lambda w, a, x, method=method, kind=kind: (method, f"/api/posts/{w.ids[kind]}/subscription", None)
        )
        for method in ("GET", "PUT", "DELETE")
        for kind, expect in (("public", LOGGED_IN), ("internal", INSIDERS_WRITE))
    ),
    # surveys
    _c("POST", "/api/surveys", "create", PRODUCT_TEAM)(
        lambda w, a, x: ("POST", "/api/surveys", {"kind": "csat", "question_es": f"¿Satisfecho? ({a})"})
    ),
    _c("GET", "/api/surveys", "list", PRODUCT_TEAM)(lambda w, a, x: ("GET", "/api/surveys", None)),
    _c("GET", "/api/surveys/pending", "yours to answer", LOGGED_IN)(
        lambda w, a, x: ("GET", "/api/surveys/pending", None)
    ),
    _c("GET", "/api/surveys/{survey_id}", "for everyone", LOGGED_IN)(
        lambda w, a, x: ("GET", f"/api/surveys/{w.ids['survey']}", None)
    ),
    _c(
        "GET",
        "/api/surveys/{survey_id}",
        "for employees",
        _expect(403, anonymous=401, internal=OK, product=OK, admin=OK),
    )(lambda w, a, x: ("GET", f"/api/surveys/{w.ids['internal_survey']}", None)),
    _c("PATCH", "/api/surveys/{survey_id}", "edit", PRODUCT_TEAM)(
        lambda w, a, x: ("PATCH", f"/api/surveys/{w.ids['survey']}", {"follow_up_en": f"Why? ({a})"})
    ),
    _c("POST", "/api/surveys/{survey_id}/answers", "for everyone", LOGGED_IN)(
        lambda w, a, x: ("POST", f"/api/surveys/{w.ids['survey']}/answers", {"score": 7})
    ),
    _c(
        "POST",
        "/api/surveys/{survey_id}/answers",
        "for employees",
        _expect(403, anonymous=401, internal=OK, product=OK, admin=OK),
    )(lambda w, a, x: ("POST", f"/api/surveys/{w.ids['internal_survey']}/answers", {"score": 7})),
    _c("POST", "/api/surveys/{survey_id}/dismiss", "for everyone", LOGGED_IN)(
        lambda w, a, x: ("POST", f"/api/surveys/{w.ids['survey']}/dismiss", None)
    ),
    *(
        _c("GET", f"/api/surveys/{{survey_id}}/{what}", what, PRODUCT_TEAM)(
            lambda w, a, x, what=what: ("GET", f"/api/surveys/{w.ids['survey']}/{what}", None)
        )
        for what in ("answers", "report", "drivers")
    ),
    _c("GET", "/api/me/survey-answers", "your own answers", LOGGED_IN)(
        lambda w, a, x: ("GET", "/api/me/survey-answers", None)
    ),
    _c("GET", "/api/clusters/{cluster_id}/voices", "voices", PRODUCT_TEAM)(
        lambda w, a, x: ("GET", f"/api/clusters/{w.cluster_of(w.ids['public'])}/voices", None)
    ),
    _c(
        "POST",
        "/api/survey-answers/{answer_id}/post",
        "voice to critique",
        PRODUCT_TEAM,
        prepare=lambda w, a: _survey_answer(w),
    )(lambda w, a, answer_id: ("POST", f"/api/survey-answers/{answer_id}/post", {})),
    _c("GET", "/api/posts/{post_id}/ship-report", "shipped post", PRODUCT_TEAM)(
        lambda w, a, x: ("GET", f"/api/posts/{w.ids['shipped']}/ship-report", None)
    ),
    # the board: the product team's tools, the roadmap, tags and exports
    *(
        _c("GET", f"/api/posts/{{post_id}}/{what}", f"{kind} post", PRODUCT_TEAM)(
            lambda w, a, x, what=what, kind=kind: ("GET", f"/api/posts/{w.ids[kind]}/{what}", None)
        )
        for what in ("voters", "edits")
        for kind in ("public", "internal")
    ),
    _c("POST", "/api/posts/{post_id}/hide", "public post", PRODUCT_TEAM)(
        lambda w, a, x: ("POST", f"/api/posts/{w.public_post()}/hide", None)
    ),
    _c("POST", "/api/posts/{post_id}/unhide", "hidden post", PRODUCT_TEAM, prepare=lambda w, a: _hidden_post(w))(
        lambda w, a, post: ("POST", f"/api/posts/{post}/unhide", None)
    ),
    _c("GET", "/api/posts/{post_id}", "hidden post", STAFF_READ, prepare=lambda w, a: _hidden_post(w))(
        lambda w, a, post: ("GET", f"/api/posts/{post}", None)
    ),
    _c("GET", "/api/roadmap", "roadmap", EVERYONE)(lambda w, a, x: ("GET", "/api/roadmap", None)),
    _c("GET", "/api/roadmap/{column}", "a column", EVERYONE)(lambda w, a, x: ("GET", "/api/roadmap/planned", None)),
    _c("GET", "/api/tags", "list", EVERYONE)(lambda w, a, x: ("GET", "/api/tags", None)),
    _c("POST", "/api/tags", "create", PRODUCT_TEAM)(
        lambda w, a, x: ("POST", "/api/tags", {"name": f"tag {next(_unique)}", "colour": "#336699"})
    ),
    _c("GET", "/api/tags/{tag_id}", "one", EVERYONE, prepare=lambda w, a: _tag(w))(
        lambda w, a, tag: ("GET", f"/api/tags/{tag}", None)
    ),
    _c("PATCH", "/api/tags/{tag_id}", "recolour", PRODUCT_TEAM, prepare=lambda w, a: _tag(w))(
        lambda w, a, tag: ("PATCH", f"/api/tags/{tag}", {"colour": "#000000"})
    ),
    _c("DELETE", "/api/tags/{tag_id}", "unused tag", PRODUCT_TEAM, prepare=lambda w, a: _tag(w))(
        lambda w, a, tag: ("DELETE", f"/api/tags/{tag}", None)
    ),
    *(
        _c("GET", f"/api/export/{kind}.csv", "export", PRODUCT_TEAM)(
            lambda w, a, x, kind=kind: ("GET", f"/api/export/{kind}.csv", None)
        )
        for kind in ("posts", "votes", "clusters", "credits")
    ),
    # webhooks
    _c("GET", "/api/webhooks", "list", ADMIN_ONLY)(lambda w, a, x: ("GET", "/api/webhooks", None)),
    _c("POST", "/api/webhooks", "register", ADMIN_ONLY)(
        lambda w, a, x: ("POST", "/api/webhooks", {"url": "http://127.0.0.1:9/hook", "events": ["post.shipped"]})
    ),
    _c("DELETE", "/api/webhooks/{webhook_id}", "remove", ADMIN_ONLY)(
        lambda w, a, x: ("DELETE", f"/api/webhooks/{_fresh_webhook(w)}", None)
    ),
    _c("GET", "/api/webhooks/{webhook_id}/deliveries", "delivery log", ADMIN_ONLY)(
        lambda w, a, x: ("GET", f"/api/webhooks/{_fresh_webhook(w)}/deliveries", None)
    ),
    _c("GET", "/api/webhooks/{webhook_id}", "one", ADMIN_ONLY)(
        lambda w, a, x: ("GET", f"/api/webhooks/{_fresh_webhook(w)}", None)
    ),
    _c("PATCH", "/api/webhooks/{webhook_id}", "edit", ADMIN_ONLY)(
        lambda w, a, x: ("PATCH", f"/api/webhooks/{_fresh_webhook(w)}", {"events": ["post.voted"]})
    ),
    _c("POST", "/api/webhooks/{webhook_id}/test", "test delivery", ADMIN_ONLY)(
        lambda w, a, x: ("POST", f"/api/webhooks/{_fresh_webhook(w)}/test", None)
    ),
    _c(
        "POST",
        "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
        "redeliver",
        ADMIN_ONLY,
        prepare=lambda w, a: _finished_delivery(w),
    )(lambda w, a, x: ("POST", f"/api/webhooks/{x[0]}/deliveries/{x[1]}/redeliver", None)),
    # API keys
    _c("GET", "/api/keys", "list", ADMIN_ONLY)(lambda w, a, x: ("GET", "/api/keys", None)),
    _c("POST", "/api/keys", "create", ADMIN_ONLY)(
        lambda w, a, x: ("POST", "/api/keys", {"name": "Matrix key", "scopes": ["read"]})
    ),
    _c("GET", "/api/keys/{key_id}", "one", ADMIN_ONLY)(lambda w, a, x: ("GET", f"/api/keys/{_fresh_key(w)}", None)),
    _c("DELETE", "/api/keys/{key_id}", "revoke", ADMIN_ONLY)(
        lambda w, a, x: ("DELETE", f"/api/keys/{_fresh_key(w)}", None)
    ),
]

# Last, whatever is added above: logging out ends the actor's sessions for every case after it.
CASES.append(
    _c("POST", "/api/auth/logout", "end own sessions", LOGGED_IN)(lambda w, a, x: ("POST", "/api/auth/logout", None))
)


def _app_routes(api: Api) -> set[tuple[str, str]]:
    """(method, path) of every API route the app serves, in OpenAPI spelling: without the schema pages and
    the web pages (forum/web, HTML, tested in tests/test_web_*.py)."""
    routes = set()
    for route in api.client.app.routes:
        path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.path)
        if not (path.startswith("/api/") or path == "/health"):
            continue
        for method in getattr(route, "methods", ()):
            if method not in ("HEAD", "OPTIONS"):
                routes.add((method, path))
    return routes


def test_matrix_covers_every_route(api: Api) -> None:
    routes = _app_routes(api)
    spec = api.client.get("/schema/openapi.json").json()
    documented = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert routes == documented, "every route the app serves is in its OpenAPI description, and only those"
    covered = {(case.method, case.route) for case in CASES}
    assert not routes - covered, f"routes without an authorization matrix entry: {sorted(routes - covered)}"
    assert not covered - routes, f"matrix entries for routes that do not exist: {sorted(covered - routes)}"
    for case in CASES:
        assert set(case.expect) == set(ACTORS), f"{case.method} {case.route} ({case.label}) leaves out an actor"
    assert len(routes) >= 48


def test_authorization_matrix(api: Api, drain) -> None:
    world = _build_world(api)
    prepared = {
        (i, actor): case.prepare(world, actor) if case.prepare else None
        for i, case in enumerate(CASES)
        for actor in ACTORS
    }
    drain()  # embeds and groups every post, including the prepared ones
    mismatches = []
    for i, case in enumerate(CASES):
        for actor in ACTORS:
            method, url, body = case.request(world, actor, prepared[(i, actor)])
            r = world.c.request(method, url, json=body, headers=world.headers(actor))
            expected = case.expect[actor]
            if not _matches(expected, r.status_code):
                mismatches.append(
                    f"{case.method} {case.route} [{case.label}] as {actor}: expected {expected}, "
                    f"got {r.status_code} {r.text[:200]}"
                )
    assert not mismatches, f"{len(mismatches)} authorization mismatch(es):\n" + "\n".join(mismatches)


def test_a_bad_or_stale_token_is_rejected_everywhere(api: Api) -> None:
    """A present but invalid token is a 401 on every route (never silently anonymous), except /health."""
    admin = api.make_user("internal", "admin")
    member = api.register("leaving")
    assert (
        api.client.patch(f"/api/users/{member.id}", json={"is_active": False}, headers=admin.headers).json()[
            "is_active"
        ]
        is False
    )
    tampered = admin.token[:-4] + ("AAAA" if not admin.token.endswith("AAAA") else "BBBB")
    bad_headers = {
        "garbage": {"Authorization": "Bearer not-a-jwt"},
        "tampered signature": {"Authorization": f"Bearer {tampered}"},
        "wrong scheme": {"Authorization": f"Basic {admin.token}"},
        "deactivated user": member.headers,
    }
    zero = "00000000-0000-0000-0000-000000000000"
    wrong = []
    for method, path in sorted(_app_routes(api)):
        if path == "/health":
            continue
        url = re.sub(r"\{\w+\}", zero, path)
        body = {} if method in ("POST", "PUT", "PATCH") else None
        for label, headers in bad_headers.items():
            r = api.client.request(method, url, json=body, headers=headers)
            if r.status_code != 401:
                wrong.append(f"{method} {path} with a {label} token: {r.status_code} {r.text[:120]}")
    assert not wrong, "\n".join(wrong)


# Denied requests change nothing (API1) ------------------------------------------------------------


def test_nobody_changes_or_deletes_anothers_post_or_comment(api: Api) -> None:
    owner, other = api.register("owner"), api.register("other")
    employee = api.make_user("internal", "member")
    product = api.make_user("internal", "product")
    post = api.post(owner, title="Original title", body="Original body", tags=["a"])
    url = f"/api/posts/{post['id']}"
    comment = api.client.post(f"{url}/comments", json={"body": "Mine"}, headers=owner.headers).json()
    for actor in (other, employee, product):
        if actor is not product:  # the product team edits any title and body (recorded: test_board_admin.py)
            r = api.client.patch(url, json={"title": "Hijacked", "body": "Hijacked"}, headers=actor.headers)
            assert r.status_code == 403, r.text
        assert api.client.delete(url, headers=actor.headers).status_code == 403
        assert api.client.delete(f"{url}/comments/{comment['id']}", headers=actor.headers).status_code == 403
    for actor in (other, employee):
        assert api.client.patch(url, json={"tags": ["hijacked"]}, headers=actor.headers).status_code == 403
    assert api.client.patch(url, json={"visibility": "internal"}, headers=owner.headers).status_code == 403
    after = api.client.get(url).json()
    assert (after["title"], after["body"], after["tags"], after["visibility"]) == (
        "Original title",
        "Original body",
        ["a"],
        "public",
    )
    assert [c["id"] for c in api.client.get(f"{url}/comments").json()["items"]] == [comment["id"]]
    assert after["comment_count"] == 1


def test_nobody_reads_or_marks_anothers_notifications(api: Api) -> None:
    owner, other = api.register("owner"), api.register("other")
    admin = api.make_user("internal", "admin")
    post = api.post(owner, title="Dark mode")
    for status in ("planned", "in_progress"):
        r = api.client.post(f"/api/posts/{post['id']}/status", json={"status": status}, headers=admin.headers)
        assert r.status_code == 200, r.text
    mine = api.client.get("/api/me/notifications", headers=owner.headers).json()
    assert mine["unread"] == 2 and len(mine["items"]) == 2
    ids = [n["id"] for n in mine["items"]]
    for actor in (other, admin):
        theirs = api.client.get("/api/me/notifications?limit=100", headers=actor.headers).json()
        assert not {n["id"] for n in theirs["items"]} & set(ids), "an inbox shows only its owner's notifications"
        for notification_id in ids:
            r = api.client.post(f"/api/me/notifications/{notification_id}/read", headers=actor.headers)
            assert r.status_code == 404, r.text
        assert api.client.post("/api/me/notifications/read-all", headers=actor.headers).json()["marked"] == 0
    assert api.client.get("/api/me/notifications?unread=true", headers=owner.headers).json()["total"] == 2
    assert api.client.post(f"/api/me/notifications/{ids[0]}/read", headers=owner.headers).json()["marked"] == 1


def test_votes_and_subscriptions_are_per_person(api: Api) -> None:
    owner, voter, other = api.register("owner"), api.register("voter"), api.register("other")
    post = api.post(owner, title="Offline maps")
    url = f"/api/posts/{post['id']}"
    assert api.client.put(f"{url}/vote", headers=voter.headers).json()["votes"]["total"] == 1
    r = api.client.delete(f"{url}/vote", headers=other.headers)
    assert r.status_code == 200 and r.json()["votes"]["total"] == 1, "removing nothing removes nobody else's vote"
    assert api.client.get(url, headers=voter.headers).json()["has_voted"] is True
    assert api.client.get(url, headers=other.headers).json()["has_voted"] is False
    assert api.client.delete(f"{url}/subscription", headers=other.headers).json()["subscribed"] is False
    assert api.client.get(f"{url}/subscription", headers=voter.headers).json()["subscribed"] is True
    assert api.client.get(f"{url}/subscription", headers=owner.headers).json()["subscribed"] is True


def test_members_cannot_raise_their_own_privileges(api: Api) -> None:
    member = api.register("member")
    r = api.client.patch("/api/me", json={"role": "admin"}, headers=member.headers)
    assert r.status_code == 422, r.text
    r = api.client.patch(f"/api/users/{member.id}", json={"role": "admin", "kind": "internal"}, headers=member.headers)
    assert r.status_code == 403, r.text
    me = api.client.get("/api/me", headers=member.headers).json()
    assert (me["role"], me["kind"]) == ("member", "external")
    r = api.client.post(
        "/api/posts", json={"kind": "idea", "title": "Sneaky", "visibility": "internal"}, headers=member.headers
    )
    assert r.status_code == 403, r.text


# Internal posts never leak to outsiders ------------------------------------------------------------

CANARY = "Zanzibarquokka"


def _outsiders(api: Api) -> dict[str, dict[str, str]]:
    return {"anonymous": {}, "customer": api.register("customer").headers, "other": api.register("other").headers}


def _no_leak(bodies: dict[str, str], secrets: list[str]) -> list[str]:
    """Where a secret shows up, with the text around its first occurrence in each body."""
    leaks = []
    for where, body in bodies.items():
        for secret in secrets:
            if (at := body.find(secret)) >= 0:
                leaks.append(f"{where}: ...{body[max(0, at - 150) : at + len(secret) + 40]}...")
    return leaks


def test_internal_posts_never_leak_through_lists_search_counts_or_credits(api: Api, drain) -> None:
    customer = api.register("author")
    employee = api.make_user("internal", "member")
    product = api.make_user("internal", "product")
    public = api.post(customer, title="Refund to my card", body="Refunds take too long", tags=["billing"])
    secret = api.post(
        employee,
        title=f"{CANARY} refund tool",
        body=f"{CANARY} refunds for agents",
        tags=["billing"],
        visibility="internal",
    )
    secret_dup = api.post(employee, title=f"{CANARY} refund console", visibility="internal")
    secret_critique = api.post(employee, kind="critique", title=f"{CANARY} refunds are slow", visibility="internal")
    for headers in (employee.headers, product.headers):
        assert api.client.put(f"/api/posts/{secret['id']}/vote", headers=headers).status_code == 200
    note = {"body": f"{CANARY} note", "internal": True}
    assert (
        api.client.post(f"/api/posts/{public['id']}/comments", json=note, headers=employee.headers).status_code == 201
    )
    assert (
        api.client.post(f"/api/posts/{secret['id']}/comments", json={"body": "x"}, headers=employee.headers).status_code
        == 201
    )
    h = product.headers
    link = {"critique_id": secret_critique["id"]}
    assert api.client.post(f"/api/posts/{public['id']}/critiques", json=link, headers=h).status_code == 201
    assert (
        api.client.post(f"/api/posts/{secret_dup['id']}/merge", json={"into": secret["id"]}, headers=h).status_code
        == 200
    )
    assert (
        api.client.post(f"/api/posts/{secret['id']}/status", json={"status": "shipped"}, headers=h).status_code == 200
    )
    drain()
    secrets = [CANARY, secret["id"], secret_dup["id"], secret_critique["id"]]

    # The insiders see everything, so the checks below are not vacuous.
    every_status = "".join(f"&status={s}" for s in ("open", "shipped", "duplicate"))
    insider = api.client.get(f"/api/posts?q={CANARY}{every_status}", headers=employee.headers).json()
    assert {p["id"] for p in insider["items"]} == {secret["id"], secret_dup["id"], secret_critique["id"]}
    assert insider["total"] == 3
    assert api.client.get("/api/changelog", headers=employee.headers).json()["total"] == 1
    linked = api.client.get(f"/api/posts/{public['id']}/critiques", headers=employee.headers).json()["items"]
    assert [p["id"] for p in linked] == [secret_critique["id"]]
    assert api.client.get(f"/api/posts/{public['id']}", headers=employee.headers).json()["comment_count"] == 1

    for who, headers in _outsiders(api).items():
        bodies: dict[str, str] = {}

        def get(url: str, headers: dict[str, str] = headers, bodies: dict[str, str] = bodies) -> Any:
            r = api.client.get(url, headers=headers)
            bodies[f"GET {url}"] = r.text
            return r

        for sort in ("trending", "top", "new", "discussed", "relevance"):
            page = get(f"/api/posts?sort={sort}&limit=100").json()
            assert page["total"] == 1 == len(page["items"]), (who, sort, page["total"])
        for query in (
            f"q={CANARY}",
            "q=refund",
            "visibility=internal",
            f"author={employee.id}",
            "status=shipped",
            "tag=billing",
        ):
            page = get(f"/api/posts?{query}").json()
            assert page["total"] == len(page["items"]) == (1 if query in ("q=refund", "tag=billing") else 0), (
                who,
                query,
                page,
            )
        r = api.client.post(
            "/api/posts/similar", json={"title": f"{CANARY} refund tool", "min_similarity": -1}, headers=headers
        )
        bodies["POST /api/posts/similar"] = r.text
        assert [s["post"]["id"] for s in r.json()["items"]] == [public["id"]]
        post = get(f"/api/posts/{public['id']}").json()
        assert post["comment_count"] == 0, "internal notes are not counted for outsiders"
        comments = get(f"/api/posts/{public['id']}/comments").json()
        assert comments["total"] == 0 == len(comments["items"])
        for suffix in ("", "/history", "/comments", "/merged", "/credits", "/critiques"):
            assert get(f"/api/posts/{secret['id']}{suffix}").status_code == 404
            assert get(f"/api/posts/{secret_dup['id']}{suffix}").status_code == 404
        for suffix in ("/history", "/merged", "/credits", "/critiques"):
            get(f"/api/posts/{public['id']}{suffix}")
        assert get("/api/changelog").json()["total"] == 0
        assert get("/api/leaderboard").json()["items"] == []
        assert get("/api/leaderboard?segment=internal").json()["total"] == 0
        ledger = get(f"/api/users/{employee.id}/credits").json()
        assert (ledger["total_points"], ledger["total"], ledger["items"]) == (0, 0, [])
        assert get("/api/clusters").status_code in (401, 403)
        if headers:
            get("/api/me/notifications?limit=100")
            assert api.client.get(f"/api/posts/{secret['id']}/subscription", headers=headers).status_code == 404
            assert api.client.put(f"/api/posts/{secret['id']}/subscription", headers=headers).status_code == 404
        assert not _no_leak(bodies, secrets), _no_leak(bodies, secrets)


def _outsider_views(api: Api, headers: dict[str, str], post_ids: list[str]) -> dict[str, str]:
    """Every body an outsider can read about these (public) posts and about themselves."""
    bodies = {}
    urls = ["/api/posts?limit=100", "/api/changelog", "/api/leaderboard"]
    for post_id in post_ids:
        urls += [f"/api/posts/{post_id}{s}" for s in ("", "/history", "/comments", "/merged", "/credits", "/critiques")]
    if headers:
        urls.append("/api/me/notifications?limit=100")
        me = api.client.get("/api/me", headers=headers).json()["id"]
        urls.append(f"/api/users/{me}/credits")
    for url in urls:
        bodies[f"GET {url}"] = api.client.get(url, headers=headers).text
    return bodies


def test_merging_a_public_post_into_an_internal_one_does_not_leak_it(api: Api) -> None:
    """A customer's post merged into an internal post: neither its history, nor the customer's inbox, nor
    the post itself may reveal the internal post (its title or its id). Refusing such a merge is fine too."""
    customer, voter = api.register("customer"), api.register("voter")
    employee = api.make_user("internal", "member")
    product = api.make_user("internal", "product")
    public = api.post(customer, title="Refund to my card")
    assert api.client.put(f"/api/posts/{public['id']}/vote", headers=voter.headers).status_code == 200
    secret = api.post(employee, title=f"{CANARY} refund tool", visibility="internal")
    r = api.client.post(f"/api/posts/{public['id']}/merge", json={"into": secret["id"]}, headers=product.headers)
    if r.status_code != 200:
        assert r.status_code in (409, 422), r.text
        return
    r = api.client.post(f"/api/posts/{secret['id']}/status", json={"status": "shipped"}, headers=product.headers)
    assert r.status_code == 200, r.text
    leaks = []
    for headers in ({}, customer.headers, voter.headers):
        leaks += _no_leak(_outsider_views(api, headers, [public["id"]]), [CANARY, secret["id"]])
        vote = api.client.put(f"/api/posts/{public['id']}/vote", headers=headers)
        leaks += _no_leak({f"PUT vote -> {vote.status_code}": vote.text}, [CANARY, secret["id"]])
    assert not leaks, f"{len(leaks)} leak(s):\n" + "\n".join(leaks)


def test_an_internal_idea_addressing_a_public_critique_does_not_leak(api: Api) -> None:
    """A customer's critique linked to an internal idea that ships: the critique's history, the customer's
    inbox and credits may not reveal the internal idea. Refusing such a link is fine too."""
    critic = api.register("critic")
    employee = api.make_user("internal", "member")
    product = api.make_user("internal", "product")
    critique = api.post(critic, kind="critique", title="Refunds take weeks")
    secret = api.post(employee, title=f"{CANARY} instant refunds", visibility="internal")
    r = api.client.post(
        f"/api/posts/{secret['id']}/critiques", json={"critique_id": critique["id"]}, headers=product.headers
    )
    if r.status_code != 201:
        assert r.status_code in (409, 422), r.text
        return
    r = api.client.post(f"/api/posts/{secret['id']}/status", json={"status": "shipped"}, headers=product.headers)
    assert r.status_code == 200, r.text
    leaks = []
    for headers in ({}, critic.headers):
        leaks += _no_leak(_outsider_views(api, headers, [critique["id"]]), [CANARY, secret["id"]])
    assert not leaks, f"{len(leaks)} leak(s):\n" + "\n".join(leaks)


def test_credits_on_a_public_post_do_not_reveal_internal_posts(api: Api) -> None:
    """An internal post merged into a public one that ships: its author may be credited, but no credit an
    outsider reads points at the internal post (``source_post_id``), which does not exist for them."""
    customer = api.register("customer")
    employee = api.make_user("internal", "member")
    product = api.make_user("internal", "product")
    secret = api.post(employee, title=f"{CANARY} export to PDF", visibility="internal")
    public = api.post(customer, title="Export to PDF")
    h = product.headers
    assert (
        api.client.post(f"/api/posts/{secret['id']}/merge", json={"into": public["id"]}, headers=h).status_code == 200
    )
    assert (
        api.client.post(f"/api/posts/{public['id']}/status", json={"status": "shipped"}, headers=h).status_code == 200
    )
    insiders = api.client.get(f"/api/posts/{public['id']}/credits", headers=employee.headers).json()["items"]
    assert secret["id"] in {c["source_post_id"] for c in insiders}, "the internal author is credited (insiders see why)"
    leaks = []
    for headers in ({}, customer.headers):
        leaks += _no_leak(_outsider_views(api, headers, [public["id"]]), [CANARY, secret["id"]])
    assert not leaks, f"{len(leaks)} leak(s):\n" + "\n".join(leaks)

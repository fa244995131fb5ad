"""One API shape: every list is a page, operation ids read well, 201 names what it created, problems are
typed, bodies are JSON, timestamps have one format, the schema states what the server enforces, and a
generated client comes out of the OpenAPI document without a warning."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from forum.schemas import BLANK
from tests.conftest import Api

PAGE_KEYS = {"items", "total", "limit", "offset"}
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


class World:
    """A small forum with something in every list: a shipped idea with history, a merged duplicate, a
    linked critique, comments, credits and a webhook with deliveries (nothing is embedded: no clusters)."""

    def __init__(self, api: Api) -> None:
        self.api, c = api, api.client
        self.admin = api.make_user("internal", "admin")
        self.product = api.make_user("internal", "product")
        self.customer = api.register("shape-customer")
        self.voter = api.register("shape-voter")
        self.hook = c.post(
            "/api/webhooks",
            json={"url": "http://127.0.0.1:9/hook", "events": ["post.created", "post.shipped", "credit.awarded"]},
            headers=self.admin.headers,
        )
        assert self.hook.status_code == 201, self.hook.text
        self.key = c.post("/api/keys", json={"name": "Shape sync", "scopes": ["read"]}, headers=self.admin.headers)
        assert self.key.status_code == 201, self.key.text
        self.idea = api.post(self.customer, title="Dark mode for the app", body="Too bright at night")
        self.duplicate = api.post(self.voter, title="A dark theme please")
        self.critique = api.post(self.voter, kind="critique", title="The app is too bright at night")
        assert c.put(f"/api/posts/{self.idea['id']}/vote", headers=self.voter.headers).status_code == 200
        self.comment = c.post(
            f"/api/posts/{self.idea['id']}/comments", json={"body": "Yes"}, headers=self.voter.headers
        )
        assert self.comment.status_code == 201
        h = self.product.headers
        self.link = c.post(
            f"/api/posts/{self.idea['id']}/critiques", json={"critique_id": self.critique["id"]}, headers=h
        )
        assert self.link.status_code == 201, self.link.text
        merge = c.post(f"/api/posts/{self.duplicate['id']}/merge", json={"into": self.idea["id"]}, headers=h)
        assert merge.status_code == 200, merge.text
        for status in ("planned", "shipped"):
            r = c.post(f"/api/posts/{self.idea['id']}/status", json={"status": status}, headers=h)
            assert r.status_code == 200, r.text
        edit = c.patch(f"/api/posts/{self.idea['id']}", json={"body": "Far too bright at night"}, headers=h)
        assert edit.status_code == 200, edit.text
        self.tag = c.post("/api/tags", json={"name": "app", "colour": "#336699"}, headers=h)
        assert self.tag.status_code == 201, self.tag.text

    def lists(self) -> dict[str, tuple[str, dict[str, str]]]:
        """Every list endpoint: URL and the headers of someone who may read it."""
        idea, hook = self.idea["id"], self.hook.json()["id"]
        admin = self.admin.headers
        return {
            "listPosts": ("/api/posts?status=shipped", {}),  # the world shipped its one idea
            "listUsers": ("/api/users", admin),
            "listPostHistory": (f"/api/posts/{idea}/history", {}),
            "listComments": (f"/api/posts/{idea}/comments", {}),
            "listMergedPosts": (f"/api/posts/{idea}/merged", {}),
            "listCritiques": (f"/api/posts/{idea}/critiques", {}),
            "listCritiqueSuggestions": (f"/api/posts/{idea}/critique-suggestions", admin),
            "listPostCredits": (f"/api/posts/{idea}/credits", {}),
            "listUserCredits": (f"/api/users/{self.customer.id}/credits", {}),
            "listLeaderboard": ("/api/leaderboard", {}),
            "listChangelog": ("/api/changelog", {}),
            "listClusters": ("/api/clusters", admin),
            "listNotifications": ("/api/me/notifications", self.customer.headers),
            "listWebhooks": ("/api/webhooks", admin),
            "listWebhookDeliveries": (f"/api/webhooks/{hook}/deliveries", admin),
            "listPostVoters": (f"/api/posts/{idea}/voters", admin),
            "listPostEdits": (f"/api/posts/{idea}/edits", admin),
            "listRoadmapColumn": ("/api/roadmap/shipped", {}),
            "listTags": ("/api/tags", {}),
            "listApiKeys": ("/api/keys", admin),
        }


@pytest.fixture
def world(api: Api) -> World:
    return World(api)


def _spec(api: Api) -> dict[str, Any]:
    r = api.client.get("/schema/openapi.json")
    assert r.status_code == 200
    return r.json()


def _operations(spec: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {
        op["operationId"]: (method.upper(), path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in ("get", "put", "post", "delete", "patch")
    }


# Pages ----------------------------------------------------------------------------------------------


def test_every_list_answers_the_same_page(api: Api, world: World) -> None:
    for name, (url, headers) in world.lists().items():
        r = api.client.get(url, headers=headers)
        assert r.status_code == 200, (name, r.text)
        page = r.json()
        assert isinstance(page, dict) and PAGE_KEYS <= set(page), (name, page)
        assert isinstance(page["items"], list) and page["total"] >= len(page["items"]), name
        assert 1 <= page["limit"] <= 100 and page["offset"] == 0, (name, page["limit"], page["offset"])
        assert page["items"] or name in ("listCritiqueSuggestions", "listClusters"), f"{name}: the world fills it"
        # (no clusters nor suggestions: nothing is embedded here; tests/test_grouping.py fills those)
    similar = api.client.post("/api/posts/similar", json={"title": "dark mode", "min_similarity": -1})
    assert PAGE_KEYS <= set(similar.json()) and similar.json()["offset"] == 0


def test_lists_take_limit_and_offset_with_the_bounds_of_posts(api: Api, world: World) -> None:
    idea = world.idea["id"]
    history = api.client.get(f"/api/posts/{idea}/history").json()
    assert history["total"] == 3 == len(history["items"]), "open, planned, shipped"
    second = api.client.get(f"/api/posts/{idea}/history?limit=1&offset=1").json()
    assert (second["total"], second["limit"], second["offset"]) == (3, 1, 1)
    assert [h["to_status"] for h in second["items"]] == ["planned"]
    board = api.client.get("/api/leaderboard?limit=1&offset=1").json()
    assert board["total"] >= 2 and [row["rank"] for row in board["items"]] == [2], "ranks count from the offset"
    past_the_end = api.client.get("/api/leaderboard?offset=1000").json()
    assert past_the_end["items"] == [] and past_the_end["total"] == board["total"]
    for url, _ in world.lists().values():
        for bad in ("limit=0", "limit=101", "offset=-1", "offset=10000001"):
            r = api.client.get(f"{url}?{bad}", headers=world.admin.headers)
            if "critique-suggestions" in url and bad.startswith("offset"):
                continue  # nearest neighbours: a limit (1-20), no offset
            assert r.status_code == 422, (url, bad, r.status_code)


def test_the_ledger_is_a_page_with_its_summary(api: Api, world: World) -> None:
    ledger = api.client.get(f"/api/users/{world.customer.id}/credits?limit=1").json()
    assert set(ledger) == PAGE_KEYS | {"user", "total_points"}
    assert ledger["total"] >= 1 and len(ledger["items"]) == 1 and ledger["total_points"] > 0
    assert ledger["user"]["id"] == world.customer.id
    inbox = api.client.get("/api/me/notifications", headers=world.customer.headers).json()
    assert set(inbox) == PAGE_KEYS | {"unread"}


def test_no_operation_answers_a_bare_array(api: Api) -> None:
    spec = _spec(api)
    schemas = spec["components"]["schemas"]
    for name, (_, _, op) in _operations(spec).items():
        for status, response in op["responses"].items():
            for media in (response.get("content") or {}).values():
                schema = media["schema"]
                if "$ref" in schema:
                    schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
                assert schema.get("type") != "array", (name, status)
                if status.startswith("2") and "items" in schema.get("properties", {}):
                    assert PAGE_KEYS <= set(schema["required"]), (name, schema.get("title"))
    assert {"PostPage", "CommentPage", "StatusChangePage", "LeaderboardRowPage", "WebhookPage"} <= set(schemas)
    assert not [n for n in schemas if n.startswith("Page_")], "pages are named after what they hold"


# Operation ids ----------------------------------------------------------------------------------------


def test_operation_ids_read_like_verbs(api: Api) -> None:
    operations = _operations(_spec(api))
    for name in operations:
        assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", name), name
    expected = {
        "listPosts": ("GET", "/api/posts"),
        "getPost": ("GET", "/api/posts/{post_id}"),
        "createPost": ("POST", "/api/posts"),
        "votePost": ("PUT", "/api/posts/{post_id}/vote"),
        "unvotePost": ("DELETE", "/api/posts/{post_id}/vote"),
        "login": ("POST", "/api/auth/login"),
        "register": ("POST", "/api/auth/register"),
        "health": ("GET", "/health"),
        "listPostHistory": ("GET", "/api/posts/{post_id}/history"),
        "mergePost": ("POST", "/api/posts/{post_id}/merge"),
        "createWebhook": ("POST", "/api/webhooks"),
    }
    assert {name: operations[name][:2] for name in expected} == expected
    total = sum(
        len([m for m in item if m in ("get", "put", "post", "delete", "patch")])
        for item in _spec(api)["paths"].values()
    )
    assert len(operations) == total, "operation ids are unique"


# 201 + Location -----------------------------------------------------------------------------------------


def test_created_answers_name_the_new_resource(api: Api, world: World) -> None:
    c = api.client
    r = c.post(
        "/api/auth/register", json={"email": "loc@example.com", "password": "a long password", "display_name": "L"}
    )
    assert r.status_code == 201 and r.headers["location"] == f"/api/users/{r.json()['id']}"
    assert c.get(r.headers["location"]).json()["id"] == r.json()["id"]
    r = c.post("/api/posts", json={"kind": "idea", "title": "Offline maps"}, headers=world.customer.headers)
    assert r.status_code == 201 and r.headers["location"] == f"/api/posts/{r.json()['id']}"
    assert c.get(r.headers["location"]).json()["title"] == "Offline maps"
    idea = world.idea["id"]
    assert world.comment.headers["location"] == f"/api/posts/{idea}/comments/{world.comment.json()['id']}"
    assert world.link.headers["location"] == f"/api/posts/{idea}/critiques/{world.critique['id']}"
    assert world.link.json()["id"] == world.critique["id"], "the link answers the linked critique"
    assert world.hook.headers["location"] == f"/api/webhooks/{world.hook.json()['id']}"
    assert world.key.headers["location"] == f"/api/keys/{world.key.json()['id']}"
    assert c.get(world.key.headers["location"], headers=world.admin.headers).json()["name"] == "Shape sync"
    spec = _spec(api)
    for name, (_, _, op) in _operations(spec).items():
        if "201" in op["responses"]:
            assert op["responses"]["201"].get("headers", {}).get("Location", {}).get("required"), name


# Problems ---------------------------------------------------------------------------------------------


def _problem(r: Any, status: int, kind: str, title: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert (body["type"], body["title"], body["status"]) == (f"/problems/{kind}", title, status), body
    return body


def test_problems_carry_a_type_per_kind_of_error_and_one_title(api: Api, world: World) -> None:
    c, post = api.client, world.idea["id"]
    _problem(c.get("/api/posts/01a209e5-0000-7000-8000-000000000000"), 404, "not-found", "Not Found")
    _problem(c.post("/api/posts", json={"kind": "idea", "title": "x"}), 401, "unauthorized", "Unauthorized")
    h = world.customer.headers
    _problem(c.get("/api/webhooks", headers=h), 403, "forbidden", "Forbidden")
    bad = _problem(
        c.post("/api/posts", json={"kind": "idea", "title": "x"}, headers=h), 422, "validation", "Unprocessable Content"
    )
    assert bad["errors"][0]["field"] == "title"
    rule = c.post(f"/api/posts/{post}/merge", json={"into": post}, headers=world.product.headers)
    assert _problem(rule, 422, "domain-rule", "Unprocessable Content")["errors"][0]["field"] == "into"
    again = c.post(f"/api/posts/{post}/status", json={"status": "shipped"}, headers=world.product.headers)
    _problem(again, 409, "conflict", "Conflict")
    _problem(
        c.post("/api/posts/01a209e5-0000-7000-8000-000000000000/history"),
        405,
        "method-not-allowed",
        "Method Not Allowed",
    )
    _problem(
        c.post("/api/posts", content=b"{", headers={**h, "content-type": "application/json"}),
        400,
        "bad-request",
        "Bad Request",
    )
    big = b'{"kind": "idea", "title": "big", "body": "' + b"x" * 2_000_000 + b'"}'
    too_big = c.post("/api/posts", content=big, headers={**h, "content-type": "application/json"})
    _problem(too_big, 413, "content-too-large", "Content Too Large")
    for kind in ("not-found", "validation", "domain-rule", "unsupported-media-type", "rate-limited", "unavailable"):
        page = c.get(f"/problems/{kind}")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), kind
        assert f"/problems/{kind}" in page.text
    assert c.get("/problems/no-such-kind").status_code == 404  # a documentation page: the site's HTML 404


# 415 --------------------------------------------------------------------------------------------------


def test_a_body_that_is_not_json_is_415(api: Api, world: World) -> None:
    c, h = api.client, world.customer.headers
    body = json.dumps({"kind": "idea", "title": "Sent as text"}).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml", None):
        headers = {**h, "content-type": content_type} if content_type else h
        r = c.post("/api/posts", content=body, headers=headers)
        problem = _problem(r, 415, "unsupported-media-type", "Unsupported Media Type")
        assert "application/json" in problem["detail"] and r.headers["accept-post"] == "application/json"
    for content_type in ("application/json", "application/json; charset=utf-8", "application/merge-patch+json"):
        r = c.post("/api/posts", content=body, headers={**h, "content-type": content_type})
        assert r.status_code == 201, (content_type, r.text)
    r = c.patch(
        f"/api/posts/{world.idea['id']}", content=b'{"title": "x"}', headers={**h, "content-type": "text/plain"}
    )
    assert r.status_code == 415 and r.headers["accept-patch"] == "application/json"
    assert c.put(f"/api/posts/{world.idea['id']}/vote", headers={**h, "content-type": "text/plain"}).status_code in (
        200,
        409,
    )
    spec = _spec(api)
    for name, (_, _, op) in _operations(spec).items():
        assert ("415" in op["responses"]) == ("requestBody" in op), name


# Unknown query parameters --------------------------------------------------------------------------------


def test_an_unknown_query_parameter_is_422(api: Api) -> None:
    r = api.client.get("/api/posts?limit=5&sort=new&colour=red")
    body = _problem(r, 422, "validation", "Unprocessable Content")
    assert body["errors"] == [{"field": "colour", "message": "not a parameter of this operation", "source": "query"}]
    assert api.client.get("/api/posts?limit=5&sort=new&tag=a&tag=b").status_code == 200
    assert api.client.get("/health?x=1").status_code == 422


# Timestamps -------------------------------------------------------------------------------------------


def test_api_and_webhook_timestamps_share_one_format(api: Api, world: World) -> None:
    post = api.client.get(f"/api/posts/{world.idea['id']}").json()
    assert RFC3339_UTC.match(post["created_at"]) and RFC3339_UTC.match(post["updated_at"])
    deliveries = api.client.get(
        f"/api/webhooks/{world.hook.json()['id']}/deliveries?limit=100", headers=world.admin.headers
    ).json()["items"]
    by_event = {d["event"]: d for d in deliveries}
    assert {"post.created", "post.shipped", "credit.awarded"} <= set(by_event)
    for delivery in deliveries:
        assert RFC3339_UTC.match(delivery["created_at"]), delivery["created_at"]
        assert RFC3339_UTC.match(delivery["payload"]["occurred_at"]), delivery["payload"]["occurred_at"]
    created = [d for d in deliveries if d["event"] == "post.created" and d["payload"]["data"]["post_id"] == post["id"]]
    assert created[0]["payload"]["data"]["created_at"] == post["created_at"], "the same instant, spelled the same"
    for credit in by_event["credit.awarded"]["payload"]["data"]["credits"]:
        assert RFC3339_UTC.match(credit["contributed_at"]), credit


# The schema states what the server enforces -------------------------------------------------------------


def _body_schema(spec: dict[str, Any], name: str) -> Any:
    op = _operations(spec)[name][2]
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = {"$ref": ref, "components": spec["components"]}
    return jsonschema_rs.validator_for(schema)


def test_request_bodies_forbid_unknown_fields_and_state_trimmed_lengths(api: Api, world: World) -> None:
    spec = _spec(api)
    schemas = spec["components"]["schemas"]
    for name, (_, _, op) in _operations(spec).items():
        if "requestBody" in op:
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
            assert schemas[ref]["additionalProperties"] is False, name
    assert schemas["PostCreate"]["properties"]["tags"]["items"]["maxLength"] == 40

    create = _body_schema(spec, "createPost")
    h = world.customer.headers
    titles = ["ab", "abc", "  abc  ", "\x1c\u3000 ab \x85", "a" * 160, "a" * 161, " " + "b" * 160 + "\t", "a\x00bc"]
    for title in titles:
        body = {"kind": "idea", "title": title}
        status = api.client.post("/api/posts", json=body, headers=h).status_code
        assert (status == 201) == create.is_valid(body), (repr(title), status)
    assert (
        api.client.post("/api/posts", json={"kind": "idea", "title": "abc", "color": 1}, headers=h).status_code == 422
    )
    assert not create.is_valid({"kind": "idea", "title": "abc", "color": 1})

    register = _body_schema(spec, "register")
    for email in ("a@b.co", " A@B.CO ", "a@b", "a b@c.de", "a\x1c@b.co", "@b.co", "ü@exämple.de"):
        body = {"email": email, "password": "a long password", "display_name": "Someone"}
        status = api.client.post("/api/auth/register", json=body).status_code
        assert (status in (201, 409)) == register.is_valid(body), (repr(email), status)


def test_blank_is_exactly_what_trimming_removes() -> None:
    blank = re.compile(f"[{BLANK}]")
    every = map(chr, range(sys.maxunicode + 1))
    assert {c for c in every if blank.fullmatch(c)} == {c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()}


# A generated client ----------------------------------------------------------------------------------


def test_openapi_python_client_generates_a_client_without_warnings(api: Api, tmp_path: Path) -> None:
    document = tmp_path / "openapi.json"
    document.write_text(api.client.get("/schema/openapi.json").text)
    out = tmp_path / "forum_client"
    generate = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(document),
            "--output-path",
            str(out),
            "--meta",
            "none",
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = generate.stdout + generate.stderr
    assert generate.returncode == 0, output
    assert "warning" not in output.lower(), output
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import forum_client.api.posts.list_posts as m, forum_client.models as models;"
            "assert hasattr(m, 'sync') and hasattr(models, 'PostPage') and hasattr(models, 'UserCredits')",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr

"""The API surface: OpenAPI, health, problem details for hostile input, CORS and rate limits."""

from __future__ import annotations

import gc
import threading
import time

from litestar.testing import TestClient

from forum.app import create_app
from forum.settings import Settings
from tests.conftest import Api


def test_openapi_and_docs_page(api: Api) -> None:
    r = api.client.get("/schema/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["openapi"].startswith("3.1")
    for path in (
        "/api/auth/register",
        "/api/auth/login",
        "/api/me",
        "/api/users/{user_id}",
        "/api/posts",
        "/api/posts/{post_id}",
        "/api/posts/{post_id}/vote",
        "/api/posts/{post_id}/comments",
        "/api/posts/{post_id}/status",
        "/api/posts/{post_id}/history",
        "/health",
    ):
        assert path in spec["paths"], path
    assert "BearerToken" in spec["components"]["securitySchemes"]
    page = api.client.get("/schema")
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_health_reports_database(api: Api) -> None:
    r = api.client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["database"] == "ok"


def test_health_answers_503_until_the_models_are_loaded(settings: Settings, monkeypatch) -> None:
    """Ready means ready: a server whose models are still loading says so (503, Retry-After), and answers
    200 only once they are loaded and warmed, so a client that waits for /health never meets a cold model."""
    from forum.encoding import PostEmbedder

    loaded = threading.Event()
    load = PostEmbedder.load

    def slow_load(self: PostEmbedder) -> dict[str, int]:
        assert loaded.wait(30), "the test never let the models load"
        return load(self)

    monkeypatch.setattr(PostEmbedder, "load", slow_load)
    with TestClient(app=create_app(settings)) as client:
        r = client.get("/health")
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] and r.json()["models"] == "loading"
        assert r.headers["content-type"].startswith("application/problem+json")
        frozen = gc.get_freeze_count()
        loaded.set()
        deadline = time.monotonic() + 30
        while (r := client.get("/health")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.status_code == 200 and r.json()["models"] == "ready", r.text
        embedder = client.app.state["forum_embedder"]
        assert embedder.dims  # loaded: as-you-type needs no model load from here on
        # What is alive once ready (the models above all) is set apart from the garbage collector, so a
        # full collection no longer walks it and stalls every request (settle_heap).
        assert gc.get_freeze_count() > frozen


def test_hostile_bodies_get_problem_details_not_500(api: Api) -> None:
    user = api.register()
    h = {**user.headers, "Content-Type": "application/json"}
    cases = [
        (b'{"kind": "idea", "title": ', {400}),  # truncated JSON
        (b"not json at all", {400}),
        (b"[]", {400, 422}),
        (b'"just a string"', {400, 422}),
        (b"[" * 100_000 + b"]" * 100_000, {400, 413, 422}),  # deep nesting
        (b'{"kind": "idea", "title": "\\u0000\\u0000 nul"}', {422}),
        (b'{"kind": "idea", "title": "ok title", "tags": [[[[["deep"]]]]]}', {422}),
        (b'{"kind": "idea", "title": "\xff\xfe bad utf8"}', {400, 422}),
        (b'{"kind": "idea", "title": "x", "title": "duplicate keys ok?"}', {201, 422}),
        (b'{"kind": "idea", "title": "big number", "tags": [1e999]}', {400, 422}),
    ]
    for body, allowed in cases:
        r = api.client.post("/api/posts", content=body, headers=h)
        assert r.status_code in allowed, (body[:40], r.status_code, r.text[:200])
        if r.status_code >= 400:
            assert r.headers["content-type"].startswith("application/problem+json"), body[:40]
            assert r.json()["status"] == r.status_code


def test_oversized_body_is_413(api: Api) -> None:
    user = api.register()
    big = b'{"kind": "idea", "title": "big", "body": "' + b"x" * 2_000_000 + b'"}'
    r = api.client.post("/api/posts", content=big, headers={**user.headers, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("application/problem+json")


def test_bad_ids_and_unknown_routes(api: Api) -> None:
    for path in ("/api/posts/not-a-uuid", "/api/posts/123/vote", "/api/nothing-here", "/api/users/%00"):
        r = api.client.get(path)
        assert r.status_code in (404, 405), path
        assert r.headers["content-type"].startswith("application/problem+json"), path
    r = api.client.post("/api/posts/01a209e5-0000-7000-8000-000000000000/history")
    assert r.status_code == 405


def test_cors_for_configured_origins(settings: Settings) -> None:
    settings.cors_origins = ["https://app.example.com"]
    with TestClient(app=create_app(settings)) as client:
        r = client.options(
            "/api/posts",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert r.status_code in (200, 204)
        assert r.headers["access-control-allow-origin"] == "https://app.example.com"
        r = client.get("/api/posts", headers={"Origin": "https://evil.example.net"})
        assert "access-control-allow-origin" not in r.headers


def test_rate_limits_answer_429_with_retry_after(settings: Settings) -> None:
    settings.rate_limit_enabled = True
    settings.rate_limit_auth_per_minute = 3
    with TestClient(app=create_app(settings)) as client:
        statuses = []
        for _ in range(5):
            r = client.post("/api/auth/login", json={"email": "x@example.com", "password": "whatever1"})
            statuses.append(r.status_code)
        assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429]
        assert int(r.headers["Retry-After"]) > 0
        assert r.headers["content-type"].startswith("application/problem+json")
        assert client.get("/api/posts").status_code == 200, "reads are not throttled by the auth limit"

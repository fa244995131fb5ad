"""Abuse limits that hold when scaled out: rate-limit budgets shared through PostgreSQL by every API
process, the as-you-type endpoint's own budget and capped input, webhook destinations that cannot reach
inside the network, and Ctrl-C stopping the embedded PostgreSQL under ``--workers``."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import psutil
import pytest
from litestar.testing import TestClient

from forum.app import create_app
from forum.settings import Settings
from tests.conftest import PASSWORD, Api, run_sql
from tests.e2e import Server, forum_cli, free_port


def _client(settings: Settings, **changes) -> Iterator[TestClient]:
    with TestClient(app=create_app(dataclasses.replace(settings, **changes))) as client:
        yield client


@pytest.fixture
def limited(settings: Settings, api: Api) -> Iterator[TestClient]:
    """An app with rate limits on (small budgets); ``api`` empties the tables afterwards."""
    yield from _client(
        settings,
        rate_limit_enabled=True,
        rate_limit_similar_per_minute=3,
        rate_limit_auth_per_minute=4,
        rate_limit_writes_per_minute=50,
    )


def _away_from_a_minute_boundary(margin: float = 15) -> None:
    """Budgets are per clock minute: start a counting test with at least ``margin`` seconds left in it."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.5)


def test_similar_has_its_own_budget_per_address_with_rate_limit_headers(limited: TestClient, api: Api) -> None:
    _away_from_a_minute_boundary()
    answers = [limited.post("/api/posts/similar", json={"title": "Dark mode"}) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers["ratelimit-remaining"] for r in answers[:3]] == ["2", "1", "0"]
    limited_answer = answers[3]
    assert limited_answer.headers["content-type"].startswith("application/problem+json")
    assert 1 <= int(limited_answer.headers["retry-after"]) <= 60
    assert limited_answer.headers["ratelimit-limit"] == "3"
    assert limited_answer.headers["ratelimit-policy"] == "3; w=60"
    # Other budgets are untouched: registering still works, and reads are never limited.
    r = limited.post("/api/auth/register", json={"email": "x@example.com", "password": PASSWORD, "display_name": "X"})
    assert r.status_code == 201
    assert all(limited.get("/api/posts").status_code == 200 for _ in range(5))


def test_a_limited_request_counts_itself_in_one_statement(
    limited: TestClient, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget's hit is one statement on its own (autocommitted) connection: no BEGIN and COMMIT around
    it, while the request's own work keeps its transaction (issue 14: per-request overhead of a vote)."""
    import asyncpg

    statements: list[str] = []
    for name in ("fetchrow", "execute"):

        def counted(self, query, *args, _original=getattr(asyncpg.Connection, name), **kwargs):  # type: ignore[no-untyped-def]
            statements.append(" ".join(query.split()))
            return _original(self, query, *args, **kwargs)

        monkeypatch.setattr(asyncpg.Connection, name, counted)
    _away_from_a_minute_boundary()
    author = api.register()
    post = api.post(author)
    # The first limited request of the app also connects its engine and cleans up old windows.
    assert limited.put(f"/api/posts/{post['id']}/vote", headers=author.headers).status_code == 200
    statements.clear()
    r = limited.delete(f"/api/posts/{post['id']}/vote", headers=author.headers)
    assert r.status_code == 200, r.text
    assert r.headers["ratelimit-limit"] == "50"
    hits = [s for s in statements if "rate_limit_window" in s]
    assert len(hits) == 1 and hits[0].startswith("INSERT"), statements
    assert sum(s.startswith("BEGIN") for s in statements) == 1, "the vote's transaction only"


def test_similar_caps_what_it_encodes(limited: TestClient) -> None:
    embedder = limited.app.state["forum_embedder"]
    seen: list[str] = []
    original = embedder.encode_query

    async def spy(text: str):
        if text != "warm up":  # the start-up warm-up may still be running
            seen.append(text)
        return await original(text)

    embedder.encode_query = spy
    r = limited.post("/api/posts/similar", json={"title": "Dark mode", "body": "night " * 1_600})  # 9,600 chars
    assert r.status_code == 200, r.text
    assert len(seen) == 1 and len(seen[0]) <= 2_200, len(seen[0])
    too_long = limited.post("/api/posts/similar", json={"title": "Dark mode", "body": "x" * 10_001})
    assert too_long.status_code == 422, "the schema's maximum length holds"
    assert len(seen) == 1, "a refused request never reaches the model"


def test_old_windows_are_cleaned_up(settings: Settings, api: Api, database_url: str) -> None:
    run_sql(
        database_url,
        "INSERT INTO rate_limit_window (key, window_start, hits) VALUES ('write:old', now() - interval '1 hour', 9)",
    )
    for client in _client(settings, rate_limit_enabled=True):
        assert client.post("/api/posts/similar", json={"title": "Anything"}).status_code == 200
    keys = [row[0] for row in run_sql(database_url, "SELECT key FROM rate_limit_window")]
    assert keys == ["similar:testclient"], keys


def test_two_server_processes_share_one_budget(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "FORUM_RATE_LIMIT_AUTH_PER_MINUTE": "6", "FORUM_WORKER_IN_SERVER": "false"}
    assert forum_cli("users", "create", "--email", "a@example.com", "--password", PASSWORD, env=env).returncode == 0
    first = Server(env, free_port(), tmp_path / "first.log")
    second = Server(env, free_port(), tmp_path / "second.log")  # the same data dir: the same database
    first.start()
    try:
        second.start()
        _away_from_a_minute_boundary(20)
        credentials = {"email": "a@example.com", "password": PASSWORD}
        statuses = []
        for server in (first, second, first, second, first, second, first, second):
            statuses.append(httpx.post(f"{server.url}/api/auth/login", json=credentials, timeout=10).status_code)
        assert statuses == [200] * 6 + [429, 429], "one budget of 6 across both processes"
    finally:
        for server in (first, second):
            if server.proc and server.proc.poll() is None:
                server.stop()


WEBHOOK_TARGETS_REFUSED = [
    "http://127.0.0.1:8080/hook",
    "http://127.1/hook",
    "http://2130706433/hook",  # 127.0.0.1 as one decimal number
    "http://localhost:8000/hook",  # a name that resolves to loopback
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://0.0.0.0/hook",
    "http://[::]/hook",
    "http://10.0.0.5/hook",
    "http://172.16.3.4/hook",
    "http://192.168.1.1/hook",
    "http://100.64.0.1/hook",  # carrier-grade NAT
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://[fe80::1]/hook",
    "http://[fd00:ec2::254]/hook",  # fc00::/7, AWS's IPv6 metadata address
    "https://224.0.0.1/hook",
    "http://no-such-host.invalid/hook",
    "http://xn--/hook",  # not a valid IDNA name
    "http://[zz]/hook",
    "http://\u0660/hook",
]


def test_webhooks_to_internal_addresses_are_refused_unless_allowed(settings: Settings, api: Api) -> None:
    admin = api.make_user("internal", "admin")
    for client in _client(settings, webhook_allowed_hosts=[]):
        for url in WEBHOOK_TARGETS_REFUSED:
            r = client.post("/api/webhooks", json={"url": url, "events": ["post.created"]}, headers=admin.headers)
            assert r.status_code == 422, (url, r.status_code, r.text)
            assert [e["field"] for e in r.json()["errors"]] == ["url"], r.text
        public = client.post(
            "/api/webhooks",
            json={"url": "https://93.184.215.14/hook", "events": ["post.created"]},
            headers=admin.headers,
        )
        assert public.status_code == 201, public.text
        assert [h["url"] for h in client.get("/api/webhooks", headers=admin.headers).json()["items"]] == [
            "https://93.184.215.14/hook"
        ]
    for client in _client(settings, webhook_allowed_hosts=["10.0.0.0/8", "localhost", "fd00::/8"]):
        for url in ("http://10.0.0.5/hook", "http://localhost:8000/hook", "http://[fd00:ec2::254]/hook"):
            r = client.post("/api/webhooks", json={"url": url, "events": ["post.created"]}, headers=admin.headers)
            assert r.status_code == 201, (url, r.text)
        r = client.post(
            "/api/webhooks", json={"url": "http://192.168.1.1/", "events": ["post.created"]}, headers=admin.headers
        )
        assert r.status_code == 422, "only what the allowlist names"


def test_webhook_destinations_are_checked_again_at_delivery(api: Api, drain, database_url: str) -> None:
    """Allowed when registered (the tests' allowlist has 127.0.0.1), no longer allowed when delivered: the
    delivery fails at once, without a request and without retries (as after a DNS rebinding)."""
    import socket

    received = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    admin, author = api.make_user("internal", "admin"), api.register()
    hook = api.client.post("/api/webhooks", json={"url": url, "events": ["post.created"]}, headers=admin.headers)
    assert hook.status_code == 201, hook.text
    api.post(author, title="Deliver me")
    drain(webhook_allowed_hosts=[], initial_delay=timedelta(milliseconds=10))
    try:
        received.append(listener.accept())
    except TimeoutError:
        pass
    listener.close()
    assert received == [], "nothing connected to the refused address"
    log = api.client.get(f"/api/webhooks/{hook.json()['id']}/deliveries", headers=admin.headers).json()["items"]
    assert [(d["status"], d["attempts"]) for d in log] == [("failed", 1)]
    assert log[0]["last_error"].startswith("refused: 127.0.0.1 resolves to 127.0.0.1")


def _workers(parent: int) -> list[psutil.Process]:
    """uvicorn's worker processes (not multiprocessing's resource tracker, not the dead)."""
    found = []
    for child in psutil.Process(parent).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def test_ctrl_c_with_workers_stops_the_embedded_postgres(env: dict[str, str], tmp_path: Path) -> None:
    server = Server(env, free_port(), tmp_path / "serve.log", args=("--workers", "2"))
    server.start()
    try:
        assert server.proc is not None
        pgdata = Path(env["FORUM_DATA_DIR"]) / "postgres"
        postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
        # A worker that dies without a word (uvicorn kills one that is slow to answer its ping, or the OOM
        # killer does) must not keep PostgreSQL alive either.
        first = _workers(server.proc.pid)
        assert len(first) == 2
        first[0].kill()
        deadline = time.monotonic() + 60
        while (first[0] in _workers(server.proc.pid) or len(_workers(server.proc.pid)) < 2) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.3)
        time.sleep(5)  # the replacement worker starts (and joins the database)
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200

        assert server.interrupt() == 0, server.log.read_text()[-2000:]
        deadline = time.monotonic() + 30
        while psutil.pid_exists(postmaster) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not psutil.pid_exists(postmaster), "the postmaster outlived `forum serve --workers 2`"
        assert not (pgdata / "postmaster.pid").exists()
    finally:
        if server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(30)

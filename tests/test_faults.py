"""Faults, with the real server: the database goes away and comes back; nothing acknowledged is lost."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.e2e import PASSWORD, Server, forum_cli, login, start_postgres, stop_postgres


def _wait(check, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"not true after {seconds} s: {check}")


def test_database_outage_answers_503_and_recovers_by_itself(server: Server, env: dict[str, str]) -> None:
    created = forum_cli("users", "create", "--email", "writer@example.com", "--password", PASSWORD, env=env)
    assert created.returncode == 0, created.stderr
    server.start()
    data_dir = Path(env["FORUM_DATA_DIR"])
    with httpx.Client(base_url=server.url, timeout=10) as client:
        writer = login(client, "writer@example.com")
        before = client.post("/api/posts", json={"kind": "idea", "title": "Before the outage"}, headers=writer)
        assert before.status_code == 201

        socket_dir = stop_postgres(data_dir)
        for method, path, body in [
            ("GET", "/api/posts", None),
            ("GET", f"/api/posts/{before.json()['id']}", None),
            ("POST", "/api/posts", {"kind": "idea", "title": "During the outage"}),
            ("GET", "/health", None),
        ]:
            r = client.request(method, path, json=body, headers=writer)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert int(r.headers["retry-after"]) > 0

        start_postgres(data_dir, socket_dir)
        _wait(lambda: client.get("/health").status_code == 200, 30)
        after = client.post("/api/posts", json={"kind": "idea", "title": "After the outage"}, headers=writer)
        assert after.status_code == 201, "the API recovered by itself"
        titles = [p["title"] for p in client.get("/api/posts?sort=new").json()["items"]]
        assert titles == ["After the outage", "Before the outage"], "nothing acknowledged was lost"

        def embedded() -> bool:
            return client.get(f"/api/posts/{after.json()['id']}").json()["cluster_id"] is not None

        _wait(embedded, 90)  # the in-server worker reconnected and picked the job up
    assert server.proc is not None and server.proc.poll() is None

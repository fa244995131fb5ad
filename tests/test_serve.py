"""The real ``forum`` command on the embedded default: a fresh data dir, a real server over HTTP, restarts.

This is the README's first command as a newcomer runs it (minus the install), driven with httpx.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from tests.e2e import PASSWORD, Server, forum_cli, login


def test_fresh_data_dir_serves_and_survives_restarts(server: Server, env: dict[str, str]) -> None:
    created = forum_cli(
        "users",
        "create",
        "--email",
        "admin@example.com",
        "--password",
        PASSWORD,
        "--role",
        "admin",
        "--kind",
        "internal",
        env=env,
    )
    assert created.returncode == 0, created.stderr
    assert (Path(env["FORUM_DATA_DIR"]) / "secret_key").exists(), "the JWT secret lives in the data dir"
    assert forum_cli("db", "current", env=env).stdout.split()[1] != "None"

    server.start()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        admin = login(client, "admin@example.com")
        for email in ("customer@example.com", "employee@example.com"):
            r = client.post("/api/auth/register", json={"email": email, "password": PASSWORD, "display_name": email})
            assert r.status_code == 201, r.text
        customer = login(client, "customer@example.com")
        employee = login(client, "employee@example.com")
        employee_id = client.get("/api/me", headers=employee).json()["id"]
        assert client.patch(f"/api/users/{employee_id}", json={"kind": "internal"}, headers=admin).status_code == 200

        idea = client.post("/api/posts", json={"kind": "idea", "title": "Pause a scooter rental"}, headers=customer)
        critique = client.post(
            "/api/posts", json={"kind": "critique", "title": "Support chat is slow"}, headers=employee
        )
        assert idea.status_code == critique.status_code == 201
        for post in (idea.json(), critique.json()):
            for who in (customer, employee):
                assert client.put(f"/api/posts/{post['id']}/vote", headers=who).status_code == 200

        def snapshot(headers: dict[str, str]) -> list[tuple]:
            items = client.get("/api/posts?sort=new", headers=headers).json()["items"]
            return [(p["title"], p["votes"], p["has_voted"], p["author"]["kind"]) for p in items]

        split = {"total": 2, "internal": 1, "external": 1}
        assert snapshot(customer) == [
            ("Support chat is slow", split, True, "internal"),
            ("Pause a scooter rental", split, True, "external"),
        ]
        assert [row[2] for row in snapshot(admin)] == [False, False]
        before = snapshot(customer)

    for how in (signal.SIGTERM, signal.SIGKILL):  # a clean stop, then a crash
        server.stop(how)
        server.start()
        with httpx.Client(base_url=server.url, timeout=10) as client:
            customer = login(client, "customer@example.com")  # the same secret: old and new tokens work
            items = client.get("/api/posts?sort=new", headers=customer).json()["items"]
            assert [(p["title"], p["votes"], p["has_voted"], p["author"]["kind"]) for p in items] == before


def test_cli_help_and_errors(env: dict[str, str]) -> None:
    for args in (["--help"], ["serve", "--help"], ["db", "--help"], ["users", "create", "--help"]):
        r = forum_cli(*args, env=env)
        assert r.returncode == 0 and "Usage" in r.stdout, args
    r = forum_cli("users", "create", "--email", "bad", "--password", PASSWORD, env=env)
    assert r.returncode != 0 and "email" in (r.stderr + r.stdout)
    ok = forum_cli("users", "create", "--email", "twice@example.com", "--password", PASSWORD, env=env)
    assert ok.returncode == 0, ok.stderr
    again = forum_cli("users", "create", "--email", "twice@example.com", "--password", PASSWORD, env=env)
    assert again.returncode != 0 and "already exists" in again.stderr


def test_killed_server_leaves_every_post_embedded_exactly_once(server: Server, env: dict[str, str]) -> None:
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from forum.database import start_embedded_postgres

    assert (
        forum_cli("users", "create", "--email", "writer@example.com", "--password", PASSWORD, env=env).returncode == 0
    )
    server.env = {**env, "FORUM_WORKER_IN_SERVER": "false"}  # posts wait for embedding: no worker runs
    server.start()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        writer = login(client, "writer@example.com")
        ids = [
            client.post(
                "/api/posts", json={"kind": "idea", "title": f"Idea number {i} about maps"}, headers=writer
            ).json()["id"]
            for i in range(25)
        ]
    server.stop(signal.SIGKILL)

    url = start_embedded_postgres(Path(env["FORUM_DATA_DIR"]) / "postgres")

    def query(sql: str) -> list:
        async def run() -> list:
            engine = create_async_engine(url, poolclass=NullPool)
            try:
                async with engine.connect() as conn:
                    return list((await conn.execute(text(sql))).all())
            finally:
                await engine.dispose()

        return asyncio.run(run())

    assert query("SELECT count(*) FROM pgqueuer WHERE status = 'queued'")[0][0] == 25, "every job survived the kill"
    assert query("SELECT count(*) FROM post_embedding")[0][0] == 0

    server.env = env  # now with the worker inside the server
    server.start()
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=server.url, timeout=10) as client:
        while time.monotonic() < deadline:
            items = client.get("/api/posts?limit=100").json()["items"]
            if all(p["cluster_id"] for p in items):
                break
            time.sleep(0.3)
        assert sorted(p["id"] for p in items) == sorted(ids)
        assert all(p["cluster_id"] for p in items), "every post was embedded and grouped"
    first = query("SELECT post_id, embedded_at FROM post_embedding ORDER BY post_id")
    assert len(first) == 25
    # pgqueuer records finished jobs in batches: wait until it has (a job killed before that is picked again
    # after its heartbeat times out, and finds nothing to do: tests/test_faults.py kills a worker mid-job).
    while query("SELECT count(*) FROM pgqueuer")[0][0] and time.monotonic() < deadline + 30:
        time.sleep(0.3)
    server.stop(signal.SIGKILL)  # and once more: nothing is embedded twice
    server.start()
    time.sleep(2)
    assert query("SELECT post_id, embedded_at FROM post_embedding ORDER BY post_id") == first
    assert query("SELECT count(*) FROM pgqueuer WHERE status IN ('queued', 'picked')")[0][0] == 0

"""The real ``forum`` command on the embedded default: a fresh data dir, a real server over HTTP, restarts.

This is the README's first command as a newcomer runs it (minus the install), driven with httpx.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

PASSWORD = "correct horse battery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _forum(*args: str, env: dict[str, str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forum.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


class Server:
    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "forum.cli", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("server did not start:\n" + self.log.read_text()[-3000:])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORUM_")}
    env["FORUM_DATA_DIR"] = str(tmp_path / "forum-data")
    # The fast stand-in encoder: these tests are about the server; test_demo_grouping uses the real model.
    env["FORUM_EMBEDDING_MODEL"] = "hashing"
    return env


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    srv = Server(env, _free_port(), tmp_path / "server.log")
    yield srv
    if srv.proc and srv.proc.poll() is None:
        srv.stop()


def _login(client: httpx.Client, email: str) -> dict[str, str]:
    r = client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_fresh_data_dir_serves_and_survives_restarts(server: Server, env: dict[str, str]) -> None:
    created = _forum(
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
    assert _forum("db", "current", env=env).stdout.split()[1] != "None"

    server.start()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        admin = _login(client, "admin@example.com")
        for email in ("customer@example.com", "employee@example.com"):
            r = client.post("/api/auth/register", json={"email": email, "password": PASSWORD, "display_name": email})
            assert r.status_code == 201, r.text
        customer = _login(client, "customer@example.com")
        employee = _login(client, "employee@example.com")
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
            customer = _login(client, "customer@example.com")  # the same secret: old and new tokens work
            items = client.get("/api/posts?sort=new", headers=customer).json()["items"]
            assert [(p["title"], p["votes"], p["has_voted"], p["author"]["kind"]) for p in items] == before


def test_cli_help_and_errors(env: dict[str, str]) -> None:
    for args in (["--help"], ["serve", "--help"], ["db", "--help"], ["users", "create", "--help"]):
        r = _forum(*args, env=env)
        assert r.returncode == 0 and "Usage" in r.stdout, args
    r = _forum("users", "create", "--email", "bad", "--password", PASSWORD, env=env)
    assert r.returncode != 0 and "email" in (r.stderr + r.stdout)
    ok = _forum("users", "create", "--email", "twice@example.com", "--password", PASSWORD, env=env)
    assert ok.returncode == 0, ok.stderr
    again = _forum("users", "create", "--email", "twice@example.com", "--password", PASSWORD, env=env)
    assert again.returncode != 0 and "already exists" in again.stderr


def test_killed_server_leaves_every_post_embedded_exactly_once(server: Server, env: dict[str, str]) -> None:
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from forum.database import start_embedded_postgres

    assert _forum("users", "create", "--email", "writer@example.com", "--password", PASSWORD, env=env).returncode == 0
    server.env = {**env, "FORUM_WORKER_IN_SERVER": "false"}  # posts wait for embedding: no worker runs
    server.start()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        writer = _login(client, "writer@example.com")
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
    server.stop(signal.SIGKILL)  # and once more: nothing is embedded twice
    server.start()
    time.sleep(2)
    assert query("SELECT post_id, embedded_at FROM post_embedding ORDER BY post_id") == first
    assert query("SELECT count(*) FROM pgqueuer WHERE status IN ('queued', 'picked')")[0][0] == 0

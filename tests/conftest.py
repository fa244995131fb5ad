"""Tests run against a real PostgreSQL with the real Alembic migrations applied.

By default an embedded PostgreSQL is started in a temporary directory for the session. Set
``FORUM_TEST_DATABASE_URL`` to use another server instead: the database it names is migrated and its
tables are emptied between tests, so point it at a throwaway database.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from forum import database
from forum.accounts.services import UserService
from forum.app import create_app
from forum.models import UserKind, UserRole, metadata
from forum.settings import Settings
from tests.e2e import Server, free_port, stop_leftover_postgres

PASSWORD = "correct horse battery"


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    """Argon2id at its smallest cost in this process. At the production cost (3 passes over 64 MiB, 4 lanes)
    each hash and each check took 0.15 s of CPU (0.4 s of wall time on two busy cores); registering and
    signing in a user is one of each, and most tests sign in several users. The code path is the same
    (``forum.auth`` hashes and verifies with argon2id; a hash records its own parameters, so the hashes
    of the ``forum`` processes the tests start still verify here and the other way round). The production
    cost itself is not what these tests check."""
    from argon2 import PasswordHasher

    from forum import auth

    production = auth._hasher, auth._DUMMY_HASH
    auth._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    auth._DUMMY_HASH = auth._hasher.hash("not-a-real-password")
    yield
    auth._hasher, auth._DUMMY_HASH = production


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("FORUM_TEST_DATABASE_URL")
    if url:
        url = database.normalise_async_url(url)
    else:
        url = database.start_embedded_postgres(tmp_path_factory.mktemp("pg") / "postgres", "forum_test")
        _run(_no_durability(url))
    database.upgrade(url)
    return url


async def _no_durability(url: str) -> None:
    """The session's own throwaway server skips the flushes to disk that only a crash of the machine would
    need (every commit and every TRUNCATE waited on fsync). Only this server: the tests of crashes and
    outages run ``forum serve`` on data dirs of their own, with the defaults."""
    engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                await conn.execute(text(f"ALTER SYSTEM SET {setting} = off"))
            await conn.execute(text("SELECT pg_reload_conf()"))
    finally:
        await engine.dispose()


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _truncate(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            names = [t.name for t in metadata.sorted_tables] + ["pgqueuer", "pgqueuer_log", "pgqueuer_statistics"]
            tables = ", ".join(f'"{name}"' for name in names)
            await conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key="test-secret-key-that-is-long-enough-for-hs256",
        rate_limit_enabled=False,
        embedding_model="hashing",  # a deterministic stand-in; the real model has tests of its own
        duplicate_threshold=0.45,  # calibrated for the hashing encoder's scale, not MiniLM's
        run_worker_in_server=False,  # tests drain the queue explicitly with the `drain` fixture
        webhook_allowed_hosts=["127.0.0.1"],  # the tests' webhook receivers listen on loopback
    )


@dataclass
class Actor:
    id: str
    email: str
    token: str
    kind: str
    role: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Api:
    """The test client plus helpers to make users of every kind and role."""

    _ids = itertools.count()

    def __init__(self, client: TestClient, database_url: str) -> None:
        self.client = client
        self.database_url = database_url

    def register(self, name: str | None = None) -> Actor:
        n = next(self._ids)
        email = f"{name or 'user'}{n}@example.com"
        r = self.client.post(
            "/api/auth/register",
            json={"email": email, "password": PASSWORD, "display_name": name or f"User {n}"},
        )
        assert r.status_code == 201, r.text
        return self.login(email, r.json()["id"])

    def login(self, email: str, user_id: str) -> Actor:
        r = self.client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        me = self.client.get("/api/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}).json()
        return Actor(id=user_id, email=email, token=r.json()["access_token"], kind=me["kind"], role=me["role"])

    def make_user(self, kind: str = "external", role: str = "member", name: str | None = None) -> Actor:
        """A user created directly in the database (as ``forum users create`` does), then logged in."""
        n = next(self._ids)
        email = f"{name or kind + '-' + role}{n}@example.com"

        async def create() -> str:
            engine = create_async_engine(self.database_url, poolclass=NullPool)
            try:
                async with async_sessionmaker(engine, expire_on_commit=False)() as session:
                    user = await UserService(session=session).register(
                        email=email,
                        password=PASSWORD,
                        display_name=name or f"{kind} {role} {n}",
                        kind=UserKind(kind),
                        role=UserRole(role),
                    )
                    await session.commit()
                    return str(user.id)
            finally:
                await engine.dispose()

        return self.login(email, _run(create()))

    def post(self, actor: Actor, **fields: Any) -> dict[str, Any]:
        body = {"kind": "idea", "title": "A post title", **fields}
        r = self.client.post("/api/posts", json=body, headers=actor.headers)
        assert r.status_code == 201, r.text
        return r.json()


_built_apps: list[tuple[Settings, Litestar]] = []


def _app_for(settings: Settings) -> Litestar:
    """``create_app(settings)``, built once per distinct settings and reused by the tests that ask for the same.

    Building the app (registering ~270 handlers, the OpenAPI document) took 0.3 to 1 s per test; the
    settings differ between tests by their data dir only, which nothing reads when ``database_url`` is set.
    The app is built from a private copy; each test's own ``settings`` object is then put in its state, so a
    test that changes a setting mid-test (``settings.grouping_mode = "suggest"``) is read as before. Every
    test still starts and stops the app (its lifespan: embedder, engine, warm-up) in its own TestClient.
    """
    key = dataclasses.replace(settings, data_dir=Path("/"))
    app = next((built_app for built, built_app in _built_apps if built == key), None)
    if app is None:
        app = create_app(copy.deepcopy(key))
        app.on_shutdown.append(_close_pooled_connections)
        _built_apps.append((copy.deepcopy(key), app))
        del _built_apps[:-4]  # a few only: a module's own settings fixture may make new ones per test
    app.state["forum_settings"] = settings
    return app


async def _close_pooled_connections(app: Litestar) -> None:
    """The next test serves the same app from another event loop, where these connections cannot be used.
    (advanced-alchemy disposes the engine at shutdown only for the first config of a process: the others'
    state keys get a suffix that its check does not look for.)"""
    await app.state["forum_alchemy_config"].get_engine().dispose()


@pytest.fixture
def client(settings: Settings, database_url: str) -> Iterator[TestClient]:
    with TestClient(app=_app_for(settings)) as test_client:
        yield test_client
    _run(_truncate(database_url))


@pytest.fixture
def api(client: TestClient, database_url: str) -> Api:
    return Api(client, database_url)


class QueryCounter:
    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.statements.append(statement)

    @property
    def count(self) -> int:
        return len(self.statements)


@pytest.fixture
def count_queries() -> Iterator[QueryCounter]:
    counter = QueryCounter()
    event.listen(Engine, "before_cursor_execute", counter)
    yield counter
    event.remove(Engine, "before_cursor_execute", counter)


@pytest.fixture
def driver_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements run by asyncpg's ``Connection.fetch`` itself: the driver-statement paths (as-you-type,
    board pages) that ``count_queries`` (SQLAlchemy's execution events) does not see."""
    import asyncpg

    statements: list[str] = []
    fetch = asyncpg.Connection.fetch

    async def counted_fetch(self, query, *args, **kwargs):  # type: ignore[no-untyped-def]
        statements.append(query)
        return await fetch(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "fetch", counted_fetch)
    return statements


@pytest.fixture
def drain(database_url: str, settings: Settings):
    """Run the embedding worker until the queue is empty (the app's own worker is off in tests)."""
    from forum.encoding import PostEmbedder, get_encoder
    from forum.worker import BackgroundWorker

    def run(**kwargs: Any) -> dict[str, int]:
        encoder = kwargs.pop("encoder", None) or get_encoder(settings.embedding_model)
        threshold = kwargs.pop("threshold", settings.duplicate_threshold)
        kwargs.setdefault("webhook_allowed_hosts", settings.webhook_allowed_hosts)
        worker = BackgroundWorker(database_url, PostEmbedder(encoder), threshold, **kwargs)
        _run(worker.run(drain=True))
        return worker.processed

    return run


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for a real `forum` process on a fresh embedded data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORUM_")}
    env["FORUM_DATA_DIR"] = str(tmp_path / "forum-data")
    # The fast stand-in encoder: these tests are about the server; test_demo_grouping uses the real model.
    env["FORUM_EMBEDDING_MODEL"] = "hashing"
    yield env
    stop_leftover_postgres(Path(env["FORUM_DATA_DIR"]))


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    srv = Server(env, free_port(), tmp_path / "server.log")
    yield srv
    if srv.proc and srv.proc.poll() is None:
        srv.stop()


def run_sql(database_url: str, statement: str, **params: Any) -> list:
    """Run one SQL statement on its own connection (to set up or inspect state); returns its rows."""

    async def run() -> list:
        engine = create_async_engine(database_url, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(text(statement), params)
                return list(result.all()) if result.returns_rows else []
        finally:
            await engine.dispose()

    return _run(run())

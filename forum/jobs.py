"""Embedding and grouping posts: the body of the ``post.embed`` job (run by forum/worker.py).

- Jobs are idempotent: a job re-reads the post and does nothing when its current text is already
  embedded by this encoder (``content_hash``), so a retried or duplicated job embeds nothing twice.
- Jobs running at the same moment are embedded as one batch (:class:`EmbedCollector`), in two stages:
  reading the posts and encoding them (:func:`read_and_encode`), then one transaction that stores the
  vectors and groups the posts under the cluster lock (:func:`write_and_group`). The next batch is read
  and encoded while the current one is written, so the model does not wait on PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import numpy as np
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from forum.encoding import PostEmbedder, PostVectors, content_hash, post_language, post_text
from forum.grouping.consolidation import MAX_POSTS_PER_PASS, ConsolidationReport, Consolidator
from forum.grouping.labels import cluster_members
from forum.grouping.services import GroupingService
from forum.grouping.thresholds import Thresholds, effective_thresholds
from forum.models import Post, PostEmbedding
from forum.queue import stale_post_ids
from forum.webhooks.schemas import WebhookEvent
from forum.webhooks.services import emit_cluster_changed, subscribers

MAX_ROUNDS = 5  # a post edited while it is being encoded is encoded again, this many times at most


@dataclass
class _Pending:
    post_id: UUID
    text: str
    digest: str
    missing: list[str]
    created_at: Any


@dataclass
class EncodedBatch:
    """What :func:`read_and_encode` found: each post's outcome so far, and the posts still to write with
    their new vectors."""

    outcomes: dict[UUID, str] = field(default_factory=dict)
    work: list[_Pending] = field(default_factory=list)
    vectors: dict[UUID, dict[str, np.ndarray]] = field(default_factory=dict)


async def read_and_encode(
    session_maker: async_sessionmaker[AsyncSession],
    embedder: PostEmbedder,
    post_ids: Sequence[UUID],
) -> EncodedBatch:
    """Read the posts and their stored content hashes (no lock), and encode the texts whose vectors are
    missing or stale: one model call per encoder. A deleted or missing post is ``gone``; one whose vectors
    are all current is ``unchanged``."""
    await embedder.ready()
    todo = list(dict.fromkeys(post_ids))
    batch = EncodedBatch()
    async with session_maker() as session:
        posts = {
            row.id: row
            for row in await session.execute(
                select(Post.id, Post.title, Post.body, Post.language, Post.deleted_at, Post.created_at).where(
                    Post.id.in_(todo)
                )
            )
        }
        stored = await _stored_hashes(session, embedder, todo)
    for post_id in todo:
        post = posts.get(post_id)
        if post is None or post.deleted_at is not None:
            batch.outcomes[post_id] = "gone"
            continue
        text_ = post_text(post.title, post.body)
        digest = content_hash(text_)
        missing = [model for model in embedder.models if stored[post_id].get(model) != digest]
        if not missing and post.language is not None:
            batch.outcomes[post_id] = "unchanged"
            continue
        batch.work.append(_Pending(post_id, text_, digest, missing, post.created_at))
    batch.vectors = {item.post_id: {} for item in batch.work}
    for model in embedder.models:
        needing = [item for item in batch.work if model in item.missing]
        if needing:
            batcher = embedder.batchers[model]
            texts = [item.text for item in needing]
            encoded = await batcher.encode_many(texts)
            for item, vector in zip(needing, encoded, strict=True):
                batch.vectors[item.post_id][model] = vector
    return batch


async def _stored_hashes(
    session: AsyncSession, embedder: PostEmbedder, post_ids: Sequence[UUID]
) -> dict[UUID, dict[str, str]]:
    stored: dict[UUID, dict[str, str]] = {post_id: {} for post_id in post_ids}
    for row in await session.execute(
        select(PostEmbedding.post_id, PostEmbedding.model, PostEmbedding.content_hash).where(
            PostEmbedding.post_id.in_(list(post_ids)), PostEmbedding.model.in_(embedder.models)
        )
    ):
        stored[row.post_id][row.model] = row.content_hash
    return stored


async def write_and_group(
    session_maker: async_sessionmaker[AsyncSession],
    embedder: PostEmbedder,
    batch: EncodedBatch,
    threshold: float | Thresholds,
) -> list[UUID]:
    """Store a batch's vectors and group its posts in one transaction (the cluster lock first, then rows
    locked in id order, one statement for every vector, assignments in creation order). Sets each written
    post's outcome in ``batch.outcomes``; returns the posts edited since they were read (encode again)."""
    work = batch.work
    if not work:
        return []
    edited: list[UUID] = []
    async with session_maker() as session, session.begin():
        thresholds = await effective_thresholds(session, embedder.name, Thresholds.of(threshold))
        grouping = GroupingService(session, embedder, thresholds)
        # The grouping lock before any row: the posts' placements write tally rows in the posts' order, not
        # the clusters' (forum/grouping/locks.py), so the batch must never overlap a person's merge or move.
        await grouping.hold_assignment_lock()
        current = {
            row.id: row
            for row in await session.execute(
                select(Post.id, Post.title, Post.body, Post.language)
                .where(Post.id.in_([item.post_id for item in work]))
                .order_by(Post.id)
                .with_for_update()
            )
        }
        # Read again under the row locks: a batch read and encoded meanwhile may have written some already.
        stored = await _stored_hashes(session, embedder, list(current))
        ready: list[tuple[_Pending, str]] = []
        rows: list[tuple[UUID, str, dict[str, np.ndarray]]] = []
        detected: dict[UUID, str] = {}
        for item in work:
            row = current.get(item.post_id)
            if row is None:
                batch.outcomes[item.post_id] = "gone"
            elif content_hash(post_text(row.title, row.body)) != item.digest:
                edited.append(item.post_id)  # edited meanwhile: encode its new text next round
            elif row.language is not None and all(stored[item.post_id].get(m) == item.digest for m in embedder.models):
                batch.outcomes[item.post_id] = "unchanged"  # written by an overlapping batch
            else:
                language = row.language or post_language(row.title, row.body)
                if row.language is None:  # written before languages were recorded (or imported)
                    detected[item.post_id] = language
                rows.append((item.post_id, item.digest, batch.vectors[item.post_id]))
                ready.append((item, language))
        if detected:  # one statement for the batch (an ORM update per post cost ~3 ms each)
            await session.execute(
                text(
                    "UPDATE post SET language = v.language"
                    " FROM unnest(CAST(:ids AS uuid[]), CAST(:languages AS text[])) AS v(id, language)"
                    " WHERE post.id = v.id"
                ),
                {"ids": list(detected), "languages": list(detected.values())},
            )
        await grouping.store_many(rows)
        queries: list[tuple[UUID, PostVectors]] = []
        for item, language in sorted(ready, key=lambda pair: (pair[0].created_at, pair[0].post_id)):
            if set(batch.vectors[item.post_id]) == set(embedder.models):
                query = PostVectors(language, batch.vectors[item.post_id])
            else:  # some vectors were current already: read them back
                query = await grouping.stored_vectors(item.post_id)
            assert query is not None
            queries.append((item.post_id, query))
        watched = bool(await subscribers(session, WebhookEvent.CLUSTER_CHANGED))
        before = await grouping.clusters_of([post_id for post_id, _ in queries]) if watched else {}
        targets = await grouping.assign_many(queries)
        for (post_id, _), target in zip(queries, targets, strict=True):
            batch.outcomes[post_id] = "embedded"
            if watched and target != before.get(post_id):  # a post alone in a new cluster is no change to tell
                joined = await cluster_members(session, target, exclude=[post_id])
                await emit_cluster_changed(
                    session, [before.get(post_id), target if joined else None], "grouped", post_id
                )
    return edited


async def embed_posts(
    session_maker: async_sessionmaker[AsyncSession],
    embedder: PostEmbedder,
    post_ids: Sequence[UUID],
    threshold: float | Thresholds,
) -> dict[UUID, str]:
    """Embed a batch of posts with every configured encoder and group them, as one unit: one read, one
    model call per encoder, one transaction.

    Returns each post's outcome: ``embedded``, ``unchanged`` (its vectors were current) or ``gone``.
    A post edited while it was being encoded is encoded again (up to ``MAX_ROUNDS`` times).
    """
    outcomes: dict[UUID, str] = {}
    todo = list(dict.fromkeys(post_ids))
    for _ in range(MAX_ROUNDS):
        if not todo:
            return outcomes
        batch = await read_and_encode(session_maker, embedder, todo)
        todo = await write_and_group(session_maker, embedder, batch, threshold)
        outcomes.update(batch.outcomes)
    if todo:
        raise RuntimeError(f"posts {todo} kept changing while they were being embedded")
    return outcomes


class EmbedCollector:
    """Gathers the ``post.embed`` jobs running at the same moment into batches, and pipelines them: the
    next batch is read and encoded while the current one is written and grouped (writes stay one at a
    time, in the order the batches were taken).

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
        self.session_maker, self.embedder, self.threshold = session_maker, embedder, threshold
        self.max_batch = max_batch
        self._pending: list[tuple[UUID, asyncio.Future[str]]] = []
        self._running: asyncio.Task[None] | None = None

    async def embed(self, post_id: UUID) -> str:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self._pending.append((post_id, future))
        if self._running is None:
            self._running = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        writing: asyncio.Task[None] | None = None
        try:
            while self._pending or writing is not None:
                if not self._pending:
                    assert writing is not None
                    await writing
                    writing = None
                    continue
                await asyncio.sleep(0)  # the jobs dequeued together all join this batch
                chunk, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                batch: EncodedBatch | BaseException
                try:  # overlaps the write of the previous batch
                    ids = [post_id for post_id, _ in chunk]
                    batch = await read_and_encode(self.session_maker, self.embedder, ids)
                except Exception as exc:
                    batch = exc
                if writing is not None:
                    await writing
                writing = asyncio.create_task(self._write(chunk, batch))
        finally:
            self._running = None

    async def _write(self, chunk: list[tuple[UUID, asyncio.Future[str]]], batch: EncodedBatch | BaseException) -> None:
        try:
            if isinstance(batch, BaseException):
                raise batch
            edited = await write_and_group(self.session_maker, self.embedder, batch, self.threshold)
            outcomes = batch.outcomes
            if edited:
                outcomes |= await embed_posts(self.session_maker, self.embedder, edited, self.threshold)
        except Exception as exc:
            if len(chunk) == 1:
                _settle(chunk[0][1], exception=exc)
                return
            for post_id, future in chunk:  # isolate the failure: one post at a time
                try:
                    outcome = (await embed_posts(self.session_maker, self.embedder, [post_id], self.threshold))[post_id]
                except Exception as single:
                    _settle(future, exception=single)
                else:
                    _settle(future, outcome)
            return
        for post_id, future in chunk:
            _settle(future, outcomes[post_id])


def _settle(future: asyncio.Future[str], result: str | None = None, *, exception: BaseException | None = None) -> None:
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)  # type: ignore[arg-type]


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

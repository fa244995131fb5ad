"""The embedding worker's two stages (forum/jobs.py): read and encode, then one transaction that writes and
groups. Batches overlap (the next is encoded while the current one is written), so a write re-checks what
an overlapping batch already stored, and a batch's writes cost a few statements, not a few per post."""

from __future__ import annotations

import asyncio
from uuid import UUID

from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from forum.encoding import PostEmbedder, get_encoder
from forum.jobs import EmbedCollector, read_and_encode, write_and_group
from tests.conftest import Api, QueryCounter, run_sql

TITLES = ["Dark mode for the app", "Please add a dark mode", "Export invoices as PDF", "Pause a rental", "Night"]


def _maker(database_url: str) -> async_sessionmaker:
    return async_sessionmaker(create_async_engine(database_url, poolclass=NullPool), expire_on_commit=False)


def test_a_batch_is_written_in_a_few_statements(api: Api, settings, database_url: str, count_queries: QueryCounter):
    author = api.register()
    ids = [UUID(api.post(author, title=title)["id"]) for title in TITLES]
    embedder = PostEmbedder(get_encoder(settings.embedding_model))

    async def run() -> dict:
        maker = _maker(database_url)
        batch = await read_and_encode(maker, embedder, ids)
        count_queries.statements.clear()
        assert await write_and_group(maker, embedder, batch, settings.duplicate_threshold) == []
        return batch.outcomes

    outcomes = asyncio.run(run())
    assert set(outcomes.values()) == {"embedded"} and len(outcomes) == len(TITLES)
    statements = count_queries.statements
    assert sum("INSERT INTO post_embedding" in s for s in statements) == 1, "one statement for every vector"
    assert sum("pg_advisory_xact_lock" in s for s in statements) == 1, "the cluster lock once per batch"
    # The searches' HNSW settings are every connection's own (forum.models.SEARCH_DEFAULTS): none per batch.
    assert sum("set_config('hnsw" in s for s in statements) == 0, "no HNSW settings per transaction"
    for per_batch in ("FROM cluster_membership", "DELETE FROM cluster_suggestion", "UNION"):
        reads = [s for s in statements if s.lstrip().startswith(("SELECT", "DELETE")) and per_batch in s]
        assert reads, per_batch
    print(len(statements), "statements:\n" + "\n---\n".join(statements))
    rows = run_sql(
        database_url, "SELECT count(*) FROM cluster_membership WHERE post_id = ANY(CAST(:ids AS uuid[]))", ids=ids
    )
    assert rows[0][0] == len(TITLES), "every post is in a cluster"


def test_overlapping_batches_write_a_post_once(api: Api, settings, database_url: str) -> None:
    author = api.register()
    post = {"id": UUID(api.post(author, title="Dark mode for the app")["id"])}
    embedder = PostEmbedder(get_encoder(settings.embedding_model))

    async def run() -> tuple[str, str]:
        maker = _maker(database_url)
        first = await read_and_encode(maker, embedder, [post["id"]])
        second = await read_and_encode(maker, embedder, [post["id"]])  # read before the first is written
        await write_and_group(maker, embedder, first, settings.duplicate_threshold)
        await write_and_group(maker, embedder, second, settings.duplicate_threshold)
        return first.outcomes[post["id"]], second.outcomes[post["id"]]

    assert asyncio.run(run()) == ("embedded", "unchanged")
    memberships = run_sql(
        database_url, "SELECT count(*) FROM cluster_membership WHERE post_id = :id", id=str(post["id"])
    )
    assert memberships[0][0] == 1


def test_the_collector_pipelines_batches_and_answers_every_job(api: Api, settings, database_url: str) -> None:
    """More jobs than one batch: each job gets its own post's outcome, the batches after the first are
    encoded while an earlier one is being written, and every post ends up grouped."""
    author = api.register()
    ids = [api.post(author, title=f"{title} {n}")["id"] for n in range(4) for title in TITLES]
    embedder = PostEmbedder(get_encoder(settings.embedding_model))
    overlapped = []

    async def run() -> list[str]:
        import forum.jobs

        collector = EmbedCollector(_maker(database_url), embedder, settings.duplicate_threshold, max_batch=4)
        writing = asyncio.Event()
        original_write, original_read = forum.jobs.write_and_group, forum.jobs.read_and_encode

        async def write(*args, **kwargs):
            writing.set()
            try:
                await asyncio.sleep(0.05)  # a slow database: the next batch is read and encoded meanwhile
                return await original_write(*args, **kwargs)
            finally:
                writing.clear()

        async def read(*args, **kwargs):
            overlapped.append(writing.is_set())
            return await original_read(*args, **kwargs)

        forum.jobs.write_and_group, forum.jobs.read_and_encode = write, read
        try:
            return list(await asyncio.gather(*(collector.embed(UUID(i)) for i in ids)))
        finally:
            forum.jobs.write_and_group, forum.jobs.read_and_encode = original_write, original_read

    assert asyncio.run(run()) == ["embedded"] * len(ids)
    assert len(overlapped) == len(ids) // 4 and any(overlapped[1:]), overlapped
    rows = run_sql(
        database_url, "SELECT count(*) FROM cluster_membership WHERE post_id = ANY(CAST(:ids AS uuid[]))", ids=ids
    )
    assert rows[0][0] == len(ids)

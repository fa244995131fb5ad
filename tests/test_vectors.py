"""Vectors travel in pgvector's binary format (forum.models.Embedding): exact float32 both ways, numpy
arrays out, and a query vector as a parameter, with nothing formatted or parsed as text."""

from __future__ import annotations

import asyncio
from uuid import UUID

import numpy as np
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from forum.models import PostEmbedding
from tests.conftest import Api


def test_a_vector_is_stored_and_read_back_exactly_as_float32(api: Api, database_url: str) -> None:
    author = api.register()
    post_id = UUID(api.post(author, title="Binary vectors")["id"])
    # Values whose shortest text forms need 9 significant digits: a 7-digit text literal would round them.
    vector = np.random.default_rng(7).standard_normal(384).astype(np.float32)
    vector[:3] = [0.123456789, -0.987654321, 1e-8]

    async def run() -> tuple[object, object, float]:
        engine = create_async_engine(database_url, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    PostEmbedding.__table__.insert().values(
                        post_id=post_id, model="binary-test", content_hash="x", embedding=vector
                    )
                )
                stored = await conn.scalar(
                    select(PostEmbedding.embedding).where(
                        PostEmbedding.post_id == post_id, PostEmbedding.model == "binary-test"
                    )
                )
                # A parameter compared in SQL: the same vector, so the distance is exactly 0.
                distance = await conn.scalar(
                    text(
                        "SELECT embedding <=> CAST(:v AS vector) FROM post_embedding"
                        " WHERE post_id = :p AND model = 'binary-test'"
                    ),
                    {"v": vector, "p": post_id},
                )
                raw = await conn.scalar(text("SELECT CAST(:v AS vector)"), {"v": vector})
                await conn.rollback()
            return stored, raw, distance
        finally:
            await engine.dispose()

    stored, raw, distance = asyncio.run(run())
    assert isinstance(stored, np.ndarray) and stored.dtype == np.float32
    assert np.array_equal(stored, vector), "stored exactly: no rounding through a text literal"
    assert abs(distance) < 1e-6
    assert type(raw).__name__ == "Vector", "asyncpg decodes vectors with pgvector's binary codec"

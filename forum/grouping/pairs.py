"""Scores of pairs of stored posts, on the grouping scale, from their stored vectors (no model call).

A pair is compared as nearest-neighbour search compares it (``PostEmbedder.routes``): the cosine of the
encoder the two posts' languages call for, mapped by that route's calibration. Used for a suggested
post's explanation and the labelled pairs of calibration; one query per route, whatever the number of
pairs. A cluster's own members are compared from their vectors in numpy instead
(forum/grouping/neighbours.py), with the same routes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from forum.encoding import PostEmbedder

# With several encoders, the routes depend on the first post's language: one class of languages each.
_LANGUAGE_CLASSES = (
    ("en", "pa.language = 'en'"),
    ("und", "(pa.language = 'und' OR pa.language IS NULL)"),
    ("es", "pa.language NOT IN ('en', 'und')"),
)
EXPLICIT_PAIRS = "SELECT t.a, t.b FROM unnest(CAST(:pair_a AS uuid[]), CAST(:pair_b AS uuid[])) AS t(a, b)"


async def pair_scores(
    session: AsyncSession, embedder: PostEmbedder, pairs_sql: str, params: Mapping[str, Any]
) -> dict[tuple[UUID, UUID], float]:
    """Score of each pair ``(a, b)`` that ``pairs_sql`` selects, for live posts with their vectors."""
    classes = [("und", "TRUE")] if embedder.multilingual is None else list(_LANGUAGE_CLASSES)
    scores: dict[tuple[UUID, UUID], float] = {}
    for language, condition in classes:
        for route in embedder.routes(language):
            where = [
                condition,
                "pa.deleted_at IS NULL",
                "p.deleted_at IS NULL",
                f"vector_dims(ea.embedding) = {route.dim}",
                f"vector_dims(eb.embedding) = {route.dim}",
            ]
            if route.candidates is not None:
                where.append(route.candidates)
            sql = f"""
                WITH pairs AS ({pairs_sql})
                SELECT pairs.a, pairs.b,
                       1 - (ea.embedding::vector({route.dim}) <=> eb.embedding::vector({route.dim})) AS cosine
                FROM pairs
                JOIN post pa ON pa.id = pairs.a
                JOIN post p ON p.id = pairs.b
                JOIN post_embedding ea ON ea.post_id = pairs.a AND ea.model = :model
                JOIN post_embedding eb ON eb.post_id = pairs.b AND eb.model = :model
                WHERE {" AND ".join(where)}
            """
            rows = await session.execute(text(sql), {**params, "model": route.model})
            calibration = route.calibration
            for row in rows:
                scores[(row.a, row.b)] = float(calibration.slope * float(row.cosine) + calibration.intercept)
    return scores


async def scores_of(
    session: AsyncSession, embedder: PostEmbedder, pairs: Iterable[tuple[UUID, UUID]]
) -> dict[tuple[UUID, UUID], float]:
    pairs = list(pairs)
    if not pairs:
        return {}
    params = {"pair_a": [a for a, _ in pairs], "pair_b": [b for _, b in pairs]}
    return await pair_scores(session, embedder, EXPLICIT_PAIRS, params)

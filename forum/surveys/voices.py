"""Survey comments join the forum's understanding: the worker side of ``survey_answer.embed``.

A comment is encoded by the app's own :class:`~forum.encoding.PostEmbedder` (the same encoders and,
with ``FORUM_EMBEDDING_MODEL=multilingual``, the same language routes and calibrated scale as posts),
compared with the grouped posts, and attached to the cluster of the nearest one when the similarity
is at least the duplicate threshold: a *voice* in that cluster, never a post (nobody but the product
team sees other people's answers). The comment's vector is not stored; placing is idempotent
(``embedded_model`` records the configuration that placed it) and ``forum surveys place-voices``
places every comment again, e.g. after the grouping changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from forum.encoding import PostEmbedder, post_language
from forum.grouping.services import GroupingService
from forum.grouping.thresholds import Thresholds
from forum.models import SurveyAnswer

EMBED_ANSWER = "survey_answer.embed"


async def place_voice(
    session_maker: async_sessionmaker[AsyncSession],
    embedder: PostEmbedder,
    answer_id: UUID,
    threshold: float | Thresholds,
    *,
    force: bool = False,
) -> str:
    """Attach one answer's comment to its nearest cluster. Returns ``placed``, ``unplaced`` (nothing
    similar enough), ``unchanged`` (already placed by this configuration) or ``gone`` (no comment)."""
    await embedder.ready()
    async with session_maker() as session:
        row = (
            await session.execute(
                select(SurveyAnswer.comment, SurveyAnswer.embedded_model).where(SurveyAnswer.id == answer_id)
            )
        ).one_or_none()
    if row is None or not row.comment:
        return "gone"
    if row.embedded_model == embedder.name and not force:
        return "unchanged"
    query = await embedder.encode_query(row.comment)
    async with session_maker() as session, session.begin():
        grouping = GroupingService(session, embedder, threshold)
        found = await grouping.nearest(query, limit=1, grouped_only=True)
        best = found[0] if found and found[0].similarity >= grouping.threshold and found[0].cluster_id else None
        language = query.language if query.language != "und" else post_language(row.comment, "")
        await session.execute(
            update(SurveyAnswer)
            .where(SurveyAnswer.id == answer_id)
            .values(
                cluster_id=best.cluster_id if best else None,
                similarity=best.similarity if best else None,
                embedded_model=embedder.name,
                language=language,
            )
        )
    return "placed" if best else "unplaced"


async def answers_to_place(session: AsyncSession, embedder_name: str, *, everything: bool) -> list[UUID]:
    """Answers with a comment not placed yet by this configuration (or all of them)."""
    condition = "" if everything else "AND embedded_model IS DISTINCT FROM :name"
    rows = await session.execute(
        text(
            f"SELECT id FROM survey_answer WHERE comment IS NOT NULL AND comment <> '' {condition} "
            "ORDER BY answered_at, id"
        ),
        {"name": embedder_name},
    )
    return [r.id for r in rows]


async def place_voices_now(
    database_url: str,
    embedder: PostEmbedder,
    threshold: float | Thresholds,
    *,
    everything: bool = False,
    progress: Any = None,
) -> dict[str, int]:
    """Place, in this process, every comment not placed yet (``forum demo load``, ``forum surveys
    place-voices``; ``everything`` places them all again). Returns the count of each outcome."""
    engine = create_async_engine(database_url, pool_size=2)
    session_maker = async_sessionmaker(engine, expire_on_commit=False)
    outcomes: dict[str, int] = {}
    try:
        await embedder.ready()
        async with session_maker() as session:
            ids: Sequence[UUID] = await answers_to_place(session, embedder.name, everything=everything)
        if progress is not None:
            progress.length = len(ids)
        for answer_id in ids:
            outcome = await place_voice(session_maker, embedder, answer_id, threshold, force=everything)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if progress is not None:
                progress.update(1)
        return outcomes
    finally:
        await engine.dispose()

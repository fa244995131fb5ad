"""One lock order for changes that touch two clusters' counts (migration 0019): the posts concerned by id,
then their clusters' tally rows by cluster id. Taken first in such a transaction, so two opposite changes
at once (a merge from cluster X into Y while another goes from Y into X, a move each way) queue instead of
deadlocking."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_LOCK = text("SELECT cluster_tally_lock(CAST(:posts AS uuid[]), CAST(:clusters AS uuid[]))")


async def lock_tallies(session: AsyncSession, posts: Iterable[UUID] = (), clusters: Iterable[UUID | None] = ()) -> None:
    """Lock ``posts`` (FOR SHARE), then the tally rows of ``clusters`` and of the posts' current clusters."""
    await session.execute(
        _LOCK, {"posts": sorted(set(posts)), "clusters": sorted({c for c in clusters if c is not None})}
    )

"""One lock order for changes that touch two clusters' counts (migration 0019): the posts concerned by id,
then their clusters' tally rows by cluster id. Taken first in such a transaction, so two opposite changes
at once (a merge from cluster X into Y while another goes from Y into X, a move each way) queue instead of
deadlocking.

Automatic grouping cannot take that order: a batch learns which cluster each post joins only by placing
the posts before it, so it writes tally rows in the order of its posts, not of its clusters. It holds the
grouping lock (``CLUSTER_LOCK_KEY``, an advisory lock) instead, from its first statement on; so does every
change by a person that may touch two clusters (moves, splits, rejections, merges, unmerges, a shipping
with linked critiques), before its first row lock. Two holders never overlap, so a batch never meets one
of those changes half-way; votes (one cluster each, post then tally row) need neither."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

CLUSTER_LOCK_KEY = 0x464F52554D  # "FORUM": one lock for all cluster assignments
_LOCK = text("SELECT cluster_tally_lock(CAST(:posts AS uuid[]), CAST(:clusters AS uuid[]))")


async def hold_grouping_lock(session: AsyncSession) -> None:
    """The grouping lock, until the transaction ends: take it before any row lock (or wait for it holding
    rows that a holder needs)."""
    await session.execute(select(func.pg_advisory_xact_lock(CLUSTER_LOCK_KEY)))


async def lock_tallies(session: AsyncSession, posts: Iterable[UUID] = (), clusters: Iterable[UUID | None] = ()) -> None:
    """Lock ``posts`` (FOR SHARE), then the tally rows of ``clusters`` and of the posts' current clusters."""
    await session.execute(
        _LOCK, {"posts": sorted(set(posts)), "clusters": sorted({c for c in clusters if c is not None})}
    )

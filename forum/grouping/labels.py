"""Labelled pairs: every grouping decision a person makes says which posts are, or are not, the same need.

Confirming a membership, accepting a suggestion, moving a post into a cluster and splitting members off
together say "duplicates" for the post and each other member; rejecting, dismissing a suggestion, the
cluster a post was moved out of and the members a split left behind say "not duplicates". Merges of
posts (``post_merge``) are read as positives when calibrating. One row per pair: the latest decision
wins. ``forum grouping calibrate`` fits this board's thresholds on them (forum/grouping/calibration.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from forum.models import ClusterMembership, GroupingLabel, LabelSource, MembershipState

MAX_MEMBERS_LABELLED = 200
"""A decision about a post labels its pairs with at most this many members of the cluster (newest first)."""


async def cluster_members(session: AsyncSession, cluster_id: UUID, *, exclude: Iterable[UUID] = ()) -> list[UUID]:
    excluded = list(exclude)
    query = select(ClusterMembership.post_id).where(
        ClusterMembership.cluster_id == cluster_id, ClusterMembership.state != MembershipState.REJECTED.value
    )
    if excluded:
        query = query.where(ClusterMembership.post_id.not_in(excluded))
    query = query.order_by(ClusterMembership.created_at.desc()).limit(MAX_MEMBERS_LABELLED)
    return list(await session.scalars(query))


async def record_pairs(
    session: AsyncSession,
    pairs: Iterable[tuple[UUID, UUID]],
    *,
    duplicate: bool,
    source: LabelSource,
    actor_id: UUID | None,
) -> int:
    """Store the label of each pair (either order), replacing an earlier label of the same pair."""
    rows = {
        (min(a, b), max(a, b)): {
            "post_a_id": min(a, b),
            "post_b_id": max(a, b),
            "duplicate": duplicate,
            "source": source.value,
            "decided_by_id": actor_id,
        }
        for a, b in pairs
        if a != b
    }
    if not rows:
        return 0
    stmt = insert(GroupingLabel).values(list(rows.values()))
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[GroupingLabel.post_a_id, GroupingLabel.post_b_id],
            set_={
                "duplicate": stmt.excluded.duplicate,
                "source": stmt.excluded.source,
                "decided_by_id": stmt.excluded.decided_by_id,
                "decided_at": func.now(),
            },
        )
    )
    return len(rows)


async def record_post_against(
    session: AsyncSession,
    post_id: UUID,
    others: Iterable[UUID],
    *,
    duplicate: bool,
    source: LabelSource,
    actor_id: UUID | None,
) -> int:
    return await record_pairs(
        session, ((post_id, other) for other in others), duplicate=duplicate, source=source, actor_id=actor_id
    )

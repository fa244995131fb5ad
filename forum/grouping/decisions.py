"""The product team's grouping decisions: confirm, reject, move, split, and joining by hand (an accepted
suggestion). Each is final for automatic grouping (``manual``) and stores its labelled pairs
(forum/grouping/labels.py)."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from litestar.exceptions import NotFoundException
from sqlalchemy import delete, func, select

from forum.errors import ConflictError, UnprocessableError
from forum.grouping import labels
from forum.grouping.locks import lock_tallies
from forum.grouping.services import CLUSTER_LOCK_KEY, GroupingService
from forum.models import Cluster, ClusterMembership, LabelSource, MembershipState, Post, User
from forum.webhooks.services import emit_cluster_changed


class ClusterDecisions:
    def __init__(self, grouping: GroupingService) -> None:
        self.grouping = grouping
        self.session = grouping.session

    async def _membership_in(self, cluster_id: UUID, post_id: UUID) -> ClusterMembership:
        membership = await self.session.scalar(
            select(ClusterMembership)
            .where(
                ClusterMembership.cluster_id == cluster_id,
                ClusterMembership.post_id == post_id,
                ClusterMembership.state != MembershipState.REJECTED.value,
            )
            .with_for_update()
        )
        if membership is None:
            raise NotFoundException("This post is not a member of this cluster")
        return membership

    async def confirm(self, cluster_id: UUID, post_id: UUID, actor: User) -> None:
        membership = await self._membership_in(cluster_id, post_id)
        membership.state = MembershipState.CONFIRMED.value
        membership.manual = True
        membership.decided_by_id = actor.id
        await self.session.flush()
        others = await labels.cluster_members(self.session, cluster_id, exclude=[post_id])
        await labels.record_post_against(
            self.session, post_id, others, duplicate=True, source=LabelSource.CONFIRM, actor_id=actor.id
        )
        await emit_cluster_changed(self.session, [cluster_id], "confirmed", post_id)

    async def reject(self, cluster_id: UUID, post_id: UUID, actor: User) -> UUID:
        """The post does not belong here: it leaves (remembered as rejected) and stands alone."""
        await self.session.execute(select(func.pg_advisory_xact_lock(CLUSTER_LOCK_KEY)))
        membership = await self._membership_in(cluster_id, post_id)
        membership.state = MembershipState.REJECTED.value
        membership.manual = True
        membership.decided_by_id = actor.id
        await self.session.flush()
        others = await labels.cluster_members(self.session, cluster_id, exclude=[post_id])
        await labels.record_post_against(
            self.session, post_id, others, duplicate=False, source=LabelSource.REJECT, actor_id=actor.id
        )
        new_cluster = await self.grouping.new_cluster()
        self.session.add(
            ClusterMembership(
                post_id=post_id, cluster_id=new_cluster, similarity=1.0, state=MembershipState.SUGGESTED.value
            )
        )
        await self.session.flush()
        await emit_cluster_changed(self.session, [cluster_id, new_cluster], "rejected", post_id)
        return new_cluster

    async def move(self, post_id: UUID, cluster_id: UUID, actor: User) -> None:
        """Put a post in another cluster by hand (confirmed, never undone automatically)."""
        await self.session.execute(select(func.pg_advisory_xact_lock(CLUSTER_LOCK_KEY)))
        if await self.session.get(Cluster, cluster_id) is None:
            raise NotFoundException("Cluster not found")
        await self._require_post(post_id)
        current = await self.grouping._current_membership(post_id)
        if current is not None and current.cluster_id == cluster_id:
            raise ConflictError(detail="The post is already in this cluster")
        await lock_tallies(self.session, [post_id], [cluster_id])  # both clusters' counts, in one order
        await self.join_by_hand(post_id, cluster_id, actor, LabelSource.MOVE)
        if current is not None:  # "not with those": the members it was taken away from
            left = await labels.cluster_members(self.session, current.cluster_id, exclude=[post_id])
            await labels.record_post_against(
                self.session, post_id, left, duplicate=False, source=LabelSource.MOVE, actor_id=actor.id
            )
        await emit_cluster_changed(
            self.session, [current.cluster_id if current else None, cluster_id], "moved", post_id
        )

    async def join_by_hand(self, post_id: UUID, cluster_id: UUID, actor: User, source: LabelSource) -> None:
        """A person puts the post in this cluster: labelled a duplicate of each member, confirmed."""
        members = await labels.cluster_members(self.session, cluster_id, exclude=[post_id])
        await self._place_by_hand(post_id, cluster_id, actor)
        await labels.record_post_against(
            self.session, post_id, members, duplicate=True, source=source, actor_id=actor.id
        )

    async def split(self, cluster_id: UUID, post_ids: Sequence[UUID], actor: User) -> UUID:
        """Move some members of a cluster into a new cluster of their own."""
        await self.session.execute(select(func.pg_advisory_xact_lock(CLUSTER_LOCK_KEY)))
        members = set(
            await self.session.scalars(
                select(ClusterMembership.post_id).where(
                    ClusterMembership.cluster_id == cluster_id,
                    ClusterMembership.state != MembershipState.REJECTED.value,
                )
            )
        )
        if not members:
            raise NotFoundException("Cluster not found")
        wanted = set(post_ids)
        if not wanted <= members:
            raise UnprocessableError("Every post to split off must be a member of this cluster", field="post_ids")
        if wanted == members:
            raise UnprocessableError("Leave at least one post in the cluster", field="post_ids")
        # Every post to move, then the cluster's tally row, before the first moves: a vote on a later one
        # holds its post and waits for that row.
        await lock_tallies(self.session, wanted, [cluster_id])
        new_cluster = await self.grouping.new_cluster()
        for post_id in post_ids:
            await self._place_by_hand(post_id, new_cluster, actor)
        moved, remaining = sorted(wanted), sorted(members - wanted)
        await labels.record_pairs(
            self.session,
            ((a, b) for a in moved for b in moved if a < b),
            duplicate=True,
            source=LabelSource.SPLIT,
            actor_id=actor.id,
        )
        await labels.record_pairs(
            self.session,
            ((a, b) for a in moved for b in remaining[: labels.MAX_MEMBERS_LABELLED]),
            duplicate=False,
            source=LabelSource.SPLIT,
            actor_id=actor.id,
        )
        await emit_cluster_changed(self.session, [cluster_id, new_cluster], "split")
        return new_cluster

    async def _place_by_hand(self, post_id: UUID, cluster_id: UUID, actor: User) -> None:
        await self.session.execute(
            delete(ClusterMembership).where(
                ClusterMembership.post_id == post_id,
                or_current_or_target(cluster_id),
            )
        )
        similarity = await self._similarity_to_cluster(post_id, cluster_id)
        self.session.add(
            ClusterMembership(
                post_id=post_id,
                cluster_id=cluster_id,
                similarity=similarity,
                state=MembershipState.CONFIRMED.value,
                manual=True,
                decided_by_id=actor.id,
            )
        )
        await self.session.flush()

    async def _similarity_to_cluster(self, post_id: UUID, cluster_id: UUID) -> float | None:
        """Similarity to the closest current member, when the post has its vectors."""
        query = await self.grouping.stored_vectors(post_id)
        if query is None:
            return None
        scored = await self.grouping.cluster_score(query, cluster_id, exclude_post=post_id)
        return scored.similarity if scored is not None else None

    async def _require_post(self, post_id: UUID) -> Post:
        post = await self.session.scalar(select(Post).where(Post.id == post_id, Post.deleted_at.is_(None)))
        if post is None:
            raise NotFoundException("Post not found")
        return post


def or_current_or_target(cluster_id: UUID):
    """The post's current membership, and any earlier (rejected) row for the target cluster."""
    return (ClusterMembership.state != MembershipState.REJECTED.value) | (ClusterMembership.cluster_id == cluster_id)

"""Duplicate grouping: post vectors, nearest neighbours, clusters and the product team's decisions.

How a post is grouped: once embedded, it joins the cluster of its nearest embedded neighbour when the
cosine similarity to that neighbour, *and* the mean cosine to all current members of that cluster, are
at least the threshold (``FORUM_DUPLICATE_THRESHOLD``); otherwise it starts a cluster of its own. The
mean ("average link") stops chains of near neighbours from drifting across needs (docs/duplicates.md).
Assignments are serialised by an advisory lock so that two near-identical posts embedded at the same
moment still meet. Memberships a person decided (``manual``) are never changed by
automatic grouping, and a rejected membership is remembered so the post is never put back there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import numpy as np
from litestar.exceptions import NotFoundException
from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from forum.errors import ConflictError, UnprocessableError
from forum.models import (
    Cluster,
    ClusterMembership,
    MembershipState,
    Post,
    PostEmbedding,
    PostStatus,
    User,
)

CLUSTER_LOCK_KEY = 0x464F52554D  # "FORUM": one lock for all cluster assignments


def vector_literal(vector: Sequence[float] | np.ndarray) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


@dataclass
class Neighbour:
    post_id: UUID
    similarity: float
    cluster_id: UUID | None


class GroupingService:
    def __init__(self, session: AsyncSession, model: str, dim: int, threshold: float) -> None:
        self.session = session
        self.model = model
        self.dim = int(dim)
        self.threshold = threshold

    # Vectors ----------------------------------------------------------------------------------

    def _distance(self, param: str = ":v") -> str:
        # The cast matches the partial HNSW index expression for this dimension.
        return f"(e.embedding::vector({self.dim}) <=> CAST({param} AS vector({self.dim})))"

    async def store_embedding(self, post_id: UUID, content_hash: str, vector: np.ndarray) -> None:
        stmt = insert(PostEmbedding).values(
            post_id=post_id, model=self.model, content_hash=content_hash, embedding=vector.tolist()
        )
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[PostEmbedding.post_id, PostEmbedding.model],
                set_={
                    "content_hash": stmt.excluded.content_hash,
                    "embedding": stmt.excluded.embedding,
                    "embedded_at": func.now(),
                },
            )
        )

    async def nearest(
        self,
        vector: np.ndarray,
        *,
        limit: int,
        exclude_post: UUID | None = None,
        exclude_clusters: Sequence[UUID] = (),
        viewer_filter: Any = None,
        grouped_only: bool = False,
        skip_duplicates: bool = False,
        kind: str | None = None,
    ) -> list[Neighbour]:
        """Nearest embedded posts by cosine (HNSW with pgvector's iterative scan for the filters)."""
        await self.session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
        await self.session.execute(text(f"SET LOCAL hnsw.ef_search = {max(40, limit * 4)}"))
        membership_join = "JOIN" if grouped_only else "LEFT JOIN"
        conditions = ["e.model = :model", f"vector_dims(e.embedding) = {self.dim}", "p.deleted_at IS NULL"]
        params: dict[str, Any] = {"v": vector_literal(vector), "model": self.model, "limit": limit}
        if exclude_post is not None:
            conditions.append("e.post_id <> :exclude_post")
            params["exclude_post"] = exclude_post
        if exclude_clusters:
            conditions.append("(m.cluster_id IS NULL OR NOT (m.cluster_id = ANY(:exclude_clusters)))")
            params["exclude_clusters"] = list(exclude_clusters)
        if skip_duplicates:
            conditions.append(f"p.status <> '{PostStatus.DUPLICATE.value}'")
        if kind:
            conditions.append("p.kind = :kind")
            params["kind"] = kind
        if viewer_filter is not None:
            conditions.append(viewer_filter)
        sql = f"""
            SELECT e.post_id, 1 - {self._distance()} AS similarity, m.cluster_id
            FROM post_embedding e
            JOIN post p ON p.id = e.post_id
            {membership_join} cluster_membership m ON m.post_id = e.post_id AND m.state <> 'rejected'
            WHERE {" AND ".join(conditions)}
            ORDER BY {self._distance()}
            LIMIT :limit
        """
        rows = (await self.session.execute(text(sql), params)).all()
        return [Neighbour(post_id=r.post_id, similarity=float(r.similarity), cluster_id=r.cluster_id) for r in rows]

    # Automatic grouping -----------------------------------------------------------------------

    async def assign(self, post_id: UUID, vector: np.ndarray) -> UUID:
        """Put a freshly embedded post in its cluster; returns the cluster id."""
        await self.session.execute(select(func.pg_advisory_xact_lock(CLUSTER_LOCK_KEY)))
        current = await self._current_membership(post_id)
        if current is not None and current.manual:
            return current.cluster_id  # a person decided: never undone automatically
        rejected = list(
            await self.session.scalars(
                select(ClusterMembership.cluster_id).where(
                    ClusterMembership.post_id == post_id,
                    ClusterMembership.state == MembershipState.REJECTED.value,
                )
            )
        )
        found = await self.nearest(vector, limit=1, exclude_post=post_id, exclude_clusters=rejected, grouped_only=True)
        best = found[0] if found and found[0].similarity >= self.threshold else None
        if best is not None and best.cluster_id is not None:
            # Average link: close to its nearest neighbour is not enough, the post must be close to the
            # cluster as a whole; otherwise chains of near neighbours drift from one need to another.
            mean = await self._mean_similarity(vector, best.cluster_id, exclude_post=post_id)
            if mean is not None and mean < self.threshold:
                best = None
        if best is not None:
            target, similarity = best.cluster_id, best.similarity
        elif current is not None and not await self._has_other_members(current.cluster_id, post_id):
            target, similarity = current.cluster_id, 1.0  # alone already: keep its cluster
        else:
            target, similarity = await self._new_cluster(), 1.0
        assert target is not None
        if current is not None and current.cluster_id != target:
            await self.session.delete(current)
            await self.session.flush()
            current = None
        if current is None:
            self.session.add(
                ClusterMembership(
                    post_id=post_id, cluster_id=target, similarity=similarity, state=MembershipState.SUGGESTED.value
                )
            )
        else:
            current.similarity = similarity
        await self.session.flush()
        return target

    async def _mean_similarity(self, vector: np.ndarray, cluster_id: UUID, *, exclude_post: UUID) -> float | None:
        value = await self.session.scalar(
            text(
                f"""
                SELECT avg(1 - {self._distance()})
                FROM cluster_membership m
                JOIN post p ON p.id = m.post_id AND p.deleted_at IS NULL
                JOIN post_embedding e ON e.post_id = m.post_id AND e.model = :model
                WHERE m.cluster_id = :cluster AND m.state <> 'rejected' AND m.post_id <> :me
                  AND vector_dims(e.embedding) = {self.dim}
                """
            ),
            {"v": vector_literal(vector), "model": self.model, "cluster": cluster_id, "me": exclude_post},
        )
        return float(value) if value is not None else None

    async def _current_membership(self, post_id: UUID) -> ClusterMembership | None:
        return await self.session.scalar(
            select(ClusterMembership).where(
                ClusterMembership.post_id == post_id, ClusterMembership.state != MembershipState.REJECTED.value
            )
        )

    async def _has_other_members(self, cluster_id: UUID, post_id: UUID) -> bool:
        count = await self.session.scalar(
            select(func.count()).where(
                ClusterMembership.cluster_id == cluster_id,
                ClusterMembership.post_id != post_id,
                ClusterMembership.state != MembershipState.REJECTED.value,
            )
        )
        return bool(count)

    async def _new_cluster(self) -> UUID:
        cluster = Cluster()
        self.session.add(cluster)
        await self.session.flush()
        return cluster.id

    # The product team's decisions -------------------------------------------------------------

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

    async def reject(self, cluster_id: UUID, post_id: UUID, actor: User) -> UUID:
        """The post does not belong here: it leaves (remembered as rejected) and stands alone."""
        await self.session.execute(select(func.pg_advisory_xact_lock(CLUSTER_LOCK_KEY)))
        membership = await self._membership_in(cluster_id, post_id)
        membership.state = MembershipState.REJECTED.value
        membership.manual = True
        membership.decided_by_id = actor.id
        await self.session.flush()
        new_cluster = await self._new_cluster()
        self.session.add(
            ClusterMembership(
                post_id=post_id, cluster_id=new_cluster, similarity=1.0, state=MembershipState.SUGGESTED.value
            )
        )
        await self.session.flush()
        return new_cluster

    async def move(self, post_id: UUID, cluster_id: UUID, actor: User) -> None:
        """Put a post in another cluster by hand (confirmed, never undone automatically)."""
        await self.session.execute(select(func.pg_advisory_xact_lock(CLUSTER_LOCK_KEY)))
        if await self.session.get(Cluster, cluster_id) is None:
            raise NotFoundException("Cluster not found")
        await self._require_post(post_id)
        current = await self._current_membership(post_id)
        if current is not None and current.cluster_id == cluster_id:
            raise ConflictError(detail="The post is already in this cluster")
        await self._place_by_hand(post_id, cluster_id, actor)

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
        new_cluster = await self._new_cluster()
        for post_id in post_ids:
            await self._place_by_hand(post_id, new_cluster, actor)
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
        """Cosine to the closest current member, when both have vectors of this encoder."""
        value = await self.session.scalar(
            text(
                f"""
                SELECT max(1 - (mine.embedding::vector({self.dim}) <=> e.embedding::vector({self.dim})))
                FROM post_embedding mine
                JOIN cluster_membership m ON m.cluster_id = :cluster AND m.state <> 'rejected'
                                         AND m.post_id <> :post
                JOIN post_embedding e ON e.post_id = m.post_id AND e.model = mine.model
                WHERE mine.post_id = :post AND mine.model = :model AND vector_dims(mine.embedding) = {self.dim}
                  AND vector_dims(e.embedding) = {self.dim}
                """
            ),
            {"cluster": cluster_id, "post": post_id, "model": self.model},
        )
        return float(value) if value is not None else None

    async def _require_post(self, post_id: UUID) -> Post:
        post = await self.session.scalar(select(Post).where(Post.id == post_id, Post.deleted_at.is_(None)))
        if post is None:
            raise NotFoundException("Post not found")
        return post

    async def cluster_of(self, post_id: UUID) -> UUID | None:
        membership = await self._current_membership(post_id)
        return membership.cluster_id if membership else None


def or_current_or_target(cluster_id: UUID):
    """The post's current membership, and any earlier (rejected) row for the target cluster."""
    return (ClusterMembership.state != MembershipState.REJECTED.value) | (ClusterMembership.cluster_id == cluster_id)


def visible_neighbours_filter(viewer: User | None) -> str:
    """SQL text for the similar-posts viewer filter (same rule as ``visible_to``)."""
    if viewer is not None and viewer.sees_internal:
        return "TRUE"
    return "p.visibility = 'public'"

"""The consolidation pass: grouping that does not depend on the order posts arrived in.

Online assignment sees one post at a time, so the same posts arriving in another order can end in other
clusters: the first of three phrasings starts a cluster the third would have joined, or two clusters of
one need grow side by side. The worker runs this pass every ``FORUM_CONSOLIDATE_SECONDS`` and soon after a
burst of new posts, under the same advisory lock as assignment. Over the posts embedded since its last
run (the watermark is in ``grouping_setting``, shared by every worker) it

1. re-homes a post that fits another cluster much better: that cluster's score is sure and beats the
   post's current one by ``REHOME_MARGIN``;
2. merges two clusters whose average link (the mean score of every pair across them) is sure.

With the default two encoders, both scores count only as far as they stand out of the post's background
(its ``NEIGHBOURS``-th nearest post), as the online rule's candidates do: capped at
``MERGE_STAND_OUT + (score - background)``. On a board where every post looks alike (templated bug
reports) neighbouring clusters all clear the threshold, and without the cap the pass merged them into a
few giant clusters (bug_corpus F1 0.32 online, 0.04 after the pass; 0.37 with the cap). 0.32 was chosen
on the idea set's dev split and bug_corpus together (docs/duplicates.md).

It never touches a person's decision: manual memberships stay where they are, a cluster is never merged
into another that a member was rejected from or dismissed for, two clusters that both hold manual
members (e.g. the two halves of a split) are never merged, and no pair labelled "not duplicates" is put
together. In ``suggest`` mode the pass changes nothing (every grouping is the product team's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from forum.grouping.pairs import scores_of
from forum.grouping.services import CLUSTER_LOCK_KEY, GroupingService
from forum.models import (
    ClusterMembership,
    ClusterSuggestion,
    GroupingLabel,
    GroupingSetting,
    MembershipState,
    PostEmbedding,
    SuggestionState,
)

WATERMARK_KEY = "consolidated_until"
MAX_POSTS_PER_PASS = 200
"""One transaction (holding the assignment lock) looks at this many posts; passes follow until caught up."""
REHOME_MARGIN = 0.05
NEIGHBOURS = 10
MAX_ROUNDS = 5
MERGE_STAND_OUT = 0.32


@dataclass
class ConsolidationReport:
    posts: int = 0
    rehomed: int = 0
    merged: int = 0
    merges: list[tuple[UUID, UUID]] = field(default_factory=list)
    changed: set[UUID] = field(default_factory=set)
    """Clusters whose membership this pass changed (for ``cluster.changed`` webhooks)."""


class Consolidator:
    def __init__(self, grouping: GroupingService) -> None:
        self.grouping = grouping
        self.session = grouping.session
        self._backgrounds: dict[UUID, float | None] = {}
        """Per post, for the pass: its background does not depend on clusters, so re-homing and every
        merge round share one search."""

    async def run(self, *, everything: bool = False) -> ConsolidationReport:
        """One pass (in the caller's transaction) over what was embedded since the last one (or, with
        ``everything``, over every post)."""
        report = ConsolidationReport()
        if self.grouping.thresholds.mode != "auto":
            return report
        await self.session.execute(select(func.pg_advisory_xact_lock(CLUSTER_LOCK_KEY)))
        since = None if everything else await self._watermark()
        posts, until = await self._dirty_posts(since)
        report.posts = len(posts)
        if not posts:
            return report
        for post_id in posts:
            moved = await self._rehome(post_id)
            if moved:
                report.rehomed += 1
                report.changed.update(moved)
        for _ in range(MAX_ROUNDS):
            merged = await self._merge_round(posts)
            report.merges.extend(merged)
            report.changed.update(cluster for pair in merged for cluster in pair)
            if not merged:
                break
        report.merged = len(report.merges)
        if until is not None:
            await self._set_watermark(until)
        return report

    # Which posts ---------------------------------------------------------------------------------

    async def _watermark(self) -> datetime | None:
        value = await self.session.scalar(select(GroupingSetting.value).where(GroupingSetting.key == WATERMARK_KEY))
        return datetime.fromisoformat(value["at"]) if value else None

    async def _set_watermark(self, until: datetime) -> None:
        stmt = insert(GroupingSetting).values(key=WATERMARK_KEY, value={"at": until.isoformat()})
        await self.session.execute(
            stmt.on_conflict_do_update(index_elements=[GroupingSetting.key], set_={"value": stmt.excluded.value})
        )

    async def _dirty_posts(self, since: datetime | None) -> tuple[list[UUID], datetime | None]:
        query = (
            select(PostEmbedding.post_id, func.max(PostEmbedding.embedded_at).label("at"))
            .where(PostEmbedding.model.in_(self.grouping.embedder.models))
            .group_by(PostEmbedding.post_id)
        )
        if since is not None:
            query = query.having(func.max(PostEmbedding.embedded_at) > since)
        rows = (
            await self.session.execute(query.order_by(text("at"), PostEmbedding.post_id).limit(MAX_POSTS_PER_PASS))
        ).all()
        return [row.post_id for row in rows], (rows[-1].at if rows else None)

    # Re-homing -------------------------------------------------------------------------------------

    async def _rehome(self, post_id: UUID) -> tuple[UUID, UUID] | None:
        """Move the post to a cluster it fits clearly better; returns (from, to) when it moved."""
        grouping = self.grouping
        membership = await self.session.scalar(
            select(ClusterMembership).where(
                ClusterMembership.post_id == post_id, ClusterMembership.state != MembershipState.REJECTED.value
            )
        )
        if membership is None or membership.manual:
            return None
        query = await grouping.stored_vectors(post_id)
        if query is None:
            return None
        background = await self._background(post_id, query)
        current = await grouping.cluster_score(query, membership.cluster_id, exclude_post=post_id)
        excluded = [*await grouping.excluded_clusters(post_id), membership.cluster_id]
        neighbours = await grouping.nearest(
            query, limit=NEIGHBOURS, exclude_post=post_id, exclude_clusters=excluded, grouped_only=True
        )
        best = None
        for cluster_id in dict.fromkeys(n.cluster_id for n in neighbours if n.cluster_id is not None):
            scored = await grouping.cluster_score(query, cluster_id, exclude_post=post_id)
            if scored is not None:
                scored.score = self._capped(scored.score, background)
            if scored is not None and (best is None or scored.score > best.score):
                best = scored
        if best is None or best.score < grouping.thresholds.sure:
            return None
        if current is not None and best.score < current.score + REHOME_MARGIN:
            return None
        if await self._labelled_apart([post_id], await self._members(best.cluster_id)):
            return None
        await self.session.delete(membership)
        await self.session.flush()
        self.session.add(
            ClusterMembership(
                post_id=post_id,
                cluster_id=best.cluster_id,
                similarity=best.similarity,
                state=MembershipState.SUGGESTED.value,
            )
        )
        await self.session.execute(
            delete(ClusterSuggestion).where(
                ClusterSuggestion.post_id == post_id,
                ClusterSuggestion.cluster_id == best.cluster_id,
                ClusterSuggestion.state == SuggestionState.PENDING.value,
            )
        )
        await self.session.flush()
        return membership.cluster_id, best.cluster_id

    async def _background(self, post_id: UUID, query: Any) -> float | None:
        """The score of the post's ``NEIGHBOURS``-th nearest post (None: no cap, as with one encoder)."""
        if self.grouping.embedder.rule.stand_out is None:
            return None
        if post_id not in self._backgrounds:
            found = await self.grouping.nearest(query, limit=NEIGHBOURS, exclude_post=post_id)
            self._backgrounds[post_id] = found[-1].similarity if len(found) >= NEIGHBOURS else 0.0
        return self._backgrounds[post_id]

    @staticmethod
    def _capped(score: float, background: float | None) -> float:
        return score if background is None else min(score, MERGE_STAND_OUT + score - background)

    # Merging ---------------------------------------------------------------------------------------

    async def _members(self, cluster_id: UUID) -> list[UUID]:
        return list(
            await self.session.scalars(
                select(ClusterMembership.post_id).where(
                    ClusterMembership.cluster_id == cluster_id,
                    ClusterMembership.state != MembershipState.REJECTED.value,
                )
            )
        )

    async def _clusters_of(self, posts: list[UUID]) -> dict[UUID, UUID]:
        rows = await self.session.execute(
            select(ClusterMembership.post_id, ClusterMembership.cluster_id).where(
                ClusterMembership.post_id.in_(posts), ClusterMembership.state != MembershipState.REJECTED.value
            )
        )
        return {row.post_id: row.cluster_id for row in rows}

    async def _merge_round(self, posts: list[UUID]) -> list[tuple[UUID, UUID]]:
        """Merge each dirty post's cluster with the neighbouring clusters it is sure to be one need with."""
        merged: list[tuple[UUID, UUID]] = []
        seen: set[frozenset[UUID]] = set()
        for post_id in posts:
            cluster_of = await self._clusters_of([post_id])
            cluster_id = cluster_of.get(post_id)
            query = await self.grouping.stored_vectors(post_id)
            if cluster_id is None or query is None:
                continue
            background = await self._background(post_id, query)
            neighbours = await self.grouping.nearest(
                query, limit=NEIGHBOURS, exclude_post=post_id, exclude_clusters=[cluster_id], grouped_only=True
            )
            for other in dict.fromkeys(n.cluster_id for n in neighbours if n.cluster_id is not None):
                pair = frozenset((cluster_id, other))
                if pair in seen:
                    continue
                seen.add(pair)
                into = await self._merge_if_sure(cluster_id, other, background)
                if into is not None:
                    merged.append((cluster_id if into == other else other, into))
                    break  # this post's cluster changed: its other neighbours wait for the next round
        return merged

    async def _merge_if_sure(self, a: UUID, b: UUID, background: float | None = None) -> UUID | None:
        members_a, members_b = await self._memberships(a), await self._memberships(b)
        if not members_a or not members_b:
            return None
        manual_a = any(manual for manual in members_a.values())
        manual_b = any(manual for manual in members_b.values())
        if manual_a and manual_b:
            return None  # both shaped by a person (e.g. the two halves of a split)
        ids_a, ids_b = list(members_a), list(members_b)
        scores = await scores_of(self.session, self.grouping.embedder, [(x, y) for x in ids_a for y in ids_b])
        if len(scores) < len(ids_a) * len(ids_b):
            return None  # some vectors are missing or stale: wait for them
        if self._capped(sum(scores.values()) / len(scores), background) < self.grouping.thresholds.sure:
            return None
        if await self._refused(ids_a, b) or await self._refused(ids_b, a) or await self._labelled_apart(ids_a, ids_b):
            return None
        # The side a person shaped keeps its id; otherwise the smaller cluster joins the larger.
        if manual_a or (not manual_b and (len(ids_a), str(b)) > (len(ids_b), str(a))):
            source, into = b, a
        else:
            source, into = a, b
        await self._move_cluster(source, into)
        return into

    async def _memberships(self, cluster_id: UUID) -> dict[UUID, bool]:
        rows = await self.session.execute(
            select(ClusterMembership.post_id, ClusterMembership.manual).where(
                ClusterMembership.cluster_id == cluster_id, ClusterMembership.state != MembershipState.REJECTED.value
            )
        )
        return {row.post_id: row.manual for row in rows}

    async def _refused(self, posts: list[UUID], cluster_id: UUID) -> bool:
        """Whether a person rejected one of these posts from the cluster, or dismissed it for it."""
        rejected = await self.session.scalar(
            select(func.count()).where(
                ClusterMembership.cluster_id == cluster_id,
                ClusterMembership.post_id.in_(posts),
                ClusterMembership.state == MembershipState.REJECTED.value,
            )
        )
        dismissed = await self.session.scalar(
            select(func.count()).where(
                ClusterSuggestion.cluster_id == cluster_id,
                ClusterSuggestion.post_id.in_(posts),
                ClusterSuggestion.state == SuggestionState.DISMISSED.value,
            )
        )
        return bool(rejected or dismissed)

    async def _labelled_apart(self, left: list[UUID], right: list[UUID]) -> bool:
        if not left or not right:
            return False
        found = await self.session.scalar(
            select(func.count()).where(
                GroupingLabel.duplicate.is_(False),
                (GroupingLabel.post_a_id.in_(left) & GroupingLabel.post_b_id.in_(right))
                | (GroupingLabel.post_a_id.in_(right) & GroupingLabel.post_b_id.in_(left)),
            )
        )
        return bool(found)

    async def _move_cluster(self, source: UUID, into: UUID) -> None:
        """Every current member of ``source`` joins ``into``; the rejections and dismissals recorded for
        ``source`` now hold for ``into`` too; its pending suggestions point at ``into``."""
        await self.session.execute(
            update(ClusterMembership)
            .where(ClusterMembership.cluster_id == source, ClusterMembership.state != MembershipState.REJECTED.value)
            .values(cluster_id=into)
        )
        rejected = select(ClusterMembership.post_id).where(
            ClusterMembership.cluster_id == source, ClusterMembership.state == MembershipState.REJECTED.value
        )
        for post_id in list(await self.session.scalars(rejected)):
            stmt = insert(ClusterMembership).values(
                post_id=post_id, cluster_id=into, state=MembershipState.REJECTED.value, manual=True, similarity=None
            )
            await self.session.execute(stmt.on_conflict_do_nothing())
        moved: Any = select(ClusterSuggestion.post_id).where(ClusterSuggestion.cluster_id == into)
        await self.session.execute(
            delete(ClusterSuggestion).where(
                ClusterSuggestion.cluster_id == source, ClusterSuggestion.post_id.in_(moved)
            )
        )
        await self.session.execute(
            update(ClusterSuggestion).where(ClusterSuggestion.cluster_id == source).values(cluster_id=into)
        )
        members = select(ClusterMembership.post_id).where(
            ClusterMembership.cluster_id == into, ClusterMembership.state != MembershipState.REJECTED.value
        )
        await self.session.execute(
            delete(ClusterSuggestion).where(
                ClusterSuggestion.cluster_id == into,
                ClusterSuggestion.post_id.in_(members),
                ClusterSuggestion.state == SuggestionState.PENDING.value,
            )
        )
        await self.session.flush()

"""The consolidation pass: grouping that does not depend on the order posts arrived in.

Online assignment sees one post at a time, so the same posts arriving in another order can end in other
clusters: the first of three phrasings starts a cluster the third would have joined, or two clusters of
one need grow side by side. The worker runs this pass every ``FORUM_CONSOLIDATE_SECONDS`` and soon after a
burst of new posts, under the same advisory lock as assignment. It takes the posts embedded since its last
run (the watermark is in ``grouping_setting``, shared by every worker), their ``NEIGHBOURS`` nearest posts
and every member of those posts' clusters, and clusters that neighbourhood again from scratch with
:class:`embeddings.grouping.Recluster`: average link over the nearest-neighbour graph, every post seen at
once, so the result does not depend on arrival order. With the default two encoders a pair counts only as
far as it stands out of both posts' backgrounds (each one's 10th nearest post): on a board where every
post looks alike (templated bug reports) neighbours do not chain into giant clusters, and pairs are moved by
the words they share (:class:`embeddings.lexical.LexicalCheck`: chores naming different versions or tickets
stay apart). The new clusters
keep the ids of the clusters most of their members came from; a cluster whose members all went to one
other is merged into it (its rejections and dismissals carried over).

It never touches a person's decision: manual memberships stay where they are (a cluster's manual members
are one group from the start), two clusters that both hold manual members (e.g. the two halves of a split)
are never merged, a post never joins a cluster it was rejected from or dismissed for, and no pair labelled
"not duplicates" is put together. In ``suggest`` mode the pass changes nothing (every grouping is the
product team's). How its two constants were chosen, and what they measure: docs/duplicates.md.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import numpy as np
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from embeddings.grouping import RECLUSTER_NEIGHBOURS, Recluster
from forum.encoding import post_text
from forum.grouping.locks import lock_tallies
from forum.grouping.services import CLUSTER_LOCK_KEY, GroupingService
from forum.models import (
    ClusterMembership,
    ClusterSuggestion,
    GroupingLabel,
    GroupingSetting,
    MembershipState,
    Post,
    PostEmbedding,
    SuggestionState,
)

WATERMARK_KEY = "consolidated_until"
MAX_POSTS_PER_PASS = 200
"""One transaction (holding the assignment lock) looks at this many posts; passes follow until caught up."""
NEIGHBOURS = RECLUSTER_NEIGHBOURS
"""How many nearest posts of each new post join the neighbourhood, and what a post's background is (its
``NEIGHBOURS``-th nearest post's score)."""


class BackgroundCache:
    """Posts' backgrounds, kept by the worker process between passes.

    A pass needs the background of every post of the neighbourhood it clusters again, most of them old
    posts whose background it looked up in an earlier pass: a search each (two HNSW scans with the default
    encoders) would make a pass's cost grow with the size of the clusters it touches. A background only
    rises slowly as a board grows (the 10th nearest post gets nearer), so one looked up within ``ttl``
    seconds is used as it is; a pass's new posts are always looked up again.
    """

    def __init__(self, ttl: float = 3600.0, size: int = 200_000) -> None:
        self.ttl, self.size = ttl, size
        self._values: dict[UUID, tuple[float, float]] = {}

    def get(self, post_id: UUID) -> float | None:
        found = self._values.get(post_id)
        if found is None or time.monotonic() - found[1] > self.ttl:
            return None
        return found[0]

    def put(self, post_id: UUID, value: float) -> None:
        if len(self._values) >= self.size:
            oldest = sorted(self._values.items(), key=lambda item: item[1][1])[: self.size // 2]
            for key, _ in oldest:
                del self._values[key]
        self._values[post_id] = (value, time.monotonic())


BACKGROUNDS = BackgroundCache()


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
        self._similarity: dict[UUID, float] = {}

    async def run(self, *, everything: bool = False) -> ConsolidationReport:
        """One pass (in the caller's transaction) over what was embedded since the last one (or, with
        ``everything``, from the first post on)."""
        report = ConsolidationReport()
        if self.grouping.thresholds.mode != "auto":
            return report
        await self.session.execute(select(func.pg_advisory_xact_lock(CLUSTER_LOCK_KEY)))
        since = None if everything else await self._watermark()
        posts, until = await self._dirty_posts(since)
        report.posts = len(posts)
        if not posts:
            return report
        await self._recluster(posts, report)
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

    # Re-clustering ---------------------------------------------------------------------------------

    async def _recluster(self, posts: list[UUID], report: ConsolidationReport) -> None:
        """Cluster the new posts' neighbourhood again (see the module) and move what changed."""
        grouping = self.grouping
        dirty = await grouping.comparable(posts)
        area: set[UUID] = set(dirty)
        for post_id, query in dirty.items():
            # One search per new post: its neighbours join the neighbourhood, the last one is its background.
            found = await grouping.nearest(query, limit=NEIGHBOURS, exclude_post=post_id)
            area.update(n.post_id for n in found)
            BACKGROUNDS.put(post_id, found[-1].similarity if len(found) >= NEIGHBOURS else math.nan)
        current = await self._memberships_around(area)
        vectors = await grouping.comparable(list(current))
        ids = sorted(vectors, key=str)
        if len(ids) < 2:
            return
        grouping_scores, route = grouping.embedder.score_matrices([vectors[p] for p in ids])
        rule = Recluster.for_rule(grouping.embedder.rule, grouping.thresholds.sure)
        linked = grouping_scores
        if rule.lexical is not None:
            texts = await self._texts(ids)
            linked = rule.rescore(grouping_scores, [vectors[p].language for p in ids], [texts[p] for p in ids])
        backgrounds = None
        if rule.stand_out is not None:
            backgrounds = [await self._background(p, vectors[p]) for p in ids]
        index = {p: i for i, p in enumerate(ids)}
        refused = await grouping.excluded_many(ids)
        members: dict[UUID, list[UUID]] = {}
        for p, (cluster, _) in current.items():
            members.setdefault(cluster, []).append(p)
        cannot = [
            (index[p], index[q])
            for p, clusters in refused.items()
            for c in clusters
            for q in members.get(c, [])
            if q in index
        ]
        cannot += [(index[p], index[q]) for p, q in await self._apart_pairs(ids)]
        labels = rule.labels(
            linked,
            route,
            backgrounds,
            locked=[current[p][0] if current[p][1] else None for p in ids],
            cannot=cannot,
        )
        groups: dict[int, list[UUID]] = {}
        for p, label in zip(ids, labels.tolist(), strict=True):
            groups.setdefault(label, []).append(p)
        sizes = Counter(cluster for cluster, _ in current.values())
        taken: set[UUID] = set()
        target_of: dict[UUID, UUID] = {}
        nearest_score: dict[UUID, float] = {}
        # Groups a person shaped keep their cluster; then the largest groups choose first.
        ordered = sorted(
            groups.values(), key=lambda g: (not any(current[p][1] for p in g), -len(g), str(min(g, key=str)))
        )
        for group in ordered:
            manual = next((current[p][0] for p in group if current[p][1]), None)
            if manual is not None:
                target: UUID | None = manual
            else:
                counts = Counter(current[p][0] for p in group)
                blocked = {c for p in group for c in refused.get(p, [])}
                choices = [c for c in counts if c not in taken and c not in blocked]
                choices.sort(key=lambda c: (-counts[c], -sizes[c], str(c)))
                target = choices[0] if choices else None
            if target is None:
                target = await grouping.new_cluster()
            taken.add(target)
            rows = [index[p] for p in group]
            for p in group:
                target_of[p] = target
                others = [i for i in rows if i != index[p]]
                nearest_score[p] = float(np.max(grouping_scores[index[p], others])) if others else 1.0
        await self._apply(current, target_of, nearest_score, members, report)

    async def _apply(
        self,
        current: dict[UUID, tuple[UUID, bool]],
        target_of: dict[UUID, UUID],
        nearest_score: dict[UUID, float],
        members: dict[UUID, list[UUID]],
        report: ConsolidationReport,
    ) -> None:
        """Move every automatic membership whose cluster changed; a cluster whose members all went to one
        other cluster (and that no group keeps) is merged into it."""
        kept = {target_of[p] for p in target_of}
        absorbed: dict[UUID, UUID] = {}
        for cluster, posts in members.items():
            targets = {target_of.get(p) for p in posts}
            if cluster not in kept and len(targets) == 1 and None not in targets:
                (into,) = targets
                assert into is not None
                absorbed[cluster] = into
        # Every post that moves (by id), then every tally row concerned (by id), before the first move: the
        # moves reach them in no particular order, and votes and merges take them meanwhile.
        rehomed = [
            p
            for p, target in target_of.items()
            if not current[p][1] and current[p][0] != target and current[p][0] not in absorbed
        ]
        moving = rehomed + [p for source in absorbed for p in members[source]]
        if moving:
            await lock_tallies(self.session, moving, [*absorbed.values(), *(target_of[p] for p in rehomed)])
        for source, into in absorbed.items():
            await self._move_cluster(source, into)
            report.merges.append((source, into))
            report.changed.update((source, into))
        for p, target in target_of.items():
            source, manual = current[p]
            if manual or source == target or source in absorbed:
                continue
            await self.session.execute(
                update(ClusterMembership)
                .where(ClusterMembership.post_id == p, ClusterMembership.cluster_id == source)
                .values(cluster_id=target, similarity=nearest_score[p])
            )
            await self.session.execute(
                delete(ClusterSuggestion).where(
                    ClusterSuggestion.post_id == p,
                    ClusterSuggestion.cluster_id == target,
                    ClusterSuggestion.state == SuggestionState.PENDING.value,
                )
            )
            report.rehomed += 1
            report.changed.update((source, target))
        # A member's similarity is its nearest fellow member's score: it stays true when the cluster changes.
        for p, target in target_of.items():
            source, manual = current[p]
            if manual or (source != target and source not in absorbed):
                continue  # a person's, or just written by the move above
            if abs(self._similarity.get(p, 0.0) - nearest_score[p]) > 0.01:
                await self.session.execute(
                    update(ClusterMembership)
                    .where(ClusterMembership.post_id == p, ClusterMembership.cluster_id == target)
                    .values(similarity=nearest_score[p])
                )
        await self.session.flush()

    async def _memberships_around(self, posts: set[UUID]) -> dict[UUID, tuple[UUID, bool]]:
        """``{post: (cluster, manual)}`` for every live member of the clusters these posts are in."""
        if not posts:
            return {}
        clusters = (
            select(ClusterMembership.cluster_id)
            .where(
                ClusterMembership.post_id.in_(list(posts)), ClusterMembership.state != MembershipState.REJECTED.value
            )
            .scalar_subquery()
        )
        rows = await self.session.execute(
            select(
                ClusterMembership.post_id,
                ClusterMembership.cluster_id,
                ClusterMembership.manual,
                ClusterMembership.similarity,
            )
            .join(Post, Post.id == ClusterMembership.post_id)
            .where(
                ClusterMembership.cluster_id.in_(clusters),
                ClusterMembership.state != MembershipState.REJECTED.value,
                Post.deleted_at.is_(None),
                Post.hidden_at.is_(None),
            )
        )
        rows = rows.all()
        self._similarity.update({row.post_id: row.similarity or 0.0 for row in rows})
        return {row.post_id: (row.cluster_id, row.manual) for row in rows}

    async def _texts(self, posts: list[UUID]) -> dict[UUID, str]:
        """Each post's embedded text (title, then body), for the pass's word overlap."""
        rows = await self.session.execute(select(Post.id, Post.title, Post.body).where(Post.id.in_(posts)))
        return {row.id: post_text(row.title, row.body) for row in rows}

    async def _apart_pairs(self, posts: list[UUID]) -> list[tuple[UUID, UUID]]:
        """Pairs of these posts a person labelled "not duplicates"."""
        rows = await self.session.execute(
            select(GroupingLabel.post_a_id, GroupingLabel.post_b_id).where(
                GroupingLabel.duplicate.is_(False),
                GroupingLabel.post_a_id.in_(posts),
                GroupingLabel.post_b_id.in_(posts),
            )
        )
        return [(row.post_a_id, row.post_b_id) for row in rows]

    async def _background(self, post_id: UUID, query: Any) -> float:
        """The route score of the post's ``NEIGHBOURS``-th nearest post (NaN on a board with fewer): searched
        for the pass's new posts, remembered for an hour for the others (see :class:`BackgroundCache`)."""
        known = BACKGROUNDS.get(post_id)
        if known is None:
            found = await self.grouping.nearest(query, limit=NEIGHBOURS, exclude_post=post_id)
            known = found[-1].similarity if len(found) >= NEIGHBOURS else math.nan
            BACKGROUNDS.put(post_id, known)
        return known

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

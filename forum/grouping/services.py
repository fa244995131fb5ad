"""Duplicate grouping: post vectors, nearest neighbours, clusters and the product team's decisions.

How a post is grouped (``best_cluster``): once embedded, its ten nearest grouped posts are found by the
route score (HNSW) and re-scored (``embeddings.grouping``: with the default configuration, both encoders'
agreement on whole texts and on titles); it joins the best one's cluster when the score to that post,
*and* the mean score to all current members of that cluster, reach the threshold
(``FORUM_DUPLICATE_THRESHOLD``) and the candidate stands out from the post's background (its tenth
candidate); otherwise it starts a cluster of its own. The mean ("average link") stops chains of near
neighbours from drifting across needs (docs/duplicates.md). With a single encoder
(``FORUM_EMBEDDING_MODEL=all-MiniLM-L6-v2``, ``hashing``) the score is its cosine and the rule plain.
Assignments are serialised by an advisory lock so that two near-identical posts embedded at the same
moment still meet; people's changes of two clusters take it too (forum/grouping/locks.py). Memberships a
person decided (``manual``) are never changed by automatic grouping, and a rejected membership is
remembered so the post is never put back there.
Between the two thresholds a grouping is a suggestion (forum/grouping/thresholds.py, review.py); the
product team's decisions are in decisions.py, the consolidation pass in consolidation.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import numpy as np
from sqlalchemy import delete, func, literal, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from embeddings.grouping import TITLE_SUFFIX
from forum.encoding import PostEmbedder, PostVectors, Route
from forum.grouping.locks import CLUSTER_LOCK_KEY, hold_grouping_lock
from forum.grouping.thresholds import Thresholds
from forum.models import (
    HNSW_EF_SEARCH,
    SEARCH_DEFAULTS,
    Cluster,
    ClusterMembership,
    ClusterSuggestion,
    MembershipState,
    Post,
    PostEmbedding,
    PostStatus,
    SuggestionState,
    UserRoles,
)

# A route whose language group holds at most this many posts is searched exactly (via ix_post_language),
# not through the HNSW graph: an index scan filtered down to a rare (or empty) language walks up to
# hnsw.max_scan_tuples entries before it gives up (docs/multilingual.md, "As-you-type latency").
EXACT_SCAN_MAX_POSTS = 3000
GROUP_SIZE_TTL_SECONDS = 60.0
# The HNSW indexes' predicate (migration 0008): title-view rows ("<model>:title") are re-scoring only.
TITLE_VIEWS_EXCLUDED = "e.model NOT LIKE '%" + TITLE_SUFFIX.replace(":", "\\:") + "'"  # "\\:": not a bind


def vector_param(vector: Sequence[float] | np.ndarray) -> np.ndarray:
    """A query vector as a statement parameter: sent in pgvector's binary format (forum.models.Embedding)."""
    return np.asarray(vector, dtype=np.float32)


def vector_literal(vector: Sequence[float] | np.ndarray) -> str:
    """A vector in pgvector's text format, for connections without the binary codec (bench/)."""
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


def calibrated(route: Route, cosine: float) -> float:
    return float(route.calibration.slope * float(cosine) + route.calibration.intercept)


@dataclass
class Candidate:
    """A cluster a post may join: its score (the grouping rule's), its similarity to the closest member
    and, when known, which member that is."""

    cluster_id: UUID
    score: float
    similarity: float
    nearest_post_id: UUID | None


@dataclass
class Neighbour:
    post_id: UUID
    similarity: float
    cluster_id: UUID | None


@dataclass
class ClusterFit:
    """How well a post fits its best cluster: ``score`` is what the thresholds are compared with
    (``GroupingRule.cluster_score``); ``similarity`` is the re-scored similarity to ``nearest_post_id``."""

    cluster_id: UUID
    nearest_post_id: UUID
    similarity: float
    score: float


class GroupingService:
    """Nearest neighbours and cluster assignment on the configured encoders' vectors.

    Similarities are on one scale whatever the configuration: the cosine of the single encoder, or the
    multilingual combined score (``PostEmbedder.routes``: one search per group of candidate languages,
    each mapped by its calibration, merged by score).
    """

    def __init__(self, session: AsyncSession, embedder: PostEmbedder, threshold: float | Thresholds) -> None:
        self.session = session
        self.embedder = embedder
        self.thresholds = Thresholds.of(threshold)
        self.threshold = self.thresholds.sure
        self._transaction_state: tuple[Any, set[object]] = (None, set())

    # Vectors ----------------------------------------------------------------------------------

    @staticmethod
    def distance(route: Route, param: str = ":v") -> str:
        # The cast matches the partial HNSW index expression for this dimension.
        return f"(e.embedding::vector({route.dim}) <=> CAST({param} AS vector({route.dim})))"

    async def store_embeddings(self, post_id: UUID, content_hash: str, vectors: dict[str, np.ndarray]) -> None:
        """One row per encoder (``post_embedding``), replacing older vectors of the post."""
        await self.store_many([(post_id, content_hash, vectors)])

    async def store_many(self, posts: Sequence[tuple[UUID, str, dict[str, np.ndarray]]]) -> None:
        """:meth:`store_embeddings` of several posts (post id, content hash, vectors) in one statement."""
        rows = [
            {"post_id": post_id, "model": model, "content_hash": digest, "embedding": vector}
            for post_id, digest, vectors in posts
            for model, vector in vectors.items()
        ]
        if not rows:
            return
        stmt = insert(PostEmbedding).values(rows)
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

    def _once_per_transaction(self, what: object) -> bool:
        """True the first time ``what`` is asked for in the session's current (innermost) transaction: a
        transaction-scoped setting or lock need not be sent again until that transaction or savepoint ends."""
        sync = self.session.sync_session
        transaction = sync.get_nested_transaction() or sync.get_transaction()
        if transaction is None:
            return True
        if self._transaction_state[0] is not transaction:
            self._transaction_state = (transaction, set())
        if what in self._transaction_state[1]:
            return False
        self._transaction_state[1].add(what)
        return True

    async def stored_vectors(self, post_id: UUID) -> PostVectors | None:
        """A post's recorded language and stored vectors (None until it has every encoder's vector)."""
        language = await self.session.scalar(select(Post.language).where(Post.id == post_id))
        rows = (
            await self.session.execute(
                select(PostEmbedding.model, PostEmbedding.embedding).where(
                    PostEmbedding.post_id == post_id, PostEmbedding.model.in_(self.embedder.models)
                )
            )
        ).all()
        vectors = {row.model: np.asarray(row.embedding, dtype=np.float32) for row in rows}
        if set(vectors) != set(self.embedder.models):
            return None
        return PostVectors(language or "und", vectors)

    async def nearest(
        self,
        query: PostVectors,
        *,
        limit: int,
        exclude_post: UUID | None = None,
        exclude_clusters: Sequence[UUID] = (),
        viewer_filter: Any = None,
        grouped_only: bool = False,
        skip_duplicates: bool = False,
        kind: str | None = None,
    ) -> list[Neighbour]:
        """Most similar embedded posts (HNSW with pgvector's iterative scan for the filters)."""
        await self.prepare_search(limit)
        membership_join = "JOIN" if grouped_only else "LEFT JOIN"
        # Title views are never searched; the literal predicate lets the planner use the HNSW indexes (0008).
        conditions = ["e.model = :model", TITLE_VIEWS_EXCLUDED, "p.deleted_at IS NULL", "p.hidden_at IS NULL"]
        params: dict[str, Any] = {"limit": limit}
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
        found: list[Neighbour] = []
        for route in self.embedder.routes(query.language):
            where, order = await self.route_search(route, conditions)
            sql = f"""
                SELECT e.post_id, 1 - {self.distance(route)} AS similarity, m.cluster_id
                FROM post_embedding e
                JOIN post p ON p.id = e.post_id
                {membership_join} cluster_membership m ON m.post_id = e.post_id AND m.state <> 'rejected'
                WHERE {" AND ".join(where)}
                ORDER BY {order}
                LIMIT :limit
            """
            route_params = {**params, "v": vector_param(query.vectors[route.model]), "model": route.model}
            rows = (await self.session.execute(text(sql), route_params)).all()
            found.extend(
                Neighbour(post_id=r.post_id, similarity=calibrated(route, r.similarity), cluster_id=r.cluster_id)
                for r in rows
            )
        found.sort(key=lambda n: n.similarity, reverse=True)
        return found[:limit]

    async def prepare_search(self, limit: int) -> None:
        """pgvector's iterative scan and an ``ef_search`` for ``limit``: both for this transaction only, in
        one round trip (none when the transaction already has them, or the connection has them for its
        session: ``forum.models.SEARCH_DEFAULTS``, the default limits)."""
        ef_search = max(HNSW_EF_SEARCH, limit * 4)
        connection = await self.session.connection()
        if connection.info.get(SEARCH_DEFAULTS) == ef_search:
            return
        if self._once_per_transaction(("hnsw", ef_search)):
            await self.session.execute(
                text(
                    "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
                    f"set_config('hnsw.ef_search', '{ef_search}', true)"
                )
            )

    async def route_search(self, route: Route, conditions: Sequence[str]) -> tuple[list[str], str]:
        """One route's WHERE conditions (``conditions`` and the route's own) and ORDER BY: the HNSW order
        (the index's own expression), or an exact sort (by a ``similarity`` column) for a small language group."""
        where = [*conditions, f"vector_dims(e.embedding) = {route.dim}"]
        order = self.distance(route)
        if route.candidates is not None:
            where.append(route.candidates)
            if await self._group_size(route.candidates) <= EXACT_SCAN_MAX_POSTS:
                order = "similarity DESC"
        return where, order

    async def _group_size(self, candidates: str) -> int:
        """Live posts matching a route's language condition, counted up to EXACT_SCAN_MAX_POSTS + 1 and
        cached per process for a minute (only the choice of plan depends on it, never the result)."""
        cached = self.embedder.group_sizes.get(candidates)
        now = time.monotonic()
        if cached is not None and now - cached[0] < GROUP_SIZE_TTL_SECONDS:
            return cached[1]
        size = await self.session.scalar(
            text(
                f"SELECT count(*) FROM (SELECT 1 FROM post p WHERE p.deleted_at IS NULL AND {candidates} "
                f"LIMIT {EXACT_SCAN_MAX_POSTS + 1}) AS capped"
            )
        )
        self.embedder.group_sizes[candidates] = (now, int(size or 0))
        return int(size or 0)

    # Automatic grouping -----------------------------------------------------------------------

    async def assign(self, post_id: UUID, query: PostVectors) -> UUID:
        """Put a freshly embedded post in its cluster; returns the cluster id.

        The best candidate cluster's score decides (forum/grouping/thresholds.py): ``sure`` joins it (in
        ``auto`` mode), ``maybe`` (or ``sure`` in ``suggest`` mode) leaves the post apart with a pending
        suggestion for the product team, lower leaves it apart.
        """
        (target,) = await self.assign_many([(post_id, query)])
        return target

    async def assign_many(self, posts: Sequence[tuple[UUID, PostVectors]]) -> list[UUID]:
        """:meth:`assign` of several posts, one after the other in this order (each one meets the posts
        placed before it), under one cluster lock. What each post's decision needs from its own rows (its
        current membership, the clusters it was taken out of) is read for all of them at once: placing
        one post changes no other post's rows."""
        ids = [post_id for post_id, _ in posts]
        if len(set(ids)) != len(ids):  # the same post twice: each placement must see the one before
            return [target for pair in posts for target in await self.assign_many([pair])]
        if not posts:
            return []
        await self.hold_assignment_lock()
        current = {
            membership.post_id: membership
            for membership in await self.session.scalars(
                select(ClusterMembership).where(
                    ClusterMembership.post_id.in_(ids), ClusterMembership.state != MembershipState.REJECTED.value
                )
            )
        }
        # A person decided these: never undone automatically.
        automatic = [post_id for post_id in ids if post_id not in current or not current[post_id].manual]
        if automatic:
            await self.session.execute(
                delete(ClusterSuggestion).where(
                    ClusterSuggestion.post_id.in_(automatic),
                    ClusterSuggestion.state == SuggestionState.PENDING.value,
                )
            )
        excluded = await self.excluded_many(automatic)
        targets = []
        for post_id, query in posts:
            membership = current.get(post_id)
            if membership is not None and membership.manual:
                targets.append(membership.cluster_id)
            else:
                targets.append(await self._place(post_id, query, membership, excluded.get(post_id, [])))
        return targets

    async def _place(
        self, post_id: UUID, query: PostVectors, current: ClusterMembership | None, excluded: Sequence[UUID]
    ) -> UUID:
        candidate = await self.best_candidate(post_id, query, excluded)
        if candidate is not None and self.thresholds.applies(candidate.score):
            target, similarity = candidate.cluster_id, candidate.similarity
        elif current is not None and not await self._has_other_members(current.cluster_id, post_id):
            target, similarity = current.cluster_id, 1.0  # alone already: keep its cluster
        elif current is None:  # the usual first placement: a cluster of its own, in one statement
            target = await self._start_cluster(post_id)
            if candidate is not None and self.thresholds.band(candidate.score):
                await self.suggest(post_id, candidate)
            return target
        else:
            target, similarity = await self.new_cluster(), 1.0
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
        if candidate is not None and candidate.cluster_id != target and self.thresholds.band(candidate.score):
            await self.suggest(post_id, candidate)
        return target

    async def hold_assignment_lock(self) -> None:
        """The grouping lock (forum/grouping/locks.py), sent once per transaction. A batch takes it before
        it locks its posts: waiting for it while holding them (or tally rows) deadlocked with a person's move
        or merge that held it and waited for those rows."""
        if self._once_per_transaction(CLUSTER_LOCK_KEY):
            await hold_grouping_lock(self.session)

    async def best_cluster(
        self, post_id: UUID, query: PostVectors, *, exclude_clusters: Sequence[UUID] = ()
    ) -> ClusterFit | None:
        """The scoring step of assignment: the cluster a post fits best and its score against it.

        The ``rule.candidates`` nearest grouped posts (route score, HNSW) are re-scored on the grouping
        scale (``PostEmbedder.grouping_scores``: both encoders, whole text and title); the best one's
        cluster is scored by ``GroupingRule.cluster_score`` (NN score, mean score to all its current
        members, checked against the post's background). Compare the result with the thresholds.
        """
        rule = self.embedder.rule
        found = await self.nearest(
            query, limit=rule.candidates, exclude_post=post_id, exclude_clusters=exclude_clusters, grouped_only=True
        )
        candidates = await self.comparable([n.post_id for n in found if n.cluster_id is not None])
        found = [n for n in found if n.post_id in candidates]
        if not found:
            return None
        query = PostVectors(query.language, self.embedder.complete(query.vectors) or query.vectors)
        scores = self.embedder.grouping_scores(query, [candidates[n.post_id] for n in found])
        k = int(np.argmax(scores))
        cluster_id = found[k].cluster_id
        assert cluster_id is not None
        members = await self._comparable_members(cluster_id, exclude_post=post_id)
        mean = float(np.mean(self.embedder.grouping_scores(query, list(members.values())))) if members else None
        score = rule.cluster_score(float(scores[k]), mean, scores)
        return ClusterFit(cluster_id, found[k].post_id, float(scores[k]), score)

    async def comparable(self, post_ids: Sequence[UUID]) -> dict[UUID, PostVectors]:
        """Languages and re-scoring vectors of these posts (one query), leaving out any without them."""
        if not post_ids:
            return {}
        return self._complete_rows(
            await self.session.execute(
                select(PostEmbedding.post_id, PostEmbedding.model, PostEmbedding.embedding, Post.language)
                .join(Post, Post.id == PostEmbedding.post_id)
                .where(PostEmbedding.post_id.in_(list(post_ids)), PostEmbedding.model.in_(self.embedder.models))
            )
        )

    async def _comparable_members(self, cluster_id: UUID, *, exclude_post: UUID) -> dict[UUID, PostVectors]:
        """:meth:`comparable` of a cluster's current live members but one, found and read in one query."""
        return self._complete_rows(
            await self.session.execute(
                select(PostEmbedding.post_id, PostEmbedding.model, PostEmbedding.embedding, Post.language)
                .join(Post, Post.id == PostEmbedding.post_id)
                .join(ClusterMembership, ClusterMembership.post_id == PostEmbedding.post_id)
                .where(
                    ClusterMembership.cluster_id == cluster_id,
                    ClusterMembership.state != MembershipState.REJECTED.value,
                    ClusterMembership.post_id != exclude_post,
                    Post.deleted_at.is_(None),
                    PostEmbedding.model.in_(self.embedder.models),
                )
            )
        )

    def _complete_rows(self, rows: Any) -> dict[UUID, PostVectors]:
        stored: dict[UUID, PostVectors] = {}
        for row in rows:
            post = stored.setdefault(row.post_id, PostVectors(row.language or "und"))
            post.vectors[row.model] = np.asarray(row.embedding, dtype=np.float32)
        out = {}
        for post_id, post in stored.items():
            vectors = self.embedder.complete(post.vectors)
            if vectors is not None:
                out[post_id] = PostVectors(post.language, vectors)
        return out

    async def best_candidate(self, post_id: UUID, query: PostVectors, excluded: Sequence[UUID]) -> Candidate | None:
        """The cluster a post would join, with its score: ``best_cluster``, the grouping rule's scoring step."""
        fit = await self.best_cluster(post_id, query, exclude_clusters=excluded)
        if fit is None:
            return None
        return Candidate(fit.cluster_id, fit.score, fit.similarity, fit.nearest_post_id)

    async def cluster_score(self, query: PostVectors, cluster_id: UUID, *, exclude_post: UUID) -> Candidate | None:
        """A post's score against one cluster: the lower of its best and its mean similarity to the members
        (average link: close to one member is not enough, or chains of near neighbours drift across needs)."""
        parts = await self._member_similarities(query, cluster_id, exclude_post)
        total = sum(n for *_, n in parts)
        if not total:
            return None
        # Calibrations are linear, so the mean of calibrated scores is the calibrated mean of each route.
        mean = sum(calibrated(route, m) * n for route, m, _, n in parts) / total
        best = max(calibrated(route, b) for route, _, b, _ in parts)
        return Candidate(cluster_id, min(best, mean), best, None)

    async def excluded_many(self, post_ids: Sequence[UUID]) -> dict[UUID, list[UUID]]:
        """Per post, the clusters a person took it out of, or refused to put it in (dismissed suggestions);
        one query."""
        if not post_ids:
            return {}
        rejected = select(ClusterMembership.post_id, ClusterMembership.cluster_id).where(
            ClusterMembership.post_id.in_(list(post_ids)), ClusterMembership.state == MembershipState.REJECTED.value
        )
        dismissed = select(ClusterSuggestion.post_id, ClusterSuggestion.cluster_id).where(
            ClusterSuggestion.post_id.in_(list(post_ids)), ClusterSuggestion.state == SuggestionState.DISMISSED.value
        )
        out: dict[UUID, list[UUID]] = {}
        for row in await self.session.execute(rejected.union(dismissed)):
            out.setdefault(row.post_id, []).append(row.cluster_id)
        return out

    async def suggest(self, post_id: UUID, candidate: Candidate) -> None:
        """A pending suggestion (or a new score for it); a decided one is never reopened."""
        stmt = insert(ClusterSuggestion).values(
            id=uuid7(),
            post_id=post_id,
            cluster_id=candidate.cluster_id,
            score=candidate.score,
            state=SuggestionState.PENDING.value,
            created_at=func.now(),
            updated_at=func.now(),
        )
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[ClusterSuggestion.post_id, ClusterSuggestion.cluster_id],
                set_={"score": stmt.excluded.score, "updated_at": func.now()},
                where=ClusterSuggestion.state == SuggestionState.PENDING.value,
            )
        )

    async def _member_similarities(
        self, query: PostVectors, cluster_id: UUID, exclude_post: UUID
    ) -> list[tuple[Route, float, float, int]]:
        """Per route: (route, mean cosine, max cosine, members compared) against the cluster's members."""
        out = []
        for route in self.embedder.routes(query.language):
            languages = f"AND {route.candidates}" if route.candidates is not None else ""
            row = (
                await self.session.execute(
                    text(
                        f"""
                        SELECT avg(1 - {self.distance(route)}) AS mean, max(1 - {self.distance(route)}) AS best,
                               count(*) AS n
                        FROM cluster_membership m
                        JOIN post p ON p.id = m.post_id AND p.deleted_at IS NULL
                        JOIN post_embedding e ON e.post_id = m.post_id AND e.model = :model
                        WHERE m.cluster_id = :cluster AND m.state <> 'rejected' AND m.post_id <> :me
                          AND vector_dims(e.embedding) = {route.dim} {languages}
                        """
                    ),
                    {
                        "v": vector_param(query.vectors[route.model]),
                        "model": route.model,
                        "cluster": cluster_id,
                        "me": exclude_post,
                    },
                )
            ).one()
            if row.n:
                out.append((route, float(row.mean), float(row.best), int(row.n)))
        return out

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

    async def _start_cluster(self, post_id: UUID) -> UUID:
        """A new cluster with this post as its only member (similarity 1.0), created in one statement."""
        cluster_id = uuid7()
        cluster = insert(Cluster).values(id=cluster_id).returning(Cluster.id).cte("new_cluster")
        first = select(
            literal(post_id),
            cluster.c.id,
            literal(1.0),
            literal(MembershipState.SUGGESTED.value),
            literal(False),
        )
        columns = ["post_id", "cluster_id", "similarity", "state", "manual"]
        await self.session.execute(insert(ClusterMembership).from_select(columns, first))
        return cluster_id

    async def new_cluster(self) -> UUID:
        cluster = Cluster()
        self.session.add(cluster)
        await self.session.flush()
        return cluster.id

    async def cluster_of(self, post_id: UUID) -> UUID | None:
        membership = await self._current_membership(post_id)
        return membership.cluster_id if membership else None

    async def clusters_of(self, post_ids: Sequence[UUID]) -> dict[UUID, UUID]:
        """Each post's current cluster (posts in none are left out), in one query."""
        rows = await self.session.execute(
            select(ClusterMembership.post_id, ClusterMembership.cluster_id).where(
                ClusterMembership.post_id.in_(post_ids), ClusterMembership.state != MembershipState.REJECTED.value
            )
        )
        return dict(rows.tuples().all())


def visible_neighbours_filter(viewer: UserRoles | None) -> str:
    """SQL text for the similar-posts viewer filter (same rule as ``visible_to``)."""
    if viewer is not None and viewer.sees_internal:
        return "TRUE"
    return "p.visibility = 'public'"

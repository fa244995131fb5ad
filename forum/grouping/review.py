"""The review queue: groupings the rule is not sure of, waiting for one decision by the product team.

A suggestion is pending while its post is live, outside the cluster, and the cluster still has other
members. The queue is ordered by how much a decision matters: the unique voters of the post and of the
cluster's members together (a person who voted on both sides counts once), then by score. Accepting
puts the post in the cluster (confirmed, never undone automatically); dismissing remembers the refusal
like a rejection. Both are labelled pairs for ``forum grouping calibrate``.
"""

from __future__ import annotations

from uuid import UUID

from litestar.exceptions import NotFoundException
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from forum.accounts.schemas import UserPublic
from forum.errors import ConflictError
from forum.grouping import labels
from forum.grouping.decisions import ClusterDecisions
from forum.grouping.explanations import Explainer
from forum.grouping.schemas import Band, SuggestedCluster, SuggestedPost, Suggestion, SuggestionOutcome
from forum.grouping.services import CLUSTER_LOCK_KEY, GroupingService
from forum.models import ClusterSuggestion, LabelSource, Post, SuggestionState, User
from forum.posts.schemas import VoteCounts
from forum.schemas import Page
from forum.webhooks.services import emit_cluster_changed

_LIVE_MEMBERS = """
    SELECT m.post_id FROM cluster_membership m JOIN post mp ON mp.id = m.post_id AND mp.deleted_at IS NULL
    WHERE m.cluster_id = s.cluster_id AND m.state <> 'rejected' AND m.post_id <> s.post_id
"""
_QUEUE_SQL = f"""
WITH pending AS (
    SELECT s.id, s.post_id, s.cluster_id, s.score, s.created_at
    FROM cluster_suggestion s JOIN post p ON p.id = s.post_id AND p.deleted_at IS NULL
    WHERE s.state = 'pending' AND EXISTS ({_LIVE_MEMBERS})
      AND NOT EXISTS (SELECT FROM cluster_membership m
                      WHERE m.post_id = s.post_id AND m.cluster_id = s.cluster_id AND m.state <> 'rejected')
)
SELECT pe.*, (
    SELECT count(*) FROM (
        SELECT v.user_id FROM vote v WHERE v.post_id = pe.post_id
        UNION
        SELECT v.user_id FROM cluster_membership m
        JOIN post mp ON mp.id = m.post_id AND mp.deleted_at IS NULL
        JOIN vote v ON v.post_id = m.post_id
        WHERE m.cluster_id = pe.cluster_id AND m.state <> 'rejected'
    ) AS involved
) AS voters, count(*) OVER () AS total_rows
FROM pending pe
ORDER BY voters DESC, pe.score DESC, pe.created_at, pe.id
LIMIT :limit OFFSET :offset
"""
_CLUSTERS_SQL = """
SELECT m.cluster_id, count(*) AS member_count,
       (array_agg(p.title ORDER BY p.vote_total DESC, p.created_at))[1] AS title
FROM cluster_membership m JOIN post p ON p.id = m.post_id AND p.deleted_at IS NULL
WHERE m.state <> 'rejected' AND m.cluster_id = ANY(CAST(:clusters AS uuid[]))
GROUP BY m.cluster_id
"""
_LANGUAGES_SQL = """
SELECT m.cluster_id, coalesce(p.language, 'und') AS language, count(*) AS n
FROM cluster_membership m JOIN post p ON p.id = m.post_id AND p.deleted_at IS NULL
WHERE m.state <> 'rejected' AND m.cluster_id = ANY(CAST(:clusters AS uuid[]))
GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2
"""


class ReviewQueue:
    def __init__(self, grouping: GroupingService, viewer: User) -> None:
        self.grouping = grouping
        self.session: AsyncSession = grouping.session
        self.viewer = viewer

    async def list(self, limit: int, offset: int) -> Page[Suggestion]:
        rows = (await self.session.execute(text(_QUEUE_SQL), {"limit": limit, "offset": offset})).all()
        total = rows[0].total_rows if rows else await self._count() if offset else 0
        posts = {
            post.id: post
            for post in await self.session.scalars(select(Post).where(Post.id.in_([r.post_id for r in rows])))
        }
        clusters = await self._clusters([r.cluster_id for r in rows])
        explainer = Explainer(self.session, self.grouping.embedder, self.viewer)
        items = []
        for row in rows:
            post = posts[row.post_id]
            items.append(
                Suggestion(
                    id=row.id,
                    post=SuggestedPost(
                        post_id=post.id,
                        title=post.title,
                        kind=post.kind,
                        language=post.language,
                        author=UserPublic(
                            id=post.author.id, display_name=post.author.display_name, kind=post.author.kind
                        ),
                        created_at=post.created_at,
                        votes=VoteCounts(
                            total=post.vote_total, internal=post.vote_internal, external=post.vote_external
                        ),
                    ),
                    cluster=clusters[row.cluster_id],
                    score=round(float(row.score), 4),
                    band=Band(self.grouping.thresholds.band(row.score) or Band.MAYBE),
                    voters=int(row.voters),
                    explanation=await explainer.explain_post(row.post_id, row.cluster_id),
                    created_at=row.created_at,
                )
            )
        return Page(items=items, total=total, limit=limit, offset=offset)

    async def _count(self) -> int:
        rows = (await self.session.execute(text(_QUEUE_SQL), {"limit": None, "offset": 0})).all()
        return len(rows)

    async def _clusters(self, cluster_ids: list[UUID]) -> dict[UUID, SuggestedCluster]:
        if not cluster_ids:
            return {}
        params = {"clusters": cluster_ids}
        languages: dict[UUID, dict[str, int]] = {}
        for row in await self.session.execute(text(_LANGUAGES_SQL), params):
            languages.setdefault(row.cluster_id, {})[row.language] = int(row.n)
        return {
            row.cluster_id: SuggestedCluster(
                id=row.cluster_id,
                title=row.title,
                member_count=int(row.member_count),
                languages=languages.get(row.cluster_id, {}),
            )
            for row in await self.session.execute(text(_CLUSTERS_SQL), params)
        }

    # Decisions -------------------------------------------------------------------------------------

    async def _pending(self, suggestion_id: UUID) -> ClusterSuggestion:
        await self.session.execute(select(func.pg_advisory_xact_lock(CLUSTER_LOCK_KEY)))
        suggestion = await self.session.scalar(
            select(ClusterSuggestion).where(ClusterSuggestion.id == suggestion_id).with_for_update()
        )
        if (
            suggestion is None
            or await self.session.scalar(
                select(Post.id).where(Post.id == suggestion.post_id, Post.deleted_at.is_(None))
            )
            is None
        ):
            raise NotFoundException("Suggestion not found")
        if suggestion.state != SuggestionState.PENDING.value:
            raise ConflictError(detail=f"This suggestion was already {suggestion.state}")
        return suggestion

    def _decided(self, suggestion: ClusterSuggestion, state: SuggestionState) -> SuggestionOutcome:
        suggestion.state = state.value
        suggestion.decided_by_id = self.viewer.id
        suggestion.decided_at = func.now()
        return SuggestionOutcome(
            id=suggestion.id, state=state.value, post_id=suggestion.post_id, cluster_id=suggestion.cluster_id
        )

    async def accept(self, suggestion_id: UUID) -> SuggestionOutcome:
        """The post joins the cluster, confirmed by the viewer; its other pending suggestions go."""
        suggestion = await self._pending(suggestion_id)
        members = await labels.cluster_members(self.session, suggestion.cluster_id, exclude=[suggestion.post_id])
        if not members:
            raise ConflictError(detail="The cluster has no other members any more")
        if suggestion.post_id not in await labels.cluster_members(self.session, suggestion.cluster_id):
            before = await self.grouping.cluster_of(suggestion.post_id)
            await ClusterDecisions(self.grouping).join_by_hand(
                suggestion.post_id, suggestion.cluster_id, self.viewer, LabelSource.ACCEPT
            )
            await emit_cluster_changed(self.session, [before, suggestion.cluster_id], "accepted", suggestion.post_id)
        outcome = self._decided(suggestion, SuggestionState.ACCEPTED)
        await self.session.execute(
            delete(ClusterSuggestion).where(
                ClusterSuggestion.post_id == suggestion.post_id,
                ClusterSuggestion.id != suggestion.id,
                ClusterSuggestion.state == SuggestionState.PENDING.value,
            )
        )
        await self.session.flush()
        return outcome

    async def dismiss(self, suggestion_id: UUID) -> SuggestionOutcome:
        """Not the same need: never proposed again, and automatic grouping never puts it there."""
        suggestion = await self._pending(suggestion_id)
        members = await labels.cluster_members(self.session, suggestion.cluster_id, exclude=[suggestion.post_id])
        await labels.record_post_against(
            self.session,
            suggestion.post_id,
            members,
            duplicate=False,
            source=LabelSource.DISMISS,
            actor_id=self.viewer.id,
        )
        outcome = self._decided(suggestion, SuggestionState.DISMISSED)
        await self.session.flush()
        return outcome

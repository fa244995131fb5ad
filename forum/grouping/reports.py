"""What the product team reads about clusters: demand per real need, counted once per person."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar.exceptions import NotFoundException
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from forum.accounts.schemas import UserPublic
from forum.encoding import PostEmbedder
from forum.grouping.explanations import Description, Explainer
from forum.grouping.schemas import (
    Band,
    ClusterDetail,
    ClusterMember,
    ClusterSort,
    ClusterSummary,
    Growth,
    VoterCounts,
)
from forum.models import ClusterMembership, MembershipState, Post, User
from forum.posts.schemas import VoteCounts
from forum.schemas import Page

# Unique voters across a cluster's live members (a person who voted on several members counts once),
# split by the voter's kind, plus growth over the last 30 days.
_SUMMARY_SQL = """
WITH members AS (
    SELECT m.cluster_id, p.id AS post_id, p.kind, p.title, p.vote_total, p.created_at, p.updated_at
    FROM cluster_membership m
    JOIN post p ON p.id = m.post_id
    WHERE m.state <> 'rejected' AND p.deleted_at IS NULL AND p.hidden_at IS NULL {member_filter}
),
voters AS (
    SELECT mem.cluster_id, v.user_id, min(v.created_at) AS first_vote, max(v.voter_kind) AS voter_kind
    FROM members mem JOIN vote v ON v.post_id = mem.post_id
    GROUP BY mem.cluster_id, v.user_id
),
voter_stats AS (
    SELECT cluster_id,
           count(*) AS voters,
           count(*) FILTER (WHERE voter_kind = 'internal') AS internal_voters,
           count(*) FILTER (WHERE first_vote >= now() - interval '30 days') AS new_voters
    FROM voters GROUP BY cluster_id
),
member_stats AS (
    SELECT cluster_id,
           count(*) AS member_count,
           count(*) FILTER (WHERE kind = 'idea') AS idea_count,
           count(*) FILTER (WHERE kind = 'critique') AS critique_count,
           count(*) FILTER (WHERE created_at >= now() - interval '30 days') AS new_posts,
           min(created_at) AS first_posted_at,
           max(updated_at) AS last_activity_at,
           (array_agg(title ORDER BY vote_total DESC, created_at ASC))[1] AS title
    FROM members GROUP BY cluster_id
)
SELECT ms.*, coalesce(vs.voters, 0) AS voters, coalesce(vs.internal_voters, 0) AS internal_voters,
       coalesce(vs.new_voters, 0) AS new_voters, count(*) OVER () AS total_rows
FROM member_stats ms LEFT JOIN voter_stats vs USING (cluster_id)
WHERE ms.member_count >= :min_members
ORDER BY {order}, ms.cluster_id
LIMIT :limit OFFSET :offset
"""

# Members and unique voters per channel, hidden posts left out
# (a vote captured on the voter's behalf has the capture's channel).
_CHANNELS_SQL = """
SELECT m.cluster_id, 'posts' AS what, p.channel, count(*) AS n
FROM cluster_membership m JOIN post p ON p.id = m.post_id
WHERE m.cluster_id = ANY(:ids) AND m.state <> 'rejected' AND p.deleted_at IS NULL AND p.hidden_at IS NULL
GROUP BY m.cluster_id, p.channel
UNION ALL
SELECT m.cluster_id, 'voters', coalesce(c.channel, 'web'), count(DISTINCT v.user_id)
FROM cluster_membership m
JOIN post p ON p.id = m.post_id AND p.deleted_at IS NULL AND p.hidden_at IS NULL
JOIN vote v ON v.post_id = m.post_id
LEFT JOIN feedback_capture c
    ON c.subject = 'vote' AND c.customer_id = v.user_id AND c.post_id = coalesce(v.merged_from_id, v.post_id)
WHERE m.cluster_id = ANY(:ids) AND m.state <> 'rejected'
GROUP BY m.cluster_id, coalesce(c.channel, 'web')
"""
_WITH_CHANNEL = """AND m.cluster_id IN (
    SELECT cm.cluster_id FROM cluster_membership cm JOIN post cp ON cp.id = cm.post_id
    WHERE cm.state <> 'rejected' AND cp.deleted_at IS NULL AND cp.hidden_at IS NULL
    AND cp.channel = ANY(:channels))"""

_ORDER = {
    ClusterSort.VOTERS: "voters DESC, ms.member_count DESC",
    ClusterSort.MEMBERS: "ms.member_count DESC, voters DESC",
    ClusterSort.GROWTH: "(coalesce(vs.new_voters, 0) + ms.new_posts) DESC, voters DESC",
    ClusterSort.NEW: "ms.first_posted_at DESC",
}


def _summary(row: Any, description: Description | None) -> ClusterSummary:
    return ClusterSummary(
        id=row.cluster_id,
        title=row.title,
        representative=description.representative if description else None,
        key_phrases=description.key_phrases if description else [],
        languages=description.languages if description else {},
        member_count=row.member_count,
        idea_count=row.idea_count,
        critique_count=row.critique_count,
        unique_voters=VoterCounts(
            total=row.voters, internal=row.internal_voters, external=row.voters - row.internal_voters
        ),
        growth_30d=Growth(new_posts=row.new_posts, new_voters=row.new_voters),
        first_posted_at=row.first_posted_at,
        last_activity_at=row.last_activity_at,
    )


class ClusterReports:
    def __init__(self, session: AsyncSession, embedder: PostEmbedder, viewer: User | None) -> None:
        self.session = session
        self.explainer = Explainer(session, embedder, viewer)

    async def _count_channels(self, summaries: list[ClusterSummary]) -> list[ClusterSummary]:
        by_id = {summary.id: summary for summary in summaries}
        if by_id:
            for row in await self.session.execute(text(_CHANNELS_SQL), {"ids": list(by_id)}):
                counts = by_id[row.cluster_id].channels if row.what == "posts" else by_id[row.cluster_id].voter_channels
                counts[row.channel] = row.n
        return summaries

    async def list(
        self, sort: ClusterSort, min_members: int, limit: int, offset: int, channels: list[str] | None = None
    ) -> Page[ClusterSummary]:
        """``channels``: only clusters with a member from one of them."""
        sql = _SUMMARY_SQL.format(member_filter=_WITH_CHANNEL if channels else "", order=_ORDER[sort])
        params = {"min_members": min_members, "limit": limit, "offset": offset}
        if channels:
            params["channels"] = channels
        rows = (await self.session.execute(text(sql), params)).all()
        if rows:
            total = rows[0].total_rows
        elif offset:
            total = len((await self.session.execute(text(sql), {**params, "limit": None, "offset": 0})).all())
        else:
            total = 0
        descriptions = await self.explainer.describe([r.cluster_id for r in rows])
        items = await self._count_channels([_summary(r, descriptions.get(r.cluster_id)) for r in rows])
        return Page(items=items, total=total, limit=limit, offset=offset)

    async def detail(self, cluster_id: UUID) -> ClusterDetail:
        sql = _SUMMARY_SQL.format(member_filter="AND m.cluster_id = :cluster_id", order=_ORDER[ClusterSort.VOTERS])
        row = (
            await self.session.execute(text(sql), {"cluster_id": cluster_id, "min_members": 1, "limit": 1, "offset": 0})
        ).first()
        if row is None:
            raise NotFoundException("Cluster not found")
        memberships = (
            await self.session.execute(
                select(ClusterMembership, Post)
                .join(Post, Post.id == ClusterMembership.post_id)
                .where(ClusterMembership.cluster_id == cluster_id, Post.deleted_at.is_(None), Post.hidden_at.is_(None))
                .order_by(Post.created_at)
            )
        ).all()
        explanations = await self.explainer.explain_members(cluster_id)
        descriptions = await self.explainer.describe([cluster_id])
        members, rejected = [], []
        for membership, post in memberships:
            member = ClusterMember(
                post_id=post.id,
                title=post.title,
                kind=post.kind,
                status=post.status,
                visibility=post.visibility,
                language=post.language,
                author=UserPublic(id=post.author.id, display_name=post.author.display_name, kind=post.author.kind),
                created_at=post.created_at,
                votes=VoteCounts(total=post.vote_total, internal=post.vote_internal, external=post.vote_external),
                similarity=membership.similarity,
                state=membership.state,
                manual=membership.manual,
                band=Band.MANUAL if membership.manual else Band.SURE,
                explanation=explanations.get(post.id),
                merged_into=post.merged_into_id,
            )
            (rejected if membership.state == MembershipState.REJECTED.value else members).append(member)
        [summary] = await self._count_channels([_summary(row, descriptions.get(cluster_id))])
        return ClusterDetail(summary=summary, members=members, rejected=rejected)

"""What the product team reads about clusters: demand per real need, counted once per person."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from litestar.exceptions import NotFoundException
from sqlalchemy import false, literal_column, select, text, true, tuple_, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from forum.accounts.schemas import UserPublic
from forum.encoding import PostEmbedder
from forum.errors import UnprocessableError
from forum.grouping.descriptions import DescriptionStore
from forum.grouping.explanations import Description, Explainer
from forum.grouping.schemas import (
    Band,
    ClusterDetail,
    ClusterMember,
    ClusterSort,
    ClusterSummary,
    Explanation,
    Growth,
    SurveyVoices,
    VoterCounts,
)
from forum.models import ClusterMembership, MembershipState, Post, User
from forum.posts.schemas import VoteCounts
from forum.schemas import Page

# Unique voters across a cluster's live members (a person who voted on several members counts once),
# split by the voter's kind, plus growth since the start of the UTC day 30 days ago. The counts come from
# cluster_tally and cluster_voter (kept by migration 0015's triggers); growth is the 30-day sums stored on
# the tally row (migration 0018, kept from cluster_day's changes), so a call is O(page) for the voters,
# members, new and growth sorts: it walks the sort's index on cluster_tally (migrations 0017 and 0018).
#
# A row's stored growth is its window's while growth_since <= S <= growth_first_day (S: the window's first
# day, _SINCE). After a day change the rows that counted something on the day that left are stale until the
# worker refreshes them (refresh_growth): a page reads their growth from cluster_day instead (at most 31
# rows each), and the growth sort merges them, recounted, with the first offset + limit exact rows of its
# index (ix_cluster_tally_growth_first_day and ix_cluster_tally_growth_since find them). Survey voices are
# stored on the tally row too (migration 0019, kept from survey_tally's 'cluster' rows): the detractors sort
# walks ix_cluster_tally_detractors.
_SINCE = "(now() AT TIME ZONE 'UTC')::date - 30"
_STALE = f"(t.growth_first_day < {_SINCE} OR t.growth_since > {_SINCE})"
_FRESH = f"(t.growth_since <= {_SINCE} AND coalesce(t.growth_first_day, 'infinity') >= {_SINCE})"
_DAY_SUM = (
    "(SELECT coalesce(sum({what}), 0) FROM cluster_day d WHERE d.cluster_id = {t}.cluster_id AND d.day >= {since})"
)

_WHERE = "t.member_count >= greatest(:min_members, 1) {cluster_filter}"
# The growth sort's rows: the exact ones in the index's order, as many as the page needs, and the stale ones
# recounted; the page sorts the union.
_GROWTH_SOURCE = f"""(
    (SELECT t.*, t.growth_posts + t.growth_voters AS growth FROM cluster_tally t
     WHERE {_WHERE} AND {_FRESH}
     ORDER BY t.growth_posts + t.growth_voters DESC, t.voters DESC, t.cluster_id
     LIMIT CAST(:limit AS bigint) + CAST(:offset AS bigint))
    UNION ALL
    SELECT t.*, {_DAY_SUM.format(what="d.posts + d.voters", t="t", since=_SINCE)} FROM cluster_tally t
    WHERE {_WHERE} AND {_STALE}
) AS t"""

_SUMMARY_SQL = """
WITH page AS (
    SELECT t.cluster_id, t.voters, t.internal_voters, t.member_count, t.idea_count, t.critique_count,
           t.first_posted_at, t.last_activity_at, t.top_post_id, t.revision, t.growth_posts, t.growth_voters,
           t.voices, t.detractor_voices, {fresh} AS growth_fresh {rank_columns},
           (SELECT count(*) FROM cluster_tally t WHERE {where}) AS total_rows
    FROM {source}
    WHERE {where}
    ORDER BY {order}, t.cluster_id
    LIMIT :limit OFFSET :offset
), {channel_ctes}
SELECT page.*, top.title, ch.channels AS voter_channel_names, ch.counts AS voter_channel_counts,
       CASE WHEN page.growth_fresh THEN page.growth_posts ELSE {new_posts} END AS new_posts,
       CASE WHEN page.growth_fresh THEN page.growth_voters ELSE {new_voters} END AS new_voters,
       cd.revision AS d_revision, cd.computed_at AS d_computed_at, cd.representative_id AS d_representative_id,
       cd.representative_title AS d_representative_title, cd.key_phrases AS d_key_phrases,
       cd.languages AS d_languages, cd.channels AS d_channels
FROM page
LEFT JOIN post top ON top.id = page.top_post_id
LEFT JOIN cluster_description cd ON cd.cluster_id = page.cluster_id AND cd.sees_internal = :sees_internal
LEFT JOIN voter_channels ch ON ch.cluster_id = page.cluster_id
ORDER BY {order}, page.cluster_id
"""

# Unique voters per channel of the page's clusters (CTEs of the summary statement: one round trip fewer per
# call): a vote captured on the voter's behalf has the capture's channel, any other vote is 'web'. Only
# captured votes are read (their feedback_capture rows, then each one's vote): 'web' is the tally's voters
# less those whose every counted vote in the cluster was captured (cluster_voter.posts). Captured channels
# come by name, then 'web'; channels with no voter are left out. Members per channel are stored with the
# description (a post's channel never changes).
_VOTER_CHANNELS_CTES = """captured AS MATERIALIZED (
    SELECT m.cluster_id, v.user_id, c.channel
    FROM feedback_capture c
    JOIN vote v ON v.user_id = c.customer_id AND c.post_id = coalesce(v.merged_from_id, v.post_id)
    JOIN cluster_membership m ON m.post_id = v.post_id AND m.state <> 'rejected'
    WHERE c.subject = 'vote' AND m.cluster_id IN (SELECT cluster_id FROM page) AND post_counts_in_cluster(v.post_id)
), only_captured AS (
    SELECT k.cluster_id, count(*) AS n
    FROM (SELECT cluster_id, user_id, count(*) AS votes FROM captured GROUP BY cluster_id, user_id) AS k
    JOIN cluster_voter cv ON cv.cluster_id = k.cluster_id AND cv.user_id = k.user_id AND cv.posts <= k.votes
    GROUP BY k.cluster_id
), voter_channels AS (
    SELECT cluster_id, array_agg(channel ORDER BY web, channel) AS channels,
           array_agg(n ORDER BY web, channel) AS counts
    FROM (
        SELECT cluster_id, channel, count(DISTINCT user_id) AS n, false AS web
        FROM captured GROUP BY cluster_id, channel
        UNION ALL
        SELECT p.cluster_id, 'web', p.voters - coalesce(o.n, 0), true
        FROM page p LEFT JOIN only_captured o ON o.cluster_id = p.cluster_id
    ) AS by_channel
    WHERE n > 0
    GROUP BY cluster_id
)"""
# Clusters with a counted member from one of the channels: cluster_channel's rows (migration 0019), not the
# memberships. A page walks the sort's index and probes each row; the total counts the channels' rows.
_WITH_CHANNEL = """AND t.cluster_id IN (
    SELECT cc.cluster_id FROM cluster_channel cc WHERE cc.channel = ANY(:channels) AND cc.members > 0)"""


def _summary_sql(sort: ClusterSort, *, one: bool = False, channels: bool = False) -> str:
    rank_columns, source = "", "cluster_tally t"
    cluster_filter = ("AND t.cluster_id = :cluster_id" if one else "") + (_WITH_CHANNEL if channels else "")
    where = _WHERE.format(cluster_filter=cluster_filter)
    if sort is ClusterSort.GROWTH:
        rank_columns = ", t.growth"
        source = _GROWTH_SOURCE.replace("{cluster_filter}", cluster_filter)
    return _SUMMARY_SQL.format(
        rank_columns=rank_columns,
        source=source,
        fresh=_FRESH,
        where=where,
        channel_ctes=_VOTER_CHANNELS_CTES,
        new_posts=_DAY_SUM.format(what="d.posts", t="page", since=_SINCE),
        new_voters=_DAY_SUM.format(what="d.voters", t="page", since=_SINCE),
        order=_ORDER[sort],
    )


_TOTAL_SQL = "SELECT count(*) FROM cluster_tally t WHERE t.member_count >= greatest(:min_members, 1) {cluster_filter}"

# Each order is an index of cluster_tally (migrations 0017 to 0019), cluster_id last; growth's stale rows
# come recounted beside its index's (_GROWTH_SOURCE).
_ORDER = {
    ClusterSort.VOTERS: "voters DESC, member_count DESC",
    ClusterSort.MEMBERS: "member_count DESC, voters DESC",
    ClusterSort.GROWTH: "growth DESC, voters DESC",
    ClusterSort.NEW: "first_posted_at DESC",
    ClusterSort.DETRACTORS: "detractor_voices DESC, voices DESC, voters DESC",
}


def _summary(row: Any, description: Description | None) -> ClusterSummary:
    return ClusterSummary(
        id=row.cluster_id,
        title=row.title,
        representative=description.representative if description else None,
        key_phrases=description.key_phrases if description else [],
        languages=description.languages if description else {},
        channels=dict(description.channels) if description else {},
        member_count=row.member_count,
        idea_count=row.idea_count,
        critique_count=row.critique_count,
        unique_voters=VoterCounts(
            total=row.voters, internal=row.internal_voters, external=row.voters - row.internal_voters
        ),
        growth_30d=Growth(new_posts=row.new_posts, new_voters=row.new_voters),
        survey_voices=SurveyVoices(total=row.voices, detractors=row.detractor_voices),
        first_posted_at=row.first_posted_at,
        last_activity_at=row.last_activity_at,
        voter_channels=dict(zip(row.voter_channel_names, row.voter_channel_counts, strict=True))
        if row.voter_channel_names
        else {},
    )


MEMBER_PAGE = 50
"""Members per page of a cluster (``GET /api/clusters/{id}``): ``limit`` chooses up to 100."""


def _member_cursor_error() -> UnprocessableError:
    return UnprocessableError("Invalid cursor: not a cursor this cluster's members gave", field="after")


def _encode_member_cursor(created_at: datetime, post_id: UUID) -> str:
    """Opaque to clients: the last member's post creation time and id, as URL-safe base64 of JSON."""
    return base64.urlsafe_b64encode(msgspec.json.encode(["members", created_at, post_id])).decode().rstrip("=")


def _decode_member_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = msgspec.json.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        tag, created_at, post_id = raw
        if tag != "members":
            raise ValueError
        return msgspec.convert(created_at, datetime), msgspec.convert(post_id, UUID, strict=False)
    except (ValueError, TypeError, msgspec.ValidationError, msgspec.DecodeError):
        raise _member_cursor_error() from None


def _member(r: Any, explanation: Explanation | None) -> ClusterMember:
    return ClusterMember(
        post_id=r.id,
        title=r.title,
        kind=r.kind,
        status=r.status,
        visibility=r.visibility,
        language=r.language,
        author=UserPublic(id=r.author_id, display_name=r.display_name, kind=r.author_kind),
        created_at=r.created_at,
        votes=VoteCounts(total=r.vote_total, internal=r.vote_internal, external=r.vote_external),
        similarity=r.similarity,
        state=r.state,
        manual=r.manual,
        band=Band.MANUAL if r.manual else Band.SURE,
        explanation=explanation,
        merged_into=r.merged_into_id,
    )


class _StoredDescription:
    """A ``cluster_description`` row as the summary statement joined it (``d_`` columns), with the names
    ``DescriptionStore`` reads."""

    __slots__ = (
        "channels",
        "computed_at",
        "key_phrases",
        "languages",
        "representative_id",
        "representative_title",
        "revision",
    )

    def __init__(self, row: Any) -> None:
        self.revision, self.computed_at = row.d_revision, row.d_computed_at
        self.representative_id, self.representative_title = row.d_representative_id, row.d_representative_title
        self.key_phrases, self.languages, self.channels = row.d_key_phrases, row.d_languages, row.d_channels


# 'rejected' as a constant of the members page's SQL, not a bound parameter: asyncpg prepares each statement
# and after five runs PostgreSQL may switch to a generic plan, which can use the partial index
# ix_cluster_membership_recent (WHERE state <> 'rejected') only if the statement says 'rejected' itself.
# With a parameter, the generic plan read every membership of the cluster with its post and author and sorted
# them (1,401 at 100k posts: 4-5 ms of PostgreSQL CPU a page instead of 0.5; the cluster page's regression
# since the members and rejected posts share one statement, docs/benchmarks.md).
_REJECTED = literal_column(f"'{MembershipState.REJECTED.value}'")


class ClusterReports:
    def __init__(self, session: AsyncSession, embedder: PostEmbedder, viewer: User | None) -> None:
        self.session = session
        # Descriptions and member explanations are stored per cluster revision and audience
        # (forum/grouping/descriptions.py): a call reads them, it computes one only when none exists yet.
        self.descriptions = DescriptionStore(session, Explainer(session, embedder, viewer))
        self.sees_internal = self.descriptions.sees_internal

    async def _describe(self, rows: Any) -> dict[UUID, Description]:
        """The page's descriptions, from the stored rows the summary statement joined (the viewer's
        audience): one statement fewer per call."""
        stored = {r.cluster_id: _StoredDescription(r) for r in rows if r.d_revision is not None}
        return await self.descriptions.describe({r.cluster_id: r.revision for r in rows}, stored)

    async def list(
        self, sort: ClusterSort, min_members: int, limit: int, offset: int, channels: list[str] | None = None
    ) -> Page[ClusterSummary]:
        """``channels``: only clusters with a member from one of them."""
        sql = _summary_sql(sort, channels=bool(channels))
        params = {"min_members": min_members, "limit": limit, "offset": offset, "sees_internal": self.sees_internal}
        if channels:
            params["channels"] = channels
        rows = (await self.session.execute(text(sql), params)).all()
        if rows:
            total = rows[0].total_rows
        elif offset:
            count = _TOTAL_SQL.format(cluster_filter=_WITH_CHANNEL if channels else "")
            params.pop("limit"), params.pop("offset")
            total = await self.session.scalar(text(count), params) or 0
        else:
            total = 0
        descriptions = await self._describe(rows)
        items = [_summary(r, descriptions.get(r.cluster_id)) for r in rows]
        return Page(items=items, total=total, limit=limit, offset=offset)

    async def detail(self, cluster_id: UUID, limit: int = MEMBER_PAGE, after: str | None = None) -> ClusterDetail:
        """A cluster, one page of its members (oldest first, ``limit`` of them, after the ``after`` cursor)
        and every rejected post. A page reads its members by the memberships' index
        (``ix_cluster_membership_recent``: cluster, post's created_at) from the cursor on, and only their
        explanations: the 100 most voted clusters at 100k posts have 600-1,400 members, and answering every
        one cost 20-40 ms of server CPU per call (docs/benchmarks.md)."""
        sql = _summary_sql(ClusterSort.VOTERS, one=True)
        row = (
            await self.session.execute(
                text(sql),
                {
                    "cluster_id": cluster_id,
                    "min_members": 1,
                    "limit": 1,
                    "offset": 0,
                    "sees_internal": self.sees_internal,
                },
            )
        ).first()
        if row is None:
            raise NotFoundException("Cluster not found")
        # Columns, not ORM objects: 1.3k Post, User and membership instances cost ~90 ms at 100k posts.
        m = ClusterMembership
        columns = (
            select(
                m.similarity,
                m.state,
                m.manual,
                m.post_created_at,
                Post.id,
                Post.title,
                Post.kind,
                Post.status,
                Post.visibility,
                Post.language,
                Post.created_at,
                Post.vote_total,
                Post.vote_internal,
                Post.vote_external,
                Post.merged_into_id,
                User.id.label("author_id"),
                User.display_name,
                User.kind.label("author_kind"),
            )
            .join(Post, Post.id == m.post_id)
            .join(User, User.id == Post.author_id)
        )
        live = [m.cluster_id == cluster_id, Post.deleted_at.is_(None), Post.hidden_at.is_(None)]
        page = columns.add_columns(false().label("is_rejected"))
        page = page.where(*live, m.state != _REJECTED)
        if after is not None:
            page = page.where(tuple_(m.post_created_at, m.post_id) > tuple_(*_decode_member_cursor(after)))
        page = page.order_by(m.post_created_at, m.post_id).limit(limit + 1)
        # The rejected posts (every one, on every page) in the same statement: one round trip fewer.
        every_rejected = columns.add_columns(true().label("is_rejected"))
        every_rejected = every_rejected.where(*live, m.state == _REJECTED)
        both = union_all(page, every_rejected).subquery()
        all_rows = (
            await self.session.execute(select(both).order_by(both.c.is_rejected, both.c.post_created_at, both.c.id))
        ).all()
        rows = [r for r in all_rows if not r.is_rejected]
        rejected_rows = [r for r in all_rows if r.is_rejected]
        more, rows = len(rows) > limit, rows[:limit]

        descriptions = await self._describe([row])
        explanations = await self.descriptions.explanations(cluster_id, row.revision, [r.id for r in rows])
        members = [_member(r, explanations.get(r.id)) for r in rows]
        rejected = [_member(r, None) for r in rejected_rows]
        summary = _summary(row, descriptions.get(cluster_id))
        cursor = _encode_member_cursor(rows[-1].post_created_at, rows[-1].id) if more else None
        return ClusterDetail(summary=summary, members=members, rejected=rejected, next=cursor)


GROWTH_STALE_SQL = f"SELECT t.cluster_id FROM cluster_tally t WHERE {_STALE} ORDER BY t.cluster_id LIMIT :limit"


async def refresh_growth(session_maker: Any, *, batch: int = 500) -> int:
    """Recount the stored 30-day growth of every tally row the day change made stale (migration 0018), one
    cluster per transaction (a transaction holding many tally rows could deadlock with a move between two
    clusters). The worker runs it on its sweep; until it has, lists recount those rows as they read them."""
    done = 0
    while True:
        async with session_maker() as session, session.begin():
            ids = list(await session.scalars(text(GROWTH_STALE_SQL), {"limit": batch}))
        for cluster_id in ids:
            async with session_maker() as session, session.begin():
                if await session.scalar(text("SELECT cluster_growth_refresh(:id)"), {"id": cluster_id}):
                    done += 1
        if len(ids) < batch:
            return done

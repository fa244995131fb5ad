"""CSV exports of the whole board for the product team: posts, votes, cluster memberships and credits.

Rows are read through a server-side cursor (``AsyncConnection.stream`` with ``yield_per``) and written
out a batch at a time, so memory stays flat however many rows there are. Every export includes internal
and hidden posts, with their ``visibility`` and ``hidden`` columns; deleted posts are left out. Cells
that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or carriage
return) are prefixed with ``'`` (OWASP's CSV injection advice); numbers are written as numbers.
"""

from __future__ import annotations

import csv
import enum
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import aliased

from forum.models import ClusterMembership, CreditEntry, FeedbackCapture, Post, User, Vote

BATCH_ROWS = 2_000
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ExportKind(enum.StrEnum):
    POSTS = "posts"
    VOTES = "votes"
    CLUSTERS = "clusters"
    CREDITS = "credits"


def _hidden(post: Any) -> Any:
    return post.hidden_at.is_not(None).label("hidden")


def _posts() -> Select[Any]:
    cluster = (
        select(ClusterMembership.cluster_id)
        .where(ClusterMembership.post_id == Post.id, ClusterMembership.state != "rejected")
        .scalar_subquery()
    )
    return (
        select(
            Post.id,
            Post.kind,
            Post.title,
            Post.body,
            Post.status,
            Post.visibility,
            _hidden(Post),
            func.array_to_string(Post.tags, ";").label("tags"),
            Post.language,
            Post.author_id,
            User.display_name.label("author_name"),
            User.kind.label("author_kind"),
            Post.created_at,
            Post.updated_at,
            Post.vote_total.label("votes_total"),
            Post.vote_internal.label("votes_internal"),
            Post.vote_external.label("votes_external"),
            Post.comment_count,
            Post.merged_into_id,
            cluster.label("cluster_id"),
            Post.channel,
        )
        .join(User, User.id == Post.author_id)
        .where(Post.deleted_at.is_(None))
        .order_by(Post.created_at, Post.id)
    )


def _votes() -> Select[Any]:
    return (
        select(
            Vote.post_id,
            Post.visibility.label("post_visibility"),
            _hidden(Post).label("post_hidden"),
            Vote.user_id,
            User.display_name.label("user_name"),
            Vote.voter_kind,
            Vote.created_at.label("voted_at"),
            Vote.merged_from_id,
            func.coalesce(FeedbackCapture.channel, "web").label("channel"),
        )
        .join(Post, Post.id == Vote.post_id)
        .join(User, User.id == Vote.user_id)
        .outerjoin(  # a vote captured on the voter's behalf: its channel (kept on the post it was given to)
            FeedbackCapture,
            (FeedbackCapture.subject == "vote")
            & (FeedbackCapture.customer_id == Vote.user_id)
            & (FeedbackCapture.post_id == func.coalesce(Vote.merged_from_id, Vote.post_id)),
        )
        .where(Post.deleted_at.is_(None))
        .order_by(Vote.created_at, Vote.post_id, Vote.user_id)
    )


def _clusters() -> Select[Any]:
    return (
        select(
            ClusterMembership.cluster_id,
            ClusterMembership.post_id,
            Post.title.label("post_title"),
            Post.visibility.label("post_visibility"),
            _hidden(Post).label("post_hidden"),
            ClusterMembership.state,
            ClusterMembership.manual,
            ClusterMembership.similarity,
            ClusterMembership.created_at.label("joined_at"),
        )
        .join(Post, Post.id == ClusterMembership.post_id)
        .where(Post.deleted_at.is_(None))
        .order_by(ClusterMembership.cluster_id, ClusterMembership.created_at, ClusterMembership.post_id)
    )


def _credits() -> Select[Any]:
    source = aliased(Post)
    return (
        select(
            CreditEntry.id,
            CreditEntry.user_id,
            User.display_name.label("user_name"),
            User.kind.label("user_kind"),
            CreditEntry.post_id,
            Post.title.label("post_title"),
            Post.visibility.label("post_visibility"),
            CreditEntry.source_post_id,
            source.visibility.label("source_visibility"),
            CreditEntry.reason,
            CreditEntry.rank,
            CreditEntry.points,
            CreditEntry.contributed_at,
            CreditEntry.created_at,
            CreditEntry.revokes_id,
        )
        .join(User, User.id == CreditEntry.user_id)
        .join(Post, Post.id == CreditEntry.post_id)
        .join(source, source.id == CreditEntry.source_post_id)
        .order_by(CreditEntry.created_at, CreditEntry.id)
    )


QUERIES = {
    ExportKind.POSTS: _posts,
    ExportKind.VOTES: _votes,
    ExportKind.CLUSTERS: _clusters,
    ExportKind.CREDITS: _credits,
}


def columns(kind: ExportKind) -> list[str]:
    return [c.name for c in QUERIES[kind]().selected_columns]


def cell(value: Any) -> Any:
    """What a CSV cell holds: text never starts a formula, timestamps are RFC 3339 in UTC."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv(rows: Iterable[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows([cell(value) for value in row] for row in rows)
    return buffer.getvalue().encode()


async def csv_chunks(engine: AsyncEngine, kind: ExportKind, batch_rows: int = BATCH_ROWS) -> AsyncIterator[bytes]:
    """The export as CSV bytes, a header then one chunk per ``batch_rows`` rows, read with a server-side
    cursor on a connection of its own (one repeatable-read snapshot, so the rows are consistent)."""
    yield _csv([columns(kind)])
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        result = await conn.stream(QUERIES[kind]().execution_options(yield_per=batch_rows))
        async for rows in result.partitions(batch_rows):
            yield _csv(rows)

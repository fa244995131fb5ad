"""Posts, votes, comments and status history. Services never commit: the request boundary does.

Visibility is enforced here, in every query: internal posts (and internal notes) exist only for
employees and the product team; everyone else gets 404, the same answer as for a post that never was.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
from litestar.exceptions import NotFoundException, PermissionDeniedException
from sqlalchemy import (
    Integer,
    Select,
    String,
    Uuid,
    and_,
    any_,
    bindparam,
    case,
    delete,
    exists,
    false,
    func,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from forum.accounts.schemas import UserPublic
from forum.auth import SignedIn
from forum.channels.captures import captures_of_comments, captures_of_posts
from forum.credits.services import CreditPolicy, ShipService
from forum.driver import DriverStatement, driver_of
from forum.encoding import post_language
from forum.errors import ConflictError, UnprocessableError
from forum.models import (
    ClusterMembership,
    Comment,
    MembershipState,
    Post,
    PostEdit,
    PostMerge,
    PostStatus,
    PostVoteDay,
    ShipEvent,
    StatusChange,
    StatusEvent,
    User,
    Visibility,
    Vote,
    Webhook,
    visibility_scope,
    visible_to,
)
from forum.notifications.services import NotificationKind, notify_subscribers, subscribe, subscribe_statement
from forum.posts.schemas import (
    CommentCreate,
    CommentOut,
    PostCreate,
    PostOut,
    PostPage,
    PostSort,
    PostUpdate,
    StatusChangeOut,
    VoteCounts,
    VoteState,
)
from forum.queue import enqueue_embeddings
from forum.schemas import Page, timestamp
from forum.webhooks.schemas import WebhookEvent
from forum.webhooks.services import emit

TRENDING_DAYS = 14

ACTIVE_STATUSES = (
    PostStatus.OPEN.value,
    PostStatus.UNDER_REVIEW.value,
    PostStatus.PLANNED.value,
    PostStatus.IN_PROGRESS.value,
)
"""What the board lists when no status is asked for: posts still alive (no merged duplicates)."""

CLOSED_STATUSES = {
    PostStatus.SHIPPED.value: "This post has shipped: it no longer takes votes",
    PostStatus.DECLINED.value: "This post was declined: it no longer takes votes",
    PostStatus.ADDRESSED.value: "This critique was addressed by a shipped idea: it no longer takes votes",
}


@dataclass
class PostFilters:
    kind: str | None = None
    status: list[str] | None = None
    tags: list[str] | None = None
    author_id: UUID | None = None
    visibility: str | None = None
    q: str | None = None
    language: list[str] | None = None
    channel: list[str] | None = None


TOTAL_CACHE_MIN = 5_000
TOTAL_CACHE_SECONDS = 5.0
_totals: dict[tuple[Any, ...], tuple[float, int]] = {}
_recounting: set[tuple[Any, ...]] = set()
"""Totals being counted again in this process: meanwhile the others answer with the one they have."""


def author_public(user: User) -> UserPublic:
    return UserPublic(id=user.id, display_name=user.display_name, kind=user.kind)


EVENT_NOTES = {
    StatusEvent.MERGED.value: ("Merged into “{title}”", "Merged into another post"),
    StatusEvent.UNMERGED.value: ("Unmerged from “{title}”", "Unmerged from another post"),
    StatusEvent.ADDRESSED.value: ("Addressed by “{title}”, now shipped", "Addressed by an idea that shipped"),
    StatusEvent.UNADDRESSED.value: (
        "“{title}” is no longer shipped",
        "The idea that addressed it is no longer shipped",
    ),
}
"""History notes of the system's own changes: naming the other post, or not when the reader may not see it."""


def event_note(change: StatusChange, related_title: str | None) -> str | None:
    """The note of a status change as its reader may read it (``related_title`` only if they may see it)."""
    if change.event is None:
        return change.note
    named, anonymous = EVENT_NOTES[change.event]
    return named.format(title=related_title) if related_title is not None else anonymous


def webhook_post(post: PostOut) -> dict[str, Any]:
    return {
        "post_id": str(post.id),
        "kind": post.kind,
        "title": post.title,
        "status": post.status,
        "visibility": post.visibility,
        "author": {"id": str(post.author.id), "display_name": post.author.display_name, "kind": post.author.kind},
        "created_at": timestamp(post.created_at),
    }


SEARCH_MAX_TERMS = 12
_SEARCH_TOKEN = re.compile(r'(-?)"([^"]*)"?|(-?)(\S+)')
_SEARCH_WORD = re.compile(r"[^\W_]+")


@dataclass
class PostSearch:
    """``q`` as SQL: any of its terms matches, and posts matching more of them rank first.

    A term is a word, matched as a word prefix ("auth" finds authentication and authorization) and by
    its English and Spanish stems ("facturas" finds factura), or a "quoted phrase" (matched as a
    phrase, stemmed); ``-word`` leaves out posts that contain the word. Case never matters.
    """

    terms: list[Any]
    excluded: list[Any]

    @classmethod
    def parse(cls, q: str) -> PostSearch:
        terms: list[Any] = []
        excluded: list[Any] = []
        for match in _SEARCH_TOKEN.finditer(q):
            negated, phrase, word_negated, token = match.groups()
            if phrase is not None:
                words = _SEARCH_WORD.findall(phrase.lower())
                if len(words) > 1:
                    text = " ".join(words)
                    query = func.phraseto_tsquery("english", text).op("||")(func.phraseto_tsquery("spanish", text))
                    (excluded if negated else terms).append(query)
                    continue
            else:
                words, negated = _SEARCH_WORD.findall(token.lower()), word_negated
            for word in words:
                (excluded if negated else terms).append(_word_query(word, prefix=not negated))
        return cls(terms=terms[:SEARCH_MAX_TERMS], excluded=excluded[:SEARCH_MAX_TERMS])

    @staticmethod
    def _any(queries: list[Any]) -> Any:
        combined = queries[0]
        for query in queries[1:]:
            combined = combined.op("||")(query)
        return combined

    def condition(self, search: Any = Post.search) -> Any:
        if not self.terms:
            return false()
        condition = search.op("@@")(self._any(self.terms))
        if self.excluded:
            condition = and_(condition, ~search.op("@@")(self._any(self.excluded)))
        return condition

    def rank_keys(self, search: Any = Post.search) -> list[Any]:
        """How many of the terms match, then PostgreSQL's cover density over all of them (best first)."""
        if not self.terms:
            return [literal(0), literal(0.0)]
        hits = [case((search.op("@@")(term), 1), else_=0) for term in self.terms]
        matched = hits[0]
        for hit in hits[1:]:
            matched = matched + hit
        return [matched, func.ts_rank_cd(search, self._any(self.terms))]


def _word_query(word: str, *, prefix: bool) -> Any:
    """One word: itself (or as a prefix) unstemmed, or its English or Spanish stem."""
    exact = func.to_tsquery("simple", literal(f"{word}:*" if prefix else word))
    stems = func.plainto_tsquery("english", word).op("||")(func.plainto_tsquery("spanish", word))
    return exact.op("||")(stems)


SortKey = tuple[Any, type]
"""A sort key of a post list and the Python type of its value (a cursor holds the values)."""


def _cursor_error(message: str) -> UnprocessableError:
    """A string the schema allows that this list never gave out: a rule of the forum (``/problems/domain-rule``),
    not a schema mismatch."""
    return UnprocessableError(f"Invalid cursor: {message}", field="after")


def _encode_cursor(sort: PostSort, values: list[Any]) -> str:
    """Opaque to clients: the sort and the last post's sort keys, as URL-safe base64 of JSON."""
    return base64.urlsafe_b64encode(msgspec.json.encode([sort.value, values])).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: PostSort, keys: list[SortKey]) -> list[Any]:
    try:
        raw = msgspec.json.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        cursor_sort, values = raw
        if cursor_sort != sort.value:
            raise _cursor_error("the cursor belongs to another sort: start again without it")
        if not isinstance(values, list) or len(values) != len(keys):
            raise ValueError
        return [msgspec.convert(v, t, strict=False) for v, (_, t) in zip(values, keys, strict=True)]
    except UnprocessableError:
        raise
    except (ValueError, TypeError, msgspec.ValidationError, msgspec.DecodeError):
        raise _cursor_error("not a cursor this list gave") from None


Voter = User | SignedIn
"""Who votes: ``request.user`` of the vote routes (a light ``SignedIn``), or an ORM ``User`` (a vote captured on
a customer's behalf, an API key's service account)."""


# The vote path's statements, built once (SQLAlchemy caches their compiled form, asyncpg prepares them).
def _lock_votable(scope: str) -> Any:
    """The post as ``visible_to`` shows it to a viewer of ``scope`` (:func:`visibility_scope`), locked FOR NO
    KEY UPDATE: what an UPDATE of the post's counters takes anyway. FOR UPDATE also blocked the foreign-key
    checks of rows that point at the post (a label a move records, a comment), and a vote holding it while
    it waited for its cluster's tally row deadlocked with a move holding that row (migration 0019)."""
    visible = Post.deleted_at.is_(None)
    if scope != "staff":
        visible = and_(visible, Post.hidden_at.is_(None))
    if scope == "public":
        visible = and_(visible, Post.visibility == Visibility.PUBLIC.value)
    # Whether any webhook listens to post.voted rides along (``emit`` runs only when one does): a board
    # without webhooks pays no statement of its own for it.
    watched = exists().where(
        Webhook.active.is_(True), Webhook.events.any(bindparam("event", WebhookEvent.POST_VOTED.value))
    )
    return (
        select(Post.merged_into_id, Post.status, Post.hidden_at, Post.title, Post.visibility, watched.label("watched"))
        .where(Post.id == bindparam("post_id"), visible)
        .with_for_update(of=Post, key_share=True)
    )


_LOCK_VOTABLE = {scope: DriverStatement(_lock_votable(scope)) for scope in ("public", "internal", "staff")}
_INSERT_VOTE = DriverStatement(
    insert(Vote)
    .values(
        post_id=bindparam("post_id"),
        user_id=bindparam("user_id"),
        voter_kind=bindparam("voter_kind"),
        # When the voter said it (a vote captured on their behalf), else now (the column's default).
        created_at=func.coalesce(bindparam("said_at", type_=Vote.created_at.type), func.now()),
    )
    .on_conflict_do_nothing(index_elements=[Vote.post_id, Vote.user_id])
    .returning(Vote.created_at)
)
_DELETE_VOTE = DriverStatement(
    delete(Vote)
    .where(Vote.post_id == bindparam("post_id"), Vote.user_id == bindparam("user_id"))
    .returning(Vote.voter_kind, Vote.created_at)
)


def _count_vote(subscribe: bool) -> DriverStatement:
    """One statement once a vote row came or went: the post's three counters move (their new values are the
    answer), the day's tally (``post_vote_day``) moves, and on a new vote the voter is subscribed (unless they
    opted out). Data-modifying CTEs on three tables, each row changed once; the counters' trigger
    (cluster_tally) fires at the end of the statement as after an UPDATE of its own."""
    counted = (
        update(Post)
        .where(Post.id == bindparam("post_id"))
        .values(
            vote_total=Post.vote_total + bindparam("total"),
            vote_internal=Post.vote_internal + bindparam("internal"),
            vote_external=Post.vote_external + bindparam("external"),
            updated_at=Post.updated_at,  # a vote is not an edit
        )
        .returning(Post.vote_total, Post.vote_internal, Post.vote_external)
        .cte("counted")
    )
    day = insert(PostVoteDay).values(post_id=bindparam("post_id"), day=bindparam("day"), votes=bindparam("total"))
    day = day.on_conflict_do_update(
        index_elements=[PostVoteDay.post_id, PostVoteDay.day],
        set_={"votes": PostVoteDay.votes + day.excluded.votes},
    )
    ctes = [day.cte("tallied")]
    if subscribe:
        ctes.append(subscribe_statement().cte("subscribed"))
    return DriverStatement(
        select(counted.c.vote_total, counted.c.vote_internal, counted.c.vote_external).add_cte(*ctes)
    )


_COUNT_VOTE = {subscribe: _count_vote(subscribe) for subscribe in (True, False)}
_VOTE_STATE = DriverStatement(
    select(Post.vote_total, Post.vote_internal, Post.vote_external, Vote.created_at)
    .outerjoin(Vote, and_(Vote.post_id == Post.id, Vote.user_id == bindparam("user_id")))
    .where(Post.id == bindparam("post_id"))
)


POST_COLUMNS = (
    Post.id,
    Post.kind,
    Post.title,
    Post.body,
    Post.status,
    Post.visibility,
    Post.tags,
    Post.language,
    Post.created_at,
    Post.updated_at,
    Post.vote_total,
    Post.vote_internal,
    Post.vote_external,
    Post.comment_count,
    Post.internal_note_count,
    Post.hidden_at,
    Post.channel,
    User.id.label("author_id"),
    User.display_name.label("author_name"),
    User.kind.label("author_kind"),
)
"""A post's own columns and its author's, as plain rows for :meth:`PostService.out_of_row` (join ``User``)."""

_MERGE_TARGET = aliased(Post, name="merge_target")
"""Built once: an alias copies every column of ``post`` (a few hundred microseconds per request otherwise)."""

_LIST_STATEMENTS: dict[tuple[Any, ...], tuple[DriverStatement, list[SortKey]]] = {}
"""Board pages without a text search, compiled once per shape (sort, which filters, viewer scope, cursor or
offset): asyncpg prepares each once per connection, and a page skips SQLAlchemy's statement building,
compilation cache and ORM loading, which were most of its CPU (docs/benchmarks.md, issue 14)."""


class PostService:
    def __init__(self, session: AsyncSession, credit_policy: CreditPolicy | None = None) -> None:
        self.session = session
        self.credit_policy = credit_policy

    # Reading ----------------------------------------------------------------------------------

    def to_out(
        self, post: Post, viewer: User | None, has_voted: bool, cluster_id: UUID | None, merged_into: UUID | None
    ) -> PostOut:
        """``merged_into`` is the target only if the viewer may see it (``merged_into_column``)."""
        comments = post.comment_count + (post.internal_note_count if viewer and viewer.sees_internal else 0)
        return PostOut(
            id=post.id,
            kind=post.kind,
            title=post.title,
            body=post.body,
            status=post.status,
            visibility=post.visibility,
            tags=list(post.tags or []),
            language=post.language,
            author=author_public(post.author),
            created_at=post.created_at,
            updated_at=post.updated_at,
            votes=VoteCounts(total=post.vote_total, internal=post.vote_internal, external=post.vote_external),
            has_voted=has_voted,
            comment_count=comments,
            cluster_id=cluster_id,
            merged_into=merged_into,
            hidden=post.hidden_at is not None,
            channel=post.channel,
        )

    @staticmethod
    def out_of_row(row: Any, sees_internal: bool) -> PostOut:
        """:meth:`to_out` from a plain row of the post's columns (``author_id``, ``author_name``,
        ``author_kind``, ``has_voted``, ``cluster_id``, ``merged_into`` among them), no ORM object."""
        return PostOut(
            id=row["id"],
            kind=row["kind"],
            title=row["title"],
            body=row["body"],
            status=row["status"],
            visibility=row["visibility"],
            tags=list(row["tags"] or []),
            language=row["language"],
            author=UserPublic(id=row["author_id"], display_name=row["author_name"], kind=row["author_kind"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            votes=VoteCounts(total=row["vote_total"], internal=row["vote_internal"], external=row["vote_external"]),
            has_voted=bool(row["has_voted"]),
            comment_count=row["comment_count"] + (row["internal_note_count"] if sees_internal else 0),
            cluster_id=row["cluster_id"],
            merged_into=row["merged_into"],
            hidden=row["hidden_at"] is not None,
            channel=row["channel"],
        )

    async def _with_captures(self, items: list[PostOut], viewer: User | None) -> list[PostOut]:
        """Staff see who captured a post for its customer, and the source link; nobody else does."""
        if viewer is not None and viewer.sees_internal:
            captures = await captures_of_posts(self.session, [p.id for p in items if p.channel != "web"])
            for item in items:
                item.capture = captures.get(item.id)
        return items

    @staticmethod
    def cluster_id_column():
        return (
            select(ClusterMembership.cluster_id)
            .where(ClusterMembership.post_id == Post.id, ClusterMembership.state != MembershipState.REJECTED.value)
            .scalar_subquery()
        )

    @staticmethod
    def merged_into_column(viewer: User | None):
        """The post this one is merged into, when the viewer may see it (else null: no id leaks)."""
        target = _MERGE_TARGET
        return select(target.id).where(target.id == Post.merged_into_id, visible_to(viewer, target)).scalar_subquery()

    def _columns(self, viewer: User | None) -> tuple[Any, ...]:
        """What a post's answer needs besides its row, per viewer; read back by ``_row_out``."""
        return (
            self._has_voted(viewer).label("has_voted"),
            self.cluster_id_column().label("cluster_id"),
            self.merged_into_column(viewer).label("merged_into"),
        )

    def _row_out(self, row: Any, viewer: User | None) -> PostOut:
        return self.to_out(row[0], viewer, bool(row.has_voted), row.cluster_id, row.merged_into)

    def _has_voted(self, viewer: User | None):
        if viewer is None:
            return literal(False)
        return exists().where(Vote.post_id == Post.id, Vote.user_id == bindparam("viewer_id", viewer.id, type_=Uuid))

    async def get_visible(self, post_id: UUID, viewer: User | None, *, for_update: bool = False) -> Post:
        stmt = select(Post).where(Post.id == post_id, visible_to(viewer))
        if for_update:
            stmt = stmt.with_for_update(of=Post, key_share=True)  # see _lock_votable
        post = await self.session.scalar(stmt)
        if post is None:
            raise NotFoundException("Post not found")
        return post

    async def get_out(self, post_id: UUID, viewer: User | None) -> PostOut:
        row = (
            await self.session.execute(
                select(Post, *self._columns(viewer)).where(Post.id == post_id, visible_to(viewer))
            )
        ).first()
        if row is None:
            raise NotFoundException("Post not found")
        return (await self._with_captures([self._row_out(row, viewer)], viewer))[0]

    async def get_many_out(self, post_ids: list[UUID], viewer: User | None) -> dict[UUID, PostOut]:
        """Several posts in one query, keyed by id (those the viewer may not see are left out)."""
        if not post_ids:
            return {}
        rows = (
            await self.session.execute(
                select(Post, *self._columns(viewer)).where(Post.id.in_(post_ids), visible_to(viewer))
            )
        ).all()
        return {row[0].id: self._row_out(row, viewer) for row in rows}

    async def list(
        self,
        filters: PostFilters,
        sort: PostSort | None,
        limit: int,
        offset: int,
        viewer: User | None,
        after: str | None = None,
    ) -> PostPage:
        """One page: one statement for the rows (author, the viewer's vote, the cluster) and one for the total.

        The total is counted apart: a ``count(*) OVER ()`` beside ``LIMIT`` made PostgreSQL join and
        sort every matching post for each page (0.5 s at 100k posts; docs/benchmarks.md), while the page
        alone walks the sort's index for ``limit`` rows. ``after`` (the ``next`` of the previous page)
        continues right after that page's last post: the sort keys compared as one row, every key
        descending, so a deep page walks the same few index entries as the first one (``OFFSET`` reads
        and drops every skipped post).
        """
        if sort is None:
            sort = PostSort.RELEVANCE if filters.q else PostSort.TRENDING
        if after is not None and offset:
            raise _cursor_error("use either after or offset, not both")
        if not filters.q:
            return await self._board_page(filters, sort, limit, offset, viewer, after)
        stmt, keys = self._ordered(self._filtered(select(Post), filters, viewer), sort, filters)
        if after is not None:
            stmt = stmt.where(tuple_(*(k for k, _ in keys)) < tuple_(*_decode_cursor(after, sort, keys)))
        stmt = stmt.order_by(*(k.desc() for k, _ in keys))
        stmt = stmt.add_columns(*self._columns(viewer), *(k.label(f"sort_key_{i}") for i, (k, _) in enumerate(keys)))
        rows = (await self.session.execute(stmt.limit(limit + 1).offset(offset))).all()
        more, rows = len(rows) > limit, rows[:limit]
        if offset == 0 and after is None and not more:
            total = len(rows)  # the whole list fits in this page
        else:
            total = await self._total(filters, viewer)
        items = await self._with_captures([self._row_out(row, viewer) for row in rows], viewer)
        last = rows[-1] if more else None
        cursor = _encode_cursor(sort, [getattr(last, f"sort_key_{i}") for i in range(len(keys))]) if last else None
        return PostPage(items=items, total=total or 0, limit=limit, offset=offset, next=cursor)

    async def _board_page(
        self, filters: PostFilters, sort: PostSort, limit: int, offset: int, viewer: User | None, after: str | None
    ) -> PostPage:
        """:meth:`list` without a text search: the same rows and answer, from a statement compiled once per
        shape and run by asyncpg on the request's connection (plain rows, no ORM objects)."""
        scope = visibility_scope(viewer)
        shape = (sort, *(bool(v) for v in astuple(filters)), scope, viewer is None, after is not None)
        cached = _LIST_STATEMENTS.get(shape)
        if cached is None:
            stmt = self._filtered(select(*POST_COLUMNS).join(User, User.id == Post.author_id), filters, viewer)
            stmt, keys = self._ordered(stmt, sort, filters)
            if after is not None:
                bounds = (bindparam(f"after_{i}", type_=key.type) for i, (key, _) in enumerate(keys))
                stmt = stmt.where(tuple_(*(k for k, _ in keys)) < tuple_(*bounds))
            stmt = stmt.add_columns(
                *self._columns(viewer), *(k.label(f"sort_key_{i}") for i, (k, _) in enumerate(keys))
            ).order_by(*(k.desc() for k, _ in keys))
            stmt = stmt.limit(bindparam("limit", type_=Integer)).offset(bindparam("offset", type_=Integer))
            cached = _LIST_STATEMENTS[shape] = (DriverStatement(stmt), keys)
        statement, keys = cached
        params: dict[str, Any] = {**self._filter_params(filters), "limit": limit + 1, "offset": offset}
        if viewer is not None:
            params["viewer_id"] = viewer.id
        if after is not None:
            params.update((f"after_{i}", v) for i, v in enumerate(_decode_cursor(after, sort, keys)))
        conn = await driver_of(self.session)
        rows = await conn.fetch(statement.sql, *statement.args(params))
        more, rows = len(rows) > limit, rows[:limit]
        if offset == 0 and after is None and not more:
            total = len(rows)  # the whole list fits in this page
        else:
            total = await self._total(filters, viewer)
        sees_internal = viewer is not None and viewer.sees_internal
        items = await self._with_captures([self.out_of_row(row, sees_internal) for row in rows], viewer)
        last = rows[-1] if more else None
        cursor = _encode_cursor(sort, [last[f"sort_key_{i}"] for i in range(len(keys))]) if last else None
        return PostPage(items=items, total=total or 0, limit=limit, offset=offset, next=cursor)

    async def list_recently_shipped(self, limit: int, offset: int, viewer: User | None) -> Page[PostOut]:
        """Shipped posts the viewer may see, the most recently shipped first (the roadmap's last column)."""
        filters = PostFilters(status=[PostStatus.SHIPPED.value])
        shipped_at = (
            select(ShipEvent.created_at)
            .where(ShipEvent.post_id == Post.id, ShipEvent.revoked_at.is_(None))
            .scalar_subquery()
        )
        stmt = self._filtered(select(Post), filters, viewer).add_columns(*self._columns(viewer))
        stmt = stmt.order_by(shipped_at.desc().nulls_last(), Post.created_at.desc(), Post.id.desc())
        rows = (await self.session.execute(stmt.limit(limit).offset(offset))).all()
        total = len(rows) if offset == 0 and len(rows) < limit else await self._total(filters, viewer)
        return Page(items=[self._row_out(row, viewer) for row in rows], total=total, limit=limit, offset=offset)

    async def _total(self, filters: PostFilters, viewer: User | None) -> int:
        """How many posts match. Counting is O(matching posts), so a large total (over
        ``TOTAL_CACHE_MIN``) is reused for ``TOTAL_CACHE_SECONDS`` per process: on a big board "about
        120,345" a few seconds old is fine, and paging through it no longer counts it on every page.

        One request counts a stale total again while the others answer with the one they have: when every
        page of a busy 1M-post board missed the cache at once, each ran the same 1 s count, and all pages
        stalled every 5 s (p95 965 ms at 1M, docs/benchmarks.md)."""
        fields = tuple(tuple(v) if isinstance(v, list) else v for v in astuple(filters))
        key = (fields, visibility_scope(viewer))
        cached = _totals.get(key)
        now = time.monotonic()
        if cached is not None and (now - cached[0] < TOTAL_CACHE_SECONDS or key in _recounting):
            return cached[1]
        _recounting.add(key)
        try:
            total = int(await self.session.scalar(self._filtered(select(func.count(Post.id)), filters, viewer)) or 0)
        finally:
            _recounting.discard(key)
        if total > TOTAL_CACHE_MIN:
            if len(_totals) >= 1024:
                _totals.clear()
            _totals[key] = (now, total)
        return total

    @staticmethod
    def _filter_params(f: PostFilters) -> dict[str, Any]:
        """The values of ``_filtered``'s named parameters (an absent filter's name is simply unused)."""
        return {
            "kind": f.kind,
            "status": list(f.status or ACTIVE_STATUSES),
            "tags": [t.lower() for t in f.tags or ()],
            "author_id": f.author_id,
            "visibility": f.visibility,
            "language": list(f.language or ()),
            "channel": list(f.channel or ()),
        }

    def _filtered(self, stmt: Select[Any], f: PostFilters, viewer: User | None) -> Select[Any]:
        """The filters as named parameters (their values bound here too), so that one compiled statement per
        shape serves every value (``_board_page``)."""
        values = self._filter_params(f)

        def param(name: str, type_: Any = None) -> Any:
            return bindparam(name, values[name], type_=type_)

        stmt = stmt.where(visible_to(viewer))
        if f.kind:
            stmt = stmt.where(Post.kind == param("kind"))
        stmt = stmt.where(Post.status == any_(param("status", ARRAY(String))))
        if f.tags:
            stmt = stmt.where(Post.tags.contains(param("tags", ARRAY(String))))
        if f.author_id:
            stmt = stmt.where(Post.author_id == param("author_id", Uuid))
        if f.visibility:
            stmt = stmt.where(Post.visibility == param("visibility"))
        if f.language:
            stmt = stmt.where(Post.language == any_(param("language", ARRAY(String))))
        if f.channel:
            stmt = stmt.where(Post.channel == any_(param("channel", ARRAY(String))))
        if f.q:
            stmt = stmt.where(PostSearch.parse(f.q).condition())
        return stmt

    def _ordered(self, stmt: Select[Any], sort: PostSort, f: PostFilters) -> tuple[Select[Any], list[SortKey]]:
        """The statement (joined to what its sort needs) and its sort keys, every one descending."""
        if sort is PostSort.TOP:
            keys: list[SortKey] = [(Post.vote_total, int)]
        elif sort is PostSort.NEW:
            keys = []
        elif sort is PostSort.DISCUSSED:
            keys = [(Post.comment_count, int)]
        elif sort is PostSort.RELEVANCE and f.q:
            matched, rank = PostSearch.parse(f.q).rank_keys()
            keys = [(matched, int), (rank, float), (Post.vote_total, int)]
        else:  # trending (also relevance without q): votes of the last TRENDING_DAYS, then all votes
            recent = (
                select(PostVoteDay.post_id, func.sum(PostVoteDay.votes).label("votes"))
                .where(PostVoteDay.day > func.current_date() - TRENDING_DAYS)
                .group_by(PostVoteDay.post_id)
                .subquery("recent")
            )
            stmt = stmt.outerjoin(recent, recent.c.post_id == Post.id)
            keys = [(func.coalesce(recent.c.votes, 0), int), (Post.vote_total, int)]
        return stmt, [*keys, (Post.created_at, datetime), (Post.id, UUID)]

    # Writing ----------------------------------------------------------------------------------

    async def create(
        self, author: User, data: PostCreate, *, channel: str = "web", said_at: datetime | None = None
    ) -> PostOut:
        """``channel`` and ``said_at`` for a post captured on the author's behalf (forum/channels): its
        time is when they said it, so "who asked first" and credits go by it."""
        if data.visibility is Visibility.INTERNAL and not author.sees_internal:
            raise PermissionDeniedException("Only employees and the product team can post internally")
        post = Post(
            channel=channel,
            **({"created_at": said_at} if said_at else {}),
            kind=data.kind.value,
            title=data.title,
            body=data.body,
            tags=data.tags,
            visibility=data.visibility.value,
            status=PostStatus.OPEN.value,
            author_id=author.id,
            language=post_language(data.title, data.body),
        )
        self.session.add(post)
        await self.session.flush()
        self.session.add(StatusChange(post_id=post.id, actor_id=author.id, from_status=None, to_status="open"))
        await self.session.flush()
        await enqueue_embeddings(self.session, [post.id])
        await subscribe(self.session, author.id, post.id)
        await self.session.refresh(post)
        out = self.to_out(post, author, False, None, None)
        await emit(self.session, WebhookEvent.POST_CREATED, webhook_post(out))
        return out

    async def update(self, post_id: UUID, editor: User, data: PostUpdate) -> PostOut:
        """Title and body: the author or the product team, each change recorded (``PostEdit``) and the post
        embedded and grouped again by the worker."""
        post = await self.get_visible(post_id, editor, for_update=True)
        is_author = post.author_id == editor.id
        if (data.title is not msgspec.UNSET or data.body is not msgspec.UNSET) and not (
            is_author or editor.is_product_team
        ):
            raise PermissionDeniedException("Only the author or the product team can edit the title and body")
        if data.tags is not msgspec.UNSET and not (is_author or editor.is_product_team):
            raise PermissionDeniedException("Only the author or the product team can change tags")
        if data.visibility is not msgspec.UNSET and not editor.is_product_team:
            raise PermissionDeniedException("Only the product team can change visibility")
        self._record_edit(post, editor, data)
        for field in ("title", "body", "tags"):
            value = getattr(data, field)
            if value is not msgspec.UNSET:
                setattr(post, field, value)
        if data.visibility is not msgspec.UNSET:
            post.visibility = data.visibility.value
        if data.title is not msgspec.UNSET or data.body is not msgspec.UNSET:
            post.language = post_language(post.title, post.body)
        await self.session.flush()
        if data.title is not msgspec.UNSET or data.body is not msgspec.UNSET:
            await enqueue_embeddings(self.session, [post.id])
        await self.session.refresh(post)
        return await self.get_out(post.id, editor)

    def _record_edit(self, post: Post, editor: User, data: PostUpdate) -> None:
        title = data.title if data.title is not msgspec.UNSET and data.title != post.title else None
        body = data.body if data.body is not msgspec.UNSET and data.body != post.body else None
        if title is None and body is None:
            return
        self.session.add(
            PostEdit(
                post_id=post.id,
                editor_id=editor.id,
                title_before=post.title if title is not None else None,
                title_after=title,
                body_before=post.body if body is not None else None,
                body_after=body,
            )
        )

    async def soft_delete(self, post_id: UUID, actor: User) -> None:
        post = await self.get_visible(post_id, actor, for_update=True)
        if post.author_id != actor.id and not actor.is_admin:
            raise PermissionDeniedException("Only the author or an admin can delete a post")
        await self._ensure_deletable(post)
        post.deleted_at = datetime.now(UTC)
        await self.session.flush()

    async def _ensure_deletable(self, post: Post) -> None:
        """A delete may strand nobody: posts merged into this one would point at a 404 that nobody can
        unmerge, and a shipped post's credits would vanish from contributors' ledgers unrecorded. A merged
        duplicate may go: its carried votes stay on the target, where its voters asked."""
        merged = int(
            await self.session.scalar(
                select(func.count(PostMerge.id))
                .join(Post, Post.id == PostMerge.source_id)
                .where(PostMerge.target_id == post.id, PostMerge.unmerged_at.is_(None), Post.deleted_at.is_(None))
            )
            or 0
        )
        if merged:
            noun = "post is" if merged == 1 else "posts are"
            raise ConflictError(
                detail=f"{merged} {noun} merged into this one: the product team must unmerge them first",
                extra={"merged_posts": merged},
            )
        if post.status == PostStatus.SHIPPED.value:
            raise ConflictError(
                detail="This post has shipped and its contributors are credited: move it out of shipped first "
                "(which revokes the credits), then delete it"
            )

    async def change_status(self, post_id: UUID, actor: User, status: PostStatus, note: str | None) -> PostOut:
        if status is PostStatus.DUPLICATE:
            raise UnprocessableError("Mark a post as duplicate by merging it into another", field="status")
        shipping = ShipService(self.session, self.credit_policy)
        await shipping.lock_status_change(post_id, shipping=status is PostStatus.SHIPPED)
        post = await self.get_visible(post_id, actor, for_update=True)  # concurrent changes queue here
        if post.merged_into_id is not None:
            raise ConflictError(detail="This post is merged into another: unmerge it first")
        if status is PostStatus.ADDRESSED and post.kind != "critique":
            raise UnprocessableError("Only critiques are addressed; ideas ship", field="status")
        if post.status == status.value:
            raise ConflictError(detail=f"The post is already {status.value}")
        if status is PostStatus.SHIPPED and post.hidden_at is not None:
            raise ConflictError(detail="This post is hidden: unhide it before shipping it")
        before = post.status
        note = note.strip() if note else None
        self.session.add(
            StatusChange(post_id=post.id, actor_id=actor.id, from_status=before, to_status=status.value, note=note)
        )
        post.status = status.value
        await self.session.flush()
        payload = {"post_id": str(post.id), "title": post.title, "from": before, "to": status.value, "note": note}
        await notify_subscribers(self.session, post.id, NotificationKind.STATUS_CHANGED, payload, exclude=[actor.id])
        await emit(self.session, WebhookEvent.POST_STATUS_CHANGED, {**payload, "visibility": post.visibility})
        if status is PostStatus.SHIPPED:
            await shipping.ship(post, actor)
        elif before == PostStatus.SHIPPED.value:
            await shipping.unship(post, actor)
        return await self.get_out(post.id, actor)

    async def history(self, post_id: UUID, viewer: User | None) -> list[StatusChangeOut]:
        await self.get_visible(post_id, viewer)
        related = aliased(Post)
        rows = (
            await self.session.execute(
                select(StatusChange, related.title, visible_to(viewer, related).label("related_visible"))
                .outerjoin(related, related.id == StatusChange.related_post_id)
                .where(StatusChange.post_id == post_id)
                .order_by(StatusChange.created_at, StatusChange.id)
            )
        ).all()
        return [
            StatusChangeOut(
                id=c.id,
                from_status=c.from_status,
                to_status=c.to_status,
                note=event_note(c, title if related_visible else None),
                actor=author_public(c.actor),
                created_at=c.created_at,
            )
            for c, title, related_visible in rows
        ]

    # Votes ------------------------------------------------------------------------------------

    async def _votable(self, conn: Any, post_id: UUID, voter: Voter) -> Any:
        # Locked (FOR NO KEY UPDATE): a merge (which locks the post too) cannot slip in between this check and
        # the vote.
        # Votes on one post queue on its counter row anyway, so this costs no concurrency.
        lock = _LOCK_VOTABLE[visibility_scope(voter)]
        post = await conn.fetchrow(lock.sql, *lock.args({"post_id": post_id}))
        if post is None:
            raise NotFoundException("Post not found")
        if post["merged_into_id"] is not None:
            target_visible = await self.session.scalar(
                select(exists().where(Post.id == post["merged_into_id"], visible_to(voter)))
            )
            raise ConflictError(
                detail="This post was merged into another: vote there",
                extra={"merged_into": str(post["merged_into_id"])} if target_visible else None,
            )
        if post["status"] in CLOSED_STATUSES:
            raise ConflictError(detail=CLOSED_STATUSES[post["status"]])
        if post["hidden_at"] is not None:
            raise ConflictError(detail="This post is hidden: it takes no votes")
        return post

    async def vote(self, post_id: UUID, voter: Voter, *, said_at: datetime | None = None) -> VoteState:
        """Idempotent: a second PUT changes nothing and keeps the first vote's time (``said_at``: a vote
        captured on the voter's behalf, counted from when they said it).

        The hot path of a launch day, so a few prepared statements and no ORM: lock the post, insert the
        vote, move the counters (their new values answer), the day bucket, the voter's subscription."""
        conn = await driver_of(self.session, begin=True)
        post = await self._votable(conn, post_id, voter)
        params = {"post_id": post_id, "user_id": voter.id}
        inserted = await conn.fetchval(
            _INSERT_VOTE.sql, *_INSERT_VOTE.args({**params, "voter_kind": voter.kind, "said_at": said_at})
        )
        if inserted is None:
            return await self._vote_state(conn, post_id, voter)
        counts = await self._count_vote(conn, post_id, voter, voter.kind, +1, inserted)
        state = VoteState(post_id=post_id, has_voted=True, voted_at=inserted, votes=counts)
        await self._emit_vote(conn, post_id, post, voter, "voted", state)
        return state

    async def unvote(self, post_id: UUID, voter: Voter) -> VoteState:
        conn = await driver_of(self.session, begin=True)
        post = await self._votable(conn, post_id, voter)
        removed = await conn.fetchrow(_DELETE_VOTE.sql, *_DELETE_VOTE.args({"post_id": post_id, "user_id": voter.id}))
        if removed is None:
            return await self._vote_state(conn, post_id, voter)
        counts = await self._count_vote(conn, post_id, voter, removed["voter_kind"], -1, removed["created_at"])
        state = VoteState(post_id=post_id, has_voted=False, voted_at=None, votes=counts)
        await self._emit_vote(conn, post_id, post, voter, "unvoted", state)
        return state

    async def _emit_vote(
        self, conn: Any, post_id: UUID, post: Any, voter: Voter, action: str, state: VoteState
    ) -> None:
        """``post.voted`` only when a vote was given or taken back (a repeated PUT or DELETE sends nothing).
        ``post``: the row the vote path locked (title, visibility)."""
        if not post["watched"]:
            return
        votes = {"total": state.votes.total, "internal": state.votes.internal, "external": state.votes.external}
        payload = {
            "post_id": str(post_id),
            "title": post["title"],
            "visibility": post["visibility"],
            "action": action,
            "voter": {"id": str(voter.id), "display_name": voter.display_name, "kind": voter.kind},
            "votes": votes,
        }
        await emit(self.session, WebhookEvent.POST_VOTED, payload)

    @staticmethod
    async def _count_vote(
        conn: Any, post_id: UUID, voter: Voter, voter_kind: str, step: int, voted_at: datetime
    ) -> VoteCounts:
        internal = step if voter_kind == "internal" else 0
        statement = _COUNT_VOTE[step > 0]  # a new vote subscribes the voter
        params = {
            "post_id": post_id,
            "user_id": voter.id,
            "total": step,
            "internal": internal,
            "external": step - internal,
            "day": voted_at.astimezone(UTC).date(),
        }
        row = await conn.fetchrow(statement.sql, *statement.args(params))
        return VoteCounts(total=row["vote_total"], internal=row["vote_internal"], external=row["vote_external"])

    @staticmethod
    async def _vote_state(conn: Any, post_id: UUID, voter: Voter) -> VoteState:
        """The answer when nothing changed (a repeated PUT, a DELETE without a vote)."""
        row = await conn.fetchrow(_VOTE_STATE.sql, *_VOTE_STATE.args({"post_id": post_id, "user_id": voter.id}))
        return VoteState(
            post_id=post_id,
            has_voted=row["created_at"] is not None,
            voted_at=row["created_at"],
            votes=VoteCounts(total=row["vote_total"], internal=row["vote_internal"], external=row["vote_external"]),
        )

    # Comments ---------------------------------------------------------------------------------

    def _comment_out(self, c: Comment) -> CommentOut:
        return CommentOut(
            id=c.id,
            post_id=c.post_id,
            author=author_public(c.author),
            body=c.body,
            internal=c.internal,
            created_at=c.created_at,
        )

    async def list_comments(self, post_id: UUID, viewer: User | None, limit: int, offset: int) -> Page[CommentOut]:
        await self.get_visible(post_id, viewer)
        condition = and_(Comment.post_id == post_id, Comment.deleted_at.is_(None))
        if viewer is None or not viewer.sees_internal:
            condition = and_(condition, Comment.internal.is_(false()))
        rows = (
            await self.session.execute(
                select(Comment, func.count().over().label("total"))
                .where(condition)
                .order_by(Comment.created_at, Comment.id)
                .limit(limit)
                .offset(offset)
            )
        ).all()
        total = rows[0].total if rows else await self.session.scalar(select(func.count(Comment.id)).where(condition))
        items = [self._comment_out(r[0]) for r in rows]
        if viewer is not None and viewer.sees_internal:  # who captured a comment for its customer: staff only
            captures = await captures_of_comments(self.session, [c.id for c in items])
            for item in items:
                item.capture = captures.get(item.id)
        return Page(items=items, total=total or 0, limit=limit, offset=offset)

    async def add_comment(
        self, post_id: UUID, author: User, data: CommentCreate, *, said_at: datetime | None = None
    ) -> CommentOut:
        post = await self.get_visible(post_id, author)
        if data.internal and not author.sees_internal:
            raise PermissionDeniedException("Only employees and the product team can write internal notes")
        comment = Comment(post_id=post.id, author_id=author.id, body=data.body, internal=data.internal)
        if said_at is not None:
            comment.created_at = said_at
        self.session.add(comment)
        counter = Post.internal_note_count if data.internal else Post.comment_count
        await self.session.execute(
            update(Post).where(Post.id == post.id).values({counter: counter + 1, "updated_at": Post.updated_at})
        )
        await self.session.flush()
        await self.session.refresh(comment)
        out = self._comment_out(comment)
        payload = {
            "comment_id": str(out.id),
            "post_id": str(post.id),
            "post_title": post.title,
            "visibility": post.visibility,
            "internal": out.internal,
            "author": {"id": str(author.id), "display_name": author.display_name, "kind": author.kind},
            "body": out.body,
            "created_at": timestamp(out.created_at),
        }
        await emit(self.session, WebhookEvent.COMMENT_CREATED, payload)
        return out

    async def delete_comment(self, post_id: UUID, comment_id: UUID, actor: User) -> None:
        await self.get_visible(post_id, actor)
        condition = and_(Comment.id == comment_id, Comment.post_id == post_id, Comment.deleted_at.is_(None))
        if not actor.sees_internal:
            condition = and_(condition, Comment.internal.is_(false()))
        comment = await self.session.scalar(select(Comment).where(condition).with_for_update(of=Comment))
        if comment is None:
            raise NotFoundException("Comment not found")
        if comment.author_id != actor.id and not actor.is_admin:
            raise PermissionDeniedException("Only the author or an admin can delete a comment")
        comment.deleted_at = datetime.now(UTC)
        counter = Post.internal_note_count if comment.internal else Post.comment_count
        await self.session.execute(
            update(Post).where(Post.id == post_id).values({counter: counter - 1, "updated_at": Post.updated_at})
        )
        await self.session.flush()

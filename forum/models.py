"""Database tables. The schema itself is created only by the Alembic migrations in ``migrations/``."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any
from uuid import UUID

import numpy as np
from advanced_alchemy.base import DefaultBase, UUIDv7AuditBase, orm_registry
from advanced_alchemy.types import DateTimeUTC
from pgvector import Vector
from pgvector.asyncpg import register_vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import UserDefinedType

metadata = orm_registry.metadata


class Embedding(UserDefinedType[np.ndarray]):
    """A pgvector ``vector`` column read and written as a ``float32`` numpy array, in pgvector's binary
    format (registered on every asyncpg connection below): no text to format or parse on either side,
    which cost ~2 ms of the worker's CPU and ~1 ms of PostgreSQL's per post (37 vectors of 384 floats
    read per placement; docs/benchmarks.md). Pass a numpy array (or a list) as a parameter, e.g. to
    ``CAST(:v AS vector(384))``."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "VECTOR"

    def bind_processor(self, dialect: Any) -> Any:
        def process(value: Any) -> Any:
            return None if value is None else np.asarray(value, dtype=np.float32)

        return process

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        return as_array


def as_array(value: Any) -> np.ndarray | None:
    """A vector as asyncpg returns it (``pgvector.Vector`` in binary format, or text without the codec)."""
    if value is None or isinstance(value, np.ndarray):
        return value
    if isinstance(value, Vector):
        return value.to_numpy()
    return np.fromstring(value[1:-1], sep=",", dtype=np.float32)


@event.listens_for(Engine, "connect")
def _binary_vectors(dbapi_connection: Any, connection_record: Any) -> None:
    """Every asyncpg connection of every engine exchanges ``vector`` values in binary, and holds the searches'
    HNSW settings for its session (:data:`SEARCH_DEFAULTS`). A database without the extension yet (before the
    first migration) keeps the text format on that connection."""
    if not type(dbapi_connection).__module__.startswith("sqlalchemy.dialects.postgresql.asyncpg"):
        return
    try:
        dbapi_connection.run_async(register_vector)
    except ValueError as exc:  # "unknown type: public.vector"
        if "unknown type" not in str(exc):
            raise
    try:
        dbapi_connection.run_async(lambda conn: conn.execute(_SEARCH_DEFAULTS_SQL))
    except Exception:  # a pgvector without iterative scans: searches set what they need per transaction
        return
    connection_record.info[SEARCH_DEFAULTS] = HNSW_EF_SEARCH


SEARCH_DEFAULTS = "forum.search_defaults"
"""Key of a pooled connection's ``info``: the ``hnsw.ef_search`` it was given at connect, with pgvector's
iterative scan (``hnsw.iterative_scan = relaxed_order``) for its session. A nearest-neighbour search that
wants exactly these needs no ``set_config`` round trip (and so no ``BEGIN``/``COMMIT``) per request:
as-you-type, issue 14. Every HNSW search of the app asks for the iterative scan, so no other statement
reads these settings differently."""
HNSW_EF_SEARCH = 40
_SEARCH_DEFAULTS_SQL = (
    f"SET hnsw.iterative_scan = relaxed_order; SET hnsw.ef_search = {HNSW_EF_SEARCH}"  # one round trip
)


class UserKind(enum.StrEnum):
    EXTERNAL = "external"
    INTERNAL = "internal"


class UserRole(enum.StrEnum):
    MEMBER = "member"
    PRODUCT = "product"
    ADMIN = "admin"


class PostKind(enum.StrEnum):
    IDEA = "idea"
    CRITIQUE = "critique"


class Visibility(enum.StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"


class Channel(enum.StrEnum):
    """Where a piece of feedback came from: ``web`` when the person typed it, else the channel an employee
    captured it from on their behalf (``FeedbackCapture``)."""

    WEB = "web"
    SUPPORT = "support"
    SALES = "sales"
    SOCIAL = "social"
    STORE = "store"
    SURVEY = "survey"
    OTHER = "other"


class StatusEvent(enum.StrEnum):
    """A status change made by the system because of another post (``StatusChange.related_post_id``)."""

    MERGED = "merged"
    UNMERGED = "unmerged"
    ADDRESSED = "addressed"
    UNADDRESSED = "unaddressed"
    """The idea that addressed this critique is no longer shipped."""


class PostStatus(enum.StrEnum):
    OPEN = "open"
    UNDER_REVIEW = "under_review"
    PLANNED = "planned"
    IN_PROGRESS = "in_progress"
    SHIPPED = "shipped"
    DECLINED = "declined"
    DUPLICATE = "duplicate"
    ADDRESSED = "addressed"
    """A critique answered by an idea that shipped."""


def _check_in(column: str, enum_cls: type[enum.Enum]) -> CheckConstraint:
    values = ", ".join(f"'{m.value}'" for m in enum_cls)
    return CheckConstraint(f"{column} IN ({values})", name=f"{column}_valid")


# Title and body in English and Spanish (stemmed both ways) and unstemmed ('simple', lower-cased words,
# for word-prefix matching), in one indexed vector; see ``PostSearch`` for how it is queried.
SEARCH_VECTOR_SQL = (
    "to_tsvector('english'::regconfig, coalesce(title, '') || ' ' || coalesce(body, '')) || "
    "to_tsvector('spanish'::regconfig, coalesce(title, '') || ' ' || coalesce(body, '')) || "
    "to_tsvector('simple'::regconfig, coalesce(title, '') || ' ' || coalesce(body, ''))"
)


class UserRoles:
    """What a permission check asks of a user (its ``kind`` and ``role``): shared by the ORM ``User`` and
    the light ``forum.auth.SignedIn`` some routes get instead, so both answer the same."""

    __slots__ = ()
    kind: Any
    role: Any

    @property
    def is_internal(self) -> bool:
        return self.kind == UserKind.INTERNAL.value

    @property
    def is_product_team(self) -> bool:
        return self.role in (UserRole.PRODUCT.value, UserRole.ADMIN.value)

    @property
    def is_admin(self) -> bool:
        return self.role == UserRole.ADMIN.value

    @property
    def sees_internal(self) -> bool:
        """Internal posts and internal notes exist only for employees and the product team."""
        return self.is_internal or self.is_product_team


class User(UUIDv7AuditBase, UserRoles):
    __tablename__ = "user_account"
    __table_args__ = (_check_in("kind", UserKind), _check_in("role", UserRole))

    email: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(80))
    password_hash: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16), default=UserKind.EXTERNAL.value)
    role: Mapped[str] = mapped_column(String(16), default=UserRole.MEMBER.value)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    tokens_valid_after: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    """Tokens issued before this instant are revoked (logout, password change, deactivation)."""


class Post(UUIDv7AuditBase):
    __tablename__ = "post"
    __table_args__ = (
        _check_in("kind", PostKind),
        _check_in("visibility", Visibility),
        _check_in("status", PostStatus),
        _check_in("channel", Channel),
        Index("ix_post_search", "search", postgresql_using="gin"),
        Index("ix_post_tags", "tags", postgresql_using="gin"),
        # Every sort key down to the id (migration 0015): a keyset page walks the index from its cursor.
        Index("ix_post_top", "vote_total", "created_at", "id", postgresql_where=text("deleted_at IS NULL")),
        Index("ix_post_new", "created_at", "id", postgresql_where=text("deleted_at IS NULL")),
        Index("ix_post_discussed", "comment_count", "created_at", "id", postgresql_where=text("deleted_at IS NULL")),
        Index("ix_post_language", "language", postgresql_where=text("deleted_at IS NULL")),
        Index("ix_post_channel", "channel", postgresql_where=text("deleted_at IS NULL AND channel <> 'web'")),
    )

    kind: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(160))
    body: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(40)), default=list, server_default=text("'{}'"))
    visibility: Mapped[str] = mapped_column(String(16), default=Visibility.PUBLIC.value)
    status: Mapped[str] = mapped_column(String(16), default=PostStatus.OPEN.value)
    author_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="RESTRICT"), index=True)
    # Counters kept on the row so that a list never counts vote or comment rows.
    vote_total: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    vote_internal: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    vote_external: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    comment_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    internal_note_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    merged_into_id: Mapped[UUID | None] = mapped_column(ForeignKey("post.id", ondelete="SET NULL"), nullable=True)
    # ISO 639-1 code detected from title + body when written ("und" when unsure; see embeddings.language).
    language: Mapped[str | None] = mapped_column(String(8), nullable=True)
    search: Mapped[str] = mapped_column(TSVECTOR, Computed(SEARCH_VECTOR_SQL, persisted=True), deferred=True)
    hidden_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    """Hidden as spam by the product team: it exists for the product team only and its votes count nowhere."""
    hidden_by_id: Mapped[UUID | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    channel: Mapped[str] = mapped_column(String(16), default=Channel.WEB.value, server_default=text("'web'"))

    author: Mapped[User] = relationship(lazy="joined", innerjoin=True, foreign_keys="Post.author_id")


def visible_to(viewer: User | None, post: Any = Post) -> ColumnElement[bool]:
    """SQL condition: the post (or an alias of it) exists for this viewer. The one visibility rule: internal
    posts exist only for employees and the product team, hidden posts (spam) only for the product team,
    deleted posts for nobody."""
    condition = post.deleted_at.is_(None)
    if viewer is None or not viewer.is_product_team:
        condition = and_(condition, post.hidden_at.is_(None))
    if viewer is None or not viewer.sees_internal:
        condition = and_(condition, post.visibility == Visibility.PUBLIC.value)
    return condition


def visibility_scope(viewer: UserRoles | None) -> str:
    """Which posts ``visible_to`` lets this viewer see: viewers of one scope see exactly the same posts."""
    if viewer is not None and viewer.is_product_team:
        return "staff"
    return "internal" if viewer is not None and viewer.sees_internal else "public"


class PostEdit(UUIDv7AuditBase):
    """A change of a post's title or body: who, when (``created_at``), and each changed field before and after
    (both null when that field did not change)."""

    __tablename__ = "post_edit"
    __table_args__ = (Index("ix_post_edit_post_created", "post_id", "created_at"),)

    post_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"))
    editor_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="RESTRICT"))
    title_before: Mapped[str | None] = mapped_column(String(160), nullable=True)
    title_after: Mapped[str | None] = mapped_column(String(160), nullable=True)
    body_before: Mapped[str | None] = mapped_column(Text, nullable=True)
    body_after: Mapped[str | None] = mapped_column(Text, nullable=True)

    editor: Mapped[User] = relationship(lazy="joined", innerjoin=True)


class Tag(UUIDv7AuditBase):
    """A tag the product team manages (colour, description). Posts still carry tags by name, in ``post.tags``."""

    __tablename__ = "tag"
    __table_args__ = (CheckConstraint("colour ~ '^#[0-9a-f]{6}$'", name="colour_valid"),)

    name: Mapped[str] = mapped_column(String(40), unique=True)
    colour: Mapped[str] = mapped_column(String(7))
    description: Mapped[str] = mapped_column(String(500), default="", server_default="")


class Vote(DefaultBase):
    """One vote per user per post. ``voter_kind`` is the voter's kind, kept to keep counters exact."""

    __tablename__ = "vote"
    __table_args__ = (
        _check_in("voter_kind", UserKind),
        Index("ix_vote_user", "user_id", "created_at"),
        Index("ix_vote_merged_from", "merged_from_id", postgresql_where=text("merged_from_id IS NOT NULL")),
    )

    post_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True)
    voter_kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=text("now()"))
    merged_from_id: Mapped[UUID | None] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"), nullable=True)
    """Set on votes a post received from a merged duplicate (with the original vote time)."""


class PostVoteDay(DefaultBase):
    """Votes per post per day, so that ``trending`` sums at most 14 small rows per post."""

    __tablename__ = "post_vote_day"

    post_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True, index=True)
    votes: Mapped[int] = mapped_column(Integer, default=0)


class Comment(UUIDv7AuditBase):
    __tablename__ = "comment"
    __table_args__ = (Index("ix_comment_post_created", "post_id", "created_at"),)

    post_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"))
    author_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="RESTRICT"))
    body: Mapped[str] = mapped_column(Text)
    internal: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)

    author: Mapped[User] = relationship(lazy="joined", innerjoin=True)


class StatusChange(UUIDv7AuditBase):
    """Every status a post has had: who moved it, when, from what, to what, and why."""

    __tablename__ = "status_change"
    __table_args__ = (
        Index("ix_status_change_post_created", "post_id", "created_at"),
        _check_in("event", StatusEvent),
    )

    post_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"))
    actor_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="RESTRICT"))
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    """What the person wrote. Changes the system makes (``event``) name their post by reference instead,
    and their note is written when read, for the reader: a post they may not see is not named."""
    event: Mapped[str | None] = mapped_column(String(16), nullable=True)
    related_post_id: Mapped[UUID | None] = mapped_column(ForeignKey("post.id", ondelete="SET NULL"), nullable=True)

    actor: Mapped[User] = relationship(lazy="joined", innerjoin=True)


# Grouping ------------------------------------------------------------------------------------------


class MembershipState(enum.StrEnum):
    SUGGESTED = "suggested"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


class PostEmbedding(DefaultBase):
    """One vector per post per encoder. ``content_hash`` tells whether the post changed since."""

    __tablename__ = "post_embedding"

    post_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(32))
    embedding: Mapped[np.ndarray] = mapped_column(Embedding())
    embedded_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=text("now()"), index=True)


class Cluster(UUIDv7AuditBase):
    """One real need: posts that ask for the same thing in different words."""

    __tablename__ = "cluster"


class ClusterMembership(DefaultBase):
    """A post's place in a cluster. Rejected rows are kept so automatic grouping never repeats them;
    ``manual`` rows were decided by a person and are never changed by automatic grouping."""

    __tablename__ = "cluster_membership"
    __table_args__ = (
        _check_in("state", MembershipState),
        Index(
            "uq_cluster_membership_current_post",
            "post_id",
            unique=True,
            postgresql_where=text("state <> 'rejected'"),
        ),
        Index(
            "ix_cluster_membership_recent",
            "cluster_id",
            "post_created_at",
            postgresql_where=text("state <> 'rejected'"),
        ),
        Index("ix_cluster_membership_cluster", "cluster_id", "state"),
    )

    post_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"), primary_key=True)
    cluster_id: Mapped[UUID] = mapped_column(ForeignKey("cluster.id", ondelete="CASCADE"), primary_key=True)
    similarity: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Cosine to the nearest member when it joined (1.0 for the post that started the cluster)."""
    state: Mapped[str] = mapped_column(String(16), default=MembershipState.SUGGESTED.value)
    manual: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    post_created_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    """The post's created_at, kept by triggers (migration 0016): a cluster's recent posts are an index range."""
    decided_by_id: Mapped[UUID | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=text("now()"))
    updated_at: Mapped[datetime] = mapped_column(
        DateTimeUTC(timezone=True), server_default=text("now()"), onupdate=text("now()")
    )


class ClusterTally(DefaultBase):
    """Per cluster: its unique voters (all, and those who voted as employees), its counted members, their
    last activity and the most voted of them.
    Kept by triggers (migration 0015) on every vote, unvote, merge, membership change and post
    delete/restore, so the triage list reads one row per cluster, never the votes."""

    __tablename__ = "cluster_tally"

    cluster_id: Mapped[UUID] = mapped_column(ForeignKey("cluster.id", ondelete="CASCADE"), primary_key=True)
    voters: Mapped[int] = mapped_column(Integer, default=0)
    internal_voters: Mapped[int] = mapped_column(Integer, default=0)
    member_count: Mapped[int] = mapped_column(Integer, default=0)
    idea_count: Mapped[int] = mapped_column(Integer, default=0)
    critique_count: Mapped[int] = mapped_column(Integer, default=0)
    first_posted_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    last_activity_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    top_post_id: Mapped[UUID | None] = mapped_column(nullable=True)
    """The most voted counted member (the earliest of a tie): its title names the cluster."""
    revision: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    """Moves on every change of members or of a member's text or vector: descriptions are stored per revision
    (``ClusterDescription``)."""
    growth_since: Mapped[date] = mapped_column(Date, server_default=text("'-infinity'::date"))
    """The first day ``growth_posts`` and ``growth_voters`` count (the ``cluster_day`` rows from it on):
    the triage list's 30-day growth, kept by triggers (migration 0018)."""
    growth_posts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    growth_voters: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    growth_first_day: Mapped[date | None] = mapped_column(Date, nullable=True, server_default=text("'-infinity'::date"))
    """No counted ``cluster_day`` row before it from ``growth_since`` on (a lower bound; NULL: none): the sums
    are today's window's while ``growth_since`` <= the window's start <= this day."""
    voices: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    """Survey answers placed in the cluster (each respondent's latest per survey, every survey), and of those
    the detractors': ``survey_tally``'s ``cluster`` rows summed, kept by a trigger on it (migration 0019)."""
    detractor_voices: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


class ClusterDescription(DefaultBase):
    """What describes a cluster to one audience (``sees_internal`` false: public members only), as computed
    at ``revision`` of its tally: the triage list and the cluster page read it instead of comparing every
    member's vectors and words (forum/grouping/descriptions.py, migration 0016)."""

    __tablename__ = "cluster_description"

    cluster_id: Mapped[UUID] = mapped_column(ForeignKey("cluster.id", ondelete="CASCADE"), primary_key=True)
    sees_internal: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)
    representative_id: Mapped[UUID | None] = mapped_column(nullable=True)
    representative_title: Mapped[str | None] = mapped_column(Text, nullable=True)
    key_phrases: Mapped[list] = mapped_column(JSONB)
    languages: Mapped[dict] = mapped_column(JSONB)
    channels: Mapped[dict] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    """Members per channel (a post's channel is set once: the revision covers it)."""
    explanations: Mapped[dict | None] = mapped_column(JSONB, nullable=True)
    """Each member's explanation (post id → Explanation), for the cluster page; null until one was asked for."""
    computed_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=text("now()"))


class ClusterVoter(DefaultBase):
    """One person who voted on a counted member of a cluster: on how many (``posts``), how many of those
    as an employee, and when first (growth). Kept by the same triggers as ``ClusterTally``."""

    __tablename__ = "cluster_voter"
    __table_args__ = (Index("ix_cluster_voter_first_vote", "cluster_id", "first_vote"),)

    cluster_id: Mapped[UUID] = mapped_column(ForeignKey("cluster.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[UUID] = mapped_column(primary_key=True)  # no foreign key: rows leave with the votes
    posts: Mapped[int] = mapped_column(Integer)
    internal_posts: Mapped[int] = mapped_column(Integer)
    first_vote: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))


class ClusterDay(DefaultBase):
    """A cluster's new posts (counted members by their post's creation day) and new voters (by their first
    vote there) per UTC day: the triage list's growth. Kept by triggers (migration 0017)."""

    __tablename__ = "cluster_day"
    __table_args__ = (Index("ix_cluster_day_day", "day", "cluster_id", postgresql_include=["posts", "voters"]),)

    cluster_id: Mapped[UUID] = mapped_column(ForeignKey("cluster.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    posts: Mapped[int] = mapped_column(Integer)
    voters: Mapped[int] = mapped_column(Integer)


class ClusterChannel(DefaultBase):
    """A cluster's counted members from one channel: the triage list's channel filter (``?channel=``) reads
    these rows instead of the memberships. Kept by triggers (migration 0019)."""

    __tablename__ = "cluster_channel"
    __table_args__ = (
        Index("ix_cluster_channel_channel", "channel", "cluster_id", postgresql_where=text("members > 0")),
    )

    cluster_id: Mapped[UUID] = mapped_column(ForeignKey("cluster.id", ondelete="CASCADE"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    members: Mapped[int] = mapped_column(Integer)


class SuggestionState(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    DISMISSED = "dismissed"


class ClusterSuggestion(UUIDv7AuditBase):
    """A "maybe": the post probably belongs in ``cluster`` (score between the suggest and the sure
    threshold, or any score above suggest in suggest-only mode). Waits for the product team; a dismissed
    suggestion is remembered like a rejection (the post is never proposed for, or put in, that cluster)."""

    __tablename__ = "cluster_suggestion"
    __table_args__ = (
        _check_in("state", SuggestionState),
        Index("uq_cluster_suggestion_post_cluster", "post_id", "cluster_id", unique=True),
        Index("ix_cluster_suggestion_pending", "cluster_id", postgresql_where=text("state = 'pending'")),
    )

    post_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"))
    cluster_id: Mapped[UUID] = mapped_column(ForeignKey("cluster.id", ondelete="CASCADE"))
    score: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16), default=SuggestionState.PENDING.value)
    decided_by_id: Mapped[UUID | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    decided_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)


class LabelSource(enum.StrEnum):
    CONFIRM = "confirm"
    REJECT = "reject"
    MOVE = "move"
    SPLIT = "split"
    ACCEPT = "accept"
    DISMISS = "dismiss"


class GroupingLabel(DefaultBase):
    """A pair of posts a person labelled, by a grouping decision: duplicates or not. One row per pair
    (``post_a_id < post_b_id``); the latest decision wins. ``forum grouping calibrate`` fits on them."""

    __tablename__ = "grouping_label"
    __table_args__ = (_check_in("source", LabelSource), CheckConstraint("post_a_id < post_b_id", name="pair_ordered"))

    post_a_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"), primary_key=True)
    post_b_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"), primary_key=True)
    duplicate: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(16))
    decided_by_id: Mapped[UUID | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    decided_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=text("now()"))


class GroupingSetting(DefaultBase):
    """Board-wide grouping state shared by every process: thresholds applied by ``forum grouping
    calibrate --apply`` (key ``thresholds:<encoder configuration>``) and the consolidation watermark."""

    __tablename__ = "grouping_setting"

    key: Mapped[str] = mapped_column(String(240), primary_key=True)
    value: Mapped[dict] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(
        DateTimeUTC(timezone=True), server_default=text("now()"), onupdate=text("now()")
    )


class PostMerge(UUIDv7AuditBase):
    """``source`` was merged into ``target``. Kept after an unmerge (``unmerged_at``) as history."""

    __tablename__ = "post_merge"
    __table_args__ = (
        Index("uq_post_merge_active_source", "source_id", unique=True, postgresql_where=text("unmerged_at IS NULL")),
        Index("ix_post_merge_target", "target_id"),
    )

    source_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"))
    target_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"))
    merged_by_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="RESTRICT"))
    source_status_before: Mapped[str] = mapped_column(String(16))
    unmerged_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    unmerged_by_id: Mapped[UUID | None] = mapped_column(ForeignKey("user_account.id", ondelete="RESTRICT"))


# Ship and credit --------------------------------------------------------------------------------------


class CreditReason(enum.StrEnum):
    PIONEER = "pioneer"
    AUTHOR = "author"
    EARLY_VOTER = "early_voter"
    CRITIC = "critic"


class Subscription(DefaultBase):
    """Who hears about a post. Authors and voters are subscribed automatically; anyone can opt out.
    ``merged_from`` marks subscriptions that followed a merged duplicate (removed again on unmerge)."""

    __tablename__ = "subscription"

    user_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True)
    post_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"), primary_key=True, index=True)
    merged_from_id: Mapped[UUID | None] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=text("now()"))


class Unsubscription(DefaultBase):
    """An explicit opt-out: voting again or a merge will not subscribe this user to this post."""

    __tablename__ = "unsubscription"

    user_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True)
    post_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=text("now()"))


class Notification(UUIDv7AuditBase):
    __tablename__ = "notification"
    __table_args__ = (
        Index("ix_notification_user_created", "user_id", "created_at"),
        Index("ix_notification_user_unread", "user_id", postgresql_where=text("read_at IS NULL")),
    )

    user_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))
    post_id: Mapped[UUID | None] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"), nullable=True)
    payload: Mapped[dict] = mapped_column(JSONB, default=dict)
    read_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    emailed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    """When it went out by email, alone or in a daily digest (forum/email)."""


class EmailFrequency(enum.StrEnum):
    EACH = "each"
    DAILY = "daily"
    NONE = "none"


class EmailPreference(DefaultBase):
    """How a person hears by email (no row: every notification, in the language of their own posts)."""

    __tablename__ = "email_preference"
    __table_args__ = (
        _check_in("frequency", EmailFrequency),
        CheckConstraint("language IN ('en', 'es')", name="language_valid"),
        Index("ix_email_preference_daily", "user_id", postgresql_where=text("frequency = 'daily'")),
    )

    user_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True)
    frequency: Mapped[str] = mapped_column(String(8), default=EmailFrequency.EACH.value, server_default="each")
    language: Mapped[str | None] = mapped_column(String(8), nullable=True)
    frequency_since: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=text("now()"))
    """A daily digest covers notifications from here on (not what piled up before the person chose it)."""
    updated_at: Mapped[datetime] = mapped_column(
        DateTimeUTC(timezone=True), server_default=text("now()"), onupdate=text("now()")
    )


class CaptureSubject(enum.StrEnum):
    POST = "post"
    VOTE = "vote"
    COMMENT = "comment"


class FeedbackCapture(UUIDv7AuditBase):
    """A post, vote or comment an employee recorded on behalf of a customer (``customer``, its author or
    voter): from which channel, the source (a ticket URL), when the customer said it (``said_at``, also the
    post's, vote's or comment's own time) and who typed it (``created_at`` is when). Staff only."""

    __tablename__ = "feedback_capture"
    __table_args__ = (
        _check_in("subject", CaptureSubject),
        CheckConstraint(
            "channel IN ('web', 'support', 'sales', 'social', 'store', 'survey', 'other') AND channel <> 'web'",
            name="channel_valid",
        ),
        Index("ix_feedback_capture_post", "post_id", "subject"),
        Index(
            "uq_feedback_capture_vote", "post_id", "customer_id", unique=True, postgresql_where=text("subject = 'vote'")
        ),
    )

    subject: Mapped[str] = mapped_column(String(16))
    post_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"))
    comment_id: Mapped[UUID | None] = mapped_column(ForeignKey("comment.id", ondelete="CASCADE"), nullable=True)
    customer_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    captured_by_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="RESTRICT"))
    channel: Mapped[str] = mapped_column(String(16))
    source_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    said_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))

    captured_by: Mapped[User] = relationship(lazy="joined", innerjoin=True, foreign_keys=[captured_by_id])


class CritiqueLink(DefaultBase):
    """The product team says: this idea answers this critique."""

    __tablename__ = "critique_link"

    idea_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"), primary_key=True)
    critique_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"), primary_key=True, index=True)
    linked_by_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=text("now()"))


class ShipEvent(UUIDv7AuditBase):
    """One shipping of a post. At most one is active; un-shipping revokes it (and its credits)."""

    __tablename__ = "ship_event"
    __table_args__ = (
        Index("uq_ship_event_active_post", "post_id", unique=True, postgresql_where=text("revoked_at IS NULL")),
    )

    post_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"))
    shipped_by_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="RESTRICT"))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    revoked_by_id: Mapped[UUID | None] = mapped_column(ForeignKey("user_account.id", ondelete="RESTRICT"))
    addressed: Mapped[dict] = mapped_column(JSONB, default=dict)
    """Critiques this ship marked addressed, with the status each had before (restored on revoke)."""


class CreditEntry(UUIDv7AuditBase):
    """Append-only ledger. A revocation adds an entry with negative points that names what it revokes."""

    __tablename__ = "credit_entry"
    __table_args__ = (
        _check_in("reason", CreditReason),
        Index("ix_credit_entry_user_created", "user_id", "created_at"),
        Index("ix_credit_entry_post", "post_id"),
    )

    user_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    post_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"))
    """The shipped post."""
    source_post_id: Mapped[UUID] = mapped_column(ForeignKey("post.id", ondelete="CASCADE"))
    """The post through which the user contributed (the shipped one, a merged duplicate, a critique…)."""
    ship_event_id: Mapped[UUID] = mapped_column(ForeignKey("ship_event.id", ondelete="CASCADE"), index=True)
    reason: Mapped[str] = mapped_column(String(16))
    rank: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(Integer)
    contributed_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    """When they asked, voted or complained: what the rank is based on."""
    revokes_id: Mapped[UUID | None] = mapped_column(ForeignKey("credit_entry.id", ondelete="RESTRICT"), nullable=True)


class RateLimitWindow(DefaultBase):
    """Requests counted per client and fixed window, shared by every API process of a deployment."""

    __tablename__ = "rate_limit_window"
    __table_args__ = {"prefixes": ["UNLOGGED"]}  # counters of the last minutes: no WAL (migration 0005)

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), primary_key=True, index=True)
    hits: Mapped[int] = mapped_column(Integer, default=0)


class ApiKeyScope(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


class ApiKey(UUIDv7AuditBase):
    """A secret an integration sends as ``Authorization: Bearer fk_…``; only its SHA-256 is stored.

    Each key acts as its own service account (``user``: an internal user whose password matches
    nothing), so everything it writes is attributed to it (forum/keys/services.py)."""

    __tablename__ = "api_key"

    name: Mapped[str] = mapped_column(String(80))
    prefix: Mapped[str] = mapped_column(String(16))
    """The secret's first characters, shown in lists to tell keys apart."""
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(16)))
    user_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="RESTRICT"), unique=True)
    created_by_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="RESTRICT"))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    """Updated at most once a minute (``LAST_USE_RESOLUTION``), not on every request."""
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    revoked_by_id: Mapped[UUID | None] = mapped_column(ForeignKey("user_account.id", ondelete="RESTRICT"))

    user: Mapped[User] = relationship(foreign_keys=[user_id], lazy="joined", innerjoin=True)
    created_by: Mapped[User] = relationship(foreign_keys=[created_by_id], lazy="joined", innerjoin=True)


class Webhook(UUIDv7AuditBase):
    __tablename__ = "webhook"

    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(200))
    events: Mapped[list[str]] = mapped_column(ARRAY(String(40)))
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_by_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="RESTRICT"))
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    """Deliveries that failed for good since the last one that succeeded; at the limit the hook is disabled."""
    disabled_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    """When it was disabled automatically (None when active, or switched off by hand)."""


class WebhookDelivery(UUIDv7AuditBase):
    __tablename__ = "webhook_delivery"
    __table_args__ = (Index("ix_webhook_delivery_webhook_created", "webhook_id", "created_at"),)

    webhook_id: Mapped[UUID] = mapped_column(ForeignKey("webhook.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    redelivery_of_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("webhook_delivery.id", ondelete="SET NULL"), nullable=True
    )
    """The past delivery this one sends again (``POST …/deliveries/{id}/redeliver``)."""


# Surveys (voice of the customer) --------------------------------------------------------------------


class SurveyKind(enum.StrEnum):
    NPS = "nps"
    """0-10: "How likely are you to recommend …?"."""
    CSAT = "csat"
    """1-5: "How satisfied are you with …?"."""


class SurveyAudience(enum.StrEnum):
    EXTERNAL = "external"
    INTERNAL = "internal"
    EVERYONE = "everyone"


class AnswerSource(enum.StrEnum):
    APP = "app"
    IMPORT = "import"


class Survey(UUIDv7AuditBase):
    __tablename__ = "survey"
    __table_args__ = (
        _check_in("kind", SurveyKind),
        _check_in("audience", SurveyAudience),
        CheckConstraint("question_en IS NOT NULL OR question_es IS NOT NULL", name="question_present"),
        CheckConstraint("throttle_days >= 0", name="throttle_days_valid"),
    )

    kind: Mapped[str] = mapped_column(String(8))
    question_en: Mapped[str | None] = mapped_column(String(300), nullable=True)
    question_es: Mapped[str | None] = mapped_column(String(300), nullable=True)
    follow_up_en: Mapped[str | None] = mapped_column(String(300), nullable=True)
    follow_up_es: Mapped[str | None] = mapped_column(String(300), nullable=True)
    audience: Mapped[str] = mapped_column(String(16), default=SurveyAudience.EVERYONE.value)
    is_open: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    throttle_days: Mapped[int] = mapped_column(Integer)
    """A person is asked (and may answer) at most once per this many days."""
    created_by_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="RESTRICT"))


class SurveyAnswer(UUIDv7AuditBase):
    """One answer. A person's answers are all kept; ``is_latest`` marks the one that counts now."""

    __tablename__ = "survey_answer"
    __table_args__ = (
        _check_in("respondent_kind", UserKind),
        _check_in("source", AnswerSource),
        CheckConstraint("score BETWEEN 0 AND 10", name="score_valid"),
        Index("ix_survey_answer_user", "survey_id", "user_id", "answered_at"),
        Index("ix_survey_answer_respondent", "user_id", "answered_at"),
        Index("uq_survey_answer_latest", "survey_id", "user_id", unique=True, postgresql_where=text("is_latest")),
        Index(
            "ix_survey_answer_current",
            "survey_id",
            postgresql_include=["score", "respondent_kind", "cluster_id"],
            postgresql_where=text("is_latest"),
        ),
        Index("ix_survey_answer_trend", "survey_id", "answered_at", postgresql_include=["score"]),
        Index(
            "uq_survey_answer_import",
            "survey_id",
            "import_key",
            unique=True,
            postgresql_where=text("import_key IS NOT NULL"),
        ),
        Index("ix_survey_answer_cluster", "cluster_id", postgresql_where=text("cluster_id IS NOT NULL")),
        Index(
            "ix_survey_answer_properties",
            "properties",
            postgresql_using="gin",
            postgresql_ops={"properties": "jsonb_path_ops"},
        ),
    )

    survey_id: Mapped[UUID] = mapped_column(ForeignKey("survey.id", ondelete="CASCADE"))
    user_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    language: Mapped[str | None] = mapped_column(String(8), nullable=True)
    respondent_kind: Mapped[str] = mapped_column(String(16))
    """The respondent's kind when they answered."""
    properties: Mapped[dict] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    """Free key/value pairs from the company's systems (plan, region, channel…), strings only."""
    answered_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    is_latest: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    source: Mapped[str] = mapped_column(String(8), default=AnswerSource.APP.value)
    import_key: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """md5 of the imported row (email, date, score, comment): a re-run of an import adds nothing."""
    cluster_id: Mapped[UUID | None] = mapped_column(ForeignKey("cluster.id", ondelete="SET NULL"), nullable=True)
    """The cluster whose posts voice the same need as the comment (a *voice* there), when similar enough."""
    similarity: Mapped[float | None] = mapped_column(Float, nullable=True)
    embedded_model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """The encoder configuration that placed the comment (NULL until the worker has)."""
    post_id: Mapped[UUID | None] = mapped_column(ForeignKey("post.id", ondelete="SET NULL"), nullable=True)
    """The critique the product team made of this voice, authored by the respondent."""


class SurveyDismissal(DefaultBase):
    """The person closed the survey without answering: not asked again for a throttle period."""

    __tablename__ = "survey_dismissal"

    survey_id: Mapped[UUID] = mapped_column(ForeignKey("survey.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True)
    dismissed_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=text("now()"))


class SurveyTally(DefaultBase):
    """Running counts of a survey's answers by dimension, kept by triggers on ``survey_answer``
    (migration 0011) so that a report reads a few hundred rows, never the answers themselves.

    ``dimension`` / ``value``: ``all`` / ``''``, ``kind`` / internal|external, ``cluster`` / cluster id,
    ``property:<key>`` / value — over each person's latest answer — and ``week`` / ``month`` / first day
    (UTC, ``YYYY-MM-DD``) over every answer. ``high`` counts promoters (NPS 9-10, CSAT 4-5), ``low``
    detractors (NPS 0-6, CSAT 1-2).
    """

    __tablename__ = "survey_tally"

    survey_id: Mapped[UUID] = mapped_column(ForeignKey("survey.id", ondelete="CASCADE"), primary_key=True)
    dimension: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[str] = mapped_column(String(200), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[int] = mapped_column(BigInteger, default=0)
    high: Mapped[int] = mapped_column(BigInteger, default=0)
    low: Mapped[int] = mapped_column(BigInteger, default=0)

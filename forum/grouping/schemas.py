from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

from forum.accounts.schemas import UserPublic
from forum.models import MembershipState, PostKind, PostStatus, Visibility
from forum.posts.schemas import TITLE_MAX, TITLE_RAW_MAX, Body, PostOut, VoteCounts
from forum.schemas import clean_text, trimmed

TypedTitle = Annotated[str, trimmed(1, TITLE_MAX, raw_max=TITLE_RAW_MAX)]


class SimilarRequest(msgspec.Struct, forbid_unknown_fields=True):
    """What the user is typing: the nearest existing posts they may see come back."""

    title: TypedTitle
    body: Body = ""
    kind: PostKind | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=20)] = 5
    min_similarity: Annotated[float, msgspec.Meta(ge=-1.0, le=1.0)] = 0.3

    def __post_init__(self) -> None:
        self.title = clean_text(self.title, "title", min_len=1, max_len=TITLE_MAX, single_line=True)
        self.body = self.body.strip()


class SimilarPost(msgspec.Struct):
    similarity: float
    post: PostOut


class VoterCounts(msgspec.Struct):
    total: int
    internal: int
    external: int


class Growth(msgspec.Struct):
    """What changed in the last 30 days."""

    new_posts: int
    new_voters: int


class Band(enum.StrEnum):
    """How sure the grouping is: applied automatically (``sure``), waiting for review (``maybe``), or
    decided by a person (``manual``)."""

    SURE = "sure"
    MAYBE = "maybe"
    MANUAL = "manual"


class PostRef(msgspec.Struct):
    post_id: UUID
    title: str | None
    """None when the viewer may not see the post."""


class NearestMember(msgspec.Struct):
    post_id: UUID
    title: str | None
    """None when the viewer may not see the post."""
    similarity: float


class Explanation(msgspec.Struct):
    """Why a post is (or would be) in a cluster."""

    nearest: NearestMember | None
    """The member closest to it (None when it is alone)."""
    shared_terms: list[str]
    """Words it shares with that member, by stem in English and Spanish, as written in the post."""
    aligned_terms: list[str]
    """Across languages: its words paired with the member's by the multilingual encoder ("oscuro ↔ dark")."""


class SurveyVoices(msgspec.Struct):
    total: int
    detractors: int
    """NPS 0-6, CSAT 1-2."""


class ClusterSummary(msgspec.Struct):
    id: UUID
    title: str
    """The title of its most-voted post (its best description so far)."""
    representative: PostRef | None
    """Its most central post: the highest mean similarity to the other members."""
    key_phrases: list[str]
    """Words the most members share (by stem), rarer ones on the board first among equals."""
    languages: dict[str, int]
    """Members per detected language (en, es, pt, fr, ca, und)."""
    member_count: int
    idea_count: int
    critique_count: int
    unique_voters: VoterCounts
    growth_30d: Growth
    survey_voices: SurveyVoices
    """Survey comments placed in the cluster by meaning (each respondent's latest answer per survey)."""
    first_posted_at: datetime
    last_activity_at: datetime
    channels: dict[str, int] = msgspec.field(default_factory=dict)
    """Members per channel they came from (``web``: typed by their author; ``support``, ``sales``…: captured)."""
    voter_channels: dict[str, int] = msgspec.field(default_factory=dict)
    """Unique voters per channel their vote came from."""


class ClusterMember(msgspec.Struct):
    post_id: UUID
    title: str
    kind: PostKind
    status: PostStatus
    visibility: Visibility
    language: str | None
    """Detected language of the post (en, es, pt, fr, ca, und): a need raised in several languages."""
    author: UserPublic
    created_at: datetime
    votes: VoteCounts
    similarity: float | None
    state: MembershipState
    manual: bool
    band: Band
    """``sure``: grouped automatically; ``manual``: a person decided (confirmed, moved, split, accepted)."""
    explanation: Explanation | None
    merged_into: UUID | None


class ClusterDetail(msgspec.Struct):
    """A cluster and one page of its members, oldest first (``summary.member_count`` counts them all)."""

    summary: ClusterSummary
    members: list[ClusterMember]
    """One page of the members: ``limit`` of them (50 unless asked), after the ``after`` cursor."""
    rejected: list[ClusterMember]
    """Posts a person took out of this cluster: automatic grouping will not put them back (all of them,
    on every page)."""
    next: str | None = None
    """Cursor for the members after this page (``?after=``); null on the last page."""


class ClusterSort(enum.StrEnum):
    VOTERS = "voters"
    MEMBERS = "members"
    GROWTH = "growth"
    NEW = "new"
    DETRACTORS = "detractors"
    """The most detractor voices first: what drives detractors (survey comments placed in the cluster)."""


class MoveRequest(msgspec.Struct, forbid_unknown_fields=True):
    cluster_id: UUID


class SplitRequest(msgspec.Struct, forbid_unknown_fields=True):
    post_ids: Annotated[list[UUID], msgspec.Meta(min_length=1, max_length=500)]


class ClusterRef(msgspec.Struct):
    cluster_id: UUID


class SuggestedPost(msgspec.Struct):
    post_id: UUID
    title: str
    kind: PostKind
    language: str | None
    author: UserPublic
    created_at: datetime
    votes: VoteCounts


class SuggestedCluster(msgspec.Struct):
    id: UUID
    title: str
    member_count: int
    languages: dict[str, int]


class Suggestion(msgspec.Struct):
    """A "maybe": this post probably asks for what this cluster asks for."""

    id: UUID
    post: SuggestedPost
    cluster: SuggestedCluster
    score: float
    band: Band
    """``maybe`` (between the two thresholds), or ``sure`` in suggest-only mode."""
    voters: int
    """Unique voters on the post and on the cluster's members together: what the decision affects."""
    explanation: Explanation
    created_at: datetime


class SuggestionOutcome(msgspec.Struct):
    id: UUID
    state: str
    """``accepted`` (the post joined the cluster, confirmed) or ``dismissed`` (never proposed again)."""
    post_id: UUID
    cluster_id: UUID

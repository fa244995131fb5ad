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


class ClusterSummary(msgspec.Struct):
    id: UUID
    title: str
    """The title of its most-voted post (its best description so far)."""
    member_count: int
    idea_count: int
    critique_count: int
    unique_voters: VoterCounts
    growth_30d: Growth
    first_posted_at: datetime
    last_activity_at: datetime


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
    merged_into: UUID | None


class ClusterDetail(msgspec.Struct):
    summary: ClusterSummary
    members: list[ClusterMember]
    rejected: list[ClusterMember]
    """Posts a person took out of this cluster: automatic grouping will not put them back."""


class ClusterSort(enum.StrEnum):
    VOTERS = "voters"
    MEMBERS = "members"
    GROWTH = "growth"
    NEW = "new"


class MoveRequest(msgspec.Struct, forbid_unknown_fields=True):
    cluster_id: UUID


class SplitRequest(msgspec.Struct, forbid_unknown_fields=True):
    post_ids: Annotated[list[UUID], msgspec.Meta(min_length=1, max_length=500)]


class ClusterRef(msgspec.Struct):
    cluster_id: UUID

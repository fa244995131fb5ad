from __future__ import annotations

import enum
from datetime import datetime
from uuid import UUID

import msgspec

from forum.accounts.schemas import UserPublic
from forum.models import CreditReason
from forum.schemas import Page


class Credit(msgspec.Struct):
    user: UserPublic
    reason: CreditReason
    rank: int
    points: int
    source_post_id: UUID | None
    """The post through which they contributed (the shipped post, a merged duplicate, a critique);
    null when that post is internal and the viewer may not see it."""
    contributed_at: datetime
    """When they asked, voted or complained."""
    awarded_at: datetime


class LedgerEntry(msgspec.Struct):
    id: UUID
    post_id: UUID
    """The shipped post; or, when the reader may not see it, the post the credit was earned through (a
    customer's own post grouped or merged with an internal idea)."""
    post_title: str
    source_post_id: UUID | None
    """The post through which the credit was earned; null when the reader may not see it."""
    reason: CreditReason
    rank: int
    points: int
    """Negative for a revocation (the post left ``shipped``)."""
    revokes: UUID | None
    created_at: datetime


class UserCredits(Page[LedgerEntry]):
    """A user's ledger: a page of entries, newest first, with the user and their net points."""

    items: list[LedgerEntry]  # restated: the OpenAPI generator does not resolve an inherited type parameter
    user: UserPublic
    total_points: int
    """Net points over the whole ledger (revocations subtract), not only this page."""


class Segment(enum.StrEnum):
    ALL = "all"
    INTERNAL = "internal"
    EXTERNAL = "external"


class LeaderboardRow(msgspec.Struct):
    rank: int
    user: UserPublic
    points: int
    shipped_posts: int


class ChangelogEntry(msgspec.Struct):
    post_id: UUID
    title: str
    kind: str
    shipped_at: datetime
    credits: list[Credit]

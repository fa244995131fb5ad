from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from forum.schemas import Page


class NotificationOut(msgspec.Struct):
    id: UUID
    kind: str
    """status_changed, post_merged, credit_awarded, credit_revoked or critique_addressed."""
    post_id: UUID | None
    payload: dict[str, Any]
    created_at: datetime
    read_at: datetime | None


class Inbox(Page[NotificationOut]):
    """A page of notifications, newest first, with how many are unread in all."""

    items: list[NotificationOut]  # restated: the OpenAPI generator does not resolve an inherited type parameter
    unread: int


class SubscriptionState(msgspec.Struct):
    post_id: UUID
    subscribed: bool


class MarkedRead(msgspec.Struct):
    marked: int

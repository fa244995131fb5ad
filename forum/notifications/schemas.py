from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec


class NotificationOut(msgspec.Struct):
    id: UUID
    kind: str
    """status_changed, post_merged, credit_awarded, credit_revoked or critique_addressed."""
    post_id: UUID | None
    payload: dict[str, Any]
    created_at: datetime
    read_at: datetime | None


class Inbox(msgspec.Struct):
    items: list[NotificationOut]
    total: int
    unread: int
    limit: int
    offset: int


class SubscriptionState(msgspec.Struct):
    post_id: UUID
    subscribed: bool


class MarkedRead(msgspec.Struct):
    marked: int

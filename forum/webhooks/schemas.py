from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec

from forum.schemas import BLANK


class WebhookEvent(enum.StrEnum):
    POST_CREATED = "post.created"
    POST_STATUS_CHANGED = "post.status_changed"
    POST_MERGED = "post.merged"
    POST_SHIPPED = "post.shipped"
    CREDIT_AWARDED = "credit.awarded"


class WebhookCreate(msgspec.Struct, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(min_length=8, max_length=2000, pattern=f"^https?://[^{BLANK}" r"\x00]+$")]
    events: Annotated[list[WebhookEvent], msgspec.Meta(min_length=1, max_length=10)]
    secret: Annotated[str, msgspec.Meta(min_length=16, max_length=200, pattern=r"^[^\x00]*$")] | None = None
    """Signing key; generated when omitted. It is shown only in this response."""


class WebhookOut(msgspec.Struct):
    id: UUID
    url: str
    events: list[WebhookEvent]
    active: bool
    created_at: datetime


class WebhookCreated(msgspec.Struct):
    id: UUID
    url: str
    events: list[WebhookEvent]
    active: bool
    created_at: datetime
    secret: str
    """Verify each delivery: HMAC-SHA256 of ``"{X-Forum-Timestamp}.{raw body}"`` with this secret, hex,
    equals ``X-Forum-Signature`` without its ``sha256=`` prefix."""


class DeliveryOut(msgspec.Struct):
    id: UUID
    event: WebhookEvent
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]

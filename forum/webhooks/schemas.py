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
    POST_VOTED = "post.voted"
    """A vote given or taken back (``action``: voted or unvoted), with the post's new counts."""
    COMMENT_CREATED = "comment.created"
    """A comment or an internal note (``internal``)."""
    CLUSTER_CHANGED = "cluster.changed"
    """A cluster's membership changed (``change``), with its current members."""


TEST_EVENT = "webhook.test"
"""The event of a test delivery (``POST /api/webhooks/{id}/test``): sent whatever the webhook subscribes to."""

Url = Annotated[str, msgspec.Meta(min_length=8, max_length=2000, pattern=f"^https?://[^{BLANK}" r"\x00]+$")]
Events = Annotated[list[WebhookEvent], msgspec.Meta(min_length=1, max_length=10)]
Secret = Annotated[str, msgspec.Meta(min_length=16, max_length=200, pattern=r"^[^\x00]*$")]


class WebhookCreate(msgspec.Struct, forbid_unknown_fields=True):
    url: Url
    events: Events
    secret: Secret | None = None
    """Signing key; generated when omitted. It is shown only in this response."""


class WebhookUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """What to change; what is left out stays. ``active: true`` re-enables a disabled webhook and
    resets its failure count."""

    url: Url | msgspec.UnsetType = msgspec.UNSET
    events: Events | msgspec.UnsetType = msgspec.UNSET
    secret: Secret | msgspec.UnsetType = msgspec.UNSET
    active: bool | msgspec.UnsetType = msgspec.UNSET


class WebhookOut(msgspec.Struct):
    id: UUID
    url: str
    events: list[WebhookEvent]
    active: bool
    created_at: datetime
    consecutive_failures: int
    """Deliveries that failed for good since the last success; at FORUM_WEBHOOK_MAX_FAILURES it is disabled."""
    disabled_at: datetime | None
    """When it was disabled for failing (null if active or switched off by hand)."""


class WebhookCreated(WebhookOut):
    secret: str
    """Verify each delivery: HMAC-SHA256 of ``"{X-Forum-Timestamp}.{raw body}"`` with this secret, hex,
    equals ``X-Forum-Signature`` without its ``sha256=`` prefix."""


class DeliveryOut(msgspec.Struct):
    id: UUID
    event: str
    """One of the webhook events, or ``webhook.test``."""
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]
    redelivery_of: UUID | None = None
    """The past delivery this one sent again."""

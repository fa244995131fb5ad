from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

from forum.accounts.schemas import UserPublic
from forum.models import ApiKeyScope
from forum.schemas import clean_text, trimmed

KEY_NAME_MAX = 80


class ApiKeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, trimmed(1, KEY_NAME_MAX)]
    """What the integration is ("Zendesk sync"): the service account's display name, shown as the author."""
    scopes: Annotated[list[ApiKeyScope], msgspec.Meta(min_length=1, max_length=3)]
    """``read``: read everything the product team reads; ``write``: also write as the product team;
    ``admin``: also the admin routes."""

    def __post_init__(self) -> None:
        self.name = clean_text(self.name, "name", min_len=1, max_len=KEY_NAME_MAX, single_line=True)


class ApiKeyOut(msgspec.Struct):
    id: UUID
    name: str
    prefix: str
    """The key's first characters, to tell keys apart (the secret itself is shown only once)."""
    scopes: list[ApiKeyScope]
    service_account: UserPublic
    """The user its writes are attributed to."""
    created_by: UserPublic
    created_at: datetime
    last_used_at: datetime | None
    """Accurate to a minute."""
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str
    """The secret, shown only in this response: send it as ``Authorization: Bearer <key>``."""

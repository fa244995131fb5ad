from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

from forum.models import UserKind, UserRole
from forum.schemas import BLANK, NO_NUL, clean_text, normalise_email, rule_error, trimmed

EMAIL_MAX, DISPLAY_NAME_MAX = 254, 80
_ADDRESS_PART = f"[^@{BLANK}" r"\x00]+"
EMAIL_RE = re.compile(f"^{_ADDRESS_PART}@{_ADDRESS_PART}" r"\." f"{_ADDRESS_PART}$")
Email = Annotated[
    str,
    # What __post_init__ checks once the address is trimmed and lower-cased. Not `format: email`: that
    # format is ASCII dot-atoms without blanks around, while addresses may be internationalised (RFC 6531).
    msgspec.Meta(
        max_length=EMAIL_MAX, extra_json_schema={"pattern": f"^[{BLANK}]*{EMAIL_RE.pattern[1:-1]}[{BLANK}]*$"}
    ),
]
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=128, pattern=NO_NUL)]
DisplayName = Annotated[str, trimmed(1, DISPLAY_NAME_MAX)]


class UserRegister(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password
    display_name: DisplayName

    def __post_init__(self) -> None:
        raw, self.email = self.email.strip(), normalise_email(self.email)
        if len(self.email) > EMAIL_MAX or not EMAIL_RE.match(self.email):
            if len(raw) <= EMAIL_MAX and EMAIL_RE.match(raw):  # valid as sent, not once NFKC-normalised
                raise rule_error("email", "not a valid email address once normalised (NFKC, case-folded)")
            raise ValueError("email: not a valid email address")
        self.display_name = clean_text(
            self.display_name, "display_name", min_len=1, max_len=DISPLAY_NAME_MAX, single_line=True
        )


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: Annotated[str, msgspec.Meta(max_length=EMAIL_MAX, pattern=NO_NUL)]
    password: Annotated[str, msgspec.Meta(max_length=128, pattern=NO_NUL)]


class AccessToken(msgspec.Struct):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = 0
    """Seconds until the token expires."""


class UserPublic(msgspec.Struct):
    """What anybody may see of a user: the name and whether they speak as a customer or an employee."""

    id: UUID
    display_name: str
    kind: UserKind


class UserDetail(msgspec.Struct):
    """A user as they see themselves, and as admins see them."""

    id: UUID
    email: str
    display_name: str
    kind: UserKind
    role: UserRole
    is_active: bool
    created_at: datetime


class UserUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Admin changes to a user."""

    role: UserRole | msgspec.UnsetType = msgspec.UNSET
    kind: UserKind | msgspec.UnsetType = msgspec.UNSET
    is_active: bool | msgspec.UnsetType = msgspec.UNSET


class MeUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Changes a user makes to their own account."""

    display_name: DisplayName | msgspec.UnsetType = msgspec.UNSET
    password: Password | msgspec.UnsetType = msgspec.UNSET
    current_password: Annotated[str, msgspec.Meta(max_length=128, pattern=NO_NUL)] | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        if self.display_name is not msgspec.UNSET:
            self.display_name = clean_text(
                self.display_name, "display_name", min_len=1, max_len=DISPLAY_NAME_MAX, single_line=True
            )

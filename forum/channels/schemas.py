"""Feedback captured on a customer's behalf: the request part and what staff read of it."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated

import msgspec

from forum.accounts.schemas import EMAIL_MAX, EMAIL_RE, DisplayName, Email, UserPublic
from forum.schemas import BLANK, clean_text, normalise_email, rule_error


class CaptureChannel(enum.StrEnum):
    """Where the customer said it (``web``, typing it themselves, is not captured)."""

    SUPPORT = "support"
    SALES = "sales"
    SOCIAL = "social"
    STORE = "store"
    SURVEY = "survey"
    OTHER = "other"


SourceUrl = Annotated[
    str, msgspec.Meta(max_length=2000, pattern=f"^[Hh][Tt][Tt][Pp][Ss]?://[^{BLANK}\\x00/?#]+[^{BLANK}\\x00]*$")
]
"""An http or https URL, without blanks (``BLANK``: the same characters in Python and in JSON Schema)."""


SaidAt = Annotated[datetime, msgspec.Meta(tz=True, extra_json_schema={"format": "date-time"})]
"""RFC 3339 with its offset (``2026-03-01T10:00:00Z``); msgspec states no format for datetimes itself."""


class OnBehalf(msgspec.Struct, forbid_unknown_fields=True):
    """An employee or the product team records this for the customer with ``email`` (an account is made
    for an email the forum does not know yet, claimed when they register). The customer is the author or
    voter; ``said_at`` (not in the future) is when they said it, and what "who asked first" counts."""

    email: Email
    channel: CaptureChannel
    source_url: SourceUrl | None = None
    """A link to the source (the support ticket, the CRM note): staff only."""
    said_at: SaidAt | None = None
    display_name: DisplayName | None = None
    """The name of an account made for a new email (its local part otherwise)."""

    def __post_init__(self) -> None:
        raw, self.email = self.email.strip(), normalise_email(self.email)
        if len(self.email) > EMAIL_MAX or not EMAIL_RE.match(self.email):
            if len(raw) <= EMAIL_MAX and EMAIL_RE.match(raw):  # valid as sent, not once NFKC-normalised
                raise rule_error("email", "not a valid email address once normalised (NFKC, case-folded)")
            raise ValueError("email: not a valid email address")
        if self.said_at is not None:
            if self.said_at > datetime.now(UTC):
                raise rule_error("said_at", "must not be in the future")
        if self.display_name is not None:
            self.display_name = clean_text(self.display_name, "display_name", min_len=1, max_len=80, single_line=True)


class OnBehalfVote(msgspec.Struct, forbid_unknown_fields=True):
    on_behalf: OnBehalf


class CaptureOut(msgspec.Struct):
    """Who captured a post, vote or comment for its customer, from where: shown to employees and the
    product team only (customers never see it)."""

    channel: CaptureChannel
    source_url: str | None
    said_at: datetime
    captured_by: UserPublic
    captured_at: datetime

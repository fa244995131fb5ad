"""Shared schema pieces: constrained string types, the page every list returns, and the timestamp format."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Generic, TypeVar

import msgspec
from litestar.params import Parameter

T = TypeVar("T")

NO_NUL = r"^[^\x00]*$"
"""PostgreSQL text cannot hold NUL bytes: reject them as a validation error, not a 500."""

BLANK = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
"""What trimming removes, as the body of a regex character class: exactly the characters of ``str.isspace()``
(``str.strip()``). Spelled out because ``\\s`` differs between Python and the ECMA regexes of JSON Schema."""

INVISIBLE_EDGE = (
    r"\x01-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\xad\u061c\u115f\u1160\u180e\u200b-\u200f\u202a-\u202e"
    r"\u2060-\u2064\u2066-\u206f\u2800\u3164\ufeff\uffa0"
)
"""Zero-width, format and filler characters that ``clean_text`` also trims from both ends (besides ``BLANK``),
as the body of a regex character class: the schema's patterns say a trimmed text starts and ends with neither."""


def trimmed(min_len: int, max_len: int, *, raw_max: int | None = None) -> msgspec.Meta:
    """A text field that is trimmed, then must be ``min_len``-``max_len`` characters (``min_len`` >= 1).

    msgspec enforces the raw bounds; ``clean_text`` rejects NUL, trims and enforces the rest with a readable
    message; the OpenAPI schema states all of it as a pattern (surrounding blanks, then the trimmed text).
    msgspec lets its own ``pattern`` win over ``extra_json_schema``, hence none here."""
    edge, inner, blank = f"[^{BLANK}{INVISIBLE_EDGE}" r"\x00]", r"[^\x00]", f"[{BLANK}{INVISIBLE_EDGE}]"
    if min_len == 1:
        text = f"{edge}(?:{inner}{{0,{max_len - 2}}}{edge})?"
    else:
        text = f"{edge}{inner}{{{min_len - 2},{max_len - 2}}}{edge}"
    return msgspec.Meta(
        min_length=1, max_length=raw_max or max_len, extra_json_schema={"pattern": f"^{blank}*{text}{blank}*$"}
    )


Limit = Annotated[int, Parameter(ge=1, le=100, description="Page size (1-100)")]
Offset = Annotated[int, Parameter(ge=0, le=10_000_000, description="Items to skip")]


class Page(msgspec.Struct, Generic[T]):
    """What every list answers: one page of ``items``, out of ``total``, with the ``limit`` and ``offset``
    that were applied. Lists with a summary (a user's ledger, the inbox) add their fields to this shape."""

    items: list[T]
    total: int
    limit: int
    offset: int

    @classmethod
    def of(cls, items: Sequence[T], limit: int, offset: int) -> Page[T]:
        """A page cut from a short, complete list (a post's history, its credits, the webhooks)."""
        return cls(items=list(items[offset : offset + limit]), total=len(items), limit=limit, offset=offset)


def timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with ``Z``, exactly as msgspec encodes the API's datetimes: webhook and notification
    payloads (stored as JSON) use this, so every timestamp a client reads has one format."""
    return msgspec.json.encode(value.astimezone(UTC)).decode()[1:-1]


# Letters that render as nothing (Hangul fillers, the braille blank, Mongolian vowel separator); the rest
# of what looks empty is found by category: format characters (zero-width space, joiners, direction
# marks, word joiner, BOM), controls, separators, and combining marks with nothing to combine with.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e")
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Zs", "Zl", "Zp", "Mn", "Me"})
_EDGE_CATEGORIES = frozenset({"Cf", "Cc", "Zs", "Zl", "Zp"})


def is_visible(char: str) -> bool:
    return char not in _BLANK_LETTERS and unicodedata.category(char) not in _INVISIBLE_CATEGORIES


def _strip_invisible(value: str) -> str:
    """Trim whitespace and zero-width characters at both ends (never combining marks: they belong to a letter)."""

    def blank(char: str) -> bool:
        return char in _BLANK_LETTERS or unicodedata.category(char) in _EDGE_CATEGORIES

    start, end = 0, len(value)
    while start < end and blank(value[start]):
        start += 1
    while end > start and blank(value[end - 1]):
        end -= 1
    return value[start:end]


_RULE_MESSAGES: set[str] = set()


def rule_error(field: str, message: str) -> ValueError:
    """The ``ValueError`` a struct's ``__post_init__`` raises for a rule its JSON Schema cannot state (text
    that must hold visible characters, one of two fields): answered ``422`` with ``type: /problems/domain-rule``
    rather than ``validation``, because the request does match the schema."""
    _RULE_MESSAGES.add(message)
    return ValueError(f"{field}: {message}")


def is_rule_message(message: str) -> bool:
    return message in _RULE_MESSAGES


def clean_text(
    value: str,
    field: str,
    *,
    min_len: int = 0,
    max_len: int | None = None,
    strip: bool = True,
    single_line: bool = False,
) -> str:
    """Trim and check a text field; raising ValueError makes msgspec report it against the field.

    ``min_len`` counts visible characters, so text made only of zero-width or invisible characters is
    empty. ``single_line`` (titles, names) collapses every run of whitespace into one space.
    """
    if "\x00" in value:
        raise ValueError(f"{field}: must not contain NUL characters")
    if single_line:
        value = " ".join(value.split())
    if strip:
        value = _strip_invisible(value)
    if min_len and sum(1 for char in value if is_visible(char)) < min_len:
        what = "a visible character" if min_len == 1 else f"{min_len} visible characters"
        if len(value) < min_len:  # too short for the schema's pattern too: a plain validation error
            raise ValueError(f"{field}: must contain at least {what}")
        raise rule_error(field, f"must contain at least {what} (zero-width and format characters do not count)")
    if max_len is not None and len(value) > max_len:
        raise ValueError(f"{field}: must be at most {max_len} characters")
    return value


def normalise_email(value: str) -> str:
    """How emails are stored and compared: trimmed, NFKC-normalised and case-folded (fullwidth
    ``Ana@X.com`` is ``ana@x.com``). Migration 0005 applies the same rule to rows written before it."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value.strip()).casefold())


Text = Annotated[str, msgspec.Meta(pattern=NO_NUL)]

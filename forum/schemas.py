"""Shared schema pieces: constrained string types and the pagination envelope."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Generic, TypeVar

import msgspec

T = TypeVar("T")

NO_NUL = r"^[^\x00]*$"
"""PostgreSQL text cannot hold NUL bytes: reject them as a validation error, not a 500."""


class Page(msgspec.Struct, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


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
        raise ValueError(f"{field}: must contain at least {what}")
    if max_len is not None and len(value) > max_len:
        raise ValueError(f"{field}: must be at most {max_len} characters")
    return value


def normalise_email(value: str) -> str:
    """How emails are stored and compared: trimmed, NFKC-normalised and case-folded (fullwidth
    ``Ana@X.com`` is ``ana@x.com``). Migration 0005 applies the same rule to rows written before it."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value.strip()).casefold())


Text = Annotated[str, msgspec.Meta(pattern=NO_NUL)]

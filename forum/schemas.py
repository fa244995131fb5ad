"""Shared schema pieces: constrained string types and the pagination envelope."""

from __future__ import annotations

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


def clean_text(value: str, field: str, *, min_len: int = 0, max_len: int | None = None, strip: bool = True) -> str:
    """Trim and check a text field; raising ValueError makes msgspec report it against the field."""
    if "\x00" in value:
        raise ValueError(f"{field}: must not contain NUL characters")
    if strip:
        value = value.strip()
    if len(value) < min_len:
        raise ValueError(f"{field}: must be at least {min_len} characters after trimming")
    if max_len is not None and len(value) > max_len:
        raise ValueError(f"{field}: must be at most {max_len} characters")
    return value


Text = Annotated[str, msgspec.Meta(pattern=NO_NUL)]

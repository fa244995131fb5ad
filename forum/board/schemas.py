from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

from forum.accounts.schemas import UserPublic
from forum.posts.schemas import PostOut, normalise_tags
from forum.posts.schemas import Tag as TagName
from forum.schemas import NO_NUL, Page

Colour = Annotated[str, msgspec.Meta(pattern=r"^#[0-9a-fA-F]{6}$", description="#rrggbb")]
TagDescription = Annotated[str, msgspec.Meta(max_length=500, pattern=NO_NUL)]


class VoterOut(msgspec.Struct):
    user: UserPublic
    kind: str
    """How the vote counts: ``internal`` (an employee's) or ``external`` (a customer's)."""
    voted_at: datetime
    merged_from: UUID | None
    """Set when the vote was carried over from a duplicate merged into this post (with its original time)."""
    channel: str = "web"
    """Where the voter said it: ``web`` when they voted themselves, else the channel it was captured from."""


class PostEditOut(msgspec.Struct):
    """One change of a post's title or body; the ``_before``/``_after`` of an unchanged field are null."""

    id: UUID
    editor: UserPublic
    created_at: datetime
    title_before: str | None
    title_after: str | None
    body_before: str | None
    body_after: str | None


class RoadmapColumn(enum.StrEnum):
    PLANNED = "planned"
    IN_PROGRESS = "in_progress"
    SHIPPED = "shipped"
    """Recently shipped: the most recently shipped first."""


class Roadmap(msgspec.Struct):
    """The first page of each column; ``GET /api/roadmap/{column}`` pages one column."""

    planned: Page[PostOut]
    in_progress: Page[PostOut]
    shipped: Page[PostOut]


class TagOut(msgspec.Struct):
    id: UUID
    name: str
    colour: str
    description: str
    created_at: datetime
    updated_at: datetime


class TagCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: TagName
    """Stored as posts store tags: lower case, runs of whitespace as one space."""
    colour: Colour
    description: TagDescription = ""

    def __post_init__(self) -> None:
        try:
            self.name = normalise_tags([self.name])[0]
        except ValueError as exc:  # the same rule as a post's tags, reported against this field
            raise ValueError(str(exc).replace("tags: ", "name: ", 1)) from None
        self.colour = self.colour.lower()
        self.description = self.description.strip()


class TagUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """The name is what posts carry, so it does not change: create another tag instead."""

    colour: Colour | msgspec.UnsetType = msgspec.UNSET
    description: TagDescription | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        if self.colour is not msgspec.UNSET:
            self.colour = self.colour.lower()
        if self.description is not msgspec.UNSET:
            self.description = self.description.strip()

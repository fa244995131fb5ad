from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

from forum.accounts.schemas import UserPublic
from forum.channels.schemas import CaptureOut, OnBehalf
from forum.models import Channel, PostKind, PostStatus, Visibility
from forum.schemas import BLANK, NO_NUL, Page, clean_text, is_visible, rule_error, trimmed

TITLE_MIN, TITLE_MAX, BODY_MAX, TAGS_MAX, TAG_MAX = 3, 160, 10_000, 10, 40

TITLE_RAW_MAX, COMMENT_MAX = 1_000, 5_000

Title = Annotated[str, trimmed(TITLE_MIN, TITLE_MAX, raw_max=TITLE_RAW_MAX)]
Body = Annotated[str, msgspec.Meta(max_length=BODY_MAX, pattern=NO_NUL)]
Tag = Annotated[
    str,
    # Not blank and no NUL, checked by normalise_tags (a msgspec pattern would hide this one from the schema).
    msgspec.Meta(min_length=1, max_length=TAG_MAX, extra_json_schema={"pattern": rf"^[^\x00]*[^{BLANK}\x00][^\x00]*$"}),
]
Tags = Annotated[list[Tag], msgspec.Meta(max_length=TAGS_MAX)]
Note = Annotated[str, msgspec.Meta(max_length=2_000, pattern=NO_NUL)]
CommentBody = Annotated[str, trimmed(1, COMMENT_MAX)]


class PostLanguage(enum.StrEnum):
    """Languages a post can be detected in (embeddings.language); ``und`` when the detector is unsure."""

    EN = "en"
    ES = "es"
    PT = "pt"
    FR = "fr"
    CA = "ca"
    UND = "und"


class PostSort(enum.StrEnum):
    """``top``: most votes; ``new``: newest; ``trending``: most votes in the last 14 days;
    ``discussed``: most comments; ``relevance``: best text match (the default when ``q`` is given)."""

    TOP = "top"
    NEW = "new"
    TRENDING = "trending"
    DISCUSSED = "discussed"
    RELEVANCE = "relevance"


def normalise_tags(tags: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for tag in tags:
        if "\x00" in tag:
            raise ValueError("tags: must not contain NUL characters")
        clean = " ".join(tag.split()).lower()
        if not any(is_visible(char) for char in clean):
            raise rule_error("tags", "a tag must not be blank")
        seen.setdefault(clean, None)
    return list(seen)


class PostCreate(msgspec.Struct, forbid_unknown_fields=True):
    kind: PostKind
    title: Title
    body: Body = ""
    tags: Tags = msgspec.field(default_factory=list)
    visibility: Visibility = Visibility.PUBLIC
    on_behalf: OnBehalf | None = None
    """Employees and the product team: post for a customer, who becomes its author (forum/channels)."""

    def __post_init__(self) -> None:
        self.title = clean_text(self.title, "title", min_len=TITLE_MIN, max_len=TITLE_MAX, single_line=True)
        self.body = self.body.strip()
        self.tags = normalise_tags(self.tags)


class PostUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Authors change title, body and tags; the product team may change tags and visibility."""

    title: Title | msgspec.UnsetType = msgspec.UNSET
    body: Body | msgspec.UnsetType = msgspec.UNSET
    tags: Tags | msgspec.UnsetType = msgspec.UNSET
    visibility: Visibility | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        if self.title is not msgspec.UNSET:
            self.title = clean_text(self.title, "title", min_len=TITLE_MIN, max_len=TITLE_MAX, single_line=True)
        if self.body is not msgspec.UNSET:
            self.body = self.body.strip()
        if self.tags is not msgspec.UNSET:
            self.tags = normalise_tags(self.tags)


class StatusChangeRequest(msgspec.Struct, forbid_unknown_fields=True):
    status: PostStatus
    note: Note | None = None


class VoteCounts(msgspec.Struct):
    total: int
    internal: int
    external: int


class PostOut(msgspec.Struct):
    id: UUID
    kind: PostKind
    title: str
    body: str
    status: PostStatus
    visibility: Visibility
    tags: list[str]
    language: PostLanguage | None
    """Detected from title and body when written: ISO 639-1 code, or "und" when unsure."""
    author: UserPublic
    created_at: datetime
    updated_at: datetime
    votes: VoteCounts
    has_voted: bool
    comment_count: int
    cluster_id: UUID | None
    """The duplicate cluster the post belongs to (null until it is embedded and grouped)."""
    merged_into: UUID | None
    """Set when the post was merged, as a duplicate, into another post."""
    hidden: bool = False
    """Hidden as spam by the product team (only the product team ever reads a hidden post)."""
    channel: Channel = Channel.WEB
    """Where the author said it: ``web`` when they typed it, else the channel it was captured from."""
    capture: CaptureOut | None = None
    """Who captured it for its author, from which source (employees and the product team only)."""


class PostPage(Page[PostOut]):
    """A page of posts: the usual page, and ``next``, a cursor for the page after this one (``?after=``;
    null on the last page). Following ``next`` is as fast on the thousandth page as on the first."""

    next: str | None = None


class VoteState(msgspec.Struct):
    post_id: UUID
    has_voted: bool
    voted_at: datetime | None
    votes: VoteCounts


class StatusChangeOut(msgspec.Struct):
    id: UUID
    from_status: PostStatus | None
    to_status: PostStatus
    note: str | None
    actor: UserPublic
    created_at: datetime


class CommentCreate(msgspec.Struct, forbid_unknown_fields=True):
    body: CommentBody
    internal: bool = False
    """An internal note: only employees and the product team can write or read it."""
    on_behalf: OnBehalf | None = None
    """Employees and the product team: comment for a customer, who becomes its author."""

    def __post_init__(self) -> None:
        self.body = clean_text(self.body, "body", min_len=1, max_len=COMMENT_MAX)


class CommentOut(msgspec.Struct):
    id: UUID
    post_id: UUID
    author: UserPublic
    body: str
    internal: bool
    created_at: datetime
    capture: CaptureOut | None = None
    """Who captured it for its author (employees and the product team only)."""

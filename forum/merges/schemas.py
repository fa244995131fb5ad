from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

from forum.accounts.schemas import UserPublic
from forum.models import PostKind, PostStatus
from forum.posts.schemas import PostOut


class MergeRequest(msgspec.Struct, forbid_unknown_fields=True):
    into: UUID
    """The post that stays: the merged post's voters and its author carry over to it."""


class MergeResult(msgspec.Struct):
    source: PostOut
    target: PostOut
    votes_carried_over: int
    """Voters of the merged post who had not voted on the target: they now count on it once."""


class MergedPost(msgspec.Struct):
    """A post merged into this one, with who asked and when: its author is a contributor of the target."""

    post_id: UUID
    title: str
    kind: PostKind
    author: UserPublic
    created_at: datetime
    status_before: PostStatus
    merged_at: datetime
    merged_by: UserPublic
    votes_carried_over: int

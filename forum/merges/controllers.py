from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any
from uuid import UUID

from litestar import Controller, Request, get, post
from litestar.di import Provide
from sqlalchemy.ext.asyncio import AsyncSession

from forum.auth import requires_product_team
from forum.merges.schemas import MergedPost, MergeRequest, MergeResult
from forum.merges.services import MergeService
from forum.models import User
from forum.schemas import Limit, Offset, Page


async def provide_merges(db_session: AsyncSession) -> AsyncGenerator[MergeService, None]:
    yield MergeService(db_session)


class MergeController(Controller):
    path = "/api/posts"
    tags = ["merges"]
    dependencies = {"merges": Provide(provide_merges)}

    @post(
        "/{post_id:uuid}/merge",
        guards=[requires_product_team],
        status_code=200,
        summary="Merge this post, as a duplicate, into another (product team)",
    )
    async def merge_post(
        self, request: Request[User, Any, Any], post_id: UUID, data: MergeRequest, merges: MergeService
    ) -> MergeResult:
        return await merges.merge(post_id, data.into, request.user)

    @post(
        "/{post_id:uuid}/unmerge",
        guards=[requires_product_team],
        status_code=200,
        summary="Undo a merge: both posts return exactly to how they were (product team)",
    )
    async def unmerge_post(self, request: Request[User, Any, Any], post_id: UUID, merges: MergeService) -> MergeResult:
        return await merges.unmerge(post_id, request.user)

    @get("/{post_id:uuid}/merged", summary="Posts merged into this one, earliest asker first")
    async def list_merged_posts(
        self,
        request: Request[User | None, Any, Any],
        post_id: UUID,
        merges: MergeService,
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> Page[MergedPost]:
        return Page.of(await merges.merged_into(post_id, request.user), limit, offset)

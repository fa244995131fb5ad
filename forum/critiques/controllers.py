from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, delete, get, post
from litestar.di import Provide
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from forum.auth import requires_product_team
from forum.critiques.schemas import CritiqueLinkRequest
from forum.critiques.services import CritiqueLinkService
from forum.grouping.controllers import provide_grouping
from forum.grouping.schemas import SimilarPost
from forum.grouping.services import GroupingService
from forum.models import User
from forum.posts.schemas import PostOut


class CritiqueLinkController(Controller):
    path = "/api/posts/{idea_id:uuid}"
    tags = ["critiques"]

    @get("/critiques", summary="Critiques this idea answers")
    async def linked(
        self, request: Request[User | None, Any, Any], db_session: AsyncSession, idea_id: UUID
    ) -> list[PostOut]:
        return await CritiqueLinkService(db_session).linked(idea_id, request.user)

    @post(
        "/critiques",
        guards=[requires_product_team],
        status_code=201,
        summary="Link a critique to the idea that answers it (product team)",
    )
    async def link(
        self, request: Request[User, Any, Any], db_session: AsyncSession, idea_id: UUID, data: CritiqueLinkRequest
    ) -> list[PostOut]:
        return await CritiqueLinkService(db_session).link(idea_id, data.critique_id, request.user)

    @delete("/critiques/{critique_id:uuid}", guards=[requires_product_team], summary="Remove a link (product team)")
    async def unlink(
        self, request: Request[User, Any, Any], db_session: AsyncSession, idea_id: UUID, critique_id: UUID
    ) -> None:
        await CritiqueLinkService(db_session).unlink(idea_id, critique_id, request.user)

    @get(
        "/critique-suggestions",
        guards=[requires_product_team],
        dependencies={"grouping": Provide(provide_grouping)},
        summary="Critiques closest in meaning to this idea, not linked yet (product team)",
    )
    async def suggestions(
        self,
        request: Request[User, Any, Any],
        db_session: AsyncSession,
        idea_id: UUID,
        grouping: GroupingService,
        limit: Annotated[int, Parameter(ge=1, le=20)] = 5,
    ) -> list[SimilarPost]:
        return await CritiqueLinkService(db_session).suggestions(idea_id, request.user, grouping, limit)

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import Provide
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from forum.auth import requires_product_team
from forum.critiques.schemas import CritiqueLinkRequest
from forum.critiques.services import CritiqueLinkService
from forum.grouping.controllers import provide_grouping
from forum.grouping.schemas import SimilarPost
from forum.grouping.services import GroupingService
from forum.http import LOCATION, created
from forum.models import User
from forum.posts.schemas import PostOut
from forum.schemas import Limit, Offset, Page


class CritiqueLinkController(Controller):
    path = "/api/posts/{idea_id:uuid}"
    tags = ["critiques"]

    @get("/critiques", summary="Critiques this idea answers")
    async def list_critiques(
        self,
        request: Request[User | None, Any, Any],
        db_session: AsyncSession,
        idea_id: UUID,
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> Page[PostOut]:
        return Page.of(await CritiqueLinkService(db_session).linked(idea_id, request.user), limit, offset)

    @post(
        "/critiques",
        guards=[requires_product_team],
        status_code=201,
        response_headers=[LOCATION],
        summary="Link a critique to the idea that answers it (product team); answers the linked critique",
    )
    async def link_critique(
        self, request: Request[User, Any, Any], db_session: AsyncSession, idea_id: UUID, data: CritiqueLinkRequest
    ) -> Response[PostOut]:
        linked = await CritiqueLinkService(db_session).link(idea_id, data.critique_id, request.user)
        critique = next(post for post in linked if post.id == data.critique_id)
        return created(critique, f"/api/posts/{idea_id}/critiques/{data.critique_id}")

    @delete("/critiques/{critique_id:uuid}", guards=[requires_product_team], summary="Remove a link (product team)")
    async def unlink_critique(
        self, request: Request[User, Any, Any], db_session: AsyncSession, idea_id: UUID, critique_id: UUID
    ) -> None:
        await CritiqueLinkService(db_session).unlink(idea_id, critique_id, request.user)

    @get(
        "/critique-suggestions",
        guards=[requires_product_team],
        dependencies={"grouping": Provide(provide_grouping)},
        summary="Critiques closest in meaning to this idea, not linked yet (product team)",
    )
    async def list_critique_suggestions(
        self,
        request: Request[User, Any, Any],
        db_session: AsyncSession,
        idea_id: UUID,
        grouping: GroupingService,
        limit: Annotated[int, Parameter(ge=1, le=20, description="How many of the nearest (1-20)")] = 5,
    ) -> Page[SimilarPost]:
        suggestions = await CritiqueLinkService(db_session).suggestions(idea_id, request.user, grouping, limit)
        return Page(items=suggestions, total=len(suggestions), limit=limit, offset=0)

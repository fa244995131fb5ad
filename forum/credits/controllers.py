from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, get
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from forum.credits.reports import CreditReports
from forum.credits.schemas import ChangelogEntry, Credit, LeaderboardRow, Segment, UserCredits
from forum.models import User
from forum.schemas import Page


class CreditController(Controller):
    tags = ["credits"]

    @get("/api/posts/{post_id:uuid}/credits", summary="Who is credited for this shipped post, and why")
    async def post_credits(
        self, request: Request[User | None, Any, Any], db_session: AsyncSession, post_id: UUID
    ) -> list[Credit]:
        return await CreditReports(db_session).post_credits(post_id, request.user)

    @get("/api/users/{user_id:uuid}/credits", summary="A user's credit ledger and total")
    async def user_credits(
        self,
        request: Request[User | None, Any, Any],
        db_session: AsyncSession,
        user_id: UUID,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 50,
        offset: Annotated[int, Parameter(ge=0, le=10_000_000)] = 0,
    ) -> UserCredits:
        return await CreditReports(db_session).user_credits(user_id, request.user, limit, offset)

    @get("/api/leaderboard", summary="Contributors ranked by net credit points")
    async def leaderboard(
        self,
        request: Request[User | None, Any, Any],
        db_session: AsyncSession,
        segment: Segment = Segment.ALL,
        since: datetime | None = None,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
    ) -> list[LeaderboardRow]:
        return await CreditReports(db_session).leaderboard(segment, since, request.user, limit)

    @get("/api/changelog", summary="Shipped posts, newest first, with their credited contributors")
    async def changelog(
        self,
        request: Request[User | None, Any, Any],
        db_session: AsyncSession,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
        offset: Annotated[int, Parameter(ge=0, le=10_000_000)] = 0,
    ) -> Page[ChangelogEntry]:
        return await CreditReports(db_session).changelog(request.user, limit, offset)

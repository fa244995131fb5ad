from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from litestar import Controller, Request, get
from sqlalchemy.ext.asyncio import AsyncSession

from forum.credits.reports import CreditReports
from forum.credits.schemas import ChangelogEntry, Credit, LeaderboardRow, Segment, UserCredits
from forum.models import User
from forum.schemas import Limit, Offset, Page


class CreditController(Controller):
    tags = ["credits"]

    @get("/api/posts/{post_id:uuid}/credits", summary="Who is credited for this shipped post, and why")
    async def list_post_credits(
        self,
        request: Request[User | None, Any, Any],
        db_session: AsyncSession,
        post_id: UUID,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> Page[Credit]:
        return Page.of(await CreditReports(db_session).post_credits(post_id, request.user), limit, offset)

    @get("/api/users/{user_id:uuid}/credits", summary="A user's credit ledger and net total")
    async def list_user_credits(
        self,
        request: Request[User | None, Any, Any],
        db_session: AsyncSession,
        user_id: UUID,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> UserCredits:
        return await CreditReports(db_session).user_credits(user_id, request.user, limit, offset)

    @get("/api/leaderboard", summary="Contributors ranked by net credit points")
    async def list_leaderboard(
        self,
        request: Request[User | None, Any, Any],
        db_session: AsyncSession,
        segment: Segment = Segment.ALL,
        since: datetime | None = None,
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> Page[LeaderboardRow]:
        return await CreditReports(db_session).leaderboard(segment, since, request.user, limit, offset)

    @get("/api/changelog", summary="Shipped posts, newest first, with their credited contributors")
    async def list_changelog(
        self,
        request: Request[User | None, Any, Any],
        db_session: AsyncSession,
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> Page[ChangelogEntry]:
        return await CreditReports(db_session).changelog(request.user, limit, offset)

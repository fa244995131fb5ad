"""Recognition in the open: credits per post and per user, the leaderboard and the changelog.

Everything here respects visibility: a credit is shown only to a reader who may see the shipped post or
the post it was earned through, and named by one they may see, in totals as in lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from litestar.exceptions import NotFoundException
from sqlalchemy import Row, Select, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from forum.credits.schemas import ChangelogEntry, Credit, LeaderboardRow, LedgerEntry, Segment, UserCredits
from forum.models import CreditEntry, Post, PostStatus, ShipEvent, User
from forum.posts.services import PostService, author_public, visible_to
from forum.schemas import Page

REASON_ORDER = {"pioneer": 0, "author": 1, "critic": 2, "early_voter": 3}


def _credit(entry: CreditEntry, user: User, source_visible: bool) -> Credit:
    return Credit(
        user=author_public(user),
        reason=entry.reason,
        rank=entry.rank,
        points=entry.points,
        source_post_id=entry.source_post_id if source_visible else None,
        contributed_at=entry.contributed_at,
        awarded_at=entry.created_at,
    )


class CreditReports:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _active_credits(self, post_ids: list[UUID], viewer: User | None) -> dict[UUID, list[Credit]]:
        """Current credits (of the active shipping, not revoked) for several posts, in one query. The post a
        contribution came through is named only when the viewer may see it."""
        source = aliased(Post)
        rows = (
            await self.session.execute(
                select(CreditEntry, User, visible_to(viewer, source).label("source_visible"))
                .join(ShipEvent, and_(ShipEvent.id == CreditEntry.ship_event_id, ShipEvent.revoked_at.is_(None)))
                .join(User, User.id == CreditEntry.user_id)
                .join(source, source.id == CreditEntry.source_post_id)
                .where(CreditEntry.post_id.in_(post_ids), CreditEntry.revokes_id.is_(None))
            )
        ).all()
        by_post: dict[UUID, list[Credit]] = {post_id: [] for post_id in post_ids}
        for entry, user, source_visible in rows:
            by_post[entry.post_id].append(_credit(entry, user, source_visible))
        for credits in by_post.values():
            credits.sort(key=lambda c: (REASON_ORDER[c.reason], c.rank))
        return by_post

    async def post_credits(self, post_id: UUID, viewer: User | None) -> list[Credit]:
        await PostService(self.session).get_visible(post_id, viewer)
        return (await self._active_credits([post_id], viewer))[post_id]

    @staticmethod
    def _seen(viewer: User | None) -> tuple[Any, Any, Any, Any]:
        """The shipped post and the post credited through, as aliases, and whether the viewer may see each.
        A credit exists for a viewer who may see either; it is described by the shipped post if they may
        see that one, else by the post it came through (a customer's own post grouped with an internal
        idea), so no ledger, total or ranking tells anybody of a post they may not see."""
        shipped, source = aliased(Post), aliased(Post)
        return shipped, source, visible_to(viewer, shipped), visible_to(viewer, source)

    async def user_credits(self, user_id: UUID, viewer: User | None, limit: int, offset: int) -> UserCredits:
        user = await self.session.get(User, user_id)
        if user is None:
            raise NotFoundException("User not found")
        shipped, source, shipped_seen, source_seen = self._seen(viewer)
        joined = (
            select(CreditEntry)
            .join(shipped, shipped.id == CreditEntry.post_id)
            .join(source, source.id == CreditEntry.source_post_id)
            .where(CreditEntry.user_id == user_id, or_(shipped_seen, source_seen))
        )
        rows = (
            await self.session.execute(
                joined.add_columns(shipped.title, source.title, shipped_seen, source_seen)
                .order_by(CreditEntry.created_at.desc(), CreditEntry.id.desc())
                .limit(limit)
                .offset(offset)
            )
        ).all()
        totals = (
            await self.session.execute(
                joined.with_only_columns(func.coalesce(func.sum(CreditEntry.points), 0), func.count(CreditEntry.id))
            )
        ).one()
        return UserCredits(
            items=[
                LedgerEntry(
                    id=e.id,
                    post_id=e.post_id if shipped_visible else e.source_post_id,
                    post_title=shipped_title if shipped_visible else source_title,
                    source_post_id=e.source_post_id if source_visible else None,
                    reason=e.reason,
                    rank=e.rank,
                    points=e.points,
                    revokes=e.revokes_id,
                    created_at=e.created_at,
                )
                for e, shipped_title, source_title, shipped_visible, source_visible in rows
            ],
            total=int(totals[1]),
            limit=limit,
            offset=offset,
            user=author_public(user),
            total_points=int(totals[0]),
        )

    async def leaderboard(
        self, segment: Segment, since: datetime | None, viewer: User | None, limit: int, offset: int
    ) -> Page[LeaderboardRow]:
        shipped, source, shipped_seen, source_seen = self._seen(viewer)
        points = func.sum(CreditEntry.points)
        described = case((shipped_seen, shipped.id), else_=source.id)
        stmt = (
            select(
                User,
                points.label("points"),
                func.count(func.distinct(described)).filter(CreditEntry.points > 0).label("posts"),
                func.count().over().label("total"),
            )
            .join(CreditEntry, CreditEntry.user_id == User.id)
            .join(shipped, shipped.id == CreditEntry.post_id)
            .join(source, source.id == CreditEntry.source_post_id)
            .where(or_(shipped_seen, source_seen), User.is_active.is_(True))
            .group_by(User.id)
            .having(points > 0)
            .order_by(points.desc(), func.min(CreditEntry.contributed_at), User.id)
            .limit(limit)
            .offset(offset)
        )
        if segment is not Segment.ALL:
            stmt = stmt.where(User.kind == segment.value)
        if since is not None:
            stmt = stmt.where(CreditEntry.created_at >= since)
        rows = (await self.session.execute(stmt)).all()
        items = [
            LeaderboardRow(rank=i, user=author_public(user), points=int(p), shipped_posts=int(n))
            for i, (user, p, n, _) in enumerate(rows, start=offset + 1)
        ]
        return Page(items=items, total=await self._total(stmt, rows, offset), limit=limit, offset=offset)

    async def _total(self, stmt: Select, rows: Sequence[Row], offset: int) -> int:
        """The ``count(*) OVER ()`` of a page's rows; counted apart only for a page past the end."""
        if rows:
            return int(rows[0].total)
        if offset == 0:
            return 0
        unpaged = stmt.limit(None).offset(None).order_by(None).subquery()
        return int(await self.session.scalar(select(func.count()).select_from(unpaged)) or 0)

    async def changelog(self, viewer: User | None, limit: int, offset: int) -> Page[ChangelogEntry]:
        condition = and_(visible_to(viewer), Post.status == PostStatus.SHIPPED.value)
        stmt = (
            select(Post, ShipEvent.created_at.label("shipped_at"), func.count().over().label("total"))
            .join(ShipEvent, and_(ShipEvent.post_id == Post.id, ShipEvent.revoked_at.is_(None)))
            .where(condition)
            .order_by(ShipEvent.created_at.desc(), Post.id)
            .limit(limit)
            .offset(offset)
        )
        rows = (await self.session.execute(stmt)).all()
        total = await self._total(stmt, rows, offset)
        credits = await self._active_credits([row[0].id for row in rows], viewer) if rows else {}
        items = [
            ChangelogEntry(
                post_id=post.id, title=post.title, kind=post.kind, shipped_at=shipped_at, credits=credits[post.id]
            )
            for post, shipped_at, _ in rows
        ]
        return Page(items=items, total=total, limit=limit, offset=offset)

"""Subscriptions and the per-user inbox.

Authors and voters are subscribed automatically; anyone may subscribe to a post they can see, and an
explicit unsubscribe is remembered so that voting again does not subscribe them behind their back.
Notifications are written in the same transaction as the change they describe.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import and_, delete, exists, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from forum.models import Notification, Post, Subscription, Unsubscription, Visibility
from forum.notifications.schemas import NotificationOut
from forum.schemas import Page


class NotificationKind:
    STATUS_CHANGED = "status_changed"
    POST_MERGED = "post_merged"
    CREDIT_AWARDED = "credit_awarded"
    CREDIT_REVOKED = "credit_revoked"
    CRITIQUE_ADDRESSED = "critique_addressed"


async def subscribe(session: AsyncSession, user_id: UUID, post_id: UUID, *, explicit: bool = False) -> None:
    """Subscribe a user; an automatic subscription (author, voter) respects an earlier opt-out."""
    if explicit:
        await session.execute(
            delete(Unsubscription).where(Unsubscription.user_id == user_id, Unsubscription.post_id == post_id)
        )
    else:
        opted_out = await session.scalar(
            select(exists().where(Unsubscription.user_id == user_id, Unsubscription.post_id == post_id))
        )
        if opted_out:
            return
    await session.execute(insert(Subscription).values(user_id=user_id, post_id=post_id).on_conflict_do_nothing())


async def unsubscribe(session: AsyncSession, user_id: UUID, post_id: UUID) -> None:
    await session.execute(delete(Subscription).where(Subscription.user_id == user_id, Subscription.post_id == post_id))
    await session.execute(insert(Unsubscription).values(user_id=user_id, post_id=post_id).on_conflict_do_nothing())


async def is_subscribed(session: AsyncSession, user_id: UUID, post_id: UUID) -> bool:
    return bool(
        await session.scalar(select(exists().where(Subscription.user_id == user_id, Subscription.post_id == post_id)))
    )


async def carry_subscriptions(session: AsyncSession, source_id: UUID, target_id: UUID) -> None:
    """A merged post's subscribers follow the target (tagged, so an unmerge can take them back)."""
    await session.execute(
        insert(Subscription)
        .from_select(
            ["user_id", "post_id", "merged_from_id"],
            select(Subscription.user_id, literal(target_id), literal(source_id)).where(
                Subscription.post_id == source_id,
                ~exists().where(Unsubscription.user_id == Subscription.user_id, Unsubscription.post_id == target_id),
            ),
        )
        .on_conflict_do_nothing()
    )


async def drop_carried_subscriptions(session: AsyncSession, source_id: UUID, target_id: UUID) -> None:
    await session.execute(
        delete(Subscription).where(Subscription.post_id == target_id, Subscription.merged_from_id == source_id)
    )


async def notify_subscribers(
    session: AsyncSession,
    post_id: UUID,
    kind: str,
    payload: dict[str, Any],
    *,
    exclude: Iterable[UUID] = (),
) -> int:
    """One notification for every subscriber of the post who may still see it (not ``exclude``)."""
    post = await session.get(Post, post_id)
    assert post is not None
    from forum.models import User  # local: keeps the import graph of this module small

    recipients = (
        select(Subscription.user_id)
        .join(User, User.id == Subscription.user_id)
        .where(Subscription.post_id == post_id, User.is_active.is_(True))
    )
    if post.visibility == Visibility.INTERNAL.value:
        recipients = recipients.where((User.kind == "internal") | User.role.in_(["product", "admin"]))
    excluded = list(exclude)
    if excluded:
        recipients = recipients.where(Subscription.user_id.not_in(excluded))
    user_ids = list(await session.scalars(recipients))
    await notify_users(session, user_ids, kind, payload, post_id=post_id)
    return len(user_ids)


async def notify_users(
    session: AsyncSession, user_ids: Iterable[UUID], kind: str, payload: dict[str, Any], *, post_id: UUID | None
) -> None:
    rows = [{"user_id": uid, "kind": kind, "post_id": post_id, "payload": payload} for uid in dict.fromkeys(user_ids)]
    if rows:
        await session.execute(insert(Notification), rows)


class InboxService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list(self, user_id: UUID, *, unread_only: bool, limit: int, offset: int) -> Page[NotificationOut]:
        condition = Notification.user_id == user_id
        if unread_only:
            condition = and_(condition, Notification.read_at.is_(None))
        rows = (
            await self.session.execute(
                select(Notification, func.count().over().label("total"))
                .where(condition)
                .order_by(Notification.created_at.desc(), Notification.id.desc())
                .limit(limit)
                .offset(offset)
            )
        ).all()
        total = (
            rows[0].total if rows else await self.session.scalar(select(func.count(Notification.id)).where(condition))
        )
        return Page(items=[to_out(r[0]) for r in rows], total=total or 0, limit=limit, offset=offset)

    async def unread_count(self, user_id: UUID) -> int:
        return (
            await self.session.scalar(
                select(func.count(Notification.id)).where(
                    Notification.user_id == user_id, Notification.read_at.is_(None)
                )
            )
            or 0
        )

    async def mark_read(self, user_id: UUID, notification_id: UUID | None = None) -> int:
        stmt = update(Notification).where(Notification.user_id == user_id, Notification.read_at.is_(None))
        if notification_id is not None:
            stmt = stmt.where(Notification.id == notification_id)
        result = await self.session.execute(stmt.values(read_at=datetime.now(UTC)))
        return result.rowcount or 0

    async def exists_for(self, user_id: UUID, notification_id: UUID) -> bool:
        return bool(
            await self.session.scalar(
                select(exists().where(Notification.id == notification_id, Notification.user_id == user_id))
            )
        )


def to_out(n: Notification) -> NotificationOut:
    return NotificationOut(
        id=n.id, kind=n.kind, post_id=n.post_id, payload=n.payload, created_at=n.created_at, read_at=n.read_at
    )

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

from sqlalchemy import and_, bindparam, delete, exists, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from forum.models import Notification, Post, Subscription, Unsubscription, User, Visibility, visible_to
from forum.notifications.schemas import NotificationOut
from forum.queue import enqueue
from forum.schemas import Page

EMAIL_ENABLED = "forum_email"
"""Key in ``AsyncSession.info``, set when the app sends email (``FORUM_SMTP_URL``): every notification then
also queues its ``email.notification`` job, in the same transaction."""
SEND_NOTIFICATION_EMAIL = "email.notification"


class NotificationKind:
    STATUS_CHANGED = "status_changed"
    POST_MERGED = "post_merged"
    CREDIT_AWARDED = "credit_awarded"
    CREDIT_REVOKED = "credit_revoked"
    CRITIQUE_ADDRESSED = "critique_addressed"


def subscribe_statement() -> Any:
    """The automatic subscription (``subscribe``) as one statement on ``:user_id``, ``:post_id``: it
    respects an earlier opt-out. For hot paths that run it as a prepared statement (a vote)."""
    user_id = bindparam("user_id", type_=Subscription.user_id.type)
    post_id = bindparam("post_id", type_=Subscription.post_id.type)
    opted_out = exists().where(Unsubscription.user_id == user_id, Unsubscription.post_id == post_id)
    chosen = select(user_id.label("user_id"), post_id.label("post_id")).where(~opted_out)
    return insert(Subscription).from_select(["user_id", "post_id"], chosen).on_conflict_do_nothing()


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
    recipients = (
        select(Subscription.user_id)
        .join(User, User.id == Subscription.user_id)
        .where(Subscription.post_id == post_id, User.is_active.is_(True))
    )
    if post.hidden_at is not None:
        recipients = recipients.where(User.role.in_(["product", "admin"]))
    elif post.visibility == Visibility.INTERNAL.value:
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
    if not rows:
        return
    if not session.info.get(EMAIL_ENABLED):
        await session.execute(insert(Notification), rows)
        return
    ids = list(await session.scalars(insert(Notification).returning(Notification.id), rows))
    await enqueue(session, SEND_NOTIFICATION_EMAIL, [str(i) for i in ids])  # sent by the worker (forum/email)


# Other posts a notification may name besides its own (``post_id``): (id key, title key) in the payload.
RELATED_POSTS = (("into_id", "into_title"), ("idea_id", "idea_title"))


class InboxService:
    """A reader's inbox, rendered for them when read: a notification about a post they may no longer see is
    left out (in lists and counts alike), and another post it names is left out of it unless they may see
    that one too (a critique addressed by an idea since made internal says only that it was addressed)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @staticmethod
    def _mine(reader: User):
        return and_(
            Notification.user_id == reader.id,
            or_(Notification.post_id.is_(None), exists().where(Post.id == Notification.post_id, visible_to(reader))),
        )

    async def list(self, reader: User, *, unread_only: bool, limit: int, offset: int) -> Page[NotificationOut]:
        condition = self._mine(reader)
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
        notifications = [r[0] for r in rows]
        named = {n.payload[key] for n in notifications for key, _ in RELATED_POSTS if n.payload.get(key)}
        visible = set()
        if named:
            ids = [UUID(i) for i in named]
            visible = {
                str(i) for i in await self.session.scalars(select(Post.id).where(Post.id.in_(ids), visible_to(reader)))
            }
        items = [to_out(n, visible) for n in notifications]
        return Page(items=items, total=total or 0, limit=limit, offset=offset)

    async def unread_count(self, reader: User) -> int:
        condition = and_(self._mine(reader), Notification.read_at.is_(None))
        return await self.session.scalar(select(func.count(Notification.id)).where(condition)) or 0

    async def mark_read(self, reader: User, notification_id: UUID | None = None) -> int:
        stmt = update(Notification).where(self._mine(reader), Notification.read_at.is_(None))
        if notification_id is not None:
            stmt = stmt.where(Notification.id == notification_id)
        result = await self.session.execute(stmt.values(read_at=datetime.now(UTC)))
        return result.rowcount or 0

    async def exists_for(self, reader: User, notification_id: UUID) -> bool:
        return bool(
            await self.session.scalar(select(exists().where(Notification.id == notification_id, self._mine(reader))))
        )


def to_out(n: Notification, visible_related: set[str]) -> NotificationOut:
    """``visible_related``: the ids (as text) of the other posts the reader may see."""
    payload = dict(n.payload)
    for id_key, title_key in RELATED_POSTS:
        if id_key in payload and payload[id_key] not in visible_related:
            payload.pop(id_key)
            payload.pop(title_key, None)
    return NotificationOut(
        id=n.id, kind=n.kind, post_id=n.post_id, payload=payload, created_at=n.created_at, read_at=n.read_at
    )

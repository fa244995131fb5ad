"""Notifications by email, sent by the job queue so that no request ever waits for an SMTP server.

- ``notify_users`` (forum/notifications) enqueues one ``email.notification`` job per notification, in
  the same transaction, when the app runs with ``FORUM_SMTP_URL`` (``EMAIL_ENABLED`` in the session's
  ``info``). Without it nothing is queued and the inbox works as it always did.
- The job re-reads the notification: it sends only if the person still wants every email, may still see
  the post and it was not emailed already (``emailed_at``), so a retried job sends nothing twice after a
  success. An SMTP failure raises: the job is retried with backoff (``EMAIL_MAX_ATTEMPTS``).
- People who chose ``daily`` get one digest a day from the ``email.digest`` job (a pgqueuer schedule):
  every notification since their last one, in one email; ``none`` gets nothing.
- The language is the person's choice, else the language of their latest post (Spanish or English).
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import case, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forum.email.messages import Item, Recipient, compose, describe, in_language, unsubscribe_token
from forum.email.smtp import Mailer
from forum.models import EmailFrequency, EmailPreference, Notification, Post, User, visible_to
from forum.notifications.services import EMAIL_ENABLED, RELATED_POSTS, to_out
from forum.notifications.services import SEND_NOTIFICATION_EMAIL as SEND_NOTIFICATION

__all__ = ["EMAIL_ENABLED", "SEND_DIGESTS", "SEND_NOTIFICATION", "send_digests", "send_notification"]

SEND_DIGESTS = "email.digest"
DIGEST_SCHEDULE = "0 7 * * *"  # every day at 07:00 UTC
DIGEST_MAX_ITEMS = 50


async def preference(session: AsyncSession, user_id: UUID) -> EmailPreference:
    """The stored preference, or the default (every email, language from the person's posts)."""
    stored = await session.get(EmailPreference, user_id)
    return stored or EmailPreference(user_id=user_id, frequency=EmailFrequency.EACH.value, language=None)


async def set_preference(
    session: AsyncSession, user_id: UUID, *, frequency: str | None = None, language: str | None = None
) -> EmailPreference:
    """Change what is given; only a real change of frequency restarts the digest window."""
    values: dict[str, object] = {}
    if frequency is not None:
        values.update(frequency=frequency, frequency_since=datetime.now(UTC))
    if language is not None:
        values["language"] = language
    if values:
        stmt = insert(EmailPreference).values(user_id=user_id, **values)
        changes: dict[str, object] = {name: stmt.excluded[name] for name in values}
        if frequency is not None:
            changes["frequency_since"] = case(
                (EmailPreference.frequency == stmt.excluded.frequency, EmailPreference.frequency_since),
                else_=stmt.excluded.frequency_since,
            )
        changes["updated_at"] = func.now()
        await session.execute(stmt.on_conflict_do_update(index_elements=[EmailPreference.user_id], set_=changes))
    stored = await session.get(EmailPreference, user_id, populate_existing=True)
    return stored or await preference(session, user_id)


async def language_of(session: AsyncSession, user_id: UUID, chosen: str | None) -> str:
    if chosen in ("en", "es"):
        return chosen
    latest = await session.scalar(
        select(Post.language)
        .where(Post.author_id == user_id, Post.deleted_at.is_(None), Post.language.in_(["en", "es"]))
        .order_by(Post.created_at.desc())
        .limit(1)
    )
    return latest or "en"


async def _recipient(session: AsyncSession, user: User, chosen_language: str | None) -> Recipient:
    return Recipient(user.id, user.email, user.display_name, await language_of(session, user.id, chosen_language))


async def _items(session: AsyncSession, reader: User, notifications: list[Notification]) -> list[Item]:
    """The notifications as the reader may read them: about posts they may see, naming only those."""
    post_ids = {n.post_id for n in notifications if n.post_id} | {
        UUID(n.payload[key]) for n in notifications for key, _ in RELATED_POSTS if n.payload.get(key)
    }
    visible = {str(i) for i in await session.scalars(select(Post.id).where(Post.id.in_(post_ids), visible_to(reader)))}
    return [
        describe(n.kind, to_out(n, visible).payload)
        for n in notifications
        if n.post_id is None or str(n.post_id) in visible
    ]


def _unsubscribe_url(mailer: Mailer, user_id: UUID) -> str:
    return f"{mailer.public_url}/email/unsubscribe/{unsubscribe_token(mailer.unsubscribe_key, user_id)}"


async def send_notification(
    session_maker: async_sessionmaker[AsyncSession], mailer: Mailer, notification_id: UUID
) -> str:
    """Email one notification. Returns ``sent`` or why not (``gone``, ``done``, ``not_wanted``, ``hidden``)."""
    async with session_maker() as session, session.begin():
        notification = await session.scalar(
            select(Notification).where(Notification.id == notification_id).with_for_update()
        )
        if notification is None:
            return "gone"  # its post or person was deleted
        if notification.emailed_at is not None:
            return "done"
        user = await session.get(User, notification.user_id)
        wanted = await preference(session, notification.user_id)
        if user is None or not user.is_active or wanted.frequency != EmailFrequency.EACH.value:
            return "not_wanted"  # a daily digest picks it up; none means none
        recipient = await _recipient(session, user, wanted.language)
        with in_language(recipient.language):
            items = await _items(session, user, [notification])
        if not items:
            return "hidden"
        message = compose(
            recipient=recipient,
            items=items,
            digest=False,
            sender=mailer.sender,
            public_url=mailer.public_url,
            unsubscribe_url=_unsubscribe_url(mailer, user.id),
        )
        await mailer.send(message)  # raises: rolled back, retried
        notification.emailed_at = datetime.now(UTC)
    return "sent"


async def send_digests(session_maker: async_sessionmaker[AsyncSession], mailer: Mailer) -> int:
    """One email per ``daily`` person with notifications not emailed yet (since they chose daily).
    Each person is their own transaction: a failure leaves theirs for the next try, the others sent."""
    async with session_maker() as session:
        user_ids = list(
            await session.scalars(
                select(EmailPreference.user_id).where(
                    EmailPreference.frequency == EmailFrequency.DAILY.value,
                    exists().where(
                        Notification.user_id == EmailPreference.user_id,
                        Notification.emailed_at.is_(None),
                        Notification.created_at >= EmailPreference.frequency_since,
                    ),
                )
            )
        )
    sent, failed = 0, None
    for user_id in user_ids:
        try:
            sent += await _send_digest(session_maker, mailer, user_id)
        except Exception as exc:  # the others still get theirs; the job is retried for the rest
            failed = exc
    if failed is not None:
        raise failed
    return sent


async def _send_digest(session_maker: async_sessionmaker[AsyncSession], mailer: Mailer, user_id: UUID) -> int:
    async with session_maker() as session, session.begin():
        wanted = await session.get(EmailPreference, user_id, with_for_update=True)
        user = await session.get(User, user_id)
        if wanted is None or wanted.frequency != EmailFrequency.DAILY.value or user is None or not user.is_active:
            return 0
        notifications = list(
            await session.scalars(
                select(Notification)
                .where(
                    Notification.user_id == user_id,
                    Notification.emailed_at.is_(None),
                    Notification.created_at >= wanted.frequency_since,
                )
                .order_by(Notification.created_at, Notification.id)
                .limit(DIGEST_MAX_ITEMS)
            )
        )
        recipient = await _recipient(session, user, wanted.language)
        with in_language(recipient.language):
            items = await _items(session, user, notifications)
        now = datetime.now(UTC)
        if items:
            message = compose(
                recipient=recipient,
                items=items,
                digest=True,
                sender=mailer.sender,
                public_url=mailer.public_url,
                unsubscribe_url=_unsubscribe_url(mailer, user.id),
            )
            await mailer.send(message)
        await session.execute(
            update(Notification).where(Notification.id.in_([n.id for n in notifications])).values(emailed_at=now)
        )
        return 1 if items else 0

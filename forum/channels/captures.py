"""Reading and writing capture records (``FeedbackCapture``); no service imports, so posts can use it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from forum.accounts.schemas import UserPublic
from forum.channels.schemas import CaptureChannel, CaptureOut, OnBehalf
from forum.models import CaptureSubject, FeedbackCapture, User


def capture_out(capture: FeedbackCapture) -> CaptureOut:
    by = capture.captured_by
    return CaptureOut(
        channel=CaptureChannel(capture.channel),
        source_url=capture.source_url,
        said_at=capture.said_at,
        captured_by=UserPublic(id=by.id, display_name=by.display_name, kind=by.kind),
        captured_at=capture.created_at,
    )


async def record(
    session: AsyncSession,
    subject: CaptureSubject,
    *,
    post_id: UUID,
    customer: User,
    captured_by: User,
    on_behalf: OnBehalf,
    said_at: datetime,
    comment_id: UUID | None = None,
) -> CaptureOut:
    capture = FeedbackCapture(
        subject=subject.value,
        post_id=post_id,
        comment_id=comment_id,
        customer_id=customer.id,
        captured_by_id=captured_by.id,
        channel=on_behalf.channel.value,
        source_url=on_behalf.source_url,
        said_at=said_at,
    )
    session.add(capture)
    await session.flush()
    await session.refresh(capture)
    return capture_out(capture)


async def captures_of_posts(session: AsyncSession, post_ids: Iterable[UUID]) -> dict[UUID, CaptureOut]:
    ids = list(post_ids)
    if not ids:
        return {}
    rows = await session.scalars(
        select(FeedbackCapture).where(
            FeedbackCapture.post_id.in_(ids), FeedbackCapture.subject == CaptureSubject.POST.value
        )
    )
    return {c.post_id: capture_out(c) for c in rows}


async def captures_of_comments(session: AsyncSession, comment_ids: Iterable[UUID]) -> dict[UUID, CaptureOut]:
    ids = list(comment_ids)
    if not ids:
        return {}
    rows = await session.scalars(select(FeedbackCapture).where(FeedbackCapture.comment_id.in_(ids)))
    return {c.comment_id: capture_out(c) for c in rows if c.comment_id}

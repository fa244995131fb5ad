from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, delete, get, post, put
from litestar.exceptions import NotFoundException
from sqlalchemy.ext.asyncio import AsyncSession

from forum.auth import requires_login
from forum.models import User
from forum.notifications.schemas import Inbox, MarkedRead, SubscriptionState
from forum.notifications.services import InboxService, is_subscribed, subscribe, unsubscribe
from forum.posts.services import PostService
from forum.schemas import Limit, Offset


class InboxController(Controller):
    path = "/api/me/notifications"
    tags = ["notifications"]
    guards = [requires_login]

    @get(summary="Your notifications, newest first, with the unread count")
    async def list_notifications(
        self,
        request: Request[User, Any, Any],
        db_session: AsyncSession,
        unread: bool = False,
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> Inbox:
        service = InboxService(db_session)
        page = await service.list(request.user, unread_only=unread, limit=limit, offset=offset)
        return Inbox(
            items=page.items,
            total=page.total,
            unread=await service.unread_count(request.user),
            limit=limit,
            offset=offset,
        )

    @post("/{notification_id:uuid}/read", status_code=200, summary="Mark one notification read")
    async def mark_notification_read(
        self, request: Request[User, Any, Any], db_session: AsyncSession, notification_id: UUID
    ) -> MarkedRead:
        service = InboxService(db_session)
        if not await service.exists_for(request.user, notification_id):
            raise NotFoundException("Notification not found")
        return MarkedRead(marked=await service.mark_read(request.user, notification_id))

    @post("/read-all", status_code=200, summary="Mark every notification read")
    async def mark_all_notifications_read(
        self, request: Request[User, Any, Any], db_session: AsyncSession
    ) -> MarkedRead:
        return MarkedRead(marked=await InboxService(db_session).mark_read(request.user))


class SubscriptionController(Controller):
    path = "/api/posts/{post_id:uuid}/subscription"
    tags = ["notifications"]
    guards = [requires_login]

    @get(summary="Whether you hear about this post")
    async def get_subscription(
        self, request: Request[User, Any, Any], db_session: AsyncSession, post_id: UUID
    ) -> SubscriptionState:
        await PostService(db_session).get_visible(post_id, request.user)
        return SubscriptionState(post_id=post_id, subscribed=await is_subscribed(db_session, request.user.id, post_id))

    @put(summary="Subscribe to a post's status changes")
    async def subscribe_to_post(
        self, request: Request[User, Any, Any], db_session: AsyncSession, post_id: UUID
    ) -> SubscriptionState:
        await PostService(db_session).get_visible(post_id, request.user)
        await subscribe(db_session, request.user.id, post_id, explicit=True)
        return SubscriptionState(post_id=post_id, subscribed=True)

    @delete(status_code=200, summary="Stop hearing about a post (voting again will not re-subscribe you)")
    async def unsubscribe_from_post(
        self, request: Request[User, Any, Any], db_session: AsyncSession, post_id: UUID
    ) -> SubscriptionState:
        await PostService(db_session).get_visible(post_id, request.user)
        await unsubscribe(db_session, request.user.id, post_id)
        return SubscriptionState(post_id=post_id, subscribed=False)

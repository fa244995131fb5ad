from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, post
from sqlalchemy.ext.asyncio import AsyncSession

from forum.auth import requires_admin
from forum.http import LOCATION, created
from forum.models import User
from forum.schemas import Limit, Offset, Page
from forum.webhooks.schemas import DeliveryOut, WebhookCreate, WebhookCreated, WebhookOut
from forum.webhooks.services import WebhookService


class WebhookController(Controller):
    path = "/api/webhooks"
    tags = ["webhooks"]
    guards = [requires_admin]

    @post(response_headers=[LOCATION], summary="Register a webhook (admin); the signing secret is shown once")
    async def create_webhook(
        self, request: Request[User, Any, Any], db_session: AsyncSession, data: WebhookCreate
    ) -> Response[WebhookCreated]:
        allowed = request.app.state["forum_settings"].webhook_allowed_hosts
        hook = await WebhookService(db_session, allowed).create(data, request.user)
        return created(hook, f"/api/webhooks/{hook.id}")

    @get(summary="Registered webhooks (admin)")
    async def list_webhooks(self, db_session: AsyncSession, limit: Limit = 20, offset: Offset = 0) -> Page[WebhookOut]:
        return Page.of(await WebhookService(db_session).list(), limit, offset)

    @delete("/{webhook_id:uuid}", summary="Remove a webhook (admin)")
    async def delete_webhook(self, db_session: AsyncSession, webhook_id: UUID) -> None:
        await WebhookService(db_session).delete(webhook_id)

    @get("/{webhook_id:uuid}/deliveries", summary="Delivery log, newest first (admin)")
    async def list_webhook_deliveries(
        self,
        db_session: AsyncSession,
        webhook_id: UUID,
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> Page[DeliveryOut]:
        return await WebhookService(db_session).deliveries(webhook_id, limit, offset)

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, delete, get, post
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from forum.auth import requires_admin
from forum.models import User
from forum.schemas import Page
from forum.webhooks.schemas import DeliveryOut, WebhookCreate, WebhookCreated, WebhookOut
from forum.webhooks.services import WebhookService


class WebhookController(Controller):
    path = "/api/webhooks"
    tags = ["webhooks"]
    guards = [requires_admin]

    @post(summary="Register a webhook (admin); the signing secret is shown once")
    async def create(
        self, request: Request[User, Any, Any], db_session: AsyncSession, data: WebhookCreate
    ) -> WebhookCreated:
        allowed = request.app.state["forum_settings"].webhook_allowed_hosts
        return await WebhookService(db_session, allowed).create(data, request.user)

    @get(summary="Registered webhooks (admin)")
    async def list_webhooks(self, db_session: AsyncSession) -> list[WebhookOut]:
        return await WebhookService(db_session).list()

    @delete("/{webhook_id:uuid}", summary="Remove a webhook (admin)")
    async def remove(self, db_session: AsyncSession, webhook_id: UUID) -> None:
        await WebhookService(db_session).delete(webhook_id)

    @get("/{webhook_id:uuid}/deliveries", summary="Delivery log, newest first (admin)")
    async def deliveries(
        self,
        db_session: AsyncSession,
        webhook_id: UUID,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
        offset: Annotated[int, Parameter(ge=0, le=10_000_000)] = 0,
    ) -> Page[DeliveryOut]:
        return await WebhookService(db_session).deliveries(webhook_id, limit, offset)

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, patch, post
from sqlalchemy.ext.asyncio import AsyncSession

from forum.auth import requires_admin
from forum.http import LOCATION, created
from forum.models import User
from forum.schemas import Limit, Offset, Page
from forum.webhooks.schemas import DeliveryOut, WebhookCreate, WebhookCreated, WebhookOut, WebhookUpdate
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

    @get("/{webhook_id:uuid}", summary="A webhook (admin)")
    async def get_webhook(self, db_session: AsyncSession, webhook_id: UUID) -> WebhookOut:
        return await WebhookService(db_session).get(webhook_id)

    @patch("/{webhook_id:uuid}", summary="Change a webhook's URL, events, secret or active flag (admin)")
    async def update_webhook(
        self, request: Request[User, Any, Any], db_session: AsyncSession, webhook_id: UUID, data: WebhookUpdate
    ) -> WebhookOut:
        allowed = request.app.state["forum_settings"].webhook_allowed_hosts
        return await WebhookService(db_session, allowed).update(webhook_id, data)

    @post(
        "/{webhook_id:uuid}/test",
        status_code=202,
        summary="Queue a signed test delivery (event webhook.test) to the webhook (admin)",
    )
    async def test_webhook(
        self, request: Request[User, Any, Any], db_session: AsyncSession, webhook_id: UUID
    ) -> DeliveryOut:
        return await WebhookService(db_session).send_test(webhook_id, request.user)

    @post(
        "/{webhook_id:uuid}/deliveries/{delivery_id:uuid}/redeliver",
        status_code=202,
        summary="Send a past delivery again, as a new delivery with the same payload (admin)",
    )
    async def redeliver_webhook_delivery(
        self, db_session: AsyncSession, webhook_id: UUID, delivery_id: UUID
    ) -> DeliveryOut:
        return await WebhookService(db_session).redeliver(webhook_id, delivery_id)

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

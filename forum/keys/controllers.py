from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, post
from sqlalchemy.ext.asyncio import AsyncSession

from forum.auth import requires_admin
from forum.http import LOCATION, created
from forum.keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut
from forum.keys.services import ApiKeyService
from forum.models import User
from forum.schemas import Limit, Offset, Page


class ApiKeyController(Controller):
    path = "/api/keys"
    tags = ["keys"]
    guards = [requires_admin]

    @post(response_headers=[LOCATION], summary="Create an API key (admin); the key is shown only in this answer")
    async def create_api_key(
        self, request: Request[User, Any, Any], db_session: AsyncSession, data: ApiKeyCreate
    ) -> Response[ApiKeyCreated]:
        key = await ApiKeyService(db_session).create(data, request.user)
        return created(key, f"/api/keys/{key.id}")

    @get(summary="API keys with their last use, newest first (admin)")
    async def list_api_keys(self, db_session: AsyncSession, limit: Limit = 20, offset: Offset = 0) -> Page[ApiKeyOut]:
        return await ApiKeyService(db_session).list(limit, offset)

    @get("/{key_id:uuid}", summary="An API key (admin)")
    async def get_api_key(self, db_session: AsyncSession, key_id: UUID) -> ApiKeyOut:
        return await ApiKeyService(db_session).get(key_id)

    @delete("/{key_id:uuid}", summary="Revoke an API key (admin): it stops working at once; it stays listed")
    async def revoke_api_key(self, request: Request[User, Any, Any], db_session: AsyncSession, key_id: UUID) -> None:
        await ApiKeyService(db_session).revoke(key_id, request.user)

"""API keys for integrations: created, listed and revoked by admins. Services never commit.

A key is ``fk_`` + 43 random URL-safe characters (256 bits); only its SHA-256 is stored, with its
first characters (``prefix``) to tell keys apart. Each key gets a service account of its own: an
internal user (integrations are the company's own: they see internal posts, as employees do) named
after the key, with the ``product`` role (``admin`` for a key with the ``admin`` scope), an address in
the reserved ``.invalid`` domain and a password that matches nothing. Its posts, votes and comments are
attributed to it. Revoking keeps the key (listed with ``revoked_at``) and the account (its posts stay).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from uuid import UUID

from litestar.exceptions import NotFoundException
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from forum.accounts.schemas import UserPublic
from forum.auth import API_KEY_PREFIX, SERVICE_PASSWORD_HASH, hash_api_key
from forum.errors import ConflictError
from forum.keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut
from forum.models import ApiKey, ApiKeyScope, User, UserKind, UserRole
from forum.schemas import Page

PREFIX_LENGTH = 11  # "fk_" and 8 characters of the secret


def _public(user: User) -> UserPublic:
    return UserPublic(id=user.id, display_name=user.display_name, kind=user.kind)


def key_out(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        scopes=[ApiKeyScope(s) for s in key.scopes],
        service_account=_public(key.user),
        created_by=_public(key.created_by),
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )


class ApiKeyService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, data: ApiKeyCreate, admin: User) -> ApiKeyCreated:
        secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
        scopes = sorted({s.value for s in data.scopes})
        account_id = uuid7()
        account = User(
            id=account_id,
            email=f"api-key-{account_id.hex}@keys.invalid",
            display_name=data.name,
            password_hash=SERVICE_PASSWORD_HASH,
            kind=UserKind.INTERNAL.value,
            role=(UserRole.ADMIN if ApiKeyScope.ADMIN.value in scopes else UserRole.PRODUCT).value,
        )
        self.session.add(account)
        await self.session.flush()
        key = ApiKey(
            name=data.name,
            prefix=secret[:PREFIX_LENGTH],
            key_hash=hash_api_key(secret),
            scopes=scopes,
            user_id=account.id,
            created_by_id=admin.id,
        )
        self.session.add(key)
        await self.session.flush()
        key = await self._get(key.id)
        return ApiKeyCreated(**{f: getattr(key_out(key), f) for f in ApiKeyOut.__struct_fields__}, key=secret)

    async def list(self, limit: int, offset: int) -> Page[ApiKeyOut]:
        rows = await self.session.scalars(
            select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id.desc()).limit(limit).offset(offset)
        )
        total = await self.session.scalar(select(func.count(ApiKey.id))) or 0
        return Page(items=[key_out(k) for k in rows], total=total, limit=limit, offset=offset)

    async def _get(self, key_id: UUID, *, for_update: bool = False) -> ApiKey:
        stmt = select(ApiKey).where(ApiKey.id == key_id).execution_options(populate_existing=True)
        key = await self.session.scalar(stmt.with_for_update(of=ApiKey) if for_update else stmt)
        if key is None:
            raise NotFoundException("API key not found")
        return key

    async def get(self, key_id: UUID) -> ApiKeyOut:
        return key_out(await self._get(key_id))

    async def revoke(self, key_id: UUID, admin: User) -> None:
        key = await self._get(key_id, for_update=True)
        if key.revoked_at is not None:
            raise ConflictError(detail="This API key is already revoked")
        key.revoked_at = datetime.now(UTC)
        key.revoked_by_id = admin.id
        await self.session.flush()

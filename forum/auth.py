"""Passwords, JWT bearer tokens and guards.

Authentication is optional at the middleware level: a request without ``Authorization`` is anonymous
(``request.user`` is None) and may read public content; a request with a bad or expired token gets 401.
Guards (``requires_*``) decide what each route needs.

The web pages (everything outside ``/api``) also accept the same JWT from the browser session cookie
``SESSION_COOKIE``: it goes through the same ``retrieve_user``, and a bad or expired cookie just makes the
request anonymous. The API never reads the cookie, so it needs no CSRF protection.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AuthenticationResult
from litestar.security.jwt import JWTAuth, JWTAuthenticationMiddleware, Token

from forum.models import User

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both failures take the same time.
_DUMMY_HASH = _hasher.hash("not-a-real-password")
UNCLAIMED_PASSWORD_HASH = "!unclaimed"
"""No password matches it: an account made for an imported survey answer, claimed by registering."""


async def hash_password(password: str) -> str:
    return await anyio.to_thread.run_sync(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    usable = None if password_hash == UNCLAIMED_PASSWORD_HASH else password_hash  # same time as unknown

    def _verify() -> bool:
        try:
            return _hasher.verify(usable or _DUMMY_HASH, password) and usable is not None
        except (VerificationError, InvalidHashError):
            return False

    return await anyio.to_thread.run_sync(_verify)


SESSION_COOKIE = "forum_session"
API_PREFIX = "/api/"


class OptionalJWTAuthenticationMiddleware(JWTAuthenticationMiddleware):
    """Like Litestar's JWT middleware, but a request with no token is anonymous instead of 401."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        header = connection.headers.get(self.auth_header)
        if not header:
            return await self._authenticate_cookie(connection)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise NotAuthorizedException("Authorization header must be 'Bearer <token>'")
        return await self.authenticate_token(encoded_token=token.strip(), connection=connection)

    async def _authenticate_cookie(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        cookie = connection.cookies.get(SESSION_COOKIE)
        if not cookie or connection.scope["path"].startswith(API_PREFIX):
            return AuthenticationResult(user=None, auth=None)
        try:
            return await self.authenticate_token(encoded_token=cookie, connection=connection)
        except NotAuthorizedException:  # expired, revoked or forged: the page is read anonymously
            return AuthenticationResult(user=None, auth=None)


async def retrieve_user(token: Token, connection: ASGIConnection[Any, Any, Any, Any]) -> User | None:
    """Load the token's user with the request's own session, so handlers reuse it."""
    try:
        user_id = UUID(token.sub)
    except ValueError:
        return None
    alchemy = connection.app.state["forum_alchemy_config"]
    session = alchemy.provide_session(connection.app.state, connection.scope)
    user = await session.get(User, user_id)
    if user is None or not user.is_active:
        return None
    return user


def build_jwt_auth(secret: str, ttl_minutes: int) -> JWTAuth[User]:
    return JWTAuth[User](
        retrieve_user_handler=retrieve_user,
        token_secret=secret,
        default_token_expiration=timedelta(minutes=ttl_minutes),
        authentication_middleware_class=OptionalJWTAuthenticationMiddleware,
        exclude=["/schema", "/health", "/static/"],
        description="Bearer token from POST /api/auth/login",
    )


# Guards -------------------------------------------------------------------------------------------


def requires_login(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if connection.user is None:
        raise NotAuthorizedException("Log in to do this")


def requires_product_team(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    requires_login(connection, handler)
    if not connection.user.is_product_team:
        raise PermissionDeniedException("Only the product team can do this")


def requires_admin(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    requires_login(connection, handler)
    if not connection.user.is_admin:
        raise PermissionDeniedException("Only admins can do this")

"""Passwords, JWT bearer tokens and guards.

Authentication is optional at the middleware level: a request without ``Authorization`` is anonymous
(``request.user`` is None) and may read public content; a request with a bad, expired or revoked token
gets 401. Guards (``requires_*``) decide what each route needs.

The web pages (everything outside ``/api``) also accept the same JWT from the browser session cookie
``SESSION_COOKIE``: it goes through the same ``retrieve_user``, and a bad, expired or revoked cookie just
makes the request anonymous. The API never reads the cookie, so it needs no CSRF protection.

Revocation: every user has ``tokens_valid_after``; a token issued before it is refused. Logging out,
changing the password and (de)activating a user move it to now. Tokens carry their issue time to the
microsecond (``iat_us``), because the standard ``iat`` has whole seconds and a token issued in the same
second as a password change could be either side of it. ``retrieve_user`` is where every way in (bearer
header, the session cookie) loads the user, so revocation is checked there.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import anyio
import jwt
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


def now_us() -> int:
    """Microseconds since the epoch: the resolution of token issue times and of ``tokens_valid_after``."""
    return time.time_ns() // 1_000


def revoke_tokens(user: User) -> None:
    """Every token of ``user`` issued up to this instant stops working (the caller commits)."""
    user.tokens_valid_after = datetime.fromtimestamp(now_us() / 1_000_000, tz=UTC)


def token_is_revoked(token: Token, user: User) -> bool:
    if user.tokens_valid_after is None:
        return False
    valid_after = round(user.tokens_valid_after.timestamp() * 1_000_000)
    issued = token.extras.get("iat_us")
    if not isinstance(issued, int):  # issued before tokens carried microseconds: whole seconds, rounded down
        issued = int(token.iat.timestamp()) * 1_000_000
    return issued < valid_after


class ForumToken(Token):
    """Litestar's token, telling an expired token from an invalid one in the 401 it raises."""

    @classmethod
    def decode(cls, *args: Any, **kwargs: Any) -> ForumToken:
        try:
            return super().decode(*args, **kwargs)  # type: ignore[return-value]
        except NotAuthorizedException as exc:
            if isinstance(exc.__cause__, jwt.ExpiredSignatureError):
                raise NotAuthorizedException("token expired") from exc
            raise NotAuthorizedException("invalid token") from exc


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
        raise NotAuthorizedException("invalid token") from None
    alchemy = connection.app.state["forum_alchemy_config"]
    session = alchemy.provide_session(connection.app.state, connection.scope)
    user = await session.get(User, user_id)
    if user is None or not user.is_active:
        raise NotAuthorizedException("invalid token")
    if token_is_revoked(token, user):
        raise NotAuthorizedException("token revoked: log in again")
    return user


def issue_token(jwt_auth: JWTAuth[User], user: User) -> str:
    return jwt_auth.create_token(identifier=str(user.id), token_extras={"role": user.role, "iat_us": now_us()})


def build_jwt_auth(secret: str, ttl_minutes: int) -> JWTAuth[User]:
    return JWTAuth[User](
        retrieve_user_handler=retrieve_user,
        token_secret=secret,
        token_cls=ForumToken,
        default_token_expiration=timedelta(minutes=ttl_minutes),
        authentication_middleware_class=OptionalJWTAuthenticationMiddleware,
        exclude=["/schema", "/health", "/static/"],
        description="Bearer token from POST /api/auth/login",
    )


# Guards -------------------------------------------------------------------------------------------


# ``OPTIONS`` answers which methods a path has (Litestar's own handler, which authentication skips): it
# does nothing, so the guards of the path's controller let it through.


def requires_login(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if connection.scope["method"] == "OPTIONS":
        return
    if connection.user is None:
        raise NotAuthorizedException("Log in to do this")


def requires_product_team(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    requires_login(connection, handler)
    if connection.scope["method"] != "OPTIONS" and not connection.user.is_product_team:
        raise PermissionDeniedException("Only the product team can do this")


def requires_admin(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    requires_login(connection, handler)
    if connection.scope["method"] != "OPTIONS" and not connection.user.is_admin:
        raise PermissionDeniedException("Only admins can do this")

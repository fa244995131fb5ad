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

API keys: ``Authorization: Bearer fk_…`` is an API key instead of a JWT (a JWT never starts with
``fk_``). The same middleware looks the key up by the SHA-256 of the secret (a high-entropy secret needs
no slow hash, and a lookup by hash compares nothing in Python) and authenticates as the key's service
account, with ``request.auth`` a ``KeyAuth``; an unknown or revoked key is 401. ``requires_key_scope``,
installed on every route through ``JWTAuth.guards``, refuses writes (403) to a key without the
``write`` or ``admin`` scope; admin routes need an admin user, which only an ``admin`` key's account is.
The key's last use is written at most once a minute, in its own short transaction.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
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
from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from forum.driver import DriverStatement, driver_of
from forum.models import ApiKey, ApiKeyScope, User, UserRoles

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both failures take the same time.
_DUMMY_HASH = _hasher.hash("not-a-real-password")
UNCLAIMED_PASSWORD_HASH = "!unclaimed"
"""No password matches it: an account made for an imported survey answer, claimed by registering."""
SERVICE_PASSWORD_HASH = "!service"
"""No password matches it: an API key's service account, which never logs in."""

API_KEY_PREFIX = "fk_"
"""Every API key starts with it, so secret scanners recognise a leaked one."""
LAST_USE_RESOLUTION = timedelta(minutes=1)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def hash_password(password: str) -> str:
    return await anyio.to_thread.run_sync(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    # "!…" (unclaimed accounts, API keys' service accounts) matches nothing, in the same time as unknown
    usable = None if password_hash is None or password_hash.startswith("!") else password_hash

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


def token_is_revoked(token: Token, user: User | SignedIn) -> bool:
    if user.tokens_valid_after is None:
        return False
    valid_after = round(user.tokens_valid_after.timestamp() * 1_000_000)
    issued = token.extras.get("iat_us")
    if not isinstance(issued, int):  # issued before tokens carried microseconds: whole seconds, rounded down
        issued = int(token.iat.timestamp()) * 1_000_000
    return issued < valid_after


VERIFIED_TOKENS_MAX = 10_000
"""How many verified tokens :class:`ForumToken` remembers (the oldest is forgotten first)."""
_verified: dict[tuple[str, str, str], ForumToken] = {}
_clock = time.time  # the expiry check of a remembered token (tests move it)


class ForumToken(Token):
    """Litestar's token, telling an expired token from an invalid one in the 401 it raises.

    A token whose signature and claims were verified once is remembered by its exact text (and the key and
    algorithm it was verified with): the next request with it skips the base64, HMAC and JSON work of a
    decode (about 10 % of a vote's CPU, issue 14). Only the expiry can change for the same text, so it is
    checked again on every use, with PyJWT's rule (valid while now < exp); revocation and the user's
    ``is_active`` are read from the database on every request, as before. A forged or altered token is
    another text: it is never found, and is decoded (and refused) as ever."""

    @classmethod
    def decode(  # type: ignore[override]
        cls, encoded_token: str, secret: str, algorithm: str, *args: Any, **kwargs: Any
    ) -> ForumToken:
        cacheable = (
            not args
            and not any(kwargs.get(name) for name in ("audience", "issuer", "require_claims", "strict_audience"))
            and kwargs.get("verify_exp", True)
            and kwargs.get("verify_nbf", True)
        )
        key = (encoded_token, secret, algorithm)
        if cacheable and (token := _verified.get(key)) is not None:
            if _clock() < token.exp.timestamp():
                return token
            del _verified[key]
            raise NotAuthorizedException("token expired")
        try:
            token = super().decode(encoded_token, secret, algorithm, *args, **kwargs)  # type: ignore[assignment]
        except NotAuthorizedException as exc:
            if isinstance(exc.__cause__, jwt.ExpiredSignatureError):
                raise NotAuthorizedException("token expired") from exc
            raise NotAuthorizedException("invalid token") from exc
        if cacheable:
            if len(_verified) >= VERIFIED_TOKENS_MAX:
                del _verified[next(iter(_verified))]
            _verified[key] = token
        return token


class OptionalJWTAuthenticationMiddleware(JWTAuthenticationMiddleware):
    """Like Litestar's JWT middleware, but a request with no token is anonymous instead of 401."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        header = connection.headers.get(self.auth_header)
        if not header:
            return await self._authenticate_cookie(connection)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise NotAuthorizedException("Authorization header must be 'Bearer <token>'")
        if token.strip().startswith(API_KEY_PREFIX):
            return await authenticate_api_key(token.strip(), connection)
        return await self.authenticate_token(encoded_token=token.strip(), connection=connection)

    async def _authenticate_cookie(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        cookie = connection.cookies.get(SESSION_COOKIE)
        if not cookie or connection.scope["path"].startswith(API_PREFIX):
            return AuthenticationResult(user=None, auth=None)
        try:
            return await self.authenticate_token(encoded_token=cookie, connection=connection)
        except NotAuthorizedException:  # expired, revoked or forged: the page is read anonymously
            return AuthenticationResult(user=None, auth=None)


LIGHT_USER = "light_user"
"""``opt={LIGHT_USER: True}`` on a route: its ``request.user`` is a :class:`SignedIn`, read by one prepared
statement, instead of an ORM ``User`` (loading that was 11 % of a served vote's CPU, issue 14). For handlers
that only ask who the user is (id, kind, role, name); one that changes the user, or gives it to a service
that links it to new ORM rows, calls :func:`orm_user`."""


@dataclass(frozen=True, slots=True)
class SignedIn(UserRoles):
    """``request.user`` on a :data:`LIGHT_USER` route: the columns permission checks, a vote and its webhook
    payload read. Revocation and ``is_active`` are checked on it exactly as on a ``User``."""

    id: UUID
    display_name: str
    kind: str
    role: str
    is_active: bool
    tokens_valid_after: datetime | None


_SIGNED_IN = DriverStatement(
    select(User.display_name, User.kind, User.role, User.is_active, User.tokens_valid_after).where(
        User.id == bindparam("user_id")
    )
)


async def _signed_in(session: AsyncSession, user_id: UUID, *, begin: bool = True) -> SignedIn | None:
    # In the request's transaction (started here, as session.get would): the route's statements follow. A
    # route that writes nothing (``read_only``, as-you-type) needs none: no BEGIN and COMMIT round trips.
    conn = await driver_of(session, begin=begin)
    row = await conn.fetchrow(_SIGNED_IN.sql, *_SIGNED_IN.args({"user_id": user_id}))
    return None if row is None else SignedIn(user_id, *row)


async def orm_user(session: AsyncSession, user: User | SignedIn) -> User:
    """The ORM ``User`` behind ``request.user`` on any route (the same object when it already is one): read in
    the request's transaction, the one in which authentication checked it."""
    if isinstance(user, User):
        return user
    loaded = await session.get(User, user.id)
    if loaded is None:
        raise NotAuthorizedException("invalid token")
    return loaded


async def retrieve_user(token: Token, connection: ASGIConnection[Any, Any, Any, Any]) -> User | SignedIn | None:
    """Load the token's user with the request's own session, so handlers reuse it (a :class:`SignedIn` on a
    :data:`LIGHT_USER` route)."""
    try:
        user_id = UUID(token.sub)
    except ValueError:
        raise NotAuthorizedException("invalid token") from None
    alchemy = connection.app.state["forum_alchemy_config"]
    session = alchemy.provide_session(connection.app.state, connection.scope)
    user: User | SignedIn | None
    opt = connection.scope["route_handler"].opt
    if opt.get(LIGHT_USER):
        user = await _signed_in(session, user_id, begin=not opt.get("read_only"))
    else:
        user = await session.get(User, user_id)
    if user is None or not user.is_active:
        raise NotAuthorizedException("invalid token")
    if token_is_revoked(token, user):
        raise NotAuthorizedException("token revoked: log in again")
    return user


@dataclass(frozen=True)
class KeyAuth:
    """``request.auth`` of a request made with an API key."""

    key_id: UUID
    scopes: frozenset[str]

    @property
    def may_write(self) -> bool:
        return bool(self.scopes & {ApiKeyScope.WRITE.value, ApiKeyScope.ADMIN.value})


def hash_api_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def authenticate_api_key(secret: str, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
    """The key's service account, loaded with the request's own session (one query, the user joined)."""
    alchemy = connection.app.state["forum_alchemy_config"]
    session = alchemy.provide_session(connection.app.state, connection.scope)
    key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(secret)))
    if key is None:
        raise NotAuthorizedException("unknown API key")
    if key.revoked_at is not None:
        raise NotAuthorizedException("API key revoked")
    if not key.user.is_active:
        raise NotAuthorizedException("the API key's service account is deactivated")
    now = datetime.now(UTC)
    if key.last_used_at is None or now - key.last_used_at >= LAST_USE_RESOLUTION:
        # Its own transaction (the request may fail or only read); the row in the session is left clean.
        async with alchemy.get_engine().begin() as conn:
            await conn.execute(
                update(ApiKey)
                .where(
                    ApiKey.id == key.id,
                    or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - LAST_USE_RESOLUTION),
                )
                .values(last_used_at=now)
            )
    return AuthenticationResult(user=key.user, auth=KeyAuth(key.id, frozenset(key.scopes)))


async def requires_key_scope(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """On every route: a key without the ``write`` scope only reads (``opt={"read_only": True}`` marks
    a POST that only reads, such as the similar-posts search)."""
    auth = connection.scope.get("auth")
    if not isinstance(auth, KeyAuth) or auth.may_write:
        return
    if connection.scope["method"] not in SAFE_METHODS and not handler.opt.get("read_only"):
        raise PermissionDeniedException("This API key may only read: it lacks the 'write' scope")


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
        guards=[requires_key_scope],
        description="Bearer token from POST /api/auth/login, or an API key (fk_…) from POST /api/keys",
    )


# Guards -------------------------------------------------------------------------------------------


# ``OPTIONS`` answers which methods a path has (Litestar's own handler, which authentication skips): it
# does nothing, so the guards of the path's controller let it through.
#
# Guards are coroutines: Litestar runs a plain function guard in a worker thread (``sync_to_thread``),
# which cost every guarded request a thread hop (about 5 % of a served vote's samples in py-spy, issue 14).


def _require_login(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    if connection.scope["method"] != "OPTIONS" and connection.user is None:
        raise NotAuthorizedException("Log in to do this")


async def requires_login(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    _require_login(connection)


async def requires_product_team(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    _require_login(connection)
    if connection.scope["method"] != "OPTIONS" and not connection.user.is_product_team:
        raise PermissionDeniedException("Only the product team can do this")


async def requires_admin(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    _require_login(connection)
    if connection.scope["method"] == "OPTIONS":
        return
    if not connection.user.is_admin:
        raise PermissionDeniedException("Only admins can do this")
    auth = connection.scope.get("auth")
    if isinstance(auth, KeyAuth) and ApiKeyScope.ADMIN.value not in auth.scopes:
        raise PermissionDeniedException("This API key lacks the 'admin' scope")

"""Request guards that run before any handler: NUL bytes in the URL, and rate limits shared through
PostgreSQL.

Rate limits count requests per client address and budget in fixed one-minute windows, in the
``rate_limit_window`` table every API process of a deployment already shares: one atomic
``INSERT … ON CONFLICT … DO UPDATE … RETURNING`` per limited request, so ``forum serve --workers 4``
(or four machines) enforce one budget, not four. Litestar's ``RateLimitConfig`` with a ``store`` was the
first choice, but its middleware reads the history, then writes it back: concurrent requests on
several processes each read the same count and all pass. Old windows are deleted by the process that
next writes after a window ends. A request made with an API key counts against the key, not its address.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from litestar import Request
from litestar.enums import ScopeType
from litestar.exceptions import TooManyRequestsException, ValidationException
from litestar.middleware import ASGIMiddleware
from litestar.middleware.rate_limit import get_remote_address
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy import text

from forum.auth import KeyAuth
from forum.batching import REQUESTS
from forum.driver import DriverStatement

NUL_MESSAGE = "must not contain NUL characters"


class CountRequestsMiddleware(ASGIMiddleware):
    """Counts requests in flight (``forum.batching.REQUESTS``): the worker inside ``forum serve`` takes its
    steps between them."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        REQUESTS.enter()
        try:
            await next_app(scope, receive, send)
        finally:
            REQUESTS.exit()


class RejectNulMiddleware(ASGIMiddleware):
    """PostgreSQL text cannot hold NUL: a NUL in any query or path parameter is 422, for every route."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        query = scope.get("query_string", b"")
        errors = []
        if b"%00" in query or b"\x00" in query:
            for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
                if "\x00" in key or "\x00" in value:
                    errors.append({"key": key.replace("\x00", ""), "message": NUL_MESSAGE, "source": "query"})
        if "\x00" in scope.get("path", ""):
            errors.append({"key": None, "message": "path: " + NUL_MESSAGE, "source": "path"})
        if errors:
            raise ValidationException(detail="Validation failed", extra=errors)
        await next_app(scope, receive, send)


@dataclass(frozen=True)
class Budget:
    name: str
    per_minute: int
    applies: Callable[[Request[Any, Any, Any]], bool]


PERIOD_SECONDS = 60

# The window is computed by PostgreSQL's clock, so processes on machines whose clocks differ still agree.
HIT = text(
    """
    INSERT INTO rate_limit_window AS w (key, window_start, hits)
    VALUES (:key, to_timestamp(floor(extract(epoch FROM clock_timestamp()) / :period) * :period), 1)
    ON CONFLICT (key, window_start) DO UPDATE SET hits = w.hits + 1
    RETURNING w.hits, ceil(extract(epoch FROM w.window_start) + :period - extract(epoch FROM clock_timestamp()))
    """
)
_HIT = DriverStatement(HIT)
CLEAN_UP = text("DELETE FROM rate_limit_window WHERE window_start < clock_timestamp() - make_interval(secs => :keep)")


def _client(scope: Scope, request: Request[Any, Any, Any]) -> str:
    """Who a budget belongs to: the API key (authenticated first, by the outer auth middleware), else
    the client address. A key keeps one budget from any number of addresses."""
    auth = scope.get("auth")
    return f"key:{auth.key_id}" if isinstance(auth, KeyAuth) else get_remote_address(request)


class SharedRateLimitMiddleware(ASGIMiddleware):
    """The first budget that applies to a request counts it; over budget is 429 with ``Retry-After``.

    Answers carry the same ``RateLimit-*`` headers as Litestar's own rate limiter.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(self, budgets: list[Budget]) -> None:
        self.budgets = budgets
        self._cleaned_at = 0.0

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        request: Request[Any, Any, Any] = Request(scope)
        budget = next((b for b in self.budgets if b.applies(request)), None)
        if budget is None:
            await next_app(scope, receive, send)
            return
        hits, reset = await self._hit(request, f"{budget.name}:{_client(scope, request)}")
        headers = {
            "RateLimit-Policy": f"{budget.per_minute}; w={PERIOD_SECONDS}",
            "RateLimit-Limit": str(budget.per_minute),
            "RateLimit-Remaining": str(max(budget.per_minute - hits, 0)),
            "RateLimit-Reset": str(reset),
        }
        if hits > budget.per_minute:
            raise TooManyRequestsException(
                detail=f"Too many requests: at most {budget.per_minute} a minute",
                headers={**headers, "Retry-After": str(reset)},
            )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.lower().encode(), v.encode()) for k, v in headers.items()),
                ]
            await send(message)

        await next_app(scope, receive, send_with_headers)

    async def _hit(self, request: Request[Any, Any, Any], key: str) -> tuple[int, int]:
        engine = request.app.state["forum_alchemy_config"].get_engine()
        # One statement is its own transaction: run on the driver outside any BEGIN/COMMIT (the adapter
        # begins lazily, before a statement of its own), it is one round trip instead of three, and skips
        # SQLAlchemy's execution of a text statement, on every limited request (issue 14).
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            row = await driver.fetchrow(_HIT.sql, *_HIT.args({"key": key[:200], "period": PERIOD_SECONDS}))
        if time.monotonic() - self._cleaned_at > PERIOD_SECONDS:  # its own transaction: never holds the hit
            self._cleaned_at = time.monotonic()
            async with engine.begin() as conn:
                await conn.execute(CLEAN_UP, {"keep": 2 * PERIOD_SECONDS})
        return int(row[0]), max(int(row[1]), 1)

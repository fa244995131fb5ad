"""Every error leaves as an RFC 9457 problem document (``application/problem+json``).

- Litestar's request validation errors become 422 with ``errors: [{field, message, source}]``.
- Unparseable bodies stay 400; repository errors map to 404/409; a database that cannot be reached, is
  shutting down or is out of connections is 503 with ``Retry-After`` (``database_unavailable``, whatever
  wrapped the driver's error); anything unexpected is a 500 problem (logged), never an HTML page.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

from advanced_alchemy.exceptions import (
    DuplicateKeyError,
    ForeignKeyError,
    IntegrityError,
    NotFoundError,
    RepositoryError,
)
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

logger = logging.getLogger("forum.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ConflictError(HTTPException):
    status_code = 409


class UnprocessableError(HTTPException):
    """A well-formed request that breaks a domain rule, with an optional field name."""

    status_code = 422

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        extra = {"errors": [{"field": field, "message": detail}]} if field else None
        super().__init__(detail=detail, extra=extra)


def problem(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    content: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        content["detail"] = detail
    content.update({k: v for k, v in extra.items() if v is not None})
    return Response(content, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


_FIELD_PREFIX = re.compile(r"^([a-z_]+): (.+)$")


def _validation_errors(extra: Any) -> list[dict[str, Any]]:
    """Litestar's ``[{key, message, source}]`` as ``[{field, message, source}]`` with readable messages."""
    errors = []
    for item in extra if isinstance(extra, list) else []:
        if not isinstance(item, dict):
            continue
        field, message = item.get("key"), str(item.get("message") or "")
        if message.endswith("'^[^\\x00]*$'"):
            message = "must not contain NUL characters"
        if match := _FIELD_PREFIX.match(message):  # raised by a schema's own checks (__post_init__)
            field, message = match.group(1), match.group(2)
        errors.append({"field": field, "message": message, "source": item.get("source")})
    return errors


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    headers = dict(exc.headers or {})
    if isinstance(exc, ValidationException):
        errors = _validation_errors(exc.extra)
        if not errors or any(e["field"] is None and "malformed" in str(e["message"]).lower() for e in errors):
            # The body could not be parsed at all: a syntax problem, not a field problem.
            return problem(400, exc.detail or "Malformed request", errors=errors or None)
        return problem(422, "Validation failed", title="Unprocessable Content", errors=errors)
    extra = exc.extra if isinstance(exc.extra, dict) else {}
    if status == 429 and "Retry-After" not in headers:
        headers["Retry-After"] = headers.get("RateLimit-Reset", "60")
    detail = exc.detail if exc.detail and exc.detail != HTTPStatus(status).phrase else None
    return problem(status, detail, headers=headers or None, **extra)


# SQLSTATE classes of a database that is going away or cannot take the work now: 08 connection
# exceptions, 57P01-57P04 admin/crash shutdown, cannot connect now, database dropped; 53 insufficient
# resources (too many connections, disk full, out of memory). 57014 (a statement timeout) is not here.
UNAVAILABLE_SQLSTATES = ("08", "57P", "53")
RETRY_AFTER_SECONDS = "5"


def _causes(exc: BaseException):
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend([getattr(current, "orig", None), current.__cause__, current.__context__])


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything it wraps: advanced-alchemy wraps SQLAlchemy, which wraps asyncpg) says
    the database is unreachable or going away, rather than that the request was wrong."""
    import asyncpg

    for cause in _causes(exc):
        if isinstance(cause, (ConnectionError, PoolTimeoutError)):
            return True
        if isinstance(cause, asyncpg.InterfaceError) and "connection" in str(cause):  # "connection is closed"
            return True
        if isinstance(cause, DBAPIError) and cause.connection_invalidated:
            return True
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(UNAVAILABLE_SQLSTATES):
            return True
    return False


def unavailable() -> Response[Any]:
    return problem(503, "The database is unavailable; try again shortly", headers={"Retry-After": RETRY_AFTER_SECONDS})


def handle_repository_error(request: Request[Any, Any, Any], exc: RepositoryError) -> Response[Any]:
    if database_unavailable(exc):
        logger.warning("database unavailable: %s", exc)
        return unavailable()
    if isinstance(exc, NotFoundError):
        return problem(404, "Not found")
    if isinstance(exc, (DuplicateKeyError, IntegrityError, ForeignKeyError)):
        return problem(409, "This conflicts with existing data")
    logger.exception("repository error", exc_info=exc)
    return problem(500, "Internal error")


def handle_database_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if not (isinstance(exc, (OperationalError, InterfaceError, OSError)) or database_unavailable(exc)):
        return handle_unexpected(request, exc)
    logger.warning("database unavailable: %s", exc)
    return unavailable()


def handle_unreadable_body(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, RecursionError):
        return problem(400, "The request body is nested too deeply")
    return problem(400, "The request body is not valid UTF-8")


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if database_unavailable(exc):
        logger.warning("database unavailable: %s", exc)
        return unavailable()
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "Internal error")


exception_handlers: dict[Any, Any] = {
    HTTPException: handle_http_exception,
    RepositoryError: handle_repository_error,
    OperationalError: handle_database_unavailable,
    InterfaceError: handle_database_unavailable,
    DBAPIError: handle_database_unavailable,
    PoolTimeoutError: handle_database_unavailable,
    ConnectionError: handle_database_unavailable,
    OSError: handle_database_unavailable,
    RecursionError: handle_unreadable_body,
    UnicodeDecodeError: handle_unreadable_body,
    Exception: handle_unexpected,
}


# OpenAPI: every operation may answer these, always as a problem document -----------------------------

PROBLEM_STATUSES = {
    400: "The body could not be read (malformed JSON, not UTF-8, nested too deeply)",
    401: "This needs a logged-in user, or the token is invalid, expired or revoked (detail says which)",
    403: "Logged in, but not allowed to do this",
    404: "Not found, or not visible to you",
    409: "Conflicts with the current state (already exists, already in that state, merged…)",
    413: "The request body is too large",
    422: "Validation failed: see `errors`, one entry per field",
    429: "Too many requests: wait for `Retry-After` seconds",
    503: "The database is unavailable or shutting down: retry after `Retry-After` seconds",
}


def document_problems(openapi: Any) -> None:
    """Declare the problem responses on every operation of a built OpenAPI document, and that reading
    public content needs no token (security: bearer *or* none)."""
    from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Reference, Schema
    from litestar.openapi.spec.enums import OpenAPIType

    components = openapi.components
    components.schemas = dict(components.schemas or {})
    components.schemas["ProblemDetails"] = Schema(
        type=OpenAPIType.OBJECT,
        description="RFC 9457 problem details",
        required=["title", "status"],
        properties={
            "type": Schema(type=OpenAPIType.STRING),
            "title": Schema(type=OpenAPIType.STRING),
            "status": Schema(type=OpenAPIType.INTEGER),
            "detail": Schema(type=OpenAPIType.STRING),
            "errors": Schema(
                type=OpenAPIType.ARRAY,
                items=Schema(
                    type=OpenAPIType.OBJECT,
                    properties={
                        "field": Schema(one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.NULL)]),
                        "message": Schema(type=OpenAPIType.STRING),
                        "source": Schema(one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.NULL)]),
                    },
                ),
            ),
        },
    )
    content = {PROBLEM_MEDIA_TYPE: OpenAPIMediaType(schema=Reference(ref="#/components/schemas/ProblemDetails"))}
    for path_item in (openapi.paths or {}).values():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(path_item, method, None)
            if operation is None:
                continue
            responses = dict(operation.responses or {})
            for status, description in PROBLEM_STATUSES.items():
                responses[str(status)] = OpenAPIResponse(description=description, content=content)
            operation.responses = responses
    if openapi.security:
        openapi.security = [*openapi.security, {}]

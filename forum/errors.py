"""Every error leaves as an RFC 9457 problem document (``application/problem+json``).

- Litestar's request validation errors become 422 with ``errors: [{field, message, source}]``.
- Unparseable bodies stay 400; repository errors map to 404/409; a database that cannot be reached, is
  shutting down or is out of connections is 503 with ``Retry-After`` (``database_unavailable``, whatever
  wrapped the driver's error); anything unexpected is a 500 problem (logged), never an HTML page.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from http import HTTPStatus
from typing import Any, NamedTuple

from advanced_alchemy.exceptions import (
    DuplicateKeyError,
    ForeignKeyError,
    IntegrityError,
    NotFoundError,
    RepositoryError,
)
from litestar import MediaType, Request, Response, get
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from forum.schemas import is_rule_message

logger = logging.getLogger("forum.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "/problems/"
"""Problem ``type`` URIs are relative to the server (RFC 9457 3.1.1): ``/problems/not-found`` and so on.
``GET`` on one answers a short page that explains the kind of error."""


class ProblemType(NamedTuple):
    status: int
    title: str
    """RFC 9110's reason phrase: one spelling everywhere (Python's own differ between versions)."""
    description: str


PROBLEM_TYPES: dict[str, ProblemType] = {
    "bad-request": ProblemType(400, "Bad Request", "The body could not be read: malformed JSON, not UTF-8, too deep."),
    "unauthorized": ProblemType(
        401, "Unauthorized", "Log in first: the token is missing, invalid, expired or revoked (the detail says which)."
    ),
    "forbidden": ProblemType(403, "Forbidden", "You are logged in, but may not do this."),
    "not-found": ProblemType(404, "Not Found", "Nothing is here, or nothing you may see: both answer the same."),
    "method-not-allowed": ProblemType(405, "Method Not Allowed", "The path exists, the method does not: see `Allow`."),
    "conflict": ProblemType(409, "Conflict", "It conflicts with the current state: exists already, in that state."),
    "content-too-large": ProblemType(413, "Content Too Large", "The request body is over `FORUM_MAX_BODY_BYTES`."),
    "unsupported-media-type": ProblemType(
        415, "Unsupported Media Type", "This operation reads JSON: send `Content-Type: application/json`."
    ),
    "validation": ProblemType(
        422, "Unprocessable Content", "The request does not match the schema: `errors` names each field and its source."
    ),
    "domain-rule": ProblemType(
        422,
        "Unprocessable Content",
        "The request matches the schema but breaks a rule of the forum (merging a post into itself, linking an "
        "idea as a critique, a wrong current password...): `errors` names the field.",
    ),
    "rate-limited": ProblemType(429, "Too Many Requests", "Too many requests from your address: wait `Retry-After`."),
    "internal": ProblemType(500, "Internal Server Error", "An unexpected error; it was logged."),
    "unavailable": ProblemType(
        503, "Service Unavailable", "The database is unavailable or shutting down: retry after `Retry-After`."
    ),
}
TYPE_OF_STATUS = {kind.status: slug for slug, kind in reversed(PROBLEM_TYPES.items())}
"""The type a status gets unless the error says otherwise (422 is ``validation`` unless a domain rule)."""


class ConflictError(HTTPException):
    status_code = 409


class UnprocessableError(HTTPException):
    """A well-formed request that breaks a domain rule, with an optional field name."""

    status_code = 422
    problem_type = "domain-rule"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        extra = {"errors": [{"field": field, "message": detail}]} if field else None
        super().__init__(detail=detail, extra=extra)


def problem(
    status: int,
    detail: str | None = None,
    *,
    problem_type: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    slug = problem_type or TYPE_OF_STATUS.get(status)
    kind = PROBLEM_TYPES.get(slug or "")
    content: dict[str, Any] = {
        "type": PROBLEM_BASE + slug if kind else "about:blank",
        "title": kind.title if kind else HTTPStatus(status).phrase,
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
        if all(is_rule_message(str(e["message"])) for e in errors):
            return problem(422, "A rule the schema cannot state", problem_type="domain-rule", errors=errors)
        return problem(422, "Validation failed", errors=errors)
    extra = exc.extra if isinstance(exc.extra, dict) else {}
    if status == 429 and "Retry-After" not in headers:
        headers["Retry-After"] = headers.get("RateLimit-Reset", "60")
    detail = exc.detail if exc.detail and exc.detail != HTTPStatus(status).phrase else None
    problem_type = getattr(exc, "problem_type", None)
    return problem(status, detail, problem_type=problem_type, headers=headers or None, **extra)


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


def _connection_gone(cause: BaseException) -> bool:
    """The connection itself is dead: a socket error, asyncpg's "connection is closed" (or "does not
    exist"), or a connection exception / admin or crash shutdown from the server (SQLSTATE 08, 57P)."""
    import asyncpg

    if isinstance(cause, ConnectionError):
        return True
    if isinstance(cause, asyncpg.InterfaceError) and "connection" in str(cause):
        return True
    sqlstate = getattr(cause, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(("08", "57P"))


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything it wraps: advanced-alchemy wraps SQLAlchemy, which wraps asyncpg) says
    the database is unreachable or going away, rather than that the request was wrong."""
    for cause in _causes(exc):
        if _connection_gone(cause) or isinstance(cause, PoolTimeoutError):
            return True
        if isinstance(cause, DBAPIError) and cause.connection_invalidated:
            return True
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(UNAVAILABLE_SQLSTATES):
            return True
    return False


# A concurrent transaction won: PostgreSQL aborted this one to break a deadlock (40P01) or because a
# serializable snapshot could not hold (40001). Nothing was written; the same request can simply be sent again.
COLLISION_SQLSTATES = ("40P01", "40001")


def collided(exc: BaseException) -> bool:
    return any(getattr(cause, "sqlstate", None) in COLLISION_SQLSTATES for cause in _causes(exc))


def _collision(request: Request[Any, Any, Any], exc: BaseException) -> Response[Any]:
    logger.warning("concurrent change on %s %s: %s", request.method, request.url.path, exc)
    return problem(
        409,
        "This change met a concurrent change of the same data and was not made; send it again",
        headers={"Retry-After": "1"},
    )


def unavailable() -> Response[Any]:
    return problem(503, "The database is unavailable; try again shortly", headers={"Retry-After": RETRY_AFTER_SECONDS})


def _lost_outside_sqlalchemy(exc: BaseException) -> bool:
    """A connection found dead by a statement run on the driver itself (forum/driver.py: votes, the light
    user, as-you-type): SQLAlchemy never saw the error, so it did not discard the pool's other connections,
    which the database dropped too, as it does for its own statements."""
    causes = list(_causes(exc))
    if any(isinstance(cause, DBAPIError) and cause.connection_invalidated for cause in causes):
        return False  # SQLAlchemy saw it, and invalidated what it had to
    return any(_connection_gone(cause) for cause in causes)


_disposing: set[asyncio.Task[None]] = set()


def _unavailable_for(request: Request[Any, Any, Any], exc: BaseException) -> Response[Any]:
    logger.warning("database unavailable: %s", exc)
    alchemy = request.app.state.get("forum_alchemy_config")
    if alchemy is not None and _lost_outside_sqlalchemy(exc):
        # A new pool for the next requests. The old one's connections are left to be dropped, not closed
        # now: one may still be in a request's cleanup, and closing it under that would fail the request.
        task = asyncio.get_running_loop().create_task(alchemy.get_engine().dispose(close=False))
        _disposing.add(task)
        task.add_done_callback(_disposing.discard)
    return unavailable()


def handle_repository_error(request: Request[Any, Any, Any], exc: RepositoryError) -> Response[Any]:
    if collided(exc):
        return _collision(request, exc)
    if database_unavailable(exc):
        return _unavailable_for(request, exc)
    if isinstance(exc, NotFoundError):
        return problem(404, "Not found")
    if isinstance(exc, (DuplicateKeyError, IntegrityError, ForeignKeyError)):
        return problem(409, "This conflicts with existing data")
    logger.exception("repository error", exc_info=exc)
    return problem(500, "Internal error")


def handle_database_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if collided(exc):
        return _collision(request, exc)
    if not (isinstance(exc, (OperationalError, InterfaceError, OSError)) or database_unavailable(exc)):
        return handle_unexpected(request, exc)
    return _unavailable_for(request, exc)


def handle_unreadable_body(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, RecursionError):
        return problem(400, "The request body is nested too deeply")
    return problem(400, "The request body is not valid UTF-8")


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if collided(exc):  # the vote path's driver statements raise asyncpg's own errors
        return _collision(request, exc)
    if database_unavailable(exc):
        return _unavailable_for(request, exc)
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


# The page behind each problem type URI ---------------------------------------------------------------


@get("/problems/{slug:str}", include_in_schema=False, exclude_from_auth=True, media_type=MediaType.HTML)
async def problem_page(slug: str) -> str:
    """What ``type: /problems/<slug>`` means, for a person who follows the link."""
    kind = PROBLEM_TYPES.get(slug)
    if kind is None:
        raise NotFoundException("No such problem type")
    return (
        f"<!doctype html><title>{kind.title}</title><h1>{kind.status} {kind.title}</h1>"
        f"<p>{html.escape(kind.description)}</p><p>Answered as <code>{PROBLEM_MEDIA_TYPE}</code> "
        f"(RFC 9457) with <code>type: {PROBLEM_BASE}{slug}</code>.</p>"
    )


# OpenAPI: every operation may answer these, always as a problem document -----------------------------

EVERY_OPERATION = (400, 401, 403, 404, 409, 413, 422, 429, 503)
BODY_OPERATIONS = (415,)
"""Only operations that read a JSON body answer 415."""


def _described(status: int) -> str:
    return " Or: ".join(
        f"`{PROBLEM_BASE}{slug}`: {k.description}" for slug, k in PROBLEM_TYPES.items() if k.status == status
    )


def document_problems(openapi: Any) -> None:
    """Declare the problem responses on every operation of a built OpenAPI document, and that reading
    public content needs no token (security: bearer *or* none)."""
    from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Reference, Schema
    from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType

    nullable_string = Schema(one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.NULL)])
    components = openapi.components
    components.schemas = dict(components.schemas or {})
    components.schemas["ProblemDetails"] = Schema(
        type=OpenAPIType.OBJECT,
        description="RFC 9457 problem details",
        required=["type", "title", "status"],
        properties={
            "type": Schema(
                type=OpenAPIType.STRING,
                format=OpenAPIFormat.URI_REFERENCE,
                description="The kind of error, e.g. `/problems/not-found`: a page at this URI (relative to the "
                "server) explains it. The list is in the README.",
            ),
            "title": Schema(type=OpenAPIType.STRING, description="One spelling per type (RFC 9110 reason phrases)"),
            "status": Schema(type=OpenAPIType.INTEGER, minimum=400, maximum=599),
            "detail": Schema(type=OpenAPIType.STRING),
            "errors": Schema(
                type=OpenAPIType.ARRAY,
                items=Schema(
                    type=OpenAPIType.OBJECT,
                    properties={
                        "field": nullable_string,
                        "message": Schema(type=OpenAPIType.STRING),
                        "source": nullable_string,
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
            statuses = EVERY_OPERATION + (BODY_OPERATIONS if operation.request_body else ())
            for status in statuses:
                responses[str(status)] = OpenAPIResponse(description=_described(status), content=content)
            operation.responses = responses
    if openapi.security:
        openapi.security = [*openapi.security, {}]

"""HTTP conventions every controller shares: ``201`` with ``Location``; JSON request bodies only (anything
else is ``415``); and only the query parameters an operation declares (any other is ``422``)."""

from __future__ import annotations

from typing import Any, TypeVar

from litestar import Litestar, Request, Response
from litestar.datastructures import ResponseHeader
from litestar.exceptions import HTTPException, ValidationException
from litestar.routes import HTTPRoute

T = TypeVar("T")

JSON_MEDIA_TYPE = "application/json"

LOCATION = ResponseHeader(
    name="Location", description="The URL of the created resource", documentation_only=True, required=True
)
"""Declare it on every handler that answers ``201`` (``response_headers=[LOCATION]``)."""


def created(content: T, location: str) -> Response[T]:
    """A ``201 Created`` answer naming the new resource in ``Location``."""
    return Response(content, status_code=201, headers={"Location": location})


class UnsupportedMediaTypeError(HTTPException):
    status_code = 415


def takes_json_body(route_handler: Any) -> bool:
    return "data" in route_handler.parsed_fn_signature.parameters


def declared_query_parameters(app: Litestar) -> dict[int, frozenset[str]]:
    """The query parameters each documented operation reads, by ``id`` of its handler."""
    return {
        id(handler): frozenset(parameter.field_alias for parameter in kwargs_model.expected_query_params)
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for handler, kwargs_model in route.route_handler_map.values()
        if handler.resolve_include_in_schema()  # the handler, its controller or router (page routes are not)
    }


async def check_request(request: Request[Any, Any, Any]) -> None:
    """A ``before_request`` hook, so the checks come before any parsing (never a misleading ``400``):

    - a query parameter the operation does not declare is ``422``, as an unknown body field is;
    - an operation that reads a JSON body refuses a body of another media type, or one sent without
      ``Content-Type``, with ``415``."""
    declared = request.app.state.get("forum_query_parameters", {}).get(id(request.route_handler))
    if declared is not None and (unknown := sorted(set(request.query_params) - declared)):
        raise ValidationException(
            detail="Unknown query parameter",
            extra=[
                {"key": name, "message": "not a parameter of this operation", "source": "query"} for name in unknown
            ],
        )
    if not takes_json_body(request.route_handler):
        return
    headers = request.headers
    if headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers:
        return  # no body: the handler's own validation answers
    media_type = request.content_type[0].lower()
    if media_type != JSON_MEDIA_TYPE and not (media_type.startswith("application/") and media_type.endswith("+json")):
        sent = f"Content-Type {media_type!r}" if media_type else "no Content-Type"
        accept = {"POST": "Accept-Post", "PATCH": "Accept-Patch"}.get(request.method)  # RFC 9110 15.5.16
        raise UnsupportedMediaTypeError(
            detail=f"This operation reads a JSON body: send it with Content-Type: application/json ({sent} given)",
            headers={accept: JSON_MEDIA_TYPE} if accept else None,
        )

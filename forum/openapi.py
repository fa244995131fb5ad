"""The OpenAPI description, readable in generated clients, and its interactive page at ``/schema``, offline.

- Operation ids are camelCase handler names, and pages are named after what they hold (``PostPage``, not
  ``Page_forum.posts.schemas.PostOut_``).
- Swagger UI's files are vendored, pinned and unmodified, under ``forum/web/static/swagger-ui/``
  (swagger-ui-dist 5.18.2, Apache-2.0, its LICENSE and NOTICE beside them) and served by the app, so the
  page works without internet access. Only Swagger UI: Scalar's standalone bundle is 4.8 MB (Swagger UI's
  three files are 1.8 MB) and it fetches its fonts from its own CDN.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, OpenAPI, Reference, SecurityScheme
from litestar.static_files import create_static_files_router

from forum import __version__

SCHEMA_REF = "#/components/schemas/"
_GENERIC_PAGE = re.compile(r"^Page_(?:\w+\.)*(\w+)_$")


def operation_id(route_handler: Any, http_method: Any, path_components: Any) -> str:
    """The handler's name in camelCase: ``list_posts`` is ``listPosts``, ``vote_post`` is ``votePost``.
    Handler names are unique across controllers (tests/test_api_shape.py checks it)."""
    first, *rest = route_handler.handler_name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def page_name(item_schema: str) -> str:
    return item_schema.removesuffix("Out") + "Page"


def name_pages(openapi: OpenAPI) -> None:
    """Rename the components of ``Page[X]`` to ``XPage`` and every reference to them."""
    schemas = openapi.components.schemas or {}
    renames = {name: page_name(m.group(1)) for name in schemas if (m := _GENERIC_PAGE.match(name))}
    if not renames:
        return
    openapi.components.schemas = {renames.get(name, name): schema for name, schema in schemas.items()}
    for new in renames.values():
        openapi.components.schemas[new].title = new  # generated clients name their classes after it
    refs = {SCHEMA_REF + old: SCHEMA_REF + new for old, new in renames.items()}
    _rewrite_refs(openapi, refs, set())


def _rewrite_refs(node: Any, refs: dict[str, str], seen: set[int]) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, Reference):
        node.ref = refs.get(node.ref, node.ref)
    elif dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            _rewrite_refs(getattr(node, f.name), refs, seen)
    elif isinstance(node, dict):
        for value in node.values():
            _rewrite_refs(value, refs, seen)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _rewrite_refs(value, refs, seen)


def exact_request_bodies(openapi: OpenAPI, route_handlers: Iterable[Any]) -> None:
    """Describe each JSON request body with msgspec's own schema of the struct that decodes it: it states
    exactly what is enforced (``additionalProperties: false`` for ``forbid_unknown_fields``, the constraints
    of list items, ``extra_json_schema`` such as trimmed lengths), which Litestar's generator leaves out."""
    bodies = sorted(
        {
            struct
            for handler in route_handlers
            if (field := handler.parsed_fn_signature.parameters.get("data")) is not None
            and (struct := _body_struct(field.annotation)) is not None
        },
        key=lambda struct: struct.__name__,
    )
    _optional_bodies(openapi)
    schemas = openapi.components.schemas
    _, exact = msgspec.json.schema_components(bodies, ref_template=SCHEMA_REF + "{name}")
    for struct in bodies:
        name = struct.__name__
        if name not in schemas:
            raise LookupError(f"request body {name} is not a component of the OpenAPI document")
        schemas[name] = exact[name]
    for name in _nested_structs(bodies):  # a struct inside a body (``on_behalf``) is enforced exactly too
        schemas[name] = exact[name]
    missing = {ref for name in exact for ref in _refs(exact[name])} - set(schemas)
    if missing:
        raise LookupError(f"request bodies refer to schemas the document does not have: {sorted(missing)}")


def _nested_structs(bodies: list[type[msgspec.Struct]]) -> set[str]:
    """Names of the structs that request bodies hold in their fields (not the bodies themselves)."""
    found: set[str] = set()
    todo = list(bodies)
    while todo:
        for field in msgspec.structs.fields(todo.pop()):
            for member in getattr(field.type, "__args__", (field.type,)):
                if isinstance(member, type) and issubclass(member, msgspec.Struct) and member.__name__ not in found:
                    found.add(member.__name__)
                    todo.append(member)
    return found - {body.__name__ for body in bodies}


def _body_struct(annotation: Any) -> type[msgspec.Struct] | None:
    """The struct a body decodes to: ``X`` or, for an optional body (``X | None``), ``X``."""
    members = [a for a in getattr(annotation, "__args__", (annotation,)) if a is not type(None)]
    if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], msgspec.Struct):
        return members[0]
    return None


def _optional_bodies(openapi: OpenAPI) -> None:
    """An optional body (``data: X | None = None``, e.g. a vote that may name a customer) is ``X`` and not
    required, rather than Litestar's required ``oneOf [X, null]`` (a JSON ``null`` body is not accepted)."""
    for item in (openapi.paths or {}).values():
        for method in ("post", "put", "patch"):
            body = getattr(getattr(item, method, None), "request_body", None)
            media = body.content.get("application/json") if body is not None and body.content else None
            choices = getattr(media.schema, "one_of", None) if media is not None else None
            if choices and len(choices) == 2 and isinstance(choices[0], Reference):
                if getattr(getattr(choices[1], "type", None), "value", None) == "null":
                    media.schema = choices[0]
                    body.required = False


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(ref := node.get("$ref"), str):
            yield ref.removeprefix(SCHEMA_REF)
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


SWAGGER_UI_VERSION = "5.18.2"
SWAGGER_UI_DIR = Path(__file__).parent / "web" / "static" / "swagger-ui"
ASSETS_PATH = "/schema/assets"


def build_openapi_config() -> OpenAPIConfig:
    swagger = SwaggerRenderPlugin(
        version=SWAGGER_UI_VERSION,
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
        path=["/", "/swagger"],
    )
    return OpenAPIConfig(
        title="forum",
        version=__version__,
        description="Ideas, critiques, votes and comments from customers and employees.",
        path="/schema",
        operation_id_creator=operation_id,
        render_plugins=[swagger],
        components=Components(
            security_schemes={"BearerToken": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")}
        ),
    )


schema_assets = create_static_files_router(
    path=ASSETS_PATH,
    directories=[SWAGGER_UI_DIR],
    name="schema_assets",
    include_in_schema=False,
)

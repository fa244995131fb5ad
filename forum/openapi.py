"""The OpenAPI description and its interactive page at ``/schema``, served offline.

Swagger UI's files are vendored, pinned and unmodified, under ``forum/web/static/swagger-ui/``
(swagger-ui-dist 5.18.2, Apache-2.0, its LICENSE and NOTICE beside them) and served by the app, so
the page works without internet access. Only Swagger UI: Scalar's standalone bundle is 4.8 MB (Swagger
UI's three files are 1.8 MB) and it fetches its fonts from its own CDN.
"""

from __future__ import annotations

from pathlib import Path

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router

from forum import __version__

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

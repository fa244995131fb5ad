"""The web front end, plugged into the app in one place: templates, static files, languages, CSRF, the
page routes and HTML error pages for them (the API keeps its problem documents)."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar.config.app import AppConfig
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import MutableScopeHeaders
from litestar.middleware.session.client_side import CookieBackendConfig
from litestar.plugins import InitPluginProtocol
from litestar.plugins.flash import FlashConfig, FlashPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import Message, Scope

from forum.posts.services import ACTIVE_STATUSES
from forum.web import i18n
from forum.web.controllers import PAGE_CONTROLLERS
from forum.web.errors import html_for_pages

WEB_DIR = Path(__file__).parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"
CSRF_COOKIE = "forum_csrf"
FLASH_COOKIE = "forum_flash"
NOT_PAGES = ("/api/", "/schema", "/health", "/static/")
"""Paths that are not pages: no CSRF (the API authenticates with bearer tokens, never the cookie)."""


PAGE_HEADERS = {
    # Only this site's own files run or style a page: an injected <script> or style would not load.
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'self'; object-src 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def is_page_path(path: str) -> bool:
    return not any(path == prefix.rstrip("/") or path.startswith(prefix) for prefix in NOT_PAGES)


async def page_security_headers(message: Message, scope: Scope) -> None:
    if message["type"] == "http.response.start" and is_page_path(scope["path"]):
        headers = MutableScopeHeaders.from_message(message)
        for name, value in PAGE_HEADERS.items():
            headers[name] = value


def template_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_callables(gettext=i18n.gettext, ngettext=i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.filters.update(
        date=i18n.local_date,
        datetime=i18n.local_datetime,
        number=i18n.local_number,
        language_name=i18n.language_name,
    )
    env.globals.update(
        current_locale=i18n.current_locale,
        LOCALES=i18n.LOCALES,
        LANGUAGE_NAMES=i18n.LANGUAGE_NAMES,
        VOTING_STATUSES=ACTIVE_STATUSES,  # shipped, declined, addressed and merged posts take no votes
    )
    return env


class WebPlugin(InitPluginProtocol):
    """``forum serve`` answers ``/`` with the portal; everything it needs ships in this package."""

    def __init__(self, secret: str) -> None:
        # A key of its own for CSRF tokens, derived from the app secret (one secret to configure).
        self.csrf_secret = hmac.new(secret.encode(), b"forum-csrf", hashlib.sha256).hexdigest()
        self.flash_key = hmac.new(secret.encode(), b"forum-flash", hashlib.sha256).digest()  # AES-256-GCM

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.template_config = TemplateConfig(
            instance=JinjaTemplateEngine.from_environment(template_environment())
        )
        # Flash messages ("Thank you for your answer!") live in an encrypted cookie from a form's redirect
        # to the next page that shows them; an empty session sets no cookie (and clears an old one).
        session = CookieBackendConfig(
            secret=self.flash_key,
            key=FLASH_COOKIE,
            max_age=600,
            exclude=[f"^{prefix}" for prefix in NOT_PAGES],
        )
        app_config.middleware.append(session.middleware)
        app_config = FlashPlugin(FlashConfig(template_config=app_config.template_config)).on_app_init(app_config)
        app_config.csrf_config = CSRFConfig(
            secret=self.csrf_secret,
            cookie_name=CSRF_COOKIE,
            cookie_httponly=True,
            cookie_samesite="lax",
            # The unsubscribe link is signed, and mail clients POST it with no cookie at all (RFC 8058).
            exclude=[*(f"^{prefix}" for prefix in NOT_PAGES), "^/email/unsubscribe/"],
        )
        app_config.route_handlers.extend(
            [
                *PAGE_CONTROLLERS,
                create_static_files_router(
                    path="/static", directories=[STATIC_DIR], name="static", include_in_schema=False
                ),
            ]
        )
        app_config.middleware.append(i18n.LocaleMiddleware())
        app_config.before_send.append(page_security_headers)
        app_config.exception_handlers = html_for_pages(app_config.exception_handlers, is_page_path)
        return app_config

"""The pages' languages: gettext catalogs (``locale/<lang>/LC_MESSAGES/messages.po``) and Babel formats.

The reader's language is the ``forum_lang`` cookie (set by the switch in the header), else the best match
of ``Accept-Language``, else English. It is held in a context variable for the request, so templates
(``{% trans %}``, ``_()``), filters (``date``, ``number``) and Python code (``gettext``) all agree.

The ``.po`` catalogs are compiled in memory the first time a language is used: nothing to build at install
time, and a catalog can never be stale. After adding texts::

    pybabel extract -F forum/web/babel.cfg -k _ -k gettext -k ngettext:1,2 -o /tmp/messages.pot .
    pybabel update -i /tmp/messages.pot -d forum/web/locale --no-fuzzy-matching

then write the Spanish in ``locale/es/LC_MESSAGES/messages.po`` (``tests/test_web_i18n.py`` lists any
text still missing it).
"""

from __future__ import annotations

import io
from contextvars import ContextVar
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import Translations
from litestar.connection import ASGIConnection
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

LOCALES = ("en", "es")
DEFAULT_LOCALE = "en"
LANG_COOKIE = "forum_lang"
LANGUAGE_NAMES = {"en": "English", "es": "Español"}
LOCALE_DIR = Path(__file__).parent / "locale"

_current: ContextVar[str] = ContextVar("forum_locale", default=DEFAULT_LOCALE)


@cache
def translations(locale: str) -> Translations:
    path = LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=locale)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain="messages")


def current_locale() -> str:
    return _current.get()


def activate(locale: str) -> None:
    _current.set(locale if locale in LOCALES else DEFAULT_LOCALE)


def gettext(message: str) -> str:
    return translations(_current.get()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(_current.get()).ngettext(singular, plural, n)


def _accepted(header: str) -> list[str]:
    """Language tags of an ``Accept-Language`` header, best first (``es-MX;q=0.8`` → ``es``)."""
    weighted = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            weighted.append((-quality, position, tag.split("-")[0].lower()))
    return [tag for _, _, tag in sorted(weighted)]


def negotiate(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LOCALES:
        return cookie
    for tag in _accepted(accept_language or ""):
        if tag in LOCALES:
            return tag
    return DEFAULT_LOCALE


def locale_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    return negotiate(connection.cookies.get(LANG_COOKIE), connection.headers.get("accept-language"))


class LocaleMiddleware(ASGIMiddleware):
    """Choose the request's language before any page code runs."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        activate(locale_of(ASGIConnection(scope)))
        await next_app(scope, receive, send)


# Formats for templates -------------------------------------------------------------------------------


def local_date(value: date | datetime | None, format: str = "medium") -> str:
    return format_date(value, format=format, locale=_current.get()) if value else ""


def local_datetime(value: datetime | None, format: str = "medium") -> str:
    return format_datetime(value, format=format, locale=_current.get()) if value else ""


def local_number(value: float | int | None) -> str:
    return format_decimal(value or 0, locale=_current.get())


def language_name(code: str | None) -> str:
    """A post's detected language, named in the reader's language (``es`` → "Spanish" / "español")."""
    if not code or code == "und":
        return gettext("Unknown language")
    try:
        return Locale.parse(code).get_display_name(_current.get()) or code
    except (ValueError, LookupError):
        return code

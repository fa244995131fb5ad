"""Error pages that look like the site, for page routes only.

The app's exception handlers still decide the status (404 for an invisible post, 409, 503 …) and log
what must be logged; on a page route their answer is replaced by an HTML page with that status. A page
that needs a login sends the browser to the login form instead of answering 401.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.response import Redirect, Template

from forum.web import i18n
from forum.web.views import Nav

ExceptionHandler = Callable[[Request[Any, Any, Any], Exception], Response[Any]]


def error_page(request: Request[Any, Any, Any], status: int) -> Response[Any]:
    if status == 401:
        target = request.url.path if request.method == "GET" else "/"
        return Redirect(f"/login?next={quote(target)}", status_code=303)
    template = "404.html" if status == 404 else "500.html" if status >= 500 else "error.html"
    context = {"status": status, "nav": Nav(user=request.scope.get("user"))}  # no query in an error handler
    return Template(template_name=template, context=context, status_code=status)


def html_for_pages(handlers: dict[Any, Any], is_page: Callable[[str], bool]) -> dict[Any, Any]:
    """Wrap every exception handler: the same status, as a page, when the request was for a page."""

    def wrap(handler: ExceptionHandler) -> ExceptionHandler:
        def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
            response = handler(request, exc)
            if not is_page(request.url.path):
                return response
            i18n.activate(i18n.locale_of(request))  # unknown paths never reach the locale middleware
            if request.headers.get("hx-request"):  # an in-place update failed: say so where it happened
                return Template(
                    template_name="_error_fragment.html",
                    context={"status": response.status_code},
                    status_code=response.status_code,
                )
            return error_page(request, response.status_code)

        return handle

    return {key: wrap(handler) for key, handler in handlers.items()}

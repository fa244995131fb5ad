"""Browser tests: ONE real ``forum serve`` with the demo loaded and ONE Debian chromium, for the session.

The server runs the real default model on a fresh data dir, with rate limits off (every test signs in
from 127.0.0.1). Playwright cannot download its own browser here: it drives ``/usr/bin/chromium``
(``FORUM_TEST_CHROMIUM`` to use another). Without it the tests skip, except in CI (``CI=true``, set by
``.ci/run``, which installs chromium first) where a missing browser is a failure.

Each test gets fresh browser contexts (cookies, language) from ``open_page``; signing in happens once
per user and the session cookie is reused (``storage_state``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.site import CHROMIUM_ARGS, Api, demo_site, sign_in
from tests.e2e import Server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run last: while the shared browser is open, Playwright's sync API keeps an event loop
    running in the main thread, and the other tests start loops of their own (``asyncio.run``)."""
    here = Path(__file__).parent
    items.sort(key=lambda item: item.path.is_relative_to(here))  # stable: each group keeps its order


def _chromium() -> str:
    path = os.environ.get("FORUM_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if Path(path).exists():
        return path
    reason = f"no chromium at {path}: apt-get install -y chromium (or set FORUM_TEST_CHROMIUM)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real server, demo loaded (and embedded, so clusters exist), shared by every browser test."""
    _chromium()  # skip or fail before paying for the server
    with demo_site(tmp_path_factory.mktemp("browser-site")) as server:
        yield server


@pytest.fixture(scope="session")
def browser(site: Server) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def _signed_in(browser: Any, site: Server) -> dict[str, Any]:
    """Storage state (the session cookie) per email, filled on first use by ``open_page``."""
    return {}


@pytest.fixture
def open_page(browser: Any, site: Server, _signed_in: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    """``open_page(as_=email or None, lang="en", width=1280, js=True)`` → a page in a fresh browser context."""
    contexts: list[Any] = []

    def open_(as_: str | None = None, lang: str = "en", width: int = 1280, height: int = 900, js: bool = True) -> Any:
        options: dict[str, Any] = dict(
            base_url=site.url,
            java_script_enabled=js,
            locale=lang,
            extra_http_headers={"Accept-Language": lang},
            viewport={"width": width, "height": height},
        )
        if as_ is not None and as_ in _signed_in:
            options["storage_state"] = _signed_in[as_]
        context = browser.new_context(**options)
        context.set_default_timeout(20_000)  # two shared cores
        contexts.append(context)
        page = context.new_page()
        if as_ is not None and as_ not in _signed_in:
            sign_in(page, as_)
            _signed_in[as_] = context.storage_state()
        return page

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def api(site: Server) -> Iterator[Api]:
    client = Api(site.url)
    yield client
    client.client.close()

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

import httpx
import pytest

from tests.e2e import Server, forum_cli, free_port, stop_leftover_postgres

DEMO_PASSWORD = "demo-password"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PRODUCT = "ana.torres@example.com"  # demo product team (internal)
EMPLOYEE = "laura.mendez@example.com"  # demo internal member
CUSTOMER = "sarah.mitchell@example.com"  # demo external member


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
    root = tmp_path_factory.mktemp("browser-site")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORUM_")}
    env.update(FORUM_DATA_DIR=str(root / "forum-data"), FORUM_RATE_LIMIT_ENABLED="false")
    loaded = forum_cli("demo", "load", "--password", DEMO_PASSWORD, env=env)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    server = Server(env, free_port(), root / "server.log")
    server.start()
    # The models load in the background at start-up: wait for them, so no page waits on them.
    warm = httpx.post(f"{server.url}/api/posts/similar", json={"title": "warm up"}, timeout=300)
    assert warm.status_code == 200, warm.text
    yield server
    if server.proc and server.proc.poll() is None:
        server.stop()
    stop_leftover_postgres(Path(env["FORUM_DATA_DIR"]))


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


def sign_in(page: Any, email: str, password: str = DEMO_PASSWORD) -> None:
    """Through the real login form, like a person."""
    page.goto("/login")
    page.locator("#email").fill(email)
    page.locator("#password").fill(password)
    page.get_by_test_id("login-submit").click()
    page.wait_for_load_state()
    assert "/login" not in page.url, f"login as {email} failed: {page.url}"


@pytest.fixture
def open_page(browser: Any, site: Server, _signed_in: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    """``open_page(as_=email or None, lang="en", width=1280)`` → a page in a fresh browser context."""
    contexts: list[Any] = []

    def open_(as_: str | None = None, lang: str = "en", width: int = 1280, height: int = 900) -> Any:
        options: dict[str, Any] = dict(
            base_url=site.url,
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


class Api:
    """The JSON API of the same server, to look things up and check what a page did (never to act)."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=15)
        self.tokens: dict[str, dict[str, str]] = {}

    def auth(self, email: str) -> dict[str, str]:
        if email not in self.tokens:
            r = self.client.post("/api/auth/login", json={"email": email, "password": DEMO_PASSWORD})
            assert r.status_code == 200, r.text
            self.tokens[email] = {"Authorization": f"Bearer {r.json()['access_token']}"}
        return self.tokens[email]

    def get(self, path: str, as_: str | None = PRODUCT, **params: Any) -> Any:
        r = self.client.get(path, params=params, headers=self.auth(as_) if as_ else {})
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def post_titled(self, title: str, as_: str | None = PRODUCT) -> dict[str, Any]:
        """The post with exactly this title (what the demo or a test wrote)."""
        items = self.get("/api/posts", as_=as_, q=title, limit=20, sort="relevance")["items"]
        found = [p for p in items if p["title"] == title]
        assert found, f"no post titled {title!r}"
        return found[0]


@pytest.fixture(scope="session")
def api(site: Server) -> Iterator[Api]:
    client = Api(site.url)
    yield client
    client.client.close()

"""The real server with the demo loaded, and what drives it: for the browser tests and the screenshots."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

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
ANY_STATUS = ["open", "under_review", "planned", "in_progress", "shipped", "declined", "duplicate", "addressed"]


@contextmanager
def demo_site(root: Path) -> Iterator[Server]:
    """``forum demo load`` (embedded and grouped by the default model) then ``forum serve``, rate limits off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORUM_")}
    env.update(FORUM_DATA_DIR=str(root / "forum-data"), FORUM_RATE_LIMIT_ENABLED="false")
    loaded = forum_cli("demo", "load", "--password", DEMO_PASSWORD, env=env)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    server = Server(env, free_port(), root / "server.log")
    try:
        server.start()
        # The models load in the background at start-up: wait for them, so no page waits on them.
        warm = httpx.post(f"{server.url}/api/posts/similar", json={"title": "warm up"}, timeout=300)
        assert warm.status_code == 200, warm.text
        yield server
    finally:
        if server.proc and server.proc.poll() is None:
            server.stop()
        stop_leftover_postgres(Path(env["FORUM_DATA_DIR"]))


def sign_in(page: Any, email: str, password: str = DEMO_PASSWORD) -> None:
    """Through the real login form, like a person."""
    page.goto("/login")
    page.locator("#email").fill(email)
    page.locator("#password").fill(password)
    page.get_by_test_id("login-submit").click()
    page.wait_for_load_state()
    assert "/login" not in page.url, f"login as {email} failed: {page.url}"


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
        """The post with exactly this title (what the demo or a test wrote), in any status: without one
        the API lists live posts only."""
        items = self.get("/api/posts", as_=as_, q=title, limit=20, sort="relevance", status=ANY_STATUS)["items"]
        found = [p for p in items if p["title"] == title]
        assert found, f"no post titled {title!r}"
        return found[0]

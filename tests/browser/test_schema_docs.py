"""The API's docs page renders in a real browser with nothing fetched from another host."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


def test_schema_page_renders_offline(open_page: Any) -> None:
    page = open_page()
    hosts: set[str] = set()
    page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc))
    page.goto("/schema")
    page.locator(".swagger-ui .info .title").wait_for()
    assert "forum" in page.locator(".swagger-ui .info .title").inner_text()
    page.locator(".opblock-tag", has_text="posts").first.wait_for()
    assert hosts == {urlsplit(page.url).netloc}, hosts

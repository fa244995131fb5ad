"""The product team runs the board in a real browser: hiding a customer's spam (htmx, then what the customer
sees), the tags page with its colour picker, and the new pages' layout at desktop and phone widths."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.browser.site import CUSTOMER, PRODUCT, Api


def test_product_team_hides_spam_and_the_customer_no_longer_sees_it(open_page: Any, api: Api) -> None:
    title = f"Cheap watches at wholesale prices {uuid.uuid4().hex[:6]}"
    customer = open_page(CUSTOMER)
    customer.goto("/new")
    customer.get_by_test_id("compose-title").fill(title)
    customer.get_by_test_id("compose-body").fill("Visit my shop now")
    customer.get_by_test_id("compose-submit").click()
    assert customer.get_by_test_id("post-title").inner_text() == title
    post_id = customer.get_by_test_id("post").get_attribute("data-post-id")
    assert customer.get_by_test_id("hide").count() == 0

    staff = open_page(PRODUCT)
    staff.goto(f"/posts/{post_id}")
    staff.get_by_test_id("hide").click()  # htmx swaps the moderation panel in place
    staff.get_by_test_id("moderation-done").wait_for()
    assert staff.get_by_test_id("hidden-banner").is_visible()
    assert staff.get_by_test_id("unhide").is_visible()
    assert api.get(f"/api/posts/{post_id}")["hidden"] is True

    customer.goto(f"/posts/{post_id}")
    assert customer.get_by_test_id("error-404").is_visible()
    assert title not in customer.content()
    customer.goto("/?sort=new")
    assert title not in customer.get_by_test_id("post-list").inner_text()


@pytest.mark.parametrize("width", [1280, 375])
def test_board_pages_fit_desktop_and_phone(open_page: Any, api: Api, width: int, tmp_path_factory: Any) -> None:
    """The tags page (with a managed tag painting its chips), a post page as staff and the desk's export
    section: nothing wider than the screen. Screenshots are kept in the test's temp dir to look at."""
    shots = Path(tmp_path_factory.mktemp(f"board-shots-{width}"))
    page = open_page(PRODUCT, width=width, height=900)
    page.goto("/tags")
    tagged = next(p for p in api.get("/api/posts", limit=50)["items"] if p["tags"])
    name = tagged["tags"][0]
    if not any(t["name"] == name for t in api.get("/api/tags")["items"]):
        page.get_by_test_id("tag-name").fill(name)
        page.get_by_test_id("tag-colour").fill("#ffd33d")
        page.get_by_test_id("tag-description").fill("Painted by the browser test")
        page.get_by_test_id("tag-create").click()
        page.get_by_test_id("flash").wait_for()
    assert page.get_by_test_id("tag-row").count() >= 1
    pages = {"tags": "/tags", "post": f"/posts/{tagged['id']}", "desk": "/triage/"}
    for label, path in pages.items():
        page.goto(path)
        page.wait_for_load_state("networkidle")
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, (label, width, overflow)
        page.screenshot(path=str(shots / f"{label}.png"), full_page=True)
    page.goto(f"/posts/{tagged['id']}")
    chip = page.locator(f'.tags a[data-tag="{name}"]').first
    assert chip.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(255, 211, 61)"
    assert chip.evaluate("e => getComputedStyle(e).color") == "rgb(0, 0, 0)"  # dark text on a light colour
    page.goto("/triage/")
    assert page.get_by_test_id("export-votes").get_attribute("href") == "/triage/export/votes.csv"

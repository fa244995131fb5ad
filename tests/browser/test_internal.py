"""Employees see and write internal posts; a customer never sees one: board, search, composer
suggestions or its URL. Each check is made first as the employee, so it can fail."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tests.browser.site import CUSTOMER, EMPLOYEE, Api

DEMO_INTERNAL = "Admin tool: bulk refund for failed-unlock incidents"


def card_titles(page: Any) -> list[str]:
    return page.get_by_test_id("post-link").all_inner_texts()


def suggested_ids(page: Any, title: str) -> list[str]:
    page.goto("/new")
    with page.expect_response(lambda r: "/new/similar" in r.url):
        page.get_by_test_id("compose-title").fill(title)
    page.get_by_test_id("suggestions").locator(
        "[data-testid=suggestion], [data-testid=no-suggestions]"
    ).first.wait_for()
    return page.get_by_test_id("suggestion").evaluate_all("els => els.map(e => e.dataset.postId)")


def test_employee_sees_and_writes_internal_posts_a_customer_never_sees_them(open_page: Any, api: Api) -> None:
    employee = open_page(EMPLOYEE)
    employee.goto("/?q=bulk+refund")
    card = employee.get_by_test_id("post-card").filter(has_text=DEMO_INTERNAL)
    assert card.get_by_test_id("internal-badge").is_visible()

    title = f"Churn review of fleet accounts before renewal {uuid.uuid4().hex[:6]}"
    employee.goto("/new")
    employee.get_by_test_id("compose-title").fill(title)
    employee.get_by_test_id("visibility-internal").check()
    employee.get_by_test_id("compose-submit").click()
    assert employee.get_by_test_id("post-title").inner_text() == title
    assert employee.get_by_test_id("internal-banner").is_visible()
    post_id = employee.get_by_test_id("post").get_attribute("data-post-id")
    deadline = time.monotonic() + 60  # embedded by the worker, so that suggestions can find it
    while api.get(f"/api/posts/{post_id}", as_=EMPLOYEE)["cluster_id"] is None:
        assert time.monotonic() < deadline, "the new post was never embedded"
        time.sleep(0.5)

    customer = open_page(CUSTOMER)
    for page, sees in ((employee, True), (customer, False)):
        page.goto("/?sort=new")
        assert (title in card_titles(page)) is sees
        page.goto("/?q=churn+review+fleet")
        assert (title in card_titles(page)) is sees
        page.goto("/?q=bulk+refund")
        assert (DEMO_INTERNAL in card_titles(page)) is sees
        assert (post_id in suggested_ids(page, title)) is sees
        response = page.goto(f"/posts/{post_id}")
        assert response is not None and response.status == (200 if sees else 404)
        assert (title in page.content()) is sees
    assert customer.get_by_test_id("error-404").is_visible()
    anonymous = open_page()
    response = anonymous.goto(f"/posts/{post_id}")
    assert response is not None and response.status == 404 and title not in anonymous.content()

"""axe-core, run inside each main page in both languages: no serious or critical violation.

axe-core (MPL-2.0) comes from the ``axe-playwright-python`` test dependency (its bundled axe.min.js,
header intact); it is injected into the page under test, never shipped with forum.
"""

from __future__ import annotations

from typing import Any

import pytest
from axe_playwright_python.base import AXE_SCRIPT

from tests.browser.site import CUSTOMER, PRODUCT, Api

SHIPPED = "Facturas con CIF para cuentas de empresa"  # shipped: credits, history
BLOCKING = ("serious", "critical")


def axe_problems(page: Any) -> list[str]:
    page.evaluate(AXE_SCRIPT)
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{page.url}: {v['id']} ({v['impact']}) {v['help']} at {[n['target'] for n in v['nodes'][:3]]}"
        for v in result["violations"]
        if v["impact"] in BLOCKING
    ]


@pytest.mark.parametrize("lang", ["en", "es"])
def test_main_pages_have_no_serious_accessibility_violations(open_page: Any, api: Api, lang: str) -> None:
    shipped = api.post_titled(SHIPPED, as_=None)
    cluster_id = api.post_titled("Pause scooter rental during a quick stop")["cluster_id"]
    problems: list[str] = []

    anonymous = open_page(lang=lang)
    for path in (
        "/",
        f"/posts/{shipped['id']}",
        "/login",
        "/signup",
        "/roadmap",
        "/changelog",
        "/leaderboard",
        f"/users/{shipped['author']['id']}",
    ):
        assert anonymous.goto(path).status == 200, path
        problems += axe_problems(anonymous)

    customer = open_page(CUSTOMER, lang=lang)
    customer.goto("/new")
    with customer.expect_response(lambda r: "/new/similar" in r.url):
        customer.get_by_test_id("compose-title").fill("Dark theme for the app at night")
    customer.get_by_test_id("suggestion").first.wait_for()
    problems += axe_problems(customer)
    customer.goto("/inbox")
    problems += axe_problems(customer)

    product = open_page(PRODUCT, lang=lang, width=375)  # the desk on a phone, too
    board_pages = ("/tags", f"/posts/{shipped['id']}")  # the product team's tags, voters and edits
    survey_id = api.get("/api/surveys")["items"][0]["id"]  # the demo's NPS survey
    survey_pages = ("/triage/surveys/", f"/triage/surveys/{survey_id}")
    for path in (
        "/triage/",
        f"/triage/clusters/{cluster_id}",
        f"/triage/posts/{shipped['id']}",
        *board_pages,
        *survey_pages,
    ):
        assert product.goto(path).status == 200, path
        problems += axe_problems(product)
    assert not problems, "\n".join(problems)


def test_main_pages_fit_a_375px_phone(open_page: Any, api: Api) -> None:
    shipped = api.post_titled(SHIPPED, as_=None)
    cluster_id = api.post_titled("Pause scooter rental during a quick stop")["cluster_id"]
    too_wide = []
    for who, paths in (
        (CUSTOMER, ["/", f"/posts/{shipped['id']}", "/new", "/inbox", "/roadmap", "/leaderboard"]),
        (
            PRODUCT,
            [
                "/triage/",
                f"/triage/clusters/{cluster_id}",
                f"/triage/posts/{shipped['id']}",
                "/tags",
                "/triage/surveys/",
                f"/triage/surveys/{api.get('/api/surveys')['items'][0]['id']}",
            ],
        ),
    ):
        page = open_page(who, width=375, height=740)
        for path in paths:
            page.goto(path)
            width = page.evaluate("document.documentElement.scrollWidth")
            if width > 375:
                too_wide.append(f"{path}: {width}px")
    assert too_wide == []

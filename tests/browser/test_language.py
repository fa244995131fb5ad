"""The Spanish interface: served for Accept-Language: es, and after the switch (remembered)."""

from __future__ import annotations

from typing import Any

from tests.browser.site import PRODUCT


def test_spanish_for_accept_language_es(open_page: Any) -> None:
    page = open_page(lang="es")
    page.goto("/")
    assert page.locator("html").get_attribute("lang") == "es"
    assert page.get_by_test_id("nav-board").inner_text() == "Tablero"
    assert page.get_by_test_id("nav-login").inner_text() == "Iniciar sesión"
    english = open_page(lang="en")
    english.goto("/")
    assert english.locator("html").get_attribute("lang") == "en"
    assert english.get_by_test_id("nav-board").inner_text() == "Board"


def test_the_switch_is_remembered_over_accept_language(open_page: Any) -> None:
    page = open_page(lang="en")
    page.goto("/roadmap")
    page.get_by_test_id("language-select").select_option("es")
    page.get_by_test_id("language-submit").click()
    page.wait_for_url("**/roadmap")
    assert page.locator("html").get_attribute("lang") == "es"
    page.get_by_test_id("nav-changelog").click()
    assert page.locator("html").get_attribute("lang") == "es"  # the browser still sends Accept-Language: en
    assert page.get_by_test_id("nav-board").inner_text() == "Tablero"
    page.get_by_test_id("language-select").select_option("en")
    page.get_by_test_id("language-submit").click()
    assert page.get_by_test_id("nav-board").inner_text() == "Board"


def test_triage_desk_in_spanish(open_page: Any) -> None:
    page = open_page(PRODUCT, lang="es")
    page.goto("/triage/")
    assert page.get_by_role("heading", level=1).inner_text() == "Mesa de triaje"
    assert "Votantes únicos" in page.get_by_test_id("cluster-table").locator("thead").inner_text()
    page.get_by_test_id("cluster-link").first.click()
    assert page.get_by_test_id("reject").first.inner_text() == "No es la misma necesidad"
    assert page.get_by_test_id("member-language").first.inner_text().islower()  # "español", not "Spanish"

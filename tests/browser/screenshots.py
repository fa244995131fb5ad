"""The README's screenshots, taken from the real server with the demo loaded (not a test).

    python -m tests.browser.screenshots            # writes docs/screenshots/*.png

Desktop shots are 1280 px wide, the phone shot 375 px; each is cut to one screen so files stay small.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from tests.browser.site import CHROMIUM_ARGS, CUSTOMER, PRODUCT, Api, demo_site, sign_in

SHIPPED = "Facturas con CIF para cuentas de empresa"
PARAPHRASE = "Night mode with a black background"


def shoot(page: Any, path: Path, height: int) -> None:
    page.wait_for_load_state("networkidle")
    width = page.viewport_size["width"]
    page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": width, "height": height}, animations="disabled")
    print(f"{path} {path.stat().st_size // 1024} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, demo_site(Path(tmp)) as site, sync_playwright() as playwright:
        api = Api(site.url)
        browser = playwright.chromium.launch(executable_path=parser.parse_args().chromium, args=CHROMIUM_ARGS)

        def page_for(email: str | None, width: int = 1280, height: int = 860) -> Any:
            context = browser.new_context(
                base_url=site.url,
                viewport={"width": width, "height": height},
                locale="en",
                extra_http_headers={"Accept-Language": "en"},
            )
            page = context.new_page()
            if email:
                sign_in(page, email)
            return page

        customer = page_for(CUSTOMER)
        customer.goto("/")
        shoot(customer, out / "board.png", 860)
        # The composer as a newcomer sees it: nothing voted yet, so every suggestion offers its vote.
        newcomer = {"email": "nora.quint@example.net", "password": "a long enough password", "display_name": "Nora"}
        assert api.client.post("/api/auth/register", json=newcomer).status_code == 201
        composer = page_for(None)
        sign_in(composer, newcomer["email"], newcomer["password"])
        composer.goto("/new")
        with composer.expect_response(lambda r: "/new/similar" in r.url):
            composer.get_by_test_id("compose-title").fill(PARAPHRASE)
        composer.get_by_test_id("vote-instead").first.wait_for()
        shoot(composer, out / "composer.png", 760)
        customer.goto(f"/posts/{api.post_titled(SHIPPED, as_=None)['id']}")
        shoot(customer, out / "post.png", 860)

        product = page_for(PRODUCT)
        product.goto("/triage/")
        shoot(product, out / "triage-desk.png", 640)
        product.goto(f"/triage/clusters/{api.post_titled('Pause scooter rental during a quick stop')['cluster_id']}")
        shoot(product, out / "triage-cluster.png", 760)

        phone = page_for(CUSTOMER, width=375, height=740)
        phone.goto("/")
        shoot(phone, out / "board-375.png", 740)
        browser.close()


if __name__ == "__main__":
    main()

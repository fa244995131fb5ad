"""The API's docs page at /schema works offline: every asset it loads is served by the app itself."""

from __future__ import annotations

import re

from tests.conftest import Api


def test_schema_page_references_no_external_host_and_its_assets_are_served(api: Api) -> None:
    for path in ("/schema", "/schema/swagger"):
        page = api.client.get(path)
        assert page.status_code == 200 and "SwaggerUIBundle" in page.text, path
        assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page.text), path
        assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
        assert len(assets) == 4, assets  # favicon, CSS, bundle, standalone preset
        for asset in assets:
            assert asset.startswith("/schema/assets/"), asset
            r = api.client.get(asset)
            assert r.status_code == 200 and len(r.content) > 500, asset
    assert (
        api.client.get("/schema/assets/swagger-ui-bundle.js")
        .headers["content-type"]
        .startswith(("text/javascript", "application/javascript"))
    )
    assert api.client.get("/schema/assets/../../app.py").status_code == 404

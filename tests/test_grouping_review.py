"""Grouping that explains itself, asks when unsure, consolidates and learns from decisions.

With the deterministic hashing encoder (tests/conftest.py: threshold 0.45 on its scale).
"""

from __future__ import annotations

import asyncio
import json

from tests.conftest import Api, run_sql


def _cluster(api: Api, post: dict) -> str:
    return api.client.get(f"/api/posts/{post['id']}").json()["cluster_id"]


def test_clusters_and_memberships_explain_themselves(api: Api, drain) -> None:
    author = api.register()
    product = api.make_user("internal", "product")
    dark = api.post(author, title="Dark mode for the app")
    drain()
    dark2 = api.post(author, title="Please add a dark mode to the app")
    drain()
    night = api.post(author, title="Dark mode at night for the mobile app", body="Dark colours")
    drain()
    api.post(author, title="Export invoices from the app as PDF")  # "app" is common on this board
    drain()
    cluster_id = _cluster(api, dark)
    assert _cluster(api, dark2) == cluster_id == _cluster(api, night)

    page = api.client.get("/api/clusters?min_members=2", headers=product.headers).json()
    (summary,) = page["items"]
    print(json.dumps(summary, indent=1))
    assert summary["languages"] == {"en": 3}
    assert summary["representative"]["post_id"] in {dark["id"], dark2["id"], night["id"]}
    assert summary["key_phrases"] == ["dark", "mode", "app"], "shared by all three; rarer on the board first"

    detail = api.client.get(f"/api/clusters/{cluster_id}", headers=product.headers).json()
    print(json.dumps(detail["members"], indent=1))
    members = {m["post_id"]: m for m in detail["members"]}
    for member in members.values():
        assert member["band"] == "sure"
        nearest = member["explanation"]["nearest"]
        assert nearest["post_id"] in members and nearest["post_id"] != member["post_id"]
        assert 0.45 <= nearest["similarity"] <= 1.0
        assert {"dark", "mode"} <= set(member["explanation"]["shared_terms"])

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


def _labels(database_url: str) -> set[tuple[str, str, bool, str]]:
    rows = run_sql(database_url, "SELECT post_a_id, post_b_id, duplicate, source FROM grouping_label")
    return {(*sorted((str(a), str(b))), duplicate, source) for a, b, duplicate, source in rows}


def _pair(a: dict, b: dict, duplicate: bool, source: str) -> tuple[str, str, bool, str]:
    return (*sorted((a["id"], b["id"])), duplicate, source)


def test_maybe_groupings_wait_in_the_review_queue(api: Api, drain, settings, database_url: str) -> None:
    settings.duplicate_threshold = 0.5  # so that the "maybe" band is 0.42–0.5 on the hashing scale
    author = api.register()
    product = api.make_user("internal", "product")
    voters = [api.register() for _ in range(2)]
    posts = {}
    for key, title in (
        ("dark", "Dark mode for the app"),
        ("dark2", "Please add a dark mode to the app"),
        ("night", "Night theme for the mobile app"),  # 0.56 to "dark", 0.35 to "dark2": a maybe
        ("tunnels", "Offline maps in tunnels"),
        ("underground", "Maps that work offline underground"),  # 0.46 to "tunnels": a maybe
    ):
        posts[key] = api.post(author, title=title)
        drain()
    cluster = {k: _cluster(api, p) for k, p in posts.items()}
    assert cluster["dark"] == cluster["dark2"], "sure: applied"
    assert cluster["night"] != cluster["dark"] and cluster["underground"] != cluster["tunnels"], "maybe: not applied"
    for voter in voters:
        api.client.put(f"/api/posts/{posts['dark']['id']}/vote", headers=voter.headers)
    api.client.put(f"/api/posts/{posts['night']['id']}/vote", headers=voters[0].headers)  # both sides: once
    api.client.put(f"/api/posts/{posts['underground']['id']}/vote", headers=voters[0].headers)

    assert api.client.get("/api/clusters/suggestions").status_code == 401
    assert api.client.get("/api/clusters/suggestions", headers=author.headers).status_code == 403
    queue = api.client.get("/api/clusters/suggestions", headers=product.headers).json()
    assert queue["total"] == 2
    first, second = queue["items"]
    assert (first["post"]["post_id"], first["cluster"]["id"], first["voters"]) == (
        posts["night"]["id"],
        cluster["dark"],
        2,
    ), "ordered by the voters a decision affects"
    assert (second["post"]["post_id"], second["cluster"]["id"], second["voters"]) == (
        posts["underground"]["id"],
        cluster["tunnels"],
        1,
    )
    assert first["band"] == "maybe" and 0.42 <= first["score"] < 0.5
    assert first["cluster"]["member_count"] == 2 and first["cluster"]["languages"] == {"en": 2}
    assert first["explanation"]["nearest"]["post_id"] == posts["dark"]["id"]
    assert first["explanation"]["shared_terms"] == ["app"]
    assert second["explanation"]["shared_terms"] == ["maps", "offline"]
    page = api.client.get("/api/clusters/suggestions?limit=1&offset=1", headers=product.headers).json()
    assert page["total"] == 2 and [s["id"] for s in page["items"]] == [second["id"]]

    # One call each: accept joins (confirmed by a person), dismiss is remembered.
    url = "/api/clusters/suggestions/{}/{}"
    assert api.client.post(url.format(first["id"], "accept"), headers=author.headers).status_code == 403
    r = api.client.post(url.format(first["id"], "accept"), headers=product.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "id": first["id"],
        "state": "accepted",
        "post_id": posts["night"]["id"],
        "cluster_id": cluster["dark"],
    }
    assert api.client.post(url.format(first["id"], "accept"), headers=product.headers).status_code == 409
    assert api.client.post(url.format(first["id"], "dismiss"), headers=product.headers).status_code == 409
    missing = "01a209e5-0000-7000-8000-000000000000"
    assert api.client.post(url.format(missing, "accept"), headers=product.headers).status_code == 404
    assert _cluster(api, posts["night"]) == cluster["dark"]
    detail = api.client.get(f"/api/clusters/{cluster['dark']}", headers=product.headers).json()
    night = next(m for m in detail["members"] if m["post_id"] == posts["night"]["id"])
    assert (night["state"], night["manual"], night["band"]) == ("confirmed", True, "manual")
    assert api.client.post(url.format(second["id"], "dismiss"), headers=product.headers).json()["state"] == "dismissed"
    assert api.client.get("/api/clusters/suggestions", headers=product.headers).json()["total"] == 0

    # Re-embedding (an edit) neither reopens the dismissed suggestion nor groups it there.
    api.client.patch(f"/api/posts/{posts['underground']['id']}", json={"body": "offline maps"}, headers=author.headers)
    drain()
    assert _cluster(api, posts["underground"]) != cluster["tunnels"]
    assert api.client.get("/api/clusters/suggestions", headers=product.headers).json()["total"] == 0

    assert _labels(database_url) == {
        _pair(posts["night"], posts["dark"], True, "accept"),
        _pair(posts["night"], posts["dark2"], True, "accept"),
        _pair(posts["underground"], posts["tunnels"], False, "dismiss"),
    }


def test_suggest_only_mode_applies_nothing(api: Api, drain, settings) -> None:
    from forum.grouping.thresholds import Thresholds

    settings.grouping_mode = "suggest"
    thresholds = Thresholds.from_settings(settings)
    author = api.register()
    product = api.make_user("internal", "product")
    pdf = api.post(author, title="Export invoices as PDF")
    drain(threshold=thresholds)
    files = api.post(author, title="Invoices as PDF files")  # 0.73: sure, yet only suggested
    drain(threshold=thresholds)
    assert _cluster(api, pdf) != _cluster(api, files)
    (suggestion,) = api.client.get("/api/clusters/suggestions", headers=product.headers).json()["items"]
    assert suggestion["band"] == "sure" and suggestion["post"]["post_id"] == files["id"]
    r = api.client.post(f"/api/clusters/suggestions/{suggestion['id']}/accept", headers=product.headers)
    assert r.status_code == 200
    assert _cluster(api, pdf) == _cluster(api, files)

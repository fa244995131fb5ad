"""The triage desk's pages through the real app and PostgreSQL: who may use them, CSRF, refusals shown
on the page with nothing changed, Spanish, and every one of its strings translated."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from tests.conftest import Actor, Api
from tests.test_grouping import _seed
from tests.test_web_pages import browser_login, csrf

ROOT = Path(__file__).parents[1]


def _world(api: Api, drain) -> tuple[Actor, dict[str, dict], str]:
    product = api.make_user("internal", "product", name="Pat")
    posts = _seed(api, api.register("Ana"), drain)
    cluster = api.client.get(f"/api/posts/{posts['dark']['id']}").json()["cluster_id"]
    members = api.client.get(f"/api/clusters/{cluster}", headers=product.headers).json()["members"]
    assert {m["post_id"] for m in members} == {posts[k]["id"] for k in ("dark", "dark2", "night")}
    return product, posts, cluster


def _detail(api: Api, product: Actor, cluster: str) -> dict:
    return api.client.get(f"/api/clusters/{cluster}", headers=product.headers).json()


def _post(api: Api, path: str, data: dict, from_page: str) -> object:
    return api.client.post(path, data={**data, "_csrf_token": csrf(api.client, from_page)}, follow_redirects=False)


def test_only_the_product_team_reaches_the_desk(api: Api, drain) -> None:
    product, posts, cluster = _world(api, drain)
    confirm = f"/triage/clusters/{cluster}/members/{posts['dark2']['id']}/confirm"
    r = api.client.get("/triage/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    for actor in (api.register("Carla"), api.make_user("internal", name="Elena")):
        browser_login(api.client, actor)
        for path in ("/triage/", f"/triage/clusters/{cluster}", f"/triage/posts/{posts['dark']['id']}"):
            r = api.client.get(path)
            assert r.status_code == 403 and "text/html" in r.headers["content-type"], path
            assert "Dark mode for the app" not in r.text
        assert _post(api, confirm, {}, "/").status_code == 403
    assert {m["state"] for m in _detail(api, product, cluster)["members"]} == {"suggested"}

    browser_login(api.client, product)
    desk = api.client.get("/triage/")
    assert desk.status_code == 200 and f'href="/triage/clusters/{cluster}"' in desk.text
    page = api.client.get(f"/triage/clusters/{cluster}")
    assert page.status_code == 200 and page.text.count('data-testid="member"') == 3
    assert api.client.get("/triage/clusters/01a00000-0000-7000-8000-000000000000").status_code == 404
    assert api.client.get("/triage/?sort=nonsense&min_members=999&offset=-5").status_code == 200


def test_actions_need_the_csrf_token(api: Api, drain) -> None:
    product, posts, cluster = _world(api, drain)
    browser_login(api.client, product)
    r = api.client.post(f"/triage/clusters/{cluster}/members/{posts['dark2']['id']}/confirm", follow_redirects=False)
    assert r.status_code == 403
    assert {m["state"] for m in _detail(api, product, cluster)["members"]} == {"suggested"}
    r = _post(api, f"/triage/clusters/{cluster}/members/{posts['dark2']['id']}/confirm", {}, "/triage/")
    assert r.status_code == 303 and r.headers["location"] == f"/triage/clusters/{cluster}?done=confirmed"
    states = {m["post_id"]: m["state"] for m in _detail(api, product, cluster)["members"]}
    assert states[posts["dark2"]["id"]] == "confirmed"


@pytest.mark.parametrize(
    ("lang", "messages"),
    [
        ("en", ["Leave at least one post in the cluster.", "cannot be merged into itself", "already has this status"]),
        ("es", ["Deja al menos", "consigo", "ya tiene este estado"]),
    ],
)
def test_refusals_are_explained_on_the_page_and_change_nothing(api: Api, drain, lang: str, messages: list[str]) -> None:
    product, posts, cluster = _world(api, drain)
    browser_login(api.client, product)
    api.client.headers["Accept-Language"] = lang
    before = _detail(api, product, cluster)
    everyone = [posts[k]["id"] for k in ("dark", "dark2", "night")]
    dark = posts["dark"]["id"]

    r = api.client.post(
        f"/triage/clusters/{cluster}/split",
        data={"post_ids": everyone, "_csrf_token": csrf(api.client, "/triage/")},
        follow_redirects=False,
    )
    assert r.status_code == 422 and "text/html" in r.headers["content-type"]
    assert messages[0] in r.text and 'data-testid="split-error"' in r.text
    r = _post(api, f"/triage/clusters/{cluster}/members/{dark}/merge", {"into": dark}, "/triage/")
    assert r.status_code == 422 and messages[1] in r.text
    r = _post(api, f"/triage/clusters/{cluster}/members/{dark}/move", {"cluster_id": "not-a-uuid"}, "/triage/")
    assert r.status_code == 422 and 'data-testid="member-error"' in r.text
    r = _post(api, f"/triage/posts/{dark}/status", {"status": "open", "note": "again"}, "/triage/")
    assert r.status_code == 409 and messages[2] in r.text and ">again</textarea>" in r.text
    r = _post(api, f"/triage/posts/{dark}/status", {"status": "duplicate"}, "/triage/")
    assert r.status_code == 422
    r = _post(api, f"/triage/posts/{dark}/critiques", {"critique_id": posts["pdf"]["id"]}, "/triage/")
    assert r.status_code == 422  # an idea, not a critique

    assert _detail(api, product, cluster) == before
    assert api.client.get(f"/api/posts/{dark}/history").json()["items"][-1]["to_status"] == "open"
    assert api.client.get(f"/api/posts/{dark}").json()["merged_into"] is None


def test_status_change_with_a_note_then_merge_and_unmerge(api: Api, drain) -> None:
    product, posts, cluster = _world(api, drain)
    browser_login(api.client, product)
    dark, dark2 = posts["dark"]["id"], posts["dark2"]["id"]
    r = _post(api, f"/triage/posts/{dark}/status", {"status": "planned", "note": "Next quarter <b>"}, "/triage/")
    assert r.status_code == 303 and r.headers["location"] == f"/triage/posts/{dark}?done=status"
    page = api.client.get(r.headers["location"]).text
    assert "Next quarter &lt;b&gt;" in page and 'data-testid="triage-done"' in page
    assert api.client.get(f"/api/posts/{dark}/history").json()["items"][-1]["note"] == "Next quarter <b>"

    r = _post(api, f"/triage/clusters/{cluster}/members/{dark2}/merge", {"into": dark}, "/triage/")
    assert r.status_code == 303
    assert api.client.get(f"/api/posts/{dark2}").json()["merged_into"] == dark
    assert 'data-testid="unmerge"' in api.client.get(f"/triage/clusters/{cluster}").text
    r = _post(api, f"/triage/clusters/{cluster}/members/{dark2}/unmerge", {}, "/triage/")
    assert r.status_code == 303
    assert api.client.get(f"/api/posts/{dark2}").json()["merged_into"] is None


def test_every_triage_string_has_english_and_spanish() -> None:
    """Every string the desk's code and templates say is in both catalogs, translated in Spanish (English
    may leave ``msgstr`` empty: gettext then shows the English msgid)."""
    with (ROOT / "forum" / "web" / "babel.cfg").open() as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    said = {
        message for path, _, message, _, _ in extract_from_dir(str(ROOT), method_map, options_map) if "triage" in path
    }
    assert len(said) > 60
    catalogs = {}
    for lang in ("en", "es"):
        with (ROOT / "forum" / "web" / "locale" / lang / "LC_MESSAGES" / "messages.po").open("rb") as fh:
            catalogs[lang] = read_po(fh, locale=lang)
    for lang, catalog in catalogs.items():
        assert [m for m in said if catalog.get(m if isinstance(m, str) else m[0]) is None] == [], lang
    untranslated = []
    for m in said:
        entry = catalogs["es"].get(m if isinstance(m, str) else m[0])
        values = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        if not all(values):
            untranslated.append(m)
    assert untranslated == []


def test_the_desk_offers_the_four_csv_exports_to_the_product_team_only(api: Api) -> None:
    product = api.make_user("internal", "product", name="Pat")
    post = api.post(api.register("Ana"), title="Dark mode for the app")
    browser_login(api.client, api.register("Carla"))
    for kind in ("posts", "votes", "clusters", "credits"):
        r = api.client.get(f"/triage/export/{kind}.csv")
        assert r.status_code == 403 and "Dark mode" not in r.text
    browser_login(api.client, product)
    desk = api.client.get("/triage/").text
    for kind in ("posts", "votes", "clusters", "credits"):
        assert f'href="/triage/export/{kind}.csv"' in desk
        r = api.client.get(f"/triage/export/{kind}.csv")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), kind
        assert f'filename="{kind}.csv"' in r.headers["content-disposition"]
        assert (
            r.text.splitlines()[0]
            == api.client.get(f"/api/export/{kind}.csv", headers=product.headers).text.splitlines()[0]
        )
    assert post["id"] in api.client.get("/triage/export/posts.csv").text
    assert api.client.get("/triage/export/users.csv").status_code == 404
    assert api.client.get("/triage/export/posts.json").status_code == 404
    es = api.client.get("/triage/", headers={"Accept-Language": "es"}).text
    assert "Exportar" in es

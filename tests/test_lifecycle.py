"""Closed posts take no votes, merges into nothing are invalid input, and no delete strands a post."""

from __future__ import annotations

import pytest

from tests.conftest import Api

MISSING = "01a209e5-0000-7000-8000-000000000000"


@pytest.mark.parametrize("status", ["shipped", "declined"])
def test_voting_on_a_closed_post_is_409_and_counts_stay(api: Api, status: str) -> None:
    product = api.make_user("internal", "product")
    author, early, late = api.register(), api.register(), api.register()
    post = api.post(author, title="Pay with Apple Pay")
    url = f"/api/posts/{post['id']}/vote"
    assert api.client.put(url, headers=early.headers).status_code == 200
    r = api.client.post(f"/api/posts/{post['id']}/status", json={"status": status}, headers=product.headers)
    assert r.status_code == 200, r.text

    for method, who in (("PUT", late), ("DELETE", early), ("PUT", early), ("DELETE", late)):
        r = api.client.request(method, url, headers=who.headers)
        assert r.status_code == 409, (method, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "no longer takes votes" in r.json()["detail"]
    got = api.client.get(f"/api/posts/{post['id']}", headers=early.headers).json()
    assert got["votes"] == {"total": 1, "internal": 0, "external": 1} and got["has_voted"] is True

    # Reopened, it takes votes again.
    api.client.post(f"/api/posts/{post['id']}/status", json={"status": "planned"}, headers=product.headers)
    assert api.client.put(url, headers=late.headers).json()["votes"]["total"] == 2


def test_an_addressed_critique_is_closed_too(api: Api) -> None:
    product = api.make_user("internal", "product")
    author, voter = api.register(), api.register()
    critique = api.post(author, kind="critique", title="Checkout is slow")
    idea = api.post(author, title="One-click checkout")
    h = product.headers
    assert (
        api.client.post(
            f"/api/posts/{idea['id']}/critiques", json={"critique_id": critique["id"]}, headers=h
        ).status_code
        == 201
    )
    api.client.post(f"/api/posts/{idea['id']}/status", json={"status": "shipped"}, headers=h)
    assert api.client.put(f"/api/posts/{critique['id']}/vote", headers=voter.headers).status_code == 409


def test_merging_into_a_missing_post_is_422_on_into(api: Api) -> None:
    product = api.make_user("internal", "product")
    author = api.register()
    post = api.post(author, title="Dark mode")
    gone = api.post(author, title="Night theme")
    api.client.delete(f"/api/posts/{gone['id']}", headers=author.headers)
    for into in (MISSING, gone["id"]):
        r = api.client.post(f"/api/posts/{post['id']}/merge", json={"into": into}, headers=product.headers)
        assert r.status_code == 422, r.text
        assert [e["field"] for e in r.json()["errors"]] == ["into"]
    assert api.client.get(f"/api/posts/{post['id']}").json()["status"] == "open"
    # The post in the path is still a 404 when it is the one missing.
    r = api.client.post(f"/api/posts/{MISSING}/merge", json={"into": post["id"]}, headers=product.headers)
    assert r.status_code == 404


def test_a_post_others_are_merged_into_cannot_be_deleted_until_they_are_unmerged(api: Api) -> None:
    product = api.make_user("internal", "product")
    admin = api.make_user("internal", "admin")
    author, other, voter = api.register(), api.register(), api.register()
    target = api.post(author, title="Dark mode")
    dupes = [api.post(other, title="Night theme"), api.post(other, title="Dim the screen")]
    h = product.headers
    for dupe in dupes:
        assert api.client.put(f"/api/posts/{dupe['id']}/vote", headers=voter.headers).status_code == 200
        assert (
            api.client.post(f"/api/posts/{dupe['id']}/merge", json={"into": target["id"]}, headers=h).status_code == 200
        )

    for who in (author, admin):
        r = api.client.delete(f"/api/posts/{target['id']}", headers=who.headers)
        assert r.status_code == 409, r.text
        assert r.json()["merged_posts"] == 2 and "2 posts are merged into this one" in r.json()["detail"]
    assert api.client.get(f"/api/posts/{target['id']}").status_code == 200

    # Unmerge one: still refused (one left); unmerge both and it goes, leaving both duplicates whole.
    api.client.post(f"/api/posts/{dupes[0]['id']}/unmerge", headers=h)
    r = api.client.delete(f"/api/posts/{target['id']}", headers=author.headers)
    assert r.status_code == 409 and r.json()["merged_posts"] == 1 and "1 post is merged" in r.json()["detail"]
    api.client.post(f"/api/posts/{dupes[1]['id']}/unmerge", headers=h)
    assert api.client.delete(f"/api/posts/{target['id']}", headers=author.headers).status_code == 204
    for dupe in dupes:
        got = api.client.get(f"/api/posts/{dupe['id']}").json()
        assert (got["status"], got["merged_into"], got["votes"]["total"]) == ("open", None, 1)
        assert api.client.put(f"/api/posts/{dupe['id']}/vote", headers=author.headers).status_code == 200


def test_a_merged_duplicate_can_be_deleted_and_the_target_keeps_its_voters(api: Api) -> None:
    product = api.make_user("internal", "product")
    author, other, voter = api.register(), api.register(), api.register()
    target = api.post(author, title="Dark mode")
    dupe = api.post(other, title="Night theme")
    api.client.put(f"/api/posts/{dupe['id']}/vote", headers=voter.headers)
    api.client.post(f"/api/posts/{dupe['id']}/merge", json={"into": target["id"]}, headers=product.headers)
    assert api.client.delete(f"/api/posts/{dupe['id']}", headers=other.headers).status_code == 204
    got = api.client.get(f"/api/posts/{target['id']}").json()
    assert got["votes"]["total"] == 1, "the duplicate's voter asked for this too"
    assert api.client.get(f"/api/posts/{target['id']}/merged").json()["items"] == []
    assert api.client.delete(f"/api/posts/{target['id']}", headers=author.headers).status_code == 204


def test_a_shipped_post_cannot_be_deleted_while_it_holds_credits(api: Api) -> None:
    product = api.make_user("internal", "product")
    admin = api.make_user("internal", "admin")
    author = api.register()
    post = api.post(author, title="Export to PDF")
    h = product.headers
    api.client.post(f"/api/posts/{post['id']}/status", json={"status": "shipped"}, headers=h)
    for who in (author, admin):
        r = api.client.delete(f"/api/posts/{post['id']}", headers=who.headers)
        assert r.status_code == 409 and "move it out of shipped" in r.json()["detail"], r.text
    assert api.client.get(f"/api/users/{author.id}/credits").json()["total_points"] == 100
    api.client.post(f"/api/posts/{post['id']}/status", json={"status": "declined"}, headers=h)
    assert api.client.delete(f"/api/posts/{post['id']}", headers=author.headers).status_code == 204

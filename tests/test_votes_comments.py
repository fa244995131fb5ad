"""Votes (split internal/external, idempotent, per-viewer has_voted) and comments with internal notes."""

from __future__ import annotations

import pytest

from tests.conftest import Api, QueryCounter


def test_votes_split_and_has_voted_per_viewer(api: Api) -> None:
    admin = api.make_user("internal", "admin")
    author = api.register("author")
    customer = api.register("customer")
    employee = api.register("employee")
    api.client.patch(f"/api/users/{employee.id}", json={"kind": "internal"}, headers=admin.headers)
    idea = api.post(author, title="Pay with Apple Pay")
    critique = api.post(author, kind="critique", title="Checkout is slow")
    for voter in (customer, employee):
        for post in (idea, critique):
            r = api.client.put(f"/api/posts/{post['id']}/vote", headers=voter.headers)
            assert r.status_code == 200, r.text
            assert r.json()["has_voted"] is True and r.json()["voted_at"]
    expected = {"total": 2, "internal": 1, "external": 1}
    for viewer, voted in ((customer, True), (employee, True), (author, False), (None, False)):
        headers = viewer.headers if viewer else {}
        listing = api.client.get("/api/posts?sort=top", headers=headers).json()["items"]
        assert [p["votes"] for p in listing] == [expected, expected]
        assert [p["has_voted"] for p in listing] == [voted, voted]
        one = api.client.get(f"/api/posts/{idea['id']}", headers=headers).json()
        assert one["votes"] == expected and one["has_voted"] is voted


def test_vote_is_idempotent_and_keeps_first_time(api: Api) -> None:
    author, voter = api.register(), api.register()
    post = api.post(author)
    url = f"/api/posts/{post['id']}/vote"
    first = api.client.put(url, headers=voter.headers).json()
    again = api.client.put(url, headers=voter.headers).json()
    assert again["voted_at"] == first["voted_at"]
    assert again["votes"] == {"total": 1, "internal": 0, "external": 1}
    removed = api.client.delete(url, headers=voter.headers)
    assert removed.status_code == 200
    assert removed.json() == {
        "post_id": post["id"],
        "has_voted": False,
        "voted_at": None,
        "votes": {"total": 0, "internal": 0, "external": 0},
    }
    assert api.client.delete(url, headers=voter.headers).json()["votes"]["total"] == 0, "unvote is idempotent"
    assert api.client.get(f"/api/posts/{post['id']}").json()["votes"]["total"] == 0


def test_vote_on_missing_or_deleted_post_is_404(api: Api) -> None:
    author, voter = api.register(), api.register()
    post = api.post(author)
    api.client.delete(f"/api/posts/{post['id']}", headers=author.headers)
    assert api.client.put(f"/api/posts/{post['id']}/vote", headers=voter.headers).status_code == 404
    assert (
        api.client.put("/api/posts/01a209e5-0000-7000-8000-000000000000/vote", headers=voter.headers).status_code == 404
    )


def test_comments_and_internal_notes(api: Api) -> None:
    customer = api.register("customer")
    product = api.make_user("internal", "product", name="pm")
    post = api.post(customer)
    url = f"/api/posts/{post['id']}/comments"
    assert api.client.post(url, json={"body": "Me too!"}, headers=customer.headers).status_code == 201
    assert api.client.post(url, json={"body": "Sneaky", "internal": True}, headers=customer.headers).status_code == 403
    note = api.client.post(url, json={"body": "Billing says Q3", "internal": True}, headers=product.headers)
    assert note.status_code == 201 and note.json()["internal"] is True
    assert api.client.post(url, json={"body": "   "}, headers=customer.headers).status_code == 422

    public_view = api.client.get(url).json()
    assert [c["body"] for c in public_view["items"]] == ["Me too!"] and public_view["total"] == 1
    assert api.client.get(f"/api/posts/{post['id']}", headers=customer.headers).json()["comment_count"] == 1
    insider_view = api.client.get(url, headers=product.headers).json()
    assert [c["body"] for c in insider_view["items"]] == ["Me too!", "Billing says Q3"]
    assert api.client.get(f"/api/posts/{post['id']}", headers=product.headers).json()["comment_count"] == 2

    note_url = f"{url}/{note.json()['id']}"
    assert api.client.delete(note_url, headers=customer.headers).status_code == 404, "notes do not exist for them"
    assert api.client.delete(note_url, headers=product.headers).status_code == 204
    assert api.client.get(f"/api/posts/{post['id']}", headers=product.headers).json()["comment_count"] == 1


def test_comment_deletion_rights(api: Api) -> None:
    author, other = api.register(), api.register()
    admin = api.make_user("internal", "admin")
    post = api.post(author)
    url = f"/api/posts/{post['id']}/comments"
    first = api.client.post(url, json={"body": "one"}, headers=author.headers).json()
    second = api.client.post(url, json={"body": "two"}, headers=author.headers).json()
    assert api.client.delete(f"{url}/{first['id']}", headers=other.headers).status_code == 403
    assert api.client.delete(f"{url}/{first['id']}", headers=author.headers).status_code == 204
    assert api.client.delete(f"{url}/{second['id']}", headers=admin.headers).status_code == 204
    assert api.client.get(url).json()["total"] == 0
    assert api.client.get(f"/api/posts/{post['id']}").json()["comment_count"] == 0


def test_a_vote_is_a_few_prepared_statements_and_reads_the_voter_once(
    api: Api, count_queries: QueryCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: a vote is a few prepared statements on the request's connection, in one transaction: the
    voter read once (one row, no ORM ``User``); the post locked (and whether a webhook listens); the vote row;
    the counters (their new values answer: nothing is read again) with the day tally and the subscription.
    Nothing goes through SQLAlchemy's execution (no ORM load of the voter, the post or its author)."""
    import asyncpg

    driver: list[str] = []
    for name in ("fetch", "fetchrow", "fetchval", "execute"):

        def counted(self, query, *args, _original=getattr(asyncpg.Connection, name), **kwargs):  # type: ignore[no-untyped-def]
            driver.append(" ".join(query.split()))
            return _original(self, query, *args, **kwargs)

        monkeypatch.setattr(asyncpg.Connection, name, counted)
    author, voter = api.register(), api.register()
    post = api.post(author)
    url = f"/api/posts/{post['id']}/vote"
    for method, changes in (("PUT", "INSERT INTO vote"), ("DELETE", "DELETE FROM vote")):
        driver.clear()
        count_queries.statements.clear()
        r = api.client.request(method, url, headers=voter.headers)
        assert r.status_code == 200, r.text
        assert count_queries.statements == [], "nothing through SQLAlchemy's execution"
        assert driver[0].startswith("BEGIN") and driver[-1].startswith("COMMIT"), driver
        statements = driver[1:-1]
        assert sum("user_account" in s for s in statements) == 1, statements
        assert statements[0].startswith("SELECT") and "FROM user_account" in statements[0], "the voter first"
        assert "FOR NO KEY UPDATE" in statements[1] and "webhook" in statements[1], statements
        assert changes in statements[2], statements
        assert "UPDATE post" in statements[3] and "post_vote_day" in statements[3], statements
        assert ("INSERT INTO subscription" in statements[3]) is (method == "PUT"), statements
        assert not any(s.startswith("SELECT") and "vote_total" in s for s in statements), "no re-read"
        assert len(statements) == 4, statements  # the subscription and the day tally ride with the counters
        assert r.json()["votes"]["total"] == (1 if method == "PUT" else 0)

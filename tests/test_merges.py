"""Lossless, reversible merges: voters count once on the target with their original vote times, the
merged post's author stays on record, and unmerge restores both posts exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import Api, run_sql


def _state(api: Api, database_url: str, *posts: dict) -> dict:
    """Everything a merge may touch: votes with their times, counters, statuses, trending buckets."""
    ids = [p["id"] for p in posts]
    return {
        "votes": run_sql(
            database_url,
            "SELECT post_id, user_id, voter_kind, created_at FROM vote WHERE post_id = ANY(:ids) ORDER BY 1, 2",
            ids=ids,
        ),
        "days": run_sql(
            database_url,
            "SELECT post_id, day, votes FROM post_vote_day WHERE post_id = ANY(:ids) AND votes <> 0 ORDER BY 1, 2",
            ids=ids,
        ),
        "posts": [
            {k: v for k, v in api.client.get(f"/api/posts/{i}").json().items() if k != "updated_at"} for i in ids
        ],
    }


def test_merge_then_unmerge_restores_everything(api: Api, database_url: str) -> None:
    early, late = api.register("early"), api.register("late")
    product = api.make_user("internal", "product")
    employee = api.make_user("internal", "member")
    both, only_early, only_late = api.register(), api.register(), api.register()
    first = api.post(early, title="Let me pause a scooter rental")
    second = api.post(late, title="Hold the scooter while I shop")
    api.client.post(f"/api/posts/{first['id']}/status", json={"status": "under_review"}, headers=product.headers)
    for voter in (both, only_early, employee):
        api.client.put(f"/api/posts/{first['id']}/vote", headers=voter.headers)
    for voter in (both, only_late):
        api.client.put(f"/api/posts/{second['id']}/vote", headers=voter.headers)
    # The early post's votes were cast a month ago: their times must survive the merge.
    month_ago = datetime.now(UTC) - timedelta(days=30)
    run_sql(database_url, "UPDATE vote SET created_at = :t WHERE post_id = :p", t=month_ago, p=first["id"])
    run_sql(database_url, "UPDATE post_vote_day SET day = :d WHERE post_id = :p", d=month_ago.date(), p=first["id"])
    before = _state(api, database_url, first, second)

    r = api.client.post(f"/api/posts/{first['id']}/merge", json={"into": second["id"]}, headers=product.headers)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["votes_carried_over"] == 2, "`both` already voted on the target: counted once"
    assert result["source"]["status"] == "duplicate" and result["source"]["merged_into"] == second["id"]
    assert result["target"]["votes"] == {"total": 4, "internal": 1, "external": 3}
    carried = run_sql(
        database_url,
        "SELECT user_id::text, created_at FROM vote WHERE post_id = :p AND merged_from_id IS NOT NULL ORDER BY 1",
        p=second["id"],
    )
    assert sorted(u for u, _ in carried) == sorted([only_early.id, employee.id])
    assert all(abs((t - month_ago).total_seconds()) < 1 for _, t in carried), "original vote times are kept"
    merged = api.client.get(f"/api/posts/{second['id']}/merged").json()["items"]
    assert [(m["post_id"], m["author"]["id"], m["status_before"]) for m in merged] == [
        (first["id"], early.id, "under_review")
    ]
    assert merged[0]["created_at"] == first["created_at"], "who asked first, and when, stays on record"
    assert api.client.put(f"/api/posts/{first['id']}/vote", headers=late.headers).status_code == 409
    history = api.client.get(f"/api/posts/{first['id']}/history").json()["items"]
    assert history[-1]["to_status"] == "duplicate" and history[-1]["actor"]["id"] == product.id

    r = api.client.post(f"/api/posts/{first['id']}/unmerge", headers=product.headers)
    assert r.status_code == 200, r.text
    assert _state(api, database_url, first, second) == before
    assert api.client.get(f"/api/posts/{second['id']}/merged").json()["items"] == []
    assert api.client.post(f"/api/posts/{first['id']}/unmerge", headers=product.headers).status_code == 409


def test_merge_rules(api: Api) -> None:
    author = api.register()
    product = api.make_user("internal", "product")
    a, b, c = (api.post(author, title=t) for t in ("Post A", "Post B", "Post C"))
    h = product.headers
    merge = lambda src, dst, headers=h: api.client.post(  # noqa: E731
        f"/api/posts/{src['id']}/merge", json={"into": dst["id"]}, headers=headers
    )
    assert merge(a, b, author.headers).status_code == 403
    assert merge(a, a).status_code == 422
    assert api.client.post(f"/api/posts/{a['id']}/merge", json={"into": "nope"}, headers=h).status_code == 422
    assert (
        api.client.post(
            f"/api/posts/{a['id']}/merge", json={"into": "01a209e5-0000-7000-8000-000000000000"}, headers=h
        ).status_code
        == 422
    ), "no such post to merge into: invalid input, not a missing path"
    assert merge(a, b).status_code == 200
    assert merge(a, c).status_code == 409, "already merged"
    r = merge(c, a)
    assert r.status_code == 409 and r.json()["merged_into"] == b["id"], "merge into the surviving post instead"
    assert merge(b, c).status_code == 200, "chains are allowed: B (with A inside) into C"
    assert api.client.post(f"/api/posts/{a['id']}/unmerge", headers=h).status_code == 409, "unmerge B first"
    assert api.client.post(f"/api/posts/{b['id']}/unmerge", headers=h).status_code == 200
    assert api.client.post(f"/api/posts/{a['id']}/unmerge", headers=h).status_code == 200
    assert [api.client.get(f"/api/posts/{p['id']}").json()["status"] for p in (a, b, c)] == ["open"] * 3
    assert api.client.post(f"/api/posts/{c['id']}/unmerge", headers=author.headers).status_code == 403


def test_chained_merge_carries_votes_once(api: Api) -> None:
    author = api.register()
    product = api.make_user("internal", "product")
    voters = [api.register() for _ in range(3)]
    a, b, c = (api.post(author, title=t) for t in ("Post A", "Post B", "Post C"))
    for voter, post in zip(voters, (a, b, c), strict=True):
        api.client.put(f"/api/posts/{post['id']}/vote", headers=voter.headers)
    api.client.put(f"/api/posts/{c['id']}/vote", headers=voters[0].headers)  # voted on A and C
    api.client.post(f"/api/posts/{a['id']}/merge", json={"into": b["id"]}, headers=product.headers)
    r = api.client.post(f"/api/posts/{b['id']}/merge", json={"into": c["id"]}, headers=product.headers)
    assert r.json()["target"]["votes"]["total"] == 3, "three people, each counted once"

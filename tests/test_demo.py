"""The demo loader: what it writes must look, through the API, exactly like the sample says."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from forum.auth import verify_password
from forum.demo.loader import DEFAULT_SAMPLE_PATH, DemoSummary, load_demo
from forum.models import PostStatus
from tests.conftest import Api, run_sql

DEMO_PASSWORD = "demo-password-123"
SAMPLE: dict[str, Any] = json.loads(DEFAULT_SAMPLE_PATH.read_text(encoding="utf-8"))
USERS = {u["key"]: u for u in SAMPLE["users"]}
POSTS = {p["key"]: p for p in SAMPLE["posts"]}
PUBLIC = {k for k, p in POSTS.items() if p["visibility"] == "public"}
# Status changes after the initial "open": open→under_review→planned→in_progress→shipped, or →declined.
STEPS_FROM_OPEN = {
    "open": 0,
    "under_review": 1,
    "planned": 2,
    "in_progress": 3,
    "shipped": 4,
    "declined": 2,
    "duplicate": 1,
}


def _expected_votes(post: dict[str, Any]) -> dict[str, int]:
    internal = sum(USERS[v]["kind"] == "internal" for v in post["voters"])
    return {"total": len(post["voters"]), "internal": internal, "external": len(post["voters"]) - internal}


def _expected_comments(post: dict[str, Any], *, with_notes: bool) -> int:
    return sum(with_notes or not c["internal_note"] for c in post["comments"])


def _load(database_url: str, now: datetime, sample_path: Path | None = None) -> tuple[DemoSummary, float]:
    async def run() -> tuple[DemoSummary, float]:
        engine = create_async_engine(database_url, poolclass=NullPool)
        try:
            async with async_sessionmaker(engine, expire_on_commit=False)() as session:
                started = time.perf_counter()
                summary = await load_demo(session, password=DEMO_PASSWORD, now=now, sample_path=sample_path)
                await session.commit()
                return summary, time.perf_counter() - started
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _table_counts(database_url: str) -> dict[str, int]:
    tables = ("user_account", "post", "vote", "post_vote_day", "comment", "status_change")
    return {t: run_sql(database_url, f"SELECT count(*) FROM {t}")[0][0] for t in tables}


def _login(api: Api, user_key: str) -> dict[str, str]:
    r = api.client.post("/api/auth/login", json={"email": USERS[user_key]["email"], "password": DEMO_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _user_key(kind: str, role: str) -> str:
    return next(k for k, u in USERS.items() if u["kind"] == kind and u["role"] == role)


def _all_posts(api: Api, headers: dict[str, str] | None = None, **params: Any) -> dict[str, Any]:
    """Every post the viewer may see, whatever its status (the board alone lists only live posts)."""
    params = {"limit": 100, "status": [s.value for s in PostStatus], **params}
    r = api.client.get("/api/posts", params=params, headers=headers or {})
    assert r.status_code == 200, r.text
    page = r.json()
    assert len(page["items"]) == page["total"] < 100
    return page


@dataclass
class Demo:
    summary: DemoSummary
    now: datetime
    elapsed: float

    def key_of(self) -> dict[str, str]:
        return {str(v): k for k, v in self.summary.post_ids_by_key.items()}


@pytest.fixture
def demo(api: Api, database_url: str) -> Demo:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    summary, elapsed = _load(database_url, now)
    return Demo(summary, now, elapsed)


def test_summary_matches_sample_and_loads_fast(demo: Demo, database_url: str) -> None:
    s = demo.summary
    assert s.created is True
    assert (s.users, s.posts) == (len(USERS), len(POSTS))
    assert s.votes == sum(len(p["voters"]) for p in POSTS.values())
    assert s.comments == sum(len(p["comments"]) for p in POSTS.values())
    assert s.groups == len({p["group"] for p in POSTS.values() if p["group"]}) > 1
    assert set(s.post_ids_by_key) == set(POSTS)
    assert s.groups_by_key == {k: p["group"] for k, p in POSTS.items()}
    assert demo.elapsed < 3.0, f"loading took {demo.elapsed:.2f}s"
    assert _table_counts(database_url) == {
        "user_account": len(USERS),
        "post": len(POSTS),
        "vote": s.votes,
        "post_vote_day": run_sql(
            database_url, "SELECT count(DISTINCT (post_id, (created_at AT TIME ZONE 'UTC')::date)) FROM vote"
        )[0][0],
        "comment": s.comments,
        "status_change": sum(1 + STEPS_FROM_OPEN[p["status"]] for p in POSTS.values()),
    }


def test_anonymous_sees_public_posts_with_exact_counters(api: Api, demo: Demo) -> None:
    page = _all_posts(api)
    assert page["total"] == len(PUBLIC)
    key_of = demo.key_of()
    assert {key_of[item["id"]] for item in page["items"]} == PUBLIC
    for item in page["items"]:
        post = POSTS[key_of[item["id"]]]
        assert item["votes"] == _expected_votes(post), post["key"]
        assert item["comment_count"] == _expected_comments(post, with_notes=False), post["key"]
        assert item["has_voted"] is False
        assert (item["title"], item["body"]) == (post["title"].strip(), post["body"].strip())
        assert (item["kind"], item["status"], item["visibility"]) == (
            post["kind"],
            post["status"],
            "public",
        )
        assert item["tags"] == post["tags"]
        author = USERS[post["author"]]
        assert (item["author"]["display_name"], item["author"]["kind"]) == (
            author["display_name"],
            author["kind"],
        )
        assert item["updated_at"] == item["created_at"]
    # The comment list agrees with the counter and hides internal notes.
    noted = next(k for k in PUBLIC if any(c["internal_note"] for c in POSTS[k]["comments"]))
    comments = api.client.get(f"/api/posts/{demo.summary.post_ids_by_key[noted]}/comments").json()
    assert comments["total"] == _expected_comments(POSTS[noted], with_notes=False)
    assert not any(c["internal"] for c in comments["items"])
    for key in set(POSTS) - PUBLIC:
        assert api.client.get(f"/api/posts/{demo.summary.post_ids_by_key[key]}").status_code == 404


def test_internal_user_sees_internal_posts_notes_and_own_votes(api: Api, demo: Demo) -> None:
    employee = _user_key("internal", "member")
    headers = _login(api, employee)
    me = api.client.get("/api/me", headers=headers).json()
    assert (me["kind"], me["role"], me["display_name"]) == (
        "internal",
        "member",
        USERS[employee]["display_name"],
    )
    page = _all_posts(api, headers)
    assert page["total"] == len(POSTS) > len(PUBLIC)
    key_of = demo.key_of()
    assert {key_of[item["id"]] for item in page["items"]} == set(POSTS)
    for item in page["items"]:
        post = POSTS[key_of[item["id"]]]
        assert item["votes"] == _expected_votes(post), post["key"]
        assert item["comment_count"] == _expected_comments(post, with_notes=True), post["key"]
        assert item["has_voted"] is (employee in post["voters"]), post["key"]
    assert any(item["has_voted"] for item in page["items"])

    # Every role of the sample can log in with the shared password; a customer still sees public only.
    customer = _user_key("external", "member")
    assert _all_posts(api, _login(api, customer))["total"] == len(PUBLIC)
    for key in (_user_key("internal", "product"), _user_key("internal", "admin")):
        me = api.client.get("/api/me", headers=_login(api, key)).json()
        assert (me["kind"], me["role"]) == (USERS[key]["kind"], USERS[key]["role"])


def test_users_keep_kind_role_and_share_one_password_hash(demo: Demo, database_url: str) -> None:
    rows = run_sql(database_url, "SELECT email, kind, role, password_hash, created_at FROM user_account")
    assert {r.email: (r.kind, r.role) for r in rows} == {u["email"]: (u["kind"], u["role"]) for u in USERS.values()}
    hashes = {r.password_hash for r in rows}
    assert len(hashes) == 1
    assert asyncio.run(verify_password(hashes.pop(), DEMO_PASSWORD))
    # Nobody acts before their account exists.
    early = run_sql(
        database_url,
        """
        SELECT count(*) FROM user_account u WHERE
            EXISTS (SELECT 1 FROM post p WHERE p.author_id = u.id AND p.created_at < u.created_at)
            OR EXISTS (SELECT 1 FROM vote v WHERE v.user_id = u.id AND v.created_at < u.created_at)
            OR EXISTS (SELECT 1 FROM comment c WHERE c.author_id = u.id AND c.created_at < u.created_at)
        """,
    )
    assert early[0][0] == 0


def test_history_of_shipped_and_declined_posts(api: Api, demo: Demo, database_url: str) -> None:
    product_team = {
        str(r.id) for r in run_sql(database_url, "SELECT id FROM user_account WHERE role IN ('product', 'admin')")
    }
    expected_paths = {
        "shipped": ["open", "under_review", "planned", "in_progress", "shipped"],
        "declined": ["open", "under_review", "declined"],
        "planned": ["open", "under_review", "planned"],
    }
    checked = 0
    for key, post in POSTS.items():
        if post["status"] not in expected_paths or post["visibility"] != "public":
            continue
        post_id = demo.summary.post_ids_by_key[key]
        one = api.client.get(f"/api/posts/{post_id}").json()
        history = api.client.get(f"/api/posts/{post_id}/history").json()["items"]
        assert [h["to_status"] for h in history] == expected_paths[post["status"]], key
        assert [h["from_status"] for h in history] == [None] + [h["to_status"] for h in history[:-1]]
        assert history[0]["actor"]["display_name"] == USERS[post["author"]]["display_name"]
        assert history[0]["created_at"] == one["created_at"]
        assert all(h["actor"]["id"] in product_team for h in history[1:]), key
        times = [datetime.fromisoformat(h["created_at"]) for h in history]
        assert times == sorted(times) and len(set(times)) == len(times)
        assert times[-1] <= demo.now
        checked += 1
    assert checked >= 3

    # Every post, internal ones too: history starts at open and ends at the post's status.
    mismatched = run_sql(
        database_url,
        """
        SELECT p.id FROM post p
        WHERE p.status <> (SELECT s.to_status FROM status_change s WHERE s.post_id = p.id
                           ORDER BY s.created_at DESC, s.id DESC LIMIT 1)
           OR 1 <> (SELECT count(*) FROM status_change s WHERE s.post_id = p.id
                    AND s.from_status IS NULL AND s.to_status = 'open' AND s.created_at = p.created_at
                    AND s.actor_id = p.author_id)
           OR EXISTS (SELECT 1 FROM status_change s WHERE s.post_id = p.id
                      AND (s.created_at < p.created_at OR s.created_at > :now))
        """,
        now=demo.now,
    )
    assert mismatched == []


def test_sort_new_follows_days_ago(api: Api, demo: Demo) -> None:
    page = _all_posts(api, _login(api, _user_key("internal", "member")), sort="new")
    key_of = demo.key_of()
    ordered = [POSTS[key_of[item["id"]]] for item in page["items"]]
    assert len(ordered) == len(POSTS)
    days = [p["days_ago"] for p in ordered]
    assert days == sorted(days)
    created = [datetime.fromisoformat(item["created_at"]) for item in page["items"]]
    assert len(set(created)) == len(created), "posts on the same day get distinct times"
    for post, at in zip(ordered, created, strict=True):
        age = demo.now - at
        assert timedelta(days=post["days_ago"]) <= age < timedelta(days=post["days_ago"] + 1), post["key"]


def test_loading_twice_creates_nothing(api: Api, demo: Demo, database_url: str) -> None:
    before = _table_counts(database_url)
    again, _ = _load(database_url, demo.now + timedelta(days=1))
    assert again.created is False
    assert (again.users, again.posts, again.votes, again.comments) == (0, 0, 0, 0)
    assert again.groups == demo.summary.groups
    assert again.post_ids_by_key == demo.summary.post_ids_by_key
    assert again.groups_by_key == demo.summary.groups_by_key
    assert _table_counts(database_url) == before


def test_vote_times_buckets_and_counters_are_consistent(demo: Demo, database_url: str) -> None:
    out_of_range = run_sql(
        database_url,
        """
        SELECT v.post_id FROM vote v JOIN post p ON p.id = v.post_id
        WHERE v.created_at < p.created_at OR v.created_at > :now
        """,
        now=demo.now,
    )
    assert out_of_range == []
    # Votes are spread over time: not all on one day, and some in the trending window.
    spread = run_sql(
        database_url,
        "SELECT count(DISTINCT (created_at AT TIME ZONE 'UTC')::date), max(created_at) FROM vote",
    )[0]
    assert spread[0] > 20 and spread[1] > demo.now - timedelta(days=14)

    buckets = run_sql(database_url, "SELECT post_id, day, votes FROM post_vote_day")
    from_votes = run_sql(
        database_url,
        """
        SELECT post_id, (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS votes
        FROM vote GROUP BY 1, 2
        """,
    )
    assert sorted(map(tuple, buckets)) == sorted(map(tuple, from_votes))
    assert all(b.votes > 0 for b in buckets)

    counters = run_sql(
        database_url,
        """
        SELECT p.id,
               p.vote_total = (SELECT count(*) FROM vote v WHERE v.post_id = p.id)
           AND p.vote_internal = (SELECT count(*) FROM vote v JOIN user_account u ON u.id = v.user_id
                                  WHERE v.post_id = p.id AND u.kind = 'internal' AND v.voter_kind = u.kind)
           AND p.vote_external = (SELECT count(*) FROM vote v JOIN user_account u ON u.id = v.user_id
                                  WHERE v.post_id = p.id AND u.kind = 'external' AND v.voter_kind = u.kind)
           AND p.comment_count = (SELECT count(*) FROM comment c WHERE c.post_id = p.id AND NOT c.internal)
           AND p.internal_note_count = (SELECT count(*) FROM comment c WHERE c.post_id = p.id AND c.internal)
               AS exact
        FROM post p
        """,
    )
    assert len(counters) == len(POSTS) and all(r.exact for r in counters)

    bad_comments = run_sql(
        database_url,
        """
        SELECT c.id FROM comment c JOIN post p ON p.id = c.post_id
        WHERE c.created_at < p.created_at OR c.created_at > :now OR c.updated_at <> c.created_at
        """,
        now=demo.now,
    )
    assert bad_comments == []


def test_demo_posts_work_with_live_votes(api: Api, demo: Demo) -> None:
    key = next(k for k in sorted(PUBLIC) if POSTS[k]["voters"])
    post = POSTS[key]
    voter = next(k for k, u in USERS.items() if u["kind"] == "external" and k not in post["voters"])
    headers = _login(api, voter)
    url = f"/api/posts/{demo.summary.post_ids_by_key[key]}/vote"
    state = api.client.put(url, headers=headers).json()
    expected = _expected_votes(post)
    assert state["votes"] == {**expected, "total": expected["total"] + 1, "external": expected["external"] + 1}
    already = post["voters"][0]
    state = api.client.put(url, headers=_login(api, already)).json()
    assert state["has_voted"] is True
    assert datetime.fromisoformat(state["voted_at"]) <= demo.now


def test_bad_sample_or_password_is_rejected_before_writing(tmp_path: Path, database_url: str) -> None:
    before = _table_counts(database_url)
    bad = json.loads(json.dumps(SAMPLE))
    bad["posts"][0]["title"] = "  x "
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(ValueError, match="title"):
        _load(database_url, datetime.now(UTC), sample_path=path)

    async def short_password() -> None:
        engine = create_async_engine(database_url, poolclass=NullPool)
        try:
            async with async_sessionmaker(engine)() as session:
                await load_demo(session, password="short")
        finally:
            await engine.dispose()

    with pytest.raises(ValueError, match="password"):
        asyncio.run(short_password())
    with pytest.raises(ValueError, match="timezone"):
        _load(database_url, datetime.now())
    assert _table_counts(database_url) == before


def test_shipped_demo_posts_are_credited_and_followed(api: Api, demo: Demo) -> None:
    shipped = [p for p in SAMPLE["posts"] if p["status"] == "shipped" and p["visibility"] == "public"]
    changelog = api.client.get("/api/changelog").json()
    assert changelog["total"] == len(shipped) >= 1
    by_title = {e["title"]: e for e in changelog["items"]}
    for post in shipped:
        entry = by_title[post["title"].strip()]
        pioneer = [c for c in entry["credits"] if c["reason"] == "pioneer"]
        assert [c["user"]["display_name"] for c in pioneer] == [USERS[post["author"]]["display_name"]]
        voters = [c for c in entry["credits"] if c["reason"] == "early_voter"]
        assert len(voters) == min(10, len(post["voters"]))
        assert datetime.fromisoformat(entry["shipped_at"]) < demo.now, "dated when it shipped, not at load"
    # Authors follow their posts: a status change reaches them.
    post = next(p for p in SAMPLE["posts"] if p["status"] == "open" and p["visibility"] == "public")
    product = _login(api, _user_key("internal", "product"))
    post_id = demo.summary.post_ids_by_key[post["key"]]
    assert (
        api.client.post(f"/api/posts/{post_id}/status", json={"status": "planned"}, headers=product).status_code == 200
    )
    inbox = api.client.get("/api/me/notifications", headers=_login(api, post["author"])).json()
    assert "status_changed" in [n["kind"] for n in inbox["items"]]

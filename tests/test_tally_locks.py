"""Changes that touch two clusters' tally rows at once (migration 0019): merges and unmerges between posts of
two clusters, moves between them and votes, all racing in both directions. Every answer is a success or a
clean problem (never a 500: a deadlock PostgreSQL broke by aborting one side), and the tallies equal a
fresh count afterwards. A collision that still happens answers 409 with Retry-After, never 500."""

from __future__ import annotations

import random
from types import SimpleNamespace

import msgspec
import pytest
from sqlalchemy.exc import DBAPIError

from forum.errors import exception_handlers
from tests.conftest import Api, run_sql
from tests.test_cluster_tally import (
    DAYS_FROM_SCRATCH,
    DAYS_MAINTAINED,
    FROM_SCRATCH,
    GROWTH_INVARIANT,
    MAINTAINED,
    _clusters,
)
from tests.test_concurrency import _all_at_once, _register_many

ROUNDS = 6
PAIRS = 4


def test_opposite_changes_across_two_clusters_never_fail_and_keep_the_tally(api: Api, database_url: str) -> None:
    product = api.make_user("internal", "product")
    author = api.register("author")
    voters = _register_many(api, 6)
    # x[i] and y[i] alternate between the two clusters: x in the first, y in the second.
    posts = [api.post(author, title=f"Two-cluster idea {i}") for i in range(2 * PAIRS * ROUNDS + 4)]
    first, second = _clusters(database_url, posts, 2)
    x, y = posts[0::2], posts[1::2]
    rng = random.Random(19)
    for post in posts:
        for voter in rng.sample(voters, 3):
            assert api.client.put(f"/api/posts/{post['id']}/vote", headers=voter.headers).status_code == 200

    def merge(source: dict, target: dict):
        return api.client.post(f"/api/posts/{source['id']}/merge", json={"into": target["id"]}, headers=product.headers)

    def unmerge(source: dict):
        return api.client.post(f"/api/posts/{source['id']}/unmerge", headers=product.headers)

    def move(post: dict, cluster: str):
        return api.client.post(
            f"/api/posts/{post['id']}/cluster", json={"cluster_id": cluster}, headers=product.headers
        )

    def vote(post: dict):
        voter = rng.choice(voters)
        return api.client.put(f"/api/posts/{post['id']}/vote", headers=voter.headers)

    answers = []
    merged: list[dict] = []
    for r in range(ROUNDS):
        xs, ys = x[r * PAIRS : (r + 1) * PAIRS], y[r * PAIRS : (r + 1) * PAIRS]
        calls = []
        for i in range(0, PAIRS, 2):
            # opposite merges: an x (first cluster) into a y, a y (second cluster) into an x
            calls += [lambda s=xs[i], t=ys[i]: merge(s, t), lambda s=ys[i + 1], t=xs[i + 1]: merge(s, t)]
        calls += [lambda s=s: unmerge(s) for s in merged]  # the last round's, undone while the new ones run
        # opposite moves, and votes on both clusters' posts
        calls += [lambda: move(x[-1], second), lambda: move(y[-1], first)]
        calls += [lambda: move(x[-2], second), lambda: move(y[-2], first)]
        targets = [ys[i] for i in range(0, PAIRS, 2)] + [xs[i + 1] for i in range(0, PAIRS, 2)]
        calls += [lambda p=p: vote(p) for p in rng.sample(x[-2:] + y[-2:] + targets, 6)]
        merged = [xs[i] for i in range(0, PAIRS, 2)] + [ys[i + 1] for i in range(0, PAIRS, 2)]
        answers += _all_at_once(calls)
        # back where they were, one at a time, so the next round's moves are opposite again
        for post, home in ((x[-1], first), (y[-1], second), (x[-2], first), (y[-2], second)):
            move(post, home)

    # Each call is allowed on its own, so each succeeds: not even a clean 409 for a collision (a deadlock
    # PostgreSQL broke answers one since 0019, a 500 before).
    failed = [(r.request.url.path, r.status_code, r.text) for r in answers if r.status_code != 200]
    assert not failed, failed
    assert run_sql(database_url, MAINTAINED) == run_sql(database_url, FROM_SCRATCH)
    assert run_sql(database_url, DAYS_MAINTAINED) == run_sql(database_url, DAYS_FROM_SCRATCH)
    for row in run_sql(database_url, GROWTH_INVARIANT):
        assert row[1:3] == row[3:5] and row[5], row


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__("deadlock detected")
        self.sqlstate = sqlstate


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
@pytest.mark.parametrize("wrapped", [True, False])
def test_a_collision_postgresql_broke_answers_409_to_send_again(sqlstate: str, wrapped: bool) -> None:
    """Deadlock and serialization failures, through SQLAlchemy or raised by the driver itself (the vote path)."""
    error: Exception = _PgError(sqlstate)
    if wrapped:
        error = DBAPIError("UPDATE cluster_tally ...", None, error)
    handler = next(h for kind, h in exception_handlers.items() if isinstance(error, kind))
    request = SimpleNamespace(method="POST", url=SimpleNamespace(path="/api/posts/x/merge"))
    response = handler(request, error)
    assert response.status_code == 409 and response.headers["Retry-After"] == "1"
    assert msgspec.json.decode(msgspec.json.encode(response.content))["type"] == "/problems/conflict"

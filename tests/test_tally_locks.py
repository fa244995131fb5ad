"""Changes that touch two clusters' tally rows at once (migration 0019): merges and unmerges between posts of
two clusters, moves between them and votes, all racing in both directions. Every answer is a success or a
clean problem (never a 500: a deadlock PostgreSQL broke by aborting one side), and the tallies equal a
fresh count afterwards. A collision that still happens answers 409 with Retry-After, never 500."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from types import SimpleNamespace
from uuid import UUID

import msgspec
import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from forum.encoding import PostEmbedder, get_encoder
from forum.errors import exception_handlers
from forum.jobs import read_and_encode, write_and_group
from tests.conftest import Actor, Api, run_sql
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
WORKER_ROUNDS = 12
SHIP_ROUNDS = 8
CLUSTER_OF = (
    "SELECT cluster_id FROM cluster_membership WHERE post_id = ANY(CAST(:ids AS uuid[])) AND state <> 'rejected'"
)


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


def _deadlocks(database_url: str) -> int:
    """Deadlocks PostgreSQL broke in this database so far (the worker retries its own, so answers miss them)."""
    time.sleep(1.2)  # backends flush their statistics at most once a second
    return run_sql(database_url, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")[0][0]


def test_the_worker_grouping_new_posts_into_two_clusters_while_people_merge_across_them(
    api: Api, settings, database_url: str, drain
) -> None:
    """The worker's batch places new posts into clusters X and Y (alternately: Y, X, Y, X...) in one
    transaction while the product team merges and unmerges posts of X into Y and of Y into X, and moves
    posts between them. No answer fails, PostgreSQL breaks no deadlock (not even one the worker would retry),
    and the tallies equal a recount."""
    product = api.make_user("internal", "product")
    author = api.register("author")
    voters = _register_many(api, 4)
    titles = {"x": "Dark mode for the whole dashboard", "y": "Export every invoice as a CSV file"}
    seeds = {side: [api.post(author, title=titles[side]) for _ in range(6)] for side in titles}
    drain()
    clusters = {
        side: {row[0] for row in run_sql(database_url, CLUSTER_OF, ids=[p["id"] for p in posts])}
        for side, posts in seeds.items()
    }
    assert all(len(c) == 1 for c in clusters.values()) and clusters["x"] != clusters["y"], clusters
    x_cluster, y_cluster = (str(next(iter(clusters[side]))) for side in ("x", "y"))
    for post in seeds["x"] + seeds["y"]:
        for voter in voters[:2]:
            assert api.client.put(f"/api/posts/{post['id']}/vote", headers=voter.headers).status_code == 200
    embedder = PostEmbedder(get_encoder(settings.embedding_model))
    before = _deadlocks(database_url)
    done = threading.Event()

    def worker() -> list:
        async def batches() -> None:
            maker = async_sessionmaker(create_async_engine(database_url, poolclass=NullPool), expire_on_commit=False)
            for _ in range(WORKER_ROUNDS):
                # Y first, then X, alternately, in one batch: the order a merge of X into Y does not take.
                ids = [UUID(api.post(author, title=titles[side])["id"]) for _ in range(3) for side in ("y", "x")]
                batch = await read_and_encode(maker, embedder, ids)
                await write_and_group(maker, embedder, batch, settings.duplicate_threshold)

        try:
            asyncio.run(batches())
        finally:
            done.set()
        return []

    def churn(sources: list[dict], targets: list[dict], home: str, away: str, mover: dict) -> list:
        answers = []
        while not done.is_set():
            for source, target in zip(sources, targets, strict=True):
                url = f"/api/posts/{source['id']}"
                answers.append(api.client.post(f"{url}/merge", json={"into": target["id"]}, headers=product.headers))
                if answers[-1].status_code == 200:  # else the unmerge's 409 would only repeat the merge's
                    answers.append(api.client.post(f"{url}/unmerge", headers=product.headers))
            for cluster in (away, home):
                answers.append(
                    api.client.post(
                        f"/api/posts/{mover['id']}/cluster", json={"cluster_id": cluster}, headers=product.headers
                    )
                )
        return answers

    x, y = seeds["x"], seeds["y"]
    results = _all_at_once(
        [
            worker,
            lambda: churn(x[:2], y[:2], x_cluster, y_cluster, x[-1]),  # X into Y
            lambda: churn(y[2:4], x[2:4], y_cluster, x_cluster, y[-1]),  # Y into X
        ]
    )
    answers = [answer for result in results for answer in result]
    failed = [(r.request.url.path, r.status_code, r.text) for r in answers if r.status_code != 200]
    assert answers and not failed, failed
    assert _deadlocks(database_url) == before, "a deadlock PostgreSQL broke (the worker's, retried, or a person's)"
    assert run_sql(database_url, MAINTAINED) == run_sql(database_url, FROM_SCRATCH)
    assert run_sql(database_url, DAYS_MAINTAINED) == run_sql(database_url, DAYS_FROM_SCRATCH)


def test_shipping_an_idea_whose_critiques_sit_in_two_clusters_while_people_vote_and_move_them(
    api: Api, database_url: str
) -> None:
    """Shipping marks the idea's linked critiques addressed (un-shipping reopens them): one transaction that
    changes posts of clusters X and Y, while people vote on those critiques and move one between the two.
    Only the business answers (an addressed critique takes no votes; already voted) may refuse, no deadlock
    is broken, and the tallies equal a recount."""
    product = api.make_user("internal", "product")
    author, critic = api.register("author"), api.register("critic")
    voters = _register_many(api, 6)
    idea = api.post(author, title="Offline mode for the mobile app")
    critiques = [api.post(critic, kind="critique", title=f"Critique {i} of the mobile app") for i in range(6)]
    first, second = _clusters(database_url, [idea, *critiques], 2)  # the idea and half the critiques in X
    for critique in critiques:
        url = f"/api/posts/{idea['id']}/critiques"
        assert api.client.post(url, json={"critique_id": critique["id"]}, headers=product.headers).status_code == 201
    done = threading.Event()
    before = _deadlocks(database_url)

    def ship() -> list:
        answers = []
        try:
            for r in range(2 * SHIP_ROUNDS):
                status = "shipped" if r % 2 == 0 else "planned"
                answers.append(
                    api.client.post(f"/api/posts/{idea['id']}/status", json={"status": status}, headers=product.headers)
                )
        finally:
            done.set()
        return answers

    def votes(voter: Actor) -> list:
        answers = []
        while not done.is_set():
            for critique in critiques:
                url = f"/api/posts/{critique['id']}/vote"
                answers.append(api.client.put(url, headers=voter.headers))
                answers.append(api.client.delete(url, headers=voter.headers))
        return answers

    def moves() -> list:
        answers = []
        while not done.is_set():
            for cluster in (first, second):
                url = f"/api/posts/{critiques[0]['id']}/cluster"
                answers.append(api.client.post(url, json={"cluster_id": cluster}, headers=product.headers))
        return answers

    results = _all_at_once([ship, moves, *(lambda v=v: votes(v) for v in voters[:3])])
    answers = [answer for result in results for answer in result]
    failed = [
        (r.request.url.path, r.status_code, r.text)
        for r in answers
        if r.status_code != 200
        and not (r.status_code == 409 and "no longer takes votes" in r.text)
        and not (r.status_code == 409 and "already in this cluster" in r.text)
    ]
    assert answers and not failed, failed
    assert _deadlocks(database_url) == before, "a deadlock PostgreSQL broke"
    assert run_sql(database_url, MAINTAINED) == run_sql(database_url, FROM_SCRATCH)
    assert run_sql(database_url, DAYS_MAINTAINED) == run_sql(database_url, DAYS_FROM_SCRATCH)

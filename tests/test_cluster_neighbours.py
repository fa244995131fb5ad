"""A cluster's description and its members' explanations with bounded work (forum/grouping/neighbours.py,
issue 14): the same nearest members and central post as scoring every pair, a fixed number of statements
whatever the cluster's size, and at most ``MAX_COMPARED`` comparisons per member.

Counts, never wall time. With the deterministic hashing encoder (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from litestar.testing import TestClient
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from embeddings import LinearCalibration
from forum.app import create_app
from forum.encoding import PostEmbedder, Route, get_encoder, post_text
from forum.grouping import neighbours, terms
from forum.grouping.descriptions import refresh
from forum.grouping.neighbours import MemberVectors
from forum.grouping.pairs import scores_of
from forum.settings import Settings
from tests.conftest import Api, QueryCounter, run_sql
from tests.test_multilingual_app import MULTI

WORDS = "dark mode theme night colour screen app mobile contrast black eyes battery evening reading".split()


def _brute_scores(table: MemberVectors) -> dict[tuple[int, int], float]:
    """Every ordered pair's score by its definition (the route of the first post's class whose candidates
    hold the second post), one pair at a time."""
    scores = {}
    for i, j in itertools.permutations(range(len(table.post_ids)), 2):
        for route in table.routes[table.classes[i]]:
            m = route.model
            if table.has[m][i] and table.has[m][j] and table.candidates[route.candidates][j]:
                cosine = float(table.vectors[m][i].astype(np.float64) @ table.vectors[m][j].astype(np.float64))
                scores[(i, j)] = route.calibration.slope * cosine + route.calibration.intercept
    return scores


def _brute_central(n: int, scores: dict[tuple[int, int], float]) -> int | None:
    by_first: dict[int, list[float]] = {}
    for (a, _), score in scores.items():
        by_first.setdefault(a, []).append(score)
    means = {i: float(np.mean(values)) for i, values in by_first.items()}
    if not means:
        return None
    best = max(means.values())
    return min(i for i, m in means.items() if m >= best - neighbours.TIE)


def _synthetic(n: int, seed: int) -> MemberVectors:
    """Two encoders, three language classes with two routes each (as the multilingual configuration),
    calibrations that differ, a few posts without one encoder's vector and a pair of identical posts."""
    rng = np.random.default_rng(seed)
    vectors = {}
    for model, dim in (("english", 16), ("multi", 12)):
        v = rng.normal(size=(n, dim)).astype(np.float32)
        v[1] = v[0]  # a tie
        vectors[model] = v / np.linalg.norm(v, axis=1, keepdims=True)
    has = {"english": rng.random(n) > 0.1, "multi": rng.random(n) > 0.1}
    has["english"][:2] = has["multi"][:2] = True
    for model, present in has.items():
        vectors[model][~present] = 0
    language = rng.integers(0, 3, n)  # 0 en, 1 und, 2 es
    candidates = {"en-und": language < 2, "others": language == 2, "en": language == 0, "not-en": language > 0}
    cal = [LinearCalibration(1.0, 0.0), LinearCalibration(0.8, 0.1), LinearCalibration(1.2, -0.05)]
    english_routes = [Route("english", 16, "en-und", cal[0]), Route("multi", 12, "others", cal[1])]
    other_routes = [Route("multi", 12, "en", cal[1]), Route("multi", 12, "not-en", cal[2])]
    ids = [uuid.UUID(int=int(rng.integers(0, 2**62))) for _ in range(n)]
    routes = [english_routes, english_routes, other_routes]
    return MemberVectors(ids, language.astype(np.intp), routes, vectors, has, candidates)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_central_and_nearest_are_those_of_every_pair_scored(seed: int) -> None:
    table = _synthetic(60, seed)
    scores = _brute_scores(table)
    assert table.central() == _brute_central(60, scores)
    ids = table.post_ids
    by_id = {post_id: i for i, post_id in enumerate(ids)}
    by_pair = {(ids[a], ids[b]): s for (a, b), s in scores.items()}
    for i, found in enumerate(table.nearest()):
        exact = terms.nearest_of(ids[i], ids, by_pair)
        if exact is None:
            assert found is None
            continue
        assert found is not None and abs(found[1] - exact[1]) < 1e-5
        assert found[0] == by_id[exact[0]] or abs(scores[(i, found[0])] - exact[1]) < neighbours.TIE
    assert table.nearest()[0][0] == 1 and table.nearest()[1][0] == 0, "identical posts are each other's nearest"


def test_nearest_compares_each_member_with_at_most_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(neighbours, "MAX_COMPARED", 40)
    monkeypatch.setattr(neighbours, "BLOCK_ROWS", 16)
    compared = []
    scores_block = MemberVectors._scores

    def counted(self: MemberVectors, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        compared.append(rows.size * cols.size)
        assert rows.size <= 16 and cols.size <= 40
        return scores_block(self, rows, cols)

    monkeypatch.setattr(MemberVectors, "_scores", counted)
    table = _synthetic(300, 4)
    found = table.nearest()
    assert sum(compared) == 300 * 40, "each member against the newest 40, nothing more"
    newest = table.select(table.post_ids[-40:])
    assert [n[0] - 260 if n else None for n in found[-40:]] == [n[0] if n else None for n in newest.nearest()]
    assert all(n is None or n[0] >= 260 for n in found)


# --------------------------------------------------------------------------- a big cluster in the database


def _big_cluster(api: Api, drain, database_url: str, settings: Any, n: int) -> tuple[str, list[str]]:
    """One cluster of ``n`` members: one post through the API, the rest written with SQL (posts, their
    hashing vectors, memberships), so building it costs a few statements, not ``n`` worker jobs."""
    author = api.register()
    first = api.post(author, title="Dark mode for the app")
    drain()
    cluster = api.client.get(f"/api/posts/{first['id']}").json()["cluster_id"]
    titles = [f"Dark mode {' '.join(w)}" for w in itertools.islice(itertools.permutations(WORDS, 3), n - 1)]
    ids = [str(uuid.uuid4()) for _ in titles]
    encoder = get_encoder(settings.embedding_model)
    vectors = encoder.encode([post_text(t, "") for t in titles])
    run_sql(
        database_url,
        "INSERT INTO post (id, kind, title, body, tags, visibility, status, author_id, created_at, updated_at)"
        " SELECT t.id, 'idea', t.title, '', '{}', 'public', 'open', CAST(:author AS uuid),"
        " now() + t.n * interval '1 ms', now()"
        " FROM unnest(CAST(:ids AS uuid[]), CAST(:titles AS text[])) WITH ORDINALITY AS t(id, title, n)",
        ids=ids,
        titles=titles,
        author=author.id,
    )
    run_sql(
        database_url,
        "INSERT INTO post_embedding (post_id, model, content_hash, embedding)"
        " SELECT t.id, :model, 'test', CAST(t.v AS vector)"
        " FROM unnest(CAST(:ids AS uuid[]), CAST(:vectors AS text[])) AS t(id, v)",
        ids=ids,
        model=encoder.name,
        vectors=["[" + ",".join(f"{x:.7f}" for x in v) + "]" for v in vectors],
    )
    run_sql(
        database_url,
        "INSERT INTO cluster_membership (post_id, cluster_id, similarity, state)"
        " SELECT t.id, CAST(:c AS uuid), 0.5, 'suggested' FROM unnest(CAST(:ids AS uuid[])) AS t(id)",
        ids=ids,
        c=cluster,
    )
    return cluster, [first["id"], *ids]


async def _in_session(database_url: str, model: str, work: Any) -> Any:
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session, session.begin():
            embedder = PostEmbedder(get_encoder(model))
            await embedder.ready()
            return await work(session, embedder)
    finally:
        await engine.dispose()


def test_a_big_cluster_is_described_in_a_few_statements_as_every_pair_would(
    api: Api, drain, database_url: str, settings: Any, count_queries: QueryCounter
) -> None:
    n = 300
    cluster, members = _big_cluster(api, drain, database_url, settings, n)
    cluster_id = uuid.UUID(cluster)

    async def described(session: Any, embedder: PostEmbedder) -> int:
        return await refresh(session, embedder, [cluster_id], True, explain_all=True)

    before = count_queries.count
    assert asyncio.run(_in_session(database_url, settings.embedding_model, described)) == 1
    statements = count_queries.statements[before:]
    # revisions, members, vectors, word frequencies, channels, the description, the explanations
    # the same for 3 members or 3,000
    assert len(statements) <= 7, statements

    (row,) = run_sql(
        database_url,
        "SELECT d.representative_id::text, d.explanations FROM cluster_description d"
        " WHERE d.cluster_id = :c AND d.sees_internal",
        c=cluster,
    )
    representative, stored = row
    explained = stored["members"]
    assert set(explained) == set(members) and all(e["nearest"] for e in explained.values())

    # The exact method: every ordered pair scored by PostgreSQL, the nearest and the highest mean in Python.
    async def every_pair(session: Any, embedder: PostEmbedder) -> dict[tuple[uuid.UUID, uuid.UUID], float]:
        ids = [uuid.UUID(m) for m in members]
        return await scores_of(session, embedder, itertools.permutations(ids, 2))

    scores = asyncio.run(_in_session(database_url, settings.embedding_model, every_pair))
    ids = [uuid.UUID(m) for m in members]
    for post_id in ids:
        exact = terms.nearest_of(post_id, ids, scores)
        got = explained[str(post_id)]["nearest"]
        assert exact is not None and abs(got["similarity"] - round(exact[1], 4)) <= 1e-4
        assert got["post_id"] == str(exact[0]) or abs(scores[(post_id, uuid.UUID(got["post_id"]))] - exact[1]) < 1e-5
    by_first: dict[uuid.UUID, list[float]] = {}
    for (a, _), score in scores.items():
        by_first.setdefault(a, []).append(score)
    means = {a: float(np.mean(values)) for a, values in by_first.items()}
    best = max(means.values())
    assert means[uuid.UUID(representative)] >= best - 1e-5, "the member with the highest mean score"

    # Only old (board-wide word frequencies move): the description is redone, the explanations are kept.
    run_sql(database_url, "UPDATE cluster_description SET computed_at = now() - interval '1 hour'")
    before = count_queries.count
    assert asyncio.run(_in_session(database_url, settings.embedding_model, described)) == 1
    assert not [s for s in count_queries.statements[before:] if "SET explanations" in s]
    assert len(count_queries.statements[before:]) <= 6


def test_the_members_page_names_rejected_in_its_sql(
    api: Api, drain, database_url: str, settings: Any, count_queries: QueryCounter
) -> None:
    """The members page's statement says 'rejected' itself, not as a bound parameter: asyncpg prepares it and
    PostgreSQL's generic plan (after five runs) can use the partial index ix_cluster_membership_recent only
    then; with a parameter it read every membership of the cluster (4-5 ms of PostgreSQL CPU a page for the
    largest at 100k posts instead of 0.2)."""
    product = api.make_user("internal", "product")
    cluster, _ = _big_cluster(api, drain, database_url, settings, 3)
    before = count_queries.count
    assert api.client.get(f"/api/clusters/{cluster}", headers=product.headers).status_code == 200
    (page,) = [s for s in count_queries.statements[before:] if "is_rejected" in s]
    assert "cluster_membership.state != 'rejected'" in page and "cluster_membership.state = 'rejected'" in page


@pytest.fixture
def multi_api(settings: Settings, database_url: str, client: TestClient) -> Iterator[Api]:
    """The app with the two stand-in encoders of the multilingual design (tests/test_multilingual_app.py)."""
    with TestClient(app=create_app(replace(settings, embedding_model=MULTI))) as test_client:
        yield Api(test_client, database_url)


def test_the_multilingual_routes_score_as_the_pair_queries_do(multi_api: Api, drain, database_url: str) -> None:
    """Two encoders, posts in English, Spanish and undetermined: each post's nearest and the most central
    post from the vectors in numpy are those of every ordered pair scored by ``pairs.scores_of`` (SQL)."""
    author = multi_api.register()
    titles = [
        "Dark mode for the mobile app at night",
        "Please add a dark theme to the app",
        "Modo oscuro en la aplicación para la noche",
        "Quiero modo oscuro en la app",
        "Export invoices as PDF files",
        "Facturas mensuales en PDF para contabilidad",
        "Ok 123",
    ]
    posts = [multi_api.post(author, title=t) for t in titles]
    drain(encoder=get_encoder(MULTI))
    ids = [uuid.UUID(p["id"]) for p in posts]
    languages = {row[0] for row in run_sql(database_url, "SELECT DISTINCT language FROM post")}
    assert {"en", "es"} <= languages

    async def both(session: Any, embedder: PostEmbedder) -> Any:
        table = await neighbours.member_vectors(session, embedder, ids)
        return table.central(), table.nearest(), await scores_of(session, embedder, itertools.permutations(ids, 2))

    central, nearest, scores = asyncio.run(_in_session(database_url, MULTI, both))
    for i, post_id in enumerate(ids):
        exact = terms.nearest_of(post_id, ids, scores)
        assert (nearest[i] is None) == (exact is None)
        if exact is not None:
            assert abs(nearest[i][1] - exact[1]) < 1e-5
            assert ids[nearest[i][0]] == exact[0] or abs(scores[(post_id, ids[nearest[i][0]])] - exact[1]) < 1e-5
    by_first: dict[uuid.UUID, list[float]] = {}
    for (a, _), score in scores.items():
        by_first.setdefault(a, []).append(score)
    means = {a: float(np.mean(values)) for a, values in by_first.items()}
    assert means[ids[central]] >= max(means.values()) - 1e-5

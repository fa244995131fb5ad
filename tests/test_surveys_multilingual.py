"""A Spanish detractor's survey comment and an English idea about the same need meet in one cluster, with
the real models (FORUM_EMBEDDING_MODEL=multilingual: all-MiniLM-L6-v2 for English pairs, USE multilingual
for the rest, calibrated onto one scale). One model load: the app and the worker share the process's encoder.
The demo's survey is read here too, grouped and placed with the same models, as `forum demo load` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from litestar.testing import TestClient
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from embeddings.multilingual import DEFAULT_MULTILINGUAL_THRESHOLD
from forum.app import create_app
from forum.demo.loader import load_demo, read_sample
from forum.encoding import PostEmbedder, get_encoder
from forum.jobs import embed_stale_now
from forum.settings import Settings
from forum.surveys.voices import place_voices_now
from tests.conftest import Api
from tests.test_surveys import answer, make_survey

MULTILINGUAL = "multilingual"


@pytest.fixture
def real_api(settings: Settings, database_url: str, client: TestClient) -> Iterator[Api]:
    """The app with the real multilingual models (the `client` fixture's teardown empties the database)."""
    real = replace(settings, embedding_model=MULTILINGUAL, duplicate_threshold=DEFAULT_MULTILINGUAL_THRESHOLD)
    with TestClient(app=create_app(real)) as test_client:
        yield Api(test_client, database_url)


def test_a_spanish_detractor_comment_joins_the_english_idea_about_the_same_need(real_api: Api, drain) -> None:
    api = real_api
    author, product = api.register("author"), api.make_user("internal", "product")
    idea = api.post(author, title="Faster replies in the support chat", body="Support chat takes forever to answer")
    other = api.post(author, title="Export invoices as PDF", body="Our accountant needs PDF invoices")

    def run_worker() -> dict[str, int]:
        return drain(encoder=get_encoder(MULTILINGUAL), threshold=DEFAULT_MULTILINGUAL_THRESHOLD)

    run_worker()
    survey = make_survey(api, product, question_es="¿Recomendarías la app a un amigo?")
    customer = api.register("cliente")
    voiced = answer(api, customer, survey, 2, comment="El chat de soporte tarda muchísimo en responder")
    assert run_worker().get("voice_placed") == 1

    cluster = api.client.get(f"/api/posts/{idea['id']}", headers=product.headers).json()["cluster_id"]
    elsewhere = api.client.get(f"/api/posts/{other['id']}", headers=product.headers).json()["cluster_id"]
    voices = api.client.get(f"/api/clusters/{cluster}/voices", headers=product.headers).json()["items"]
    assert [v["answer"]["id"] for v in voices] == [voiced["id"]]
    voice = voices[0]["answer"]
    assert (voice["language"], voice["bucket"]) == ("es", "detractor")
    assert voice["similarity"] >= DEFAULT_MULTILINGUAL_THRESHOLD
    assert api.client.get(f"/api/clusters/{elsewhere}/voices", headers=product.headers).json()["total"] == 0
    drivers = api.client.get(f"/api/surveys/{survey['id']}/drivers", headers=product.headers).json()["items"]
    assert [(d["cluster_id"], d["detractors"]) for d in drivers] == [(cluster, 1)]


def test_the_demo_shows_nps_per_cluster_and_a_ship_before_and_after(real_api: Api, database_url: str) -> None:
    """`forum demo load`'s survey, grouped and placed as the command does, read as a newcomer would."""

    async def load() -> dict:
        engine = create_async_engine(database_url, poolclass=NullPool)
        try:
            async with async_sessionmaker(engine, expire_on_commit=False)() as session, session.begin():
                summary = await load_demo(session, password="demo-password", now=datetime.now(UTC))
        finally:
            await engine.dispose()
        embedder = PostEmbedder(get_encoder(MULTILINGUAL))
        await embed_stale_now(database_url, embedder, DEFAULT_MULTILINGUAL_THRESHOLD)
        placed = await place_voices_now(database_url, embedder, DEFAULT_MULTILINGUAL_THRESHOLD)
        return {"summary": summary, "placed": placed}

    loaded = asyncio.run(load())
    assert loaded["placed"].get("placed", 0) >= 20, loaded["placed"]  # of 28 comments; small talk stays alone
    sample = read_sample()
    group_of = {p.title: p.group for p in sample.posts}
    product = next(u for u in sample.users if u.role == "product")
    token = real_api.client.post("/api/auth/login", json={"email": product.email, "password": "demo-password"}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    (survey,) = real_api.client.get("/api/surveys", headers=headers).json()["items"]
    result = real_api.client.get(f"/api/surveys/{survey['id']}/report", headers=headers).json()
    assert result["overall"]["responses"] == 24, "each of the 24 respondents' latest answer counts"
    assert result["by_kind"]["internal"]["responses"] + result["by_kind"]["external"]["responses"] == 24
    assert {p["property"] for p in result["by_property"]} == {"channel", "city", "plan"}
    detractors: dict[str, int] = {}
    for c in result["by_cluster"]:  # a need may still be split over two clusters
        detractors[group_of[c["title"]]] = detractors.get(group_of[c["title"]], 0) + c["score"]["detractors"]
        if group_of[c["title"]] == "business-tax-invoice":
            assert c["score"]["nps"] == 100.0, "the invoice customers are promoters now"
    assert max(detractors, key=detractors.__getitem__) == "support-wait", detractors

    drivers = real_api.client.get(f"/api/surveys/{survey['id']}/drivers", headers=headers).json()["items"]
    assert group_of[drivers[0]["title"]] == "support-wait", [(d["title"], d["detractors"]) for d in drivers]

    # Tax IDs on invoices shipped: the three business customers who asked, before and after.
    p14 = loaded["summary"].post_ids_by_key["p14"]
    ship = real_api.client.get(f"/api/posts/{p14}/ship-report", headers=headers).json()
    (phases,) = ship["surveys"]
    before, after = phases["before"], phases["after"]
    assert ship["respondents"] == 3
    assert (before["responses"], before["detractors"], before["nps"]) == (3, 3, -100.0)
    assert (after["responses"], after["promoters"], after["passives"], after["nps"]) == (3, 2, 1, 66.67)

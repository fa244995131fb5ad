"""A Spanish detractor's survey comment and an English idea about the same need meet in one cluster, with
the real models (FORUM_EMBEDDING_MODEL=multilingual: all-MiniLM-L6-v2 for English pairs, USE multilingual
for the rest, calibrated onto one scale). One model load: the app and the worker share the process's encoder.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from litestar.testing import TestClient

from embeddings.multilingual import DEFAULT_MULTILINGUAL_THRESHOLD
from forum.app import create_app
from forum.encoding import get_encoder
from forum.settings import Settings
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
    drivers = api.client.get(f"/api/surveys/{survey['id']}/drivers", headers=product.headers).json()
    assert [(d["cluster_id"], d["detractors"]) for d in drivers] == [(cluster, 1)]

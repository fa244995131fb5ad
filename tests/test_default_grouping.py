"""A fresh default install (no FORUM_EMBEDDING_MODEL, real models, real `forum serve` and worker) groups
what a customer would call the same idea, in Spanish or English, and keeps a near-topic idea apart."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e import Server, free_port, stop_leftover_postgres

PASSWORD = "a long password"

# The README's example pair, the dark-mode trio (each with a short body), and a near-topic idea
# about the same app that is a different need.
POSTS = {
    "readme-es": ("Quiero modo oscuro en la app", ""),
    "readme-en": ("Please add a dark theme", ""),
    "trio-1": ("Please add a dark mode to the app", "The white screen is blinding at night."),
    "trio-2": ("Night theme for the mobile application", "I mostly use it in bed, dark colours please."),
    "trio-3": ("Dark theme option", "Would be easier on the eyes."),
    "slow": ("La app tarda mucho en abrir", "Tarda casi diez segundos en mostrar el mapa."),
}


@pytest.fixture(scope="module")
def forum(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, dict[str, dict]]]:
    """One real server on a fresh data dir for the module: the posts are written once, then grouped."""
    tmp = tmp_path_factory.mktemp("default-grouping")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORUM_")}  # the defaults
    env["FORUM_DATA_DIR"] = str(tmp / "forum-data")
    server = Server(env, free_port(), tmp / "server.log")
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            headers = []
            for who in ("ana", "bob", "carla"):
                email = f"{who}@example.com"
                r = client.post("/api/auth/register", json={"email": email, "password": PASSWORD, "display_name": who})
                assert r.status_code == 201, r.text
                token = client.post("/api/auth/login", json={"email": email, "password": PASSWORD}).json()
                headers.append({"Authorization": f"Bearer {token['access_token']}"})
            ids = {}
            for n, (key, (title, body)) in enumerate(POSTS.items()):  # one after the other, as customers do
                r = client.post(
                    "/api/posts", json={"kind": "idea", "title": title, "body": body}, headers=headers[n % 3]
                )
                assert r.status_code == 201, r.text
                ids[key] = r.json()["id"]
                _wait_grouped(client, ids[key])
            yield client, {key: client.get(f"/api/posts/{i}").json() for key, i in ids.items()}
    finally:
        server.stop()
        stop_leftover_postgres(Path(env["FORUM_DATA_DIR"]))


def _wait_grouped(client: httpx.Client, post_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while client.get(f"/api/posts/{post_id}").json()["cluster_id"] is None:
        assert time.monotonic() < deadline, "the worker did not group the post"
        time.sleep(0.3)


def test_the_readme_pair_shares_a_cluster(forum) -> None:
    _, posts = forum
    assert (posts["readme-es"]["language"], posts["readme-en"]["language"]) == ("es", "en")
    assert posts["readme-es"]["cluster_id"] == posts["readme-en"]["cluster_id"]


def test_the_dark_mode_trio_shares_one_cluster_with_the_readme_pair(forum) -> None:
    _, posts = forum
    dark = {posts[k]["cluster_id"] for k in ("readme-es", "readme-en", "trio-1", "trio-2", "trio-3")}
    assert len(dark) == 1, {k: p["cluster_id"] for k, p in posts.items()}


def test_a_slow_app_is_not_a_dark_mode(forum) -> None:
    _, posts = forum
    assert posts["slow"]["cluster_id"] != posts["readme-es"]["cluster_id"]


def test_as_you_type_finds_the_dark_mode_posts_first(forum) -> None:
    client, posts = forum
    found = client.post("/api/posts/similar", json={"title": "Modo noche para la aplicación"}).json()["items"]
    dark = {posts[k]["id"] for k in ("readme-es", "readme-en", "trio-1", "trio-2", "trio-3")}
    assert [f["post"]["id"] in dark for f in found[:3]] == [True, True, True], found[:3]

"""A newcomer's first look, with the real model: `forum demo load`, then `forum serve`, then clusters and
similar posts over HTTP. Paraphrased duplicates must share a cluster; unrelated posts must not."""

from __future__ import annotations

import httpx

from forum.demo.loader import read_sample
from forum.models import PostStatus
from tests.e2e import PASSWORD, Server, forum_cli, free_port


def test_demo_forms_clusters_with_the_real_model(env, tmp_path) -> None:
    env = {**env}
    env.pop("FORUM_EMBEDDING_MODEL")  # the default: all-MiniLM-L6-v2 from its wheel, offline
    loaded = forum_cli("demo", "load", "--password", PASSWORD, env=env)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert "embedded and grouped 70 post(s)" in loaded.stdout

    sample = read_sample()
    title_group = {p.title: p.group for p in sample.posts}
    title_language = {p.title: p.language for p in sample.posts}
    product = next(u for u in sample.users if u.role == "product")

    server = Server(env, free_port(), tmp_path / "server.log")
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            token = client.post("/api/auth/login", json={"email": product.email, "password": PASSWORD}).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            clusters = client.get("/api/clusters?min_members=2&limit=100", headers=headers).json()["items"]
            assert clusters, "paraphrased duplicates are grouped at once"
            english_clusters = 0
            for cluster in clusters:
                members = client.get(f"/api/clusters/{cluster['id']}", headers=headers).json()["members"]
                if all(title_language[m["title"]] == "en" for m in members):
                    # The default model is English-only (Spanish is issue 6's multilingual setting): among
                    # English posts, a cluster holds one need and nothing unrelated.
                    english_clusters += 1
                    groups = {title_group[m["title"]] for m in members}
                    assert len(groups) == 1 and None not in groups, [m["title"] for m in members]
            assert english_clusters >= 1

            # As-you-type: a paraphrase of an English demo idea finds it first.
            english = [p for p in sample.posts if p.group == "pause-rental" and title_language[p.title] == "en"]
            found = client.post(
                "/api/posts/similar", json={"title": "Can I keep my scooter reserved while I grab a coffee?"}
            ).json()["items"]
            assert found and title_group[found[0]["post"]["title"]] == "pause-rental", found[:3]
            assert any(f["post"]["title"] in {p.title for p in english} for f in found[:3])
    finally:
        server.stop()


def test_demo_groups_spanish_with_english_with_the_multilingual_setting(env, tmp_path) -> None:
    env = {**env, "FORUM_EMBEDDING_MODEL": "multilingual"}  # MiniLM + USE multilingual, both offline
    loaded = forum_cli("demo", "load", "--password", PASSWORD, env=env)
    assert loaded.returncode == 0, loaded.stderr[-2000:]

    sample = read_sample()
    by_title = {p.title: p for p in sample.posts}
    product = next(u for u in sample.users if u.role == "product")
    server = Server(env, free_port(), tmp_path / "server.log")
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            token = client.post("/api/auth/login", json={"email": product.email, "password": PASSWORD}).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            clusters = client.get("/api/clusters?min_members=2&limit=100", headers=headers).json()["items"]
            mixed = right = pairs = 0
            for cluster in clusters:
                members = client.get(f"/api/clusters/{cluster['id']}", headers=headers).json()["members"]
                posts = [by_title[m["title"]] for m in members]
                groups = {p.group for p in posts}
                right += len(groups) == 1 and None not in groups
                languages = {m["language"] for m in members}
                assert languages == {p.language for p in posts}  # detected as the sample says
                if {"es", "en"} <= languages and len(groups) == 1 and None not in groups:
                    mixed += 1
                pairs += 1
            # Spanish and English posts about one need share a cluster; at the default threshold (0.44, tuned
            # for recall: memberships are suggestions) 9 of the 16 clusters hold exactly one labelled need
            # (docs/multilingual.md).
            assert mixed >= 3, clusters
            assert right / pairs >= 0.5, (right, pairs)

            # Each post shows its detected language, and as-you-type finds across languages.
            listed = client.get(
                "/api/posts", params={"language": "es", "limit": 100, "status": [s.value for s in PostStatus]}
            ).json()
            assert listed["total"] == sum(1 for p in sample.posts if p.language == "es")
            found = client.post("/api/posts/similar", json={"title": "Quiero modo oscuro en la app"}).json()["items"]
            assert any(by_title[f["post"]["title"]].language == "en" for f in found[:3])
            assert all(by_title[f["post"]["title"]].group == "dark-mode" for f in found[:3]), found[:3]
    finally:
        server.stop()

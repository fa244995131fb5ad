"""Survey voices stored on the tally row (migration 0019): after random placements, moves, rescoring and
removals of answers, each row holds what survey_tally's 'cluster' rows sum to, and the detractors sort of
the triage list pages through the clusters in the order the former per-call aggregation gave."""

from __future__ import annotations

import random
import uuid

from tests.conftest import Api, run_sql
from tests.test_cluster_tally import _clusters
from tests.test_surveys import answer, make_survey

# What GET /api/clusters?sort=detractors ranked by before 0019: survey_tally summed per cluster, every call.
FROM_SURVEY_TALLY = """
SELECT t.cluster_id::text, coalesce(s.n, 0)::int, coalesce(s.low, 0)::int, t.voters FROM cluster_tally t
LEFT JOIN (SELECT value, sum(n) AS n, sum(low) AS low FROM survey_tally
           WHERE dimension = 'cluster' AND n > 0 GROUP BY value) AS s ON s.value = t.cluster_id::text
ORDER BY 1
"""
STORED = "SELECT cluster_id::text, voices, detractor_voices, voters FROM cluster_tally ORDER BY 1"


def test_stored_voices_match_survey_tally_and_rank_the_detractors_sort(api: Api, database_url: str) -> None:
    rng = random.Random(19)
    product = api.make_user("internal", "product")
    author = api.register("author")
    posts = [api.post(author, title=f"Voiced idea {i}") for i in range(8)]
    clusters = _clusters(database_url, posts, 5)
    surveys = [make_survey(api, product), make_survey(api, product, kind="csat")]
    answers = []
    for i in range(14):
        survey = surveys[i % 2]
        score = rng.randint(0, 10) if survey["kind"] == "nps" else rng.randint(1, 5)
        answers.append(answer(api, api.register(f"respondent{i}"), survey, score, comment=f"Comment {i}"))
    for post in rng.sample(posts, 5):  # voters, the sort's last key before the id
        for _ in range(rng.randint(1, 3)):
            assert api.client.put(f"/api/posts/{post['id']}/vote", headers=api.register().headers).status_code == 200

    def check(step: str) -> None:
        assert run_sql(database_url, STORED) == run_sql(database_url, FROM_SURVEY_TALLY), step
        rows = {r[0]: r[1:] for r in run_sql(database_url, FROM_SURVEY_TALLY)}
        listed = run_sql(database_url, "SELECT cluster_id::text FROM cluster_tally WHERE member_count > 0")
        expected = sorted((c for (c,) in listed), key=lambda c: (-rows[c][1], -rows[c][0], -rows[c][2], c))
        items: list[dict] = []
        for offset in range(0, len(expected) + 1, 2):
            r = api.client.get(f"/api/clusters?sort=detractors&limit=2&offset={offset}", headers=product.headers)
            assert r.status_code == 200, r.text
            items += r.json()["items"]
        assert [c["id"] for c in items] == expected, step
        for c in items:
            assert c["survey_voices"] == {"total": rows[c["id"]][0], "detractors": rows[c["id"]][1]}, step

    check("no voices")
    for step in range(60):
        a = rng.choice(answers)
        what = rng.random()
        if what < 0.5:  # placed in (or moved to) a cluster, as the voice job does
            sql, params = "UPDATE survey_answer SET cluster_id = :c WHERE id = :a", {"c": rng.choice(clusters)}
        elif what < 0.65:
            sql, params = "UPDATE survey_answer SET cluster_id = NULL WHERE id = :a", {}
        elif what < 0.85:
            sql, params = "UPDATE survey_answer SET score = :s WHERE id = :a", {"s": rng.randint(1, 5)}
        else:
            sql, params = "UPDATE survey_answer SET is_latest = NOT is_latest WHERE id = :a", {}
        run_sql(database_url, sql, a=a["id"], **params)
        if step % 8 == 7:
            check(f"step {step}")
    # A cluster whose voices came before its first member (its tally row is made then), and one that goes.
    late = str(uuid.uuid4())
    run_sql(database_url, "INSERT INTO cluster (id, created_at, updated_at) VALUES (:id, now(), now())", id=late)
    run_sql(database_url, "UPDATE survey_answer SET cluster_id = :c WHERE id = :a", c=late, a=answers[0]["id"])
    extra = api.post(author, title="A late member")
    run_sql(
        database_url,
        "INSERT INTO cluster_membership (post_id, cluster_id, similarity, state) VALUES (:p, :c, 0.9, 'suggested')",
        p=extra["id"],
        c=late,
    )
    check("a late tally row")
    stored = run_sql(database_url, STORED)
    assert sum(r[1] > 0 for r in stored) >= 3 and sum(r[2] > 0 for r in stored) >= 1, stored
    run_sql(database_url, "DELETE FROM survey WHERE id = :s", s=surveys[1]["id"])  # its tally rows go too
    check("a survey deleted")

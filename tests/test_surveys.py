"""Surveys: exact scores and margins on hand-computed sets, the latest-answer rule, segments, bad input,
who reads answers, voices in clusters, and closing the loop when an idea ships (docs/surveys.md)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Actor, Api, run_sql

NPS_QUESTION = "How likely are you to recommend us to a friend?"


def make_survey(api: Api, product: Actor, **fields: Any) -> dict[str, Any]:
    body = {"kind": "nps", "question_en": NPS_QUESTION, **fields}
    r = api.client.post("/api/surveys", json=body, headers=product.headers)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/api/surveys/{r.json()['id']}"
    return r.json()


def answer(api: Api, actor: Actor, survey: dict[str, Any], score: int, **fields: Any) -> dict[str, Any]:
    r = api.client.post(f"/api/surveys/{survey['id']}/answers", json={"score": score, **fields}, headers=actor.headers)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/api/surveys/{survey['id']}/answers/{r.json()['id']}"
    return r.json()


def report(api: Api, product: Actor, survey: dict[str, Any], **params: Any) -> dict[str, Any]:
    r = api.client.get(f"/api/surveys/{survey['id']}/report", params=params, headers=product.headers)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def product(api: Api) -> Actor:
    return api.make_user("internal", "product", name="product")


# Scores ------------------------------------------------------------------------------------------------


def test_nps_counts_and_margin_of_error_are_exact(api: Api, product: Actor) -> None:
    survey = make_survey(api, product)
    scores = [10, 10, 9, 9, 8, 7, 6, 5, 0, 3]
    for score in scores:
        answer(api, api.register(), survey, score)
    overall = report(api, product, survey)["overall"]
    # 4 promoters, 2 passives, 4 detractors: NPS 0; MoE = 1.96 * 100 * sqrt((0.4 + 0.4 - 0) / 10) = 55.44
    assert overall == {
        "responses": 10,
        "average": 6.7,
        "promoters": 4,
        "passives": 2,
        "detractors": 4,
        "nps": 0.0,
        "nps_margin": 55.44,
        "csat": None,
        "csat_margin": None,
    }
    skewed = make_survey(api, product)
    for score in [10, 9, 9, 8, 2]:
        answer(api, api.register(), skewed, score)
    overall = report(api, product, skewed)["overall"]
    # p = 0.6, d = 0.2: NPS 40; MoE = 196 * sqrt((0.8 - 0.16) / 5) = 196 * 0.357771 = 70.12
    assert (overall["nps"], overall["nps_margin"], overall["promoters"], overall["detractors"]) == (40.0, 70.12, 3, 1)


def test_csat_is_the_share_of_four_and_five(api: Api, product: Actor) -> None:
    survey = make_survey(api, product, kind="csat", question_en=None, question_es="¿Qué tan satisfecho estás?")
    assert survey["scale"] == {"min": 1, "max": 5} and survey["question_es"] == "¿Qué tan satisfecho estás?"
    for score in [5, 4, 4, 3, 1]:
        answer(api, api.register(), survey, score)
    overall = report(api, product, survey)["overall"]
    # 3 of 5 satisfied: 60 %; MoE = 196 * sqrt(0.6 * 0.4 / 5) = 42.94
    assert (overall["csat"], overall["csat_margin"], overall["nps"]) == (60.0, 42.94, None)
    assert (overall["promoters"], overall["passives"], overall["detractors"], overall["average"]) == (3, 1, 1, 3.4)


def test_the_latest_answer_counts_and_history_is_kept(api: Api, product: Actor, database_url: str) -> None:
    survey = make_survey(api, product, throttle_days=0)
    customer = api.register()
    first = answer(api, customer, survey, 3, comment="Too slow")
    second = answer(api, customer, survey, 10)
    assert second["is_latest"] is True
    overall = report(api, product, survey)["overall"]
    assert (overall["responses"], overall["promoters"], overall["detractors"]) == (1, 1, 0)
    mine = api.client.get("/api/me/survey-answers", headers=customer.headers).json()
    assert [(a["id"], a["score"], a["is_latest"]) for a in mine["items"]] == [
        (second["id"], 10, True),
        (first["id"], 3, False),
    ]
    # The trend counts every answer given in its period: both of them this week.
    trend = report(api, product, survey, trend="month")["trend"]
    assert len(trend) == 1 and trend[0]["score"]["responses"] == 2
    # An answer dated earlier (e.g. imported) never displaces a later one.
    run_sql(
        database_url, "UPDATE survey_answer SET answered_at = now() - interval '40 days' WHERE id = :id", id=first["id"]
    )
    third = answer(api, customer, survey, 4)
    assert report(api, product, survey)["overall"]["detractors"] == 1
    assert [
        a["is_latest"] for a in api.client.get("/api/me/survey-answers", headers=customer.headers).json()["items"]
    ] == [
        True,
        False,
        False,
    ]
    assert third["score"] == 4


def test_a_person_is_asked_once_per_throttle_period(api: Api, product: Actor, database_url: str) -> None:
    monthly = make_survey(api, product, throttle_days=30)
    other = make_survey(api, product, question_en="Would you recommend the app?")
    customer = api.register()

    def pending() -> list[str]:
        r = api.client.get("/api/surveys/pending", headers=customer.headers)
        assert r.status_code == 200, r.text
        return [s["id"] for s in r.json()["items"]]

    assert pending() == [monthly["id"], other["id"]]
    page = api.client.get("/api/surveys/pending?limit=1&offset=1", headers=customer.headers).json()
    assert (page["total"], page["limit"], page["offset"], [s["id"] for s in page["items"]]) == (2, 1, 1, [other["id"]])
    answer(api, customer, monthly, 8)
    again = api.client.post(f"/api/surveys/{monthly['id']}/answers", json={"score": 9}, headers=customer.headers)
    assert again.status_code == 409 and "answer again from" in again.json()["detail"]
    dismissed = api.client.post(f"/api/surveys/{other['id']}/dismiss", headers=customer.headers)
    assert dismissed.status_code == 200, dismissed.text
    assert pending() == []
    run_sql(database_url, "UPDATE survey_answer SET answered_at = now() - interval '31 days'")
    assert pending() == [monthly["id"]]
    assert answer(api, customer, monthly, 9)["is_latest"] is True
    assert report(api, product, monthly)["overall"]["promoters"] == 1


def test_scores_side_by_side_for_internal_external_and_each_property(api: Api, product: Actor) -> None:
    survey = make_survey(api, product)
    for score, plan in [(10, "pro"), (9, "pro"), (3, "free"), (8, "free")]:
        answer(api, api.register(), survey, score, properties={"plan": plan, "region": "eu"})
    for score in (2, 10):
        answer(api, api.make_user("internal", "member"), survey, score, properties={"plan": "staff"})
    result = report(api, product, survey)
    external, internal = result["by_kind"]["external"], result["by_kind"]["internal"]
    assert (external["responses"], external["promoters"], external["detractors"], external["nps"]) == (4, 2, 1, 25.0)
    assert (internal["responses"], internal["promoters"], internal["detractors"], internal["nps"]) == (2, 1, 1, 0.0)
    assert result["overall"]["responses"] == 6
    by_property = {p["property"]: {v["value"]: v["score"] for v in p["values"]} for p in result["by_property"]}
    assert set(by_property) == {"plan", "region"}
    assert {value: s["nps"] for value, s in by_property["plan"].items()} == {"pro": 100.0, "free": -50.0, "staff": 0.0}
    assert by_property["region"]["eu"]["responses"] == 4 and by_property["region"][None]["responses"] == 2
    listed = api.client.get(
        f"/api/surveys/{survey['id']}/answers", params={"property": "plan:pro"}, headers=product.headers
    ).json()
    assert sorted(a["score"] for a in listed["items"]) == [9, 10] and listed["total"] == 2
    bad = api.client.get(f"/api/surveys/{survey['id']}/answers", params={"property": "plan"}, headers=product.headers)
    assert bad.status_code == 422


# Bad input ---------------------------------------------------------------------------------------------


def test_bad_answers_get_clear_problems(api: Api, product: Actor) -> None:
    nps = make_survey(api, product)
    csat = make_survey(api, product, kind="csat", question_en="How satisfied are you?")
    internal_only = make_survey(api, product, audience="internal")
    customer = api.register()

    def post(survey: dict[str, Any], body: Any, actor: Actor | None = customer) -> Any:
        headers = actor.headers if actor else {}
        return api.client.post(f"/api/surveys/{survey['id']}/answers", json=body, headers=headers)

    for survey, body in [(nps, {"score": 11}), (nps, {"score": -1}), (csat, {"score": 0}), (csat, {"score": 6})]:
        r = post(survey, body)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["errors"][0]["field"] == "score" and r.json()["type"] == "/problems/domain-rule"
    for body in [
        {"score": "seven"},
        {"score": 7.5},
        {"score": None},
        {},
        {"score": 7, "properties": {"plan": 3}},
        {"score": 7, "x": 1},
    ]:
        assert post(nps, body).status_code == 422, body
    assert post(internal_only, {"score": 7}).status_code == 403
    assert post(nps, {"score": 7}, actor=None).status_code == 401
    assert api.client.get(f"/api/surveys/{internal_only['id']}", headers=customer.headers).status_code == 403
    closed = api.client.patch(f"/api/surveys/{nps['id']}", json={"is_open": False}, headers=product.headers)
    assert closed.status_code == 200 and closed.json()["is_open"] is False
    r = post(nps, {"score": 7})
    assert r.status_code == 409 and r.json()["detail"] == "This survey is closed"
    assert api.client.post(f"/api/surveys/{nps['id']}/dismiss", headers=customer.headers).status_code == 409
    for body in ({"kind": "nps"}, {"kind": "nps", "question_en": "  ", "question_es": None}):
        no_question = api.client.post("/api/surveys", json=body, headers=product.headers)
        assert no_question.status_code == 422, body
        assert no_question.json()["type"] == "/problems/domain-rule", "the schema allows it, a survey rule refuses it"
        assert no_question.json()["errors"][0]["field"] == "question_en"
    assert (
        api.client.post("/api/surveys", json={"kind": "stars", "question_en": "?"}, headers=product.headers).status_code
        == 422
    )
    missing = "/api/surveys/00000000-0000-0000-0000-000000000000/answers"
    assert api.client.post(missing, json={"score": 7}, headers=customer.headers).status_code == 404
    assert report(api, product, nps)["overall"]["responses"] == 0, "no rejected answer was written"


# Who reads answers --------------------------------------------------------------------------------------


def test_only_the_product_team_reads_answers_and_a_respondent_their_own(api: Api, product: Actor) -> None:
    survey = make_survey(api, product)
    respondent, other = api.register("respondent"), api.register("other")
    employee, admin = api.make_user("internal", "member"), api.make_user("internal", "admin")
    secret = "My account manager never calls back"
    mine = answer(api, respondent, survey, 2, comment=secret)
    answer(api, other, survey, 9)
    sid = survey["id"]
    protected = [
        f"/api/surveys/{sid}/answers",
        f"/api/surveys/{sid}/report",
        f"/api/surveys/{sid}/drivers",
        "/api/surveys",
    ]
    for actor in (respondent, other, employee):
        for url in protected:
            r = api.client.get(url, headers=actor.headers)
            assert r.status_code == 403 and secret not in r.text, (url, r.status_code)
    for url in protected:
        assert api.client.get(url).status_code == 401
    for actor in (product, admin):
        answers = api.client.get(f"/api/surveys/{sid}/answers", headers=actor.headers).json()
        assert {a["comment"] for a in answers["items"]} == {secret, None}
        assert api.client.get(f"/api/surveys/{sid}/report", headers=actor.headers).status_code == 200
    theirs = api.client.get("/api/me/survey-answers", headers=other.headers).json()
    assert [a["score"] for a in theirs["items"]] == [9] and secret not in str(theirs)
    own = api.client.get("/api/me/survey-answers", headers=respondent.headers).json()
    assert [a["id"] for a in own["items"]] == [mine["id"]] and own["items"][0]["comment"] == secret
    assert api.client.get("/api/me/survey-answers").status_code == 401


# Voices in clusters ----------------------------------------------------------------------------------------


def test_comments_become_voices_in_the_cluster_of_the_same_need(api: Api, product: Actor, drain) -> None:
    author = api.register("author")
    idea = api.post(author, title="Dark mode for the app at night", body="The white screen is too bright at night")
    api.post(api.register(), title="Dark mode for the app at night please", body="Too bright at night")
    unrelated = api.post(author, title="Export invoices as PDF for the accountant")
    drain()
    cluster = api.client.get(f"/api/posts/{idea['id']}", headers=product.headers).json()["cluster_id"]
    survey = make_survey(api, product)
    detractor, promoter, quiet = api.register("detractor"), api.register("promoter"), api.register("quiet")
    voiced = answer(api, detractor, survey, 3, comment="Dark mode for the app at night, the screen is too bright")
    answer(api, promoter, survey, 9, comment="Dark mode for the app at night would be great")
    answer(api, quiet, survey, 6, comment="Zebra xylophone quantum")  # similar to nothing
    processed = drain()
    assert processed.get("voice_placed") == 2 and processed.get("voice_unplaced") == 1, processed

    voices = api.client.get(f"/api/clusters/{cluster}/voices", headers=product.headers)
    assert voices.status_code == 200, voices.text
    listed = {v["answer"]["respondent"]["id"]: v["answer"] for v in voices.json()["items"]}
    assert set(listed) == {detractor.id, promoter.id}
    assert listed[detractor.id]["bucket"] == "detractor" and listed[detractor.id]["score"] == 3
    assert api.client.get(f"/api/clusters/{cluster}/voices", headers=detractor.headers).status_code == 403

    drivers = api.client.get(f"/api/surveys/{survey['id']}/drivers", headers=product.headers).json()["items"]
    assert [(d["cluster_id"], d["detractors"], d["voices"]) for d in drivers] == [(cluster, 1, 2)]
    assert drivers[0]["title"].startswith("Dark mode for the app at night")
    past = api.client.get(f"/api/surveys/{survey['id']}/drivers?offset=1", headers=product.headers).json()
    assert (past["items"], past["total"], past["offset"]) == ([], 1, 1)
    by_cluster = report(api, product, survey)["by_cluster"]
    assert [(c["cluster_id"], c["score"]["nps"]) for c in by_cluster] == [(cluster, 0.0)]
    # The triage list ranks by detractor voices too (every survey's, each respondent's latest answer).
    other = api.client.get(f"/api/posts/{unrelated['id']}", headers=product.headers).json()["cluster_id"]
    for _ in range(3):  # votes put the unrelated cluster first by voters, never by detractors
        assert api.client.put(f"/api/posts/{unrelated['id']}/vote", headers=api.register().headers).status_code == 200
    ranked = api.client.get("/api/clusters?sort=detractors", headers=product.headers).json()["items"]
    assert [(c["id"], c["survey_voices"]) for c in ranked[:2]] == [
        (cluster, {"total": 2, "detractors": 1}),
        (other, {"total": 0, "detractors": 0}),
    ]
    assert api.client.get("/api/clusters?sort=voters", headers=product.headers).json()["items"][0]["id"] == other
    assert api.client.get("/api/clusters?sort=detractors", headers=detractor.headers).status_code == 403

    # The product team turns the detractor's voice into a critique by the respondent.
    made = api.client.post(f"/api/survey-answers/{voiced['id']}/post", json={}, headers=product.headers)
    assert made.status_code == 201, made.text
    critique = made.json()
    assert made.headers["location"] == f"/api/posts/{critique['id']}"
    assert (critique["kind"], critique["author"]["id"]) == ("critique", detractor.id)
    assert critique["title"] == "Dark mode for the app at night, the screen is too bright"
    assert critique["cluster_id"] == cluster, "it joins the voice's cluster"
    again = api.client.post(f"/api/survey-answers/{voiced['id']}/post", json={}, headers=product.headers)
    assert again.status_code == 409
    inbox = api.client.get("/api/me/notifications", headers=detractor.headers).json()["items"]
    assert [(n["kind"], n["post_id"]) for n in inbox] == [("survey_voice_posted", critique["id"])]
    follows = api.client.get(f"/api/posts/{critique['id']}/subscription", headers=detractor.headers).json()
    assert follows["subscribed"] is True
    linked = api.client.get(f"/api/surveys/{survey['id']}/answers", headers=product.headers).json()["items"]
    assert {a["id"]: a["post_id"] for a in linked}[voiced["id"]] == critique["id"]
    assert unrelated["id"] not in {v["answer"]["post_id"] for v in voices.json()["items"]}


# Closing the loop ----------------------------------------------------------------------------------------


def test_a_ship_notifies_the_voices_and_reports_their_nps_before_and_after(
    api: Api, product: Actor, drain, database_url: str
) -> None:
    author = api.register("author")
    idea = api.post(author, title="Offline maps for the tunnel rides", body="No signal underground in the tunnel")
    drain()
    survey = make_survey(api, product, throttle_days=0)
    people = [api.register(f"rider{i}") for i in range(4)]
    before_scores = [2, 5, 8, 10]  # 1 promoter, 1 passive, 2 detractors: NPS -25
    for person, score in zip(people, before_scores, strict=True):
        answer(api, person, survey, score, comment="Offline maps for the tunnel rides, no signal underground")
    bystander = api.register("bystander")
    answer(api, bystander, survey, 0, comment="Zebra xylophone quantum")
    drain()
    run_sql(database_url, "UPDATE survey_answer SET answered_at = now() - interval '10 days'")

    shipped = api.client.post(f"/api/posts/{idea['id']}/status", json={"status": "shipped"}, headers=product.headers)
    assert shipped.status_code == 200, shipped.text
    for person in people:
        kinds = [n["kind"] for n in api.client.get("/api/me/notifications", headers=person.headers).json()["items"]]
        assert kinds == ["survey_voice_shipped"], kinds
    assert api.client.get("/api/me/notifications", headers=bystander.headers).json()["total"] == 0

    for person, score in zip(people[:3], [9, 10, 6], strict=True):  # three answer again after the ship
        answer(api, person, survey, score)
    r = api.client.get(f"/api/posts/{idea['id']}/ship-report", headers=product.headers)
    assert r.status_code == 200, r.text
    ship = r.json()
    cluster = api.client.get(f"/api/posts/{idea['id']}", headers=product.headers).json()["cluster_id"]
    assert (ship["respondents"], ship["cluster_id"]) == (4, cluster)
    (phases,) = ship["surveys"]
    before, after = phases["before"], phases["after"]
    assert (before["responses"], before["promoters"], before["detractors"], before["nps"]) == (4, 1, 2, -25.0)
    assert (after["responses"], after["promoters"], after["detractors"], after["nps"]) == (3, 2, 1, 33.33)
    for actor in (people[0], author):
        assert api.client.get(f"/api/posts/{idea['id']}/ship-report", headers=actor.headers).status_code == 403
    not_shipped = api.post(author, title="Something else entirely")
    assert api.client.get(f"/api/posts/{not_shipped['id']}/ship-report", headers=product.headers).status_code == 409


def test_an_internal_ship_is_not_announced_to_customers(api: Api, product: Actor, drain) -> None:
    employee = api.make_user("internal", "member")
    idea = api.post(employee, title="Refund tool for the support agents", visibility="internal")
    drain()
    survey = make_survey(api, product)
    customer, colleague = api.register("customer"), api.make_user("internal", "member")
    for actor in (customer, colleague):
        answer(api, actor, survey, 4, comment="Refund tool for the support agents is slow")
    drain()
    assert (
        api.client.post(
            f"/api/posts/{idea['id']}/status", json={"status": "shipped"}, headers=product.headers
        ).status_code
        == 200
    )
    assert api.client.get("/api/me/notifications", headers=customer.headers).json()["total"] == 0
    kinds = [n["kind"] for n in api.client.get("/api/me/notifications", headers=colleague.headers).json()["items"]]
    assert kinds == ["survey_voice_shipped"]


# The running tallies ------------------------------------------------------------------------------------

# The tallies recomputed from the answers themselves, as the triggers define them (migration 0011).
FROM_SCRATCH = """
SELECT a.survey_id, d.dimension, d.value, count(*) AS n, sum(a.score) AS total,
       count(*) FILTER (WHERE a.score >= CASE s.kind WHEN 'nps' THEN 9 ELSE 4 END) AS high,
       count(*) FILTER (WHERE a.score <= CASE s.kind WHEN 'nps' THEN 6 ELSE 2 END) AS low
FROM survey_answer a JOIN survey s ON s.id = a.survey_id
CROSS JOIN LATERAL (
    SELECT 'all', '' WHERE a.is_latest
    UNION ALL SELECT 'kind', a.respondent_kind WHERE a.is_latest
    UNION ALL SELECT 'cluster', a.cluster_id::text WHERE a.is_latest AND a.cluster_id IS NOT NULL
    UNION ALL SELECT 'property:' || p.key, p.value FROM jsonb_each_text(a.properties) p WHERE a.is_latest
    UNION ALL SELECT 'week', to_char(date_trunc('week', a.answered_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD')
    UNION ALL SELECT 'month', to_char(date_trunc('month', a.answered_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD')
) AS d(dimension, value)
GROUP BY 1, 2, 3
"""


def _tallies(database_url: str) -> set[tuple]:
    return {
        tuple(r)
        for r in run_sql(
            database_url, "SELECT survey_id, dimension, value, n, total, high, low FROM survey_tally WHERE n <> 0"
        )
    }


def test_the_running_tallies_always_equal_the_answers(api: Api, product: Actor, drain, database_url: str) -> None:
    author = api.register()
    api.post(author, title="Offline maps for the tunnel rides")
    drain()
    nps, csat = make_survey(api, product, throttle_days=0), make_survey(api, product, kind="csat", throttle_days=0)
    people = [api.register(), api.register(), api.make_user("internal", "member")]
    for i, person in enumerate(people):
        answer(api, person, nps, 3 * i, comment="Offline maps for the tunnel rides", properties={"plan": f"p{i % 2}"})
        answer(api, person, csat, 1 + i)
    answer(api, people[0], nps, 10, properties={"region": "eu"})  # the latest moves
    drain()  # comments placed in the idea's cluster
    assert _tallies(database_url) == {tuple(r) for r in run_sql(database_url, FROM_SCRATCH)}
    assert any(t[1] == "cluster" for t in _tallies(database_url)), "voices were counted in their cluster"

    run_sql(database_url, "UPDATE survey_answer SET answered_at = answered_at - interval '45 days' WHERE score = 10")
    run_sql(database_url, "UPDATE survey_answer SET updated_at = now()")  # nothing scored changes
    run_sql(
        database_url,
        "DELETE FROM cluster WHERE id = (SELECT cluster_id FROM survey_answer WHERE cluster_id IS NOT NULL LIMIT 1)",
    )
    run_sql(database_url, "DELETE FROM user_account WHERE id = :id", id=people[1].id)
    assert _tallies(database_url) == {tuple(r) for r in run_sql(database_url, FROM_SCRATCH)}

"""The survey panel on the web pages (issue 13): shown to the signed-in people a survey targets, in their
language, answered or dismissed with real forms (CSRF, no JavaScript, 303 back to the page), with the
service's rules (audience, throttle, closed, the scale) said as a message and nothing recorded. Against
the real PostgreSQL, through the real app."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.conftest import Actor, Api
from tests.test_web_pages import browser_login, csrf

QUESTION_EN = "How likely are you to recommend Andes to a friend?"
QUESTION_ES = "¿Qué probabilidad hay de que recomiendes Andes a un amigo?"
PANEL = 'data-testid="survey-panel"'


def make_survey(api: Api, product: Actor, **fields: Any) -> dict[str, Any]:
    body = {"kind": "nps", "question_en": QUESTION_EN, **fields}
    r = api.client.post("/api/surveys", json=body, headers=product.headers)
    assert r.status_code == 201, r.text
    return r.json()


def submit(client: TestClient, action: str, survey: dict[str, Any], fields: dict[str, str], **headers: str):
    """Post the panel's form the way a browser without JavaScript does, from the page in ``next``."""
    page = fields.get("next", "/")
    token = csrf(client, page)
    return client.post(
        f"/surveys/{survey['id']}/{action}",
        data={"next": page, **fields, "_csrf_token": token},
        headers=headers,
        follow_redirects=False,
    )


def my_answers(api: Api, actor: Actor) -> list[dict[str, Any]]:
    r = api.client.get("/api/me/survey-answers", headers=actor.headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def flashes(html: str) -> list[str]:
    return re.findall(r'data-testid="flash" data-category="\w+">([^<]*)</p>', html)


@pytest.fixture
def product(api: Api) -> Actor:
    return api.make_user("internal", "product", name="product")


def test_the_panel_is_shown_to_the_people_it_targets_only(api: Api, product: Actor) -> None:
    survey = make_survey(api, product, audience="external")
    customer, employee = api.register("Carla"), api.make_user("internal")

    browser_login(api.client, customer)
    html = api.client.get("/roadmap").text
    assert PANEL in html and f'data-survey-id="{survey["id"]}"' in html
    assert '<section class="survey-panel" aria-labelledby="survey-question"' in html
    assert f'<legend id="survey-question" lang="en" data-testid="survey-question">{QUESTION_EN}</legend>' in html
    assert re.findall(r'name="score" value="(\d+)" required', html) == [str(n) for n in range(11)]
    assert "Not likely" in html and "Very likely" in html
    assert 'name="comment"' in html and 'name="_csrf_token"' in html.split(PANEL)[1]
    assert f'formaction="/surveys/{survey["id"]}/dismiss" formnovalidate' in html
    assert 'name="next" value="/roadmap"' in html.split(PANEL)[1]

    browser_login(api.client, employee)
    assert PANEL not in api.client.get("/roadmap").text
    api.client.cookies.clear()
    assert PANEL not in api.client.get("/roadmap").text
    # The same person in the API: pending for the customer only.
    assert [s["id"] for s in api.client.get("/api/surveys/pending", headers=customer.headers).json()["items"]] == [
        survey["id"]
    ]
    assert api.client.get("/api/surveys/pending", headers=employee.headers).json()["items"] == []


def test_answering_records_the_answer_thanks_once_and_hides_the_panel(api: Api, product: Actor) -> None:
    survey = make_survey(api, product, follow_up_en="What is the main reason for your score?")
    customer = api.register()
    browser_login(api.client, customer)
    assert "What is the main reason for your score?" in api.client.get("/").text

    r = submit(
        api.client, "answer", survey, {"score": "9", "comment": "  Great rides, fair prices ", "next": "/roadmap"}
    )
    assert r.status_code == 303 and r.headers["location"] == "/roadmap"
    (answer,) = my_answers(api, customer)
    assert (answer["survey_id"], answer["score"], answer["comment"]) == (survey["id"], 9, "Great rides, fair prices")

    after = api.client.get("/roadmap").text
    assert flashes(after) == ["Thank you for your answer!"] and 'role="status"' in after
    assert PANEL not in after
    again = api.client.get("/roadmap").text
    assert flashes(again) == [] and PANEL not in again  # the thanks is said once; the survey is not asked again
    assert "forum_flash" not in api.client.cookies  # the flash cookie lives only until the page that shows it


def test_not_now_dismisses_the_survey(api: Api, product: Actor) -> None:
    survey = make_survey(api, product, kind="csat", question_en="How satisfied are you with your last ride?")
    customer = api.register()
    browser_login(api.client, customer)
    html = api.client.get("/changelog").text
    assert re.findall(r'name="score" value="(\d+)" required', html) == ["1", "2", "3", "4", "5"]
    assert "Very dissatisfied" in html and "Very satisfied" in html

    r = submit(api.client, "dismiss", survey, {"next": "/changelog?page=1"})
    assert r.status_code == 303 and r.headers["location"] == "/changelog?page=1"
    html = api.client.get("/changelog?page=1").text
    assert PANEL not in html and flashes(html) == []
    assert my_answers(api, customer) == []
    assert api.client.get("/api/surveys/pending", headers=customer.headers).json()["items"] == []


def test_the_panel_speaks_the_readers_language_and_falls_back_to_the_other(api: Api, product: Actor) -> None:
    survey = make_survey(
        api, product, question_es=QUESTION_ES, follow_up_en="Why?", follow_up_es="¿Cuál es el motivo principal?"
    )
    customer = api.register()
    browser_login(api.client, customer)
    es = api.client.get("/", headers={"Accept-Language": "es-ES,es;q=0.9"}).text
    assert f'lang="es" data-testid="survey-question">{QUESTION_ES}</legend>' in es
    for text in ("¿Cuál es el motivo principal?", "Poco probable", "Muy probable", "Enviar", "Ahora no", "opcional"):
        assert text in es, text
    assert QUESTION_EN not in es
    en = api.client.get("/", headers={"Accept-Language": "en"}).text
    assert QUESTION_EN in en and "Why?" in en and "Send" in en and "Not now" in en

    r = submit(api.client, "answer", survey, {"score": "3"}, **{"Accept-Language": "es"})
    assert r.status_code == 303
    assert flashes(api.client.get("/", headers={"Accept-Language": "es"}).text) == ["¡Gracias por tu respuesta!"]

    # A survey asked only in English is shown in English on a Spanish page, marked as English.
    make_survey(api, product, question_en="Would you use Andes for work trips?")
    es = api.client.get("/", headers={"Accept-Language": "es"}).text
    assert 'lang="en" data-testid="survey-question">Would you use Andes for work trips?</legend>' in es
    assert "Poco probable" in es  # the page's own texts stay Spanish


@pytest.mark.parametrize("score", ["11", "-1", "", "seven", "9.5", "1e1", "99999999999999999999"])
def test_a_score_off_the_scale_shows_a_message_and_records_nothing(api: Api, product: Actor, score: str) -> None:
    survey = make_survey(api, product)
    customer = api.register()
    browser_login(api.client, customer)
    r = submit(api.client, "answer", survey, {"score": score, "comment": "Nice", "next": "/roadmap"})
    assert r.status_code == 303 and r.headers["location"] == "/roadmap"
    html = api.client.get("/roadmap").text
    assert flashes(html) == ["Choose a score from 0 to 10."] and 'role="alert"' in html
    assert PANEL in html  # still asked
    assert my_answers(api, customer) == []


def test_refusals_are_messages_in_the_readers_language_never_errors(api: Api, product: Actor) -> None:
    external = make_survey(api, product, audience="external", throttle_days=30)
    customer, employee = api.register(), api.make_user("internal")

    browser_login(api.client, employee)  # not in the audience: the API's 403, said on the page
    r = submit(api.client, "answer", external, {"score": "5"})
    assert r.status_code == 303
    assert flashes(api.client.get("/").text) == ["This survey is not for you."]
    assert my_answers(api, employee) == []

    browser_login(api.client, customer)
    assert submit(api.client, "answer", external, {"score": "10"}).status_code == 303
    api.client.get("/")  # the thanks
    r = submit(api.client, "answer", external, {"score": "0"}, **{"Accept-Language": "es"})  # throttled: 409
    assert r.status_code == 303
    assert flashes(api.client.get("/").text) == [
        "Ya respondiste esta encuesta hace poco: gracias, volveremos a preguntarte más adelante."
    ]
    assert [a["score"] for a in my_answers(api, customer)] == [10]

    closing = make_survey(api, product)
    assert PANEL in api.client.get("/").text
    r = api.client.patch(f"/api/surveys/{closing['id']}", json={"is_open": False}, headers=product.headers)
    assert r.status_code == 200, r.text
    assert submit(api.client, "answer", closing, {"score": "8"}).status_code == 303  # closed since the page
    html = api.client.get("/").text
    assert flashes(html) == ["This survey has closed: thank you all the same."] and PANEL not in html
    assert submit(api.client, "dismiss", closing, {}).status_code == 303
    assert flashes(api.client.get("/").text) == ["This survey has closed: thank you all the same."]
    assert [a["score"] for a in my_answers(api, customer)] == [10]

    gone = {"id": "01890a5d-ac96-774b-bcce-b302099a8057"}
    assert submit(api.client, "answer", gone, {"score": "8"}).status_code == 303
    assert flashes(api.client.get("/").text) == ["This survey no longer exists."]


@pytest.mark.parametrize("target", ["https://evil.example/x", "//evil.example/x", "/\\evil.example", "javascript:x"])
def test_only_same_site_paths_are_redirected_to(api: Api, product: Actor, target: str) -> None:
    survey = make_survey(api, product)
    customer = api.register()
    browser_login(api.client, customer)
    token = csrf(api.client, "/")
    r = api.client.post(
        f"/surveys/{survey['id']}/dismiss", data={"next": target, "_csrf_token": token}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_the_forms_need_a_session_and_a_csrf_token(api: Api, product: Actor) -> None:
    survey = make_survey(api, product)
    customer = api.register()
    r = api.client.post(
        f"/surveys/{survey['id']}/answer",
        data={"score": "9", "_csrf_token": csrf(api.client, "/")},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/login")  # anonymous: log in first
    browser_login(api.client, customer)
    r = api.client.post(f"/surveys/{survey['id']}/answer", data={"score": "9"}, follow_redirects=False)
    assert r.status_code == 403 and 'data-testid="error-403"' in r.text
    assert my_answers(api, customer) == []


# Voices on a cluster's triage page ---------------------------------------------------------------------------


def test_a_clusters_triage_page_shows_its_voices_and_turns_one_into_a_critique(api: Api, product: Actor, drain) -> None:
    author = api.register("author")
    idea = api.post(author, title="Dark mode for the app at night", body="The white screen is too bright at night")
    api.post(api.register(), title="Dark mode for the app at night please", body="Too bright at night")
    other = api.post(author, title="Export invoices as PDF for the accountant")
    drain()
    cluster = api.client.get(f"/api/posts/{idea['id']}", headers=product.headers).json()["cluster_id"]
    other_cluster = api.client.get(f"/api/posts/{other['id']}", headers=product.headers).json()["cluster_id"]
    survey = make_survey(api, product)
    detractor, promoter = api.register("Dora"), api.register("Pablo")
    said = "Dark mode for the app at night <b>now</b>, the screen is too bright"
    for actor, score, comment in ((detractor, 3, said), (promoter, 9, "Dark mode for the app at night would be great")):
        r = api.client.post(
            f"/api/surveys/{survey['id']}/answers", json={"score": score, "comment": comment}, headers=actor.headers
        )
        assert r.status_code == 201, r.text
    assert drain().get("voice_placed") == 2
    voiced = {
        v["answer"]["respondent"]["id"]: v["answer"]["id"]
        for v in api.client.get(f"/api/clusters/{cluster}/voices", headers=product.headers).json()["items"]
    }
    page_path = f"/triage/clusters/{cluster}"

    browser_login(api.client, detractor)  # a customer, even one of the voices, never reaches it
    r = api.client.get(page_path)
    assert r.status_code == 403 and said not in r.text and "&lt;b&gt;now" not in r.text

    browser_login(api.client, product)
    html = api.client.get(page_path, headers={"Accept-Language": "en"}).text
    assert html.count('data-testid="voice"') == 2
    assert "Dark mode for the app at night &lt;b&gt;now&lt;/b&gt;" in html, "a comment is escaped"
    assert re.search(r'data-testid="voice-nps">NPS 0</strong>\s*\(± [\d.]+\)', html), "1 promoter, 1 detractor"
    assert "1 promoter" in html and "1 detractor" in html and "0 passives" in html
    assert f'data-answer-id="{voiced[detractor.id]}" data-bucket="detractor"' in html
    spanish = api.client.get(page_path, headers={"Accept-Language": "es"}).text
    assert "Voces de las encuestas" in spanish and "1 promotor" in spanish and "Detractor" in spanish
    assert 'data-testid="no-voices"' in api.client.get(f"/triage/clusters/{other_cluster}").text

    # A voice of another cluster cannot be posted from this one: 404, nothing made.
    action = f"/triage/clusters/{other_cluster}/voices/{voiced[detractor.id]}/post"
    r = api.client.post(action, data={"_csrf_token": csrf(api.client, page_path)}, follow_redirects=False)
    assert r.status_code == 404
    # Without the CSRF token: refused, nothing made.
    action = f"{page_path}/voices/{voiced[detractor.id]}/post"
    assert api.client.post(action, data={}, follow_redirects=False).status_code == 403
    assert (
        api.client.get(f"/api/clusters/{cluster}/voices", headers=product.headers).json()["items"][0]["answer"][
            "post_id"
        ]
        is None
    )

    r = api.client.post(action, data={"_csrf_token": csrf(api.client, page_path)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"{page_path}?done=voice-posted"
    answers = api.client.get(f"/api/surveys/{survey['id']}/answers", headers=product.headers).json()["items"]
    critique_id = {a["id"]: a["post_id"] for a in answers}[voiced[detractor.id]]
    critique = api.client.get(f"/api/posts/{critique_id}", headers=product.headers).json()
    assert (critique["kind"], critique["author"]["id"], critique["cluster_id"]) == ("critique", detractor.id, cluster)
    html = api.client.get(f"{page_path}?done=voice-posted").text
    assert "is now a critique by its respondent" in html
    assert f'href="/triage/posts/{critique_id}" data-testid="voice-post-link"' in html
    assert html.count('data-testid="member"') == 3, "the critique is a member now"

    # Again: the refusal is said next to the voice, in the reader's language, and nothing changes.
    r = api.client.post(action, data={"_csrf_token": csrf(api.client, page_path)}, headers={"Accept-Language": "es"})
    assert r.status_code == 409 and "Este comentario ya es una publicación." in r.text
    assert 'data-testid="voice-error"' in r.text


def test_the_product_team_reads_survey_reports_on_the_desk_and_nobody_else(api: Api, product: Actor) -> None:
    survey = make_survey(api, product, question_es=QUESTION_ES)
    customers = [api.register(f"c{n}") for n in range(4)]
    employee = api.make_user("internal", name="Elena")
    scores = [(customers[0], 10, {"plan": "pro"}), (customers[1], 9, {"plan": "pro"}), (customers[2], 3, {})]
    for actor, score, properties in [*scores, (customers[3], 7, {"plan": "free"}), (employee, 2, {})]:
        r = api.client.post(
            f"/api/surveys/{survey['id']}/answers",
            json={"score": score, "properties": properties, "comment": "<script>x</script>"},
            headers=actor.headers,
        )
        assert r.status_code == 201, r.text
    report_path = f"/triage/surveys/{survey['id']}"

    for actor in (customers[0], employee):  # a respondent, an employee: the site's 403, no figure
        browser_login(api.client, actor)
        for path in ("/triage/surveys/", report_path):
            r = api.client.get(path)
            assert r.status_code == 403 and "text/html" in r.headers["content-type"], path
            assert QUESTION_EN not in r.text
    api.client.cookies.clear()
    assert api.client.get(report_path, follow_redirects=False).status_code == 303  # to the login form

    browser_login(api.client, product)
    assert 'href="/triage/surveys/"' in api.client.get("/triage/").text
    listing = api.client.get("/triage/surveys/", headers={"Accept-Language": "en"}).text
    row = listing.split(f'data-testid="survey-row" data-survey-id="{survey["id"]}"')[1].split("</tr>")[0]
    # 5 latest answers: 2 promoters, 1 passive, 2 detractors -> NPS 0; margin 1.96*100*sqrt(0.8/5) = 78.4
    assert re.search(r'data-testid="survey-score"><strong>0</strong> <span class="muted">± 78.4</span>', row), row
    html = api.client.get(report_path, headers={"Accept-Language": "en"}).text
    assert f'lang="en">{QUESTION_EN}</h1>' in html
    externals = html.split('data-testid="kind-external"')[1].split("</tr>")[0]
    cells = re.findall(r'<td class="num"[^>]*>(.*?)</td>', externals, re.S)
    assert [re.sub(r"<[^>]+>", "", c).strip() for c in cells[1:]] == ["4", "2", "1", "1"]
    assert "<strong>25</strong>" in cells[0], "customers: 50 % promoters - 25 % detractors"
    internals = html.split('data-testid="kind-internal"')[1].split("</tr>")[0]
    assert "<strong>-100</strong>" in internals
    assert "By plan" in html and ">pro</th>" in html and ">free</th>" in html and "(not given)" in html
    assert "<script>x</script>" not in html
    spanish = api.client.get(report_path, headers={"Accept-Language": "es"}).text
    assert f'lang="es">{QUESTION_ES}</h1>' in spanish and "Clientes y empleados" in spanish
    assert api.client.get(f"{report_path}?trend=week").status_code == 200
    assert api.client.get(f"{report_path}?trend=nonsense").status_code == 200
    assert api.client.get("/triage/surveys/01a00000-0000-7000-8000-000000000000").status_code == 404

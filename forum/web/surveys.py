"""The survey panel: an open survey, shown at the top of every page to the signed-in people it targets
(issue 13, docs/surveys.md), answered or dismissed with real forms.

What the panel shows comes from ``SurveyService.pending`` (the API's ``GET /api/surveys/pending``): open,
for the reader's audience, neither answered nor dismissed within the survey's throttle period. Both forms
post to the same service methods as the API, so its rules hold (audience 403, closed or answered lately
409, a score off the scale 422); a refusal is said in the reader's language as a flash message on the page
they came from (303 to ``next``, a path on this site), never a 500. Flash messages are Litestar's
(``FlashPlugin``, kept in a short-lived encrypted session cookie that exists only until the next page).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from litestar import Controller, Request, post
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.plugins.flash import flash
from litestar.response import Redirect
from sqlalchemy.ext.asyncio import AsyncSession

from forum.auth import requires_login
from forum.models import User
from forum.surveys.controllers import provide_surveys
from forum.surveys.schemas import MAX_SCORE, MIN_SCORE, SurveyOut
from forum.surveys.services import SurveyService
from forum.web import forms
from forum.web.i18n import LOCALES, current_locale
from forum.web.i18n import gettext as _

FLASH_OK, FLASH_ERROR = "success", "error"


@dataclass
class Localized:
    text: str
    lang: str
    """The text's own language: the other one when the survey lacks the reader's (``lang`` on the element)."""


@dataclass
class SurveyPanel:
    id: UUID
    kind: str
    question: Localized
    follow_up: Localized | None
    scores: list[int]


def localized(texts: dict[str, str | None], locale: str) -> Localized | None:
    """The text in the reader's language, else in the other one."""
    for lang in (locale, *(code for code in LOCALES if code != locale)):
        if texts.get(lang):
            return Localized(text=texts[lang] or "", lang=lang)
    return None


def question_of(survey: Any, locale: str) -> Localized:
    """A survey's question (a ``Survey`` row or a ``SurveyOut``) in the reader's language, else the other."""
    question = localized({"en": survey.question_en, "es": survey.question_es}, locale)
    assert question is not None  # a survey always has its question in one language or both
    return question


def panel(survey: SurveyOut, locale: str) -> SurveyPanel:
    question = question_of(survey, locale)
    return SurveyPanel(
        id=survey.id,
        kind=survey.kind.value,
        question=question,
        follow_up=localized({"en": survey.follow_up_en, "es": survey.follow_up_es}, locale),
        scores=list(range(survey.scale.min, survey.scale.max + 1)),
    )


async def pending_panel(session: AsyncSession, user: User | None) -> SurveyPanel | None:
    """The survey to show this reader now (the oldest one pending), or None (anonymous: never)."""
    if user is None:
        return None
    pending = (await SurveyService(session).pending(user, limit=1, offset=0)).items
    return panel(pending[0], current_locale()) if pending else None


def refusal(exc: HTTPException) -> str:
    """The service's refusal (English, for the API), said again in the reader's language."""
    if exc.status_code == 404:
        return _("This survey no longer exists.")
    if exc.status_code == 403:
        return _("This survey is not for you.")
    if exc.status_code == 409 and exc.detail == "This survey is closed":
        return _("This survey has closed: thank you all the same.")
    if exc.status_code == 409:
        return _("You have answered this survey recently: thank you, we will ask again later.")
    return _("Your answer could not be saved. Check it and try again.")


def scale_message(kind: str) -> str:
    return _("Choose a score from %(low)s to %(high)s.") % {"low": MIN_SCORE[kind], "high": MAX_SCORE[kind]}


class SurveyActions(Controller):
    """``POST /surveys/{id}/answer`` (``score``, ``comment``, ``next``) and ``POST /surveys/{id}/dismiss``
    (``next``): both answer 303 to ``next``, with a flash message."""

    path = "/surveys"
    include_in_schema = False
    guards = [requires_login]
    dependencies = {"surveys": Provide(provide_surveys)}

    @post("/{survey_id:uuid}/answer", name="survey-answer")
    async def answer(
        self, request: Request[User, Any, Any], db_session: AsyncSession, surveys: SurveyService, survey_id: UUID
    ) -> Redirect:
        values = await forms.read_form(request)
        data, errors = forms.survey_answer(values)
        try:
            if data is None:
                survey = await surveys.get_for(survey_id, request.user)  # 404 or 403 come first, as in the API
                message = errors.get("comment") or scale_message(survey.kind.value)
                flash(request, message, FLASH_ERROR)
            else:
                async with db_session.begin_nested():  # a refused answer leaves nothing behind
                    await surveys.answer(survey_id, request.user, data)
                flash(request, _("Thank you for your answer!"), FLASH_OK)
        except HTTPException as exc:
            if exc.status_code not in (403, 404, 409, 422):
                raise
            if exc.status_code == 422 and data is not None:
                survey = await surveys.get_for(survey_id, request.user)
                flash(request, scale_message(survey.kind.value), FLASH_ERROR)
            else:
                flash(request, refusal(exc), FLASH_ERROR)
        return Redirect(forms.safe_next(values.get("next")), status_code=303)

    @post("/{survey_id:uuid}/dismiss", name="survey-dismiss")
    async def dismiss(
        self, request: Request[User, Any, Any], db_session: AsyncSession, surveys: SurveyService, survey_id: UUID
    ) -> Redirect:
        values = await forms.read_form(request)
        try:
            async with db_session.begin_nested():
                await surveys.dismiss(survey_id, request.user)
        except HTTPException as exc:
            if exc.status_code not in (403, 404, 409):
                raise
            flash(request, refusal(exc), FLASH_ERROR)
        return Redirect(forms.safe_next(values.get("next")), status_code=303)

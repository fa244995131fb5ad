"""The product team's survey reports in the web front end: ``/triage/surveys`` lists every survey with its
current score, ``/triage/surveys/{id}`` shows its report (the API's ``GET /api/surveys/{id}/report``):
internal and external respondents side by side, each property value, each cluster (linked to its triage
page), and the trend. Read-only; the product team only (everybody else gets the site's 403 page)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from litestar import Controller, get
from litestar.di import Provide
from litestar.response import Template

from forum.auth import requires_product_team
from forum.surveys.controllers import provide_survey_reports, provide_surveys
from forum.surveys.reports import SurveyReports
from forum.surveys.schemas import Score, SurveyOut, TrendUnit
from forum.surveys.services import SurveyService
from forum.web.i18n import current_locale
from forum.web.surveys import Localized, question_of
from forum.web.views import Nav, page, provide_nav

REPORT_PAGE_SIZE = 25


@dataclass
class SurveyRow:
    survey: SurveyOut
    question: Localized
    overall: Score


class SurveyReportPages(Controller):
    """``/triage/surveys``: every survey with its current score; ``/triage/surveys/{id}``: its report
    (``GET /api/surveys/{id}/report``: internal and external side by side, per property value, per
    cluster with a link to its triage page, and the trend). Read-only; the product team only."""

    path = "/triage/surveys"
    include_in_schema = False
    guards = [requires_product_team]
    dependencies = {
        "surveys": Provide(provide_surveys),
        "survey_reports": Provide(provide_survey_reports),
        "nav": Provide(provide_nav),
    }

    @get("/", name="triage:surveys")
    async def surveys_page(
        self, nav: Nav, surveys: SurveyService, survey_reports: SurveyReports, offset: int = 0
    ) -> Template:
        listed = await surveys.list(REPORT_PAGE_SIZE, max(0, min(offset, 10_000_000)))
        locale = current_locale()
        rows = []
        for survey in listed.items:
            rows.append(SurveyRow(survey, question_of(survey, locale), await survey_reports.overall(survey.id)))
        return page("triage/surveys.html", nav, surveys=listed, rows=rows)

    @get("/{survey_id:uuid}", name="triage:survey")
    async def survey_page(
        self, nav: Nav, survey_reports: SurveyReports, survey_id: UUID, trend: str = TrendUnit.MONTH.value
    ) -> Template:
        unit = TrendUnit(trend) if trend in {u.value for u in TrendUnit} else TrendUnit.MONTH
        report = await survey_reports.report(survey_id, unit)
        question = question_of(report.survey, current_locale())
        return page("triage/survey.html", nav, report=report, question=question, trend=unit.value)

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, get, patch, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from forum.auth import requires_login, requires_product_team
from forum.errors import UnprocessableError
from forum.grouping.controllers import provide_grouping
from forum.grouping.services import GroupingService
from forum.http import LOCATION, created
from forum.models import User, UserKind
from forum.posts.schemas import PostOut
from forum.schemas import Limit, Offset, Page
from forum.surveys.reports import SurveyReports
from forum.surveys.schemas import (
    AnswerCreate,
    AnswerOut,
    Dismissed,
    Driver,
    MyAnswer,
    ShipReport,
    SurveyCreate,
    SurveyOut,
    SurveyReport,
    SurveyUpdate,
    TrendUnit,
    VoiceOut,
    VoicePostRequest,
)
from forum.surveys.services import SurveyService


async def provide_surveys(db_session: AsyncSession, state: State) -> AsyncGenerator[SurveyService, None]:
    yield SurveyService(db_session, state["forum_settings"].survey_throttle_days)


async def provide_survey_reports(db_session: AsyncSession) -> AsyncGenerator[SurveyReports, None]:
    yield SurveyReports(db_session)


def _property_filter(values: list[str] | None) -> dict[str, str]:
    filters: dict[str, str] = {}
    for value in values or []:
        key, sep, wanted = value.partition(":")
        if not sep or not key.strip():
            raise UnprocessableError("property filters are key:value, e.g. plan:pro", field="property")
        filters[key.strip()] = wanted.strip()
    return filters


class SurveyController(Controller):
    path = "/api/surveys"
    tags = ["surveys"]
    dependencies = {"surveys": Provide(provide_surveys), "reports": Provide(provide_survey_reports)}

    @post(guards=[requires_product_team], response_headers=[LOCATION], summary="Create a survey (product team)")
    async def create_survey(
        self, request: Request[User, Any, Any], data: SurveyCreate, surveys: SurveyService
    ) -> Response[SurveyOut]:
        survey = await surveys.create(request.user, data)
        return created(survey, f"/api/surveys/{survey.id}")

    @get(guards=[requires_product_team], summary="All surveys, newest first (product team)")
    async def list_surveys(self, surveys: SurveyService, limit: Limit = 20, offset: Offset = 0) -> Page[SurveyOut]:
        return await surveys.list(limit, offset)

    @get("/pending", guards=[requires_login], summary="Open surveys to show you now (not answered or dismissed lately)")
    async def list_pending_surveys(
        self, request: Request[User, Any, Any], surveys: SurveyService, limit: Limit = 20, offset: Offset = 0
    ) -> Page[SurveyOut]:
        return await surveys.pending(request.user, limit, offset)

    @get("/{survey_id:uuid}", guards=[requires_login], summary="A survey (its audience and the product team)")
    async def get_survey(self, request: Request[User, Any, Any], survey_id: UUID, surveys: SurveyService) -> SurveyOut:
        return await surveys.get_for(survey_id, request.user)

    @patch("/{survey_id:uuid}", guards=[requires_product_team], summary="Open, close or edit a survey (product team)")
    async def update_survey(self, survey_id: UUID, data: SurveyUpdate, surveys: SurveyService) -> SurveyOut:
        return await surveys.update(survey_id, data)

    @post(
        "/{survey_id:uuid}/answers",
        guards=[requires_login],
        response_headers=[LOCATION],
        summary="Answer a survey: a score and a comment",
    )
    async def answer_survey(
        self, request: Request[User, Any, Any], survey_id: UUID, data: AnswerCreate, surveys: SurveyService
    ) -> Response[MyAnswer]:
        answer = await surveys.answer(survey_id, request.user, data)
        return created(answer, f"/api/surveys/{survey_id}/answers/{answer.id}")

    @post(
        "/{survey_id:uuid}/dismiss",
        guards=[requires_login],
        status_code=200,
        summary="Close a survey without answering (not asked again for its throttle period)",
    )
    async def dismiss_survey(
        self, request: Request[User, Any, Any], survey_id: UUID, surveys: SurveyService
    ) -> Dismissed:
        return await surveys.dismiss(survey_id, request.user)

    @get("/{survey_id:uuid}/answers", guards=[requires_product_team], summary="A survey's answers (product team)")
    async def list_survey_answers(
        self,
        survey_id: UUID,
        surveys: SurveyService,
        latest: Annotated[bool, Parameter(description="Only each person's latest answer")] = False,
        respondent_kind: UserKind | None = None,
        property: Annotated[
            list[Annotated[str, Parameter(max_length=250)]] | None,
            Parameter(description="key:value, repeatable (all must match)"),
        ] = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> Page[AnswerOut]:
        return await surveys.answers(
            survey_id,
            latest_only=latest,
            respondent_kind=respondent_kind.value if respondent_kind else None,
            properties=_property_filter(property),
            limit=limit,
            offset=offset,
        )

    @get(
        "/{survey_id:uuid}/report",
        guards=[requires_product_team],
        summary="NPS/CSAT with margins, internal vs external, per property value, per cluster, and a trend",
    )
    async def get_survey_report(
        self, survey_id: UUID, reports: SurveyReports, trend: TrendUnit = TrendUnit.WEEK
    ) -> SurveyReport:
        return await reports.report(survey_id, trend)

    @get(
        "/{survey_id:uuid}/drivers",
        guards=[requires_product_team],
        summary="What drives detractors: clusters ranked by detractor voices (product team)",
    )
    async def list_survey_drivers(
        self, survey_id: UUID, reports: SurveyReports, limit: Limit = 20, offset: Offset = 0
    ) -> Page[Driver]:
        return await reports.drivers(survey_id, limit, offset)


class VoiceController(Controller):
    """Survey answers where they meet the rest of the forum: clusters, posts, the respondent's own list."""

    path = "/api"
    tags = ["surveys"]
    dependencies = {"surveys": Provide(provide_surveys), "reports": Provide(provide_survey_reports)}

    @get("/me/survey-answers", guards=[requires_login], summary="Your own survey answers, newest first")
    async def list_my_survey_answers(
        self, request: Request[User, Any, Any], surveys: SurveyService, limit: Limit = 50, offset: Offset = 0
    ) -> Page[MyAnswer]:
        return await surveys.my_answers(request.user, limit, offset)

    @get(
        "/clusters/{cluster_id:uuid}/voices",
        guards=[requires_product_team],
        summary="Survey comments voiced in a cluster, with their scores (product team)",
    )
    async def list_cluster_voices(
        self, cluster_id: UUID, reports: SurveyReports, limit: Limit = 50, offset: Offset = 0
    ) -> Page[VoiceOut]:
        return await reports.voices(cluster_id, limit, offset)

    @post(
        "/survey-answers/{answer_id:uuid}/post",
        guards=[requires_product_team],
        dependencies={"grouping": Provide(provide_grouping)},
        response_headers=[LOCATION],
        summary="Turn a voice into a critique authored by the respondent (product team); send {} for the defaults",
    )
    async def create_post_from_voice(
        self,
        request: Request[User, Any, Any],
        answer_id: UUID,
        data: VoicePostRequest,
        surveys: SurveyService,
        grouping: GroupingService,
    ) -> Response[PostOut]:
        post = await surveys.voice_to_post(answer_id, request.user, data, grouping)
        return created(post, f"/api/posts/{post.id}")

    @get(
        "/posts/{post_id:uuid}/ship-report",
        guards=[requires_product_team],
        summary="NPS of the respondents who voiced a shipped idea's need, before and after it shipped",
    )
    async def get_ship_report(self, post_id: UUID, reports: SurveyReports) -> ShipReport:
        return await reports.ship_report(post_id)

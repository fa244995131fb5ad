"""Surveys, answers, voices and the reports made of them."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

from forum.accounts.schemas import UserPublic
from forum.models import SurveyAudience, SurveyKind, UserKind
from forum.schemas import NO_NUL, clean_text

Question = Annotated[str, msgspec.Meta(max_length=300, pattern=NO_NUL)]
AnswerComment = Annotated[str, msgspec.Meta(max_length=5_000, pattern=NO_NUL)]
PropertyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.\- ]+$")]
PropertyValue = Annotated[str, msgspec.Meta(max_length=200, pattern=NO_NUL)]
Properties = Annotated[dict[PropertyKey, PropertyValue], msgspec.Meta(max_length=20)]
ThrottleDays = Annotated[int, msgspec.Meta(ge=0, le=3650)]
MAX_SCORE = {SurveyKind.NPS.value: 10, SurveyKind.CSAT.value: 5}
MIN_SCORE = {SurveyKind.NPS.value: 0, SurveyKind.CSAT.value: 1}


def _clean_optional(value: str | msgspec.UnsetType | None, field: str) -> str | msgspec.UnsetType | None:
    if value is None or value is msgspec.UNSET:
        return value
    return clean_text(value, field, max_len=300) or None


class SurveyCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A survey needs its question in Spanish, English or both (the follow-up is optional): a domain rule,
    checked by the service, since the schema cannot say it."""

    kind: SurveyKind
    question_en: Question | None = None
    question_es: Question | None = None
    follow_up_en: Question | None = None
    follow_up_es: Question | None = None
    audience: SurveyAudience = SurveyAudience.EVERYONE
    is_open: bool = True
    throttle_days: ThrottleDays | None = None
    """Default: ``FORUM_SURVEY_THROTTLE_DAYS``."""

    def __post_init__(self) -> None:
        for field in ("question_en", "question_es", "follow_up_en", "follow_up_es"):
            setattr(self, field, _clean_optional(getattr(self, field), field))


class SurveyUpdate(msgspec.Struct, forbid_unknown_fields=True):
    question_en: Question | msgspec.UnsetType | None = msgspec.UNSET
    question_es: Question | msgspec.UnsetType | None = msgspec.UNSET
    follow_up_en: Question | msgspec.UnsetType | None = msgspec.UNSET
    follow_up_es: Question | msgspec.UnsetType | None = msgspec.UNSET
    audience: SurveyAudience | msgspec.UnsetType = msgspec.UNSET
    is_open: bool | msgspec.UnsetType = msgspec.UNSET
    throttle_days: ThrottleDays | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        for field in ("question_en", "question_es", "follow_up_en", "follow_up_es"):
            setattr(self, field, _clean_optional(getattr(self, field), field))


class Scale(msgspec.Struct):
    min: int
    max: int


class SurveyOut(msgspec.Struct):
    id: UUID
    kind: SurveyKind
    question_en: str | None
    question_es: str | None
    follow_up_en: str | None
    follow_up_es: str | None
    audience: SurveyAudience
    is_open: bool
    throttle_days: int
    scale: Scale
    created_at: datetime


class AnswerCreate(msgspec.Struct, forbid_unknown_fields=True):
    score: int
    comment: AnswerComment | None = None
    properties: Properties = msgspec.field(default_factory=dict)
    """Free key/value pairs from the company's systems, e.g. ``{"plan": "pro", "region": "eu"}``."""

    def __post_init__(self) -> None:
        if self.comment is not None:
            self.comment = clean_text(self.comment, "comment", max_len=5_000) or None
        self.properties = {key.strip(): value.strip() for key, value in self.properties.items()}


class MyAnswer(msgspec.Struct):
    """An answer as its respondent sees it."""

    id: UUID
    survey_id: UUID
    score: int
    comment: str | None
    properties: dict[str, str]
    answered_at: datetime
    is_latest: bool
    """The answer that counts in the survey's current score (a person's latest)."""


class AnswerOut(msgspec.Struct):
    """An answer as the product team sees it."""

    id: UUID
    survey_id: UUID
    respondent: UserPublic
    respondent_kind: UserKind
    score: int
    bucket: str
    """``promoter``, ``passive`` or ``detractor`` (CSAT: 4-5, 3, 1-2)."""
    comment: str | None
    language: str | None
    properties: dict[str, str]
    answered_at: datetime
    is_latest: bool
    source: str
    cluster_id: UUID | None
    similarity: float | None
    post_id: UUID | None
    """The critique made of this voice, when there is one."""


class VoicePostRequest(msgspec.Struct, forbid_unknown_fields=True):
    title: Annotated[str, msgspec.Meta(max_length=1_000, pattern=NO_NUL)] | None = None
    """Default: the comment's first words."""
    body: Annotated[str, msgspec.Meta(max_length=10_000, pattern=NO_NUL)] | None = None
    """Default: the comment."""


class Score(msgspec.Struct):
    """Counts and shares of a set of answers (one per person).

    NPS: promoters 9-10, passives 7-8, detractors 0-6; ``nps`` = %promoters - %detractors with its 95 %
    margin of error. CSAT: the same buckets are 4-5, 3 and 1-2; ``csat`` = % of 4-5 with its margin.
    """

    responses: int
    average: float | None
    promoters: int
    passives: int
    detractors: int
    nps: float | None
    nps_margin: float | None
    csat: float | None
    csat_margin: float | None


class SurveySegment(msgspec.Struct):
    value: str | None
    score: Score


class PropertyBreakdown(msgspec.Struct):
    property: str
    values: list[SurveySegment]


class ClusterScore(msgspec.Struct):
    cluster_id: UUID
    title: str | None
    """The title of the cluster's most voted post."""
    score: Score


class TrendPoint(msgspec.Struct):
    period: datetime
    """Start of the week (Monday) or month, UTC."""
    score: Score


class TrendUnit(enum.StrEnum):
    WEEK = "week"
    MONTH = "month"


class SurveyReport(msgspec.Struct):
    """The current score counts each person's latest answer; the trend counts every answer given in
    each period."""

    survey: SurveyOut
    overall: Score
    by_kind: dict[str, Score]
    """``internal`` and ``external`` respondents side by side."""
    by_property: list[PropertyBreakdown]
    by_cluster: list[ClusterScore]
    """Answers whose comment is a voice in a cluster, most detractors first."""
    trend_unit: TrendUnit
    trend: list[TrendPoint]


class Driver(msgspec.Struct):
    cluster_id: UUID
    title: str | None
    detractors: int
    voices: int
    score: Score


class VoiceOut(msgspec.Struct):
    answer: AnswerOut
    survey_kind: SurveyKind


class PhaseScores(msgspec.Struct):
    survey_id: UUID
    kind: SurveyKind
    question: str | None
    before: Score
    """Each respondent's latest answer before the ship."""
    after: Score
    """Each respondent's first answer after the ship (only those who answered again)."""


class ShipReport(msgspec.Struct):
    post_id: UUID
    shipped_at: datetime
    cluster_id: UUID | None
    respondents: int
    """People whose comments, given before the ship, are voices in the post's cluster."""
    surveys: list[PhaseScores]


class Dismissed(msgspec.Struct):
    survey_id: UUID
    dismissed_at: datetime

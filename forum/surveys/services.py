"""Surveys and their answers. Services never commit; the request (or the import's batch) does.

- A person is asked a survey at most once per ``throttle_days`` (answering or dismissing it); answering
  again later adds an answer. Every answer is kept; ``is_latest`` marks each person's latest, the one
  that counts in the current score (``refresh_latest`` keeps it right, whatever order answers arrive in).
- An answer with a comment enqueues ``survey_answer.embed`` in its own transaction (like ``post.embed``):
  the worker embeds the comment and attaches it to the nearest cluster as a *voice* (``voices.py``).
- Only the product team reads other people's answers; a respondent reads their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID

import msgspec
from litestar.exceptions import NotFoundException, PermissionDeniedException
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from forum.accounts.schemas import UserPublic
from forum.encoding import post_language
from forum.errors import ConflictError, UnprocessableError
from forum.grouping.decisions import ClusterDecisions
from forum.grouping.services import GroupingService
from forum.models import (
    PostKind,
    Survey,
    SurveyAnswer,
    SurveyAudience,
    SurveyDismissal,
    SurveyKind,
    User,
)
from forum.notifications.services import notify_users
from forum.posts.schemas import PostCreate, PostOut
from forum.posts.services import PostService
from forum.queue import enqueue
from forum.schemas import Page
from forum.surveys.schemas import (
    MAX_SCORE,
    MIN_SCORE,
    AnswerCreate,
    AnswerOut,
    Dismissed,
    MyAnswer,
    Scale,
    SurveyCreate,
    SurveyOut,
    SurveyUpdate,
    VoicePostRequest,
)
from forum.surveys.voices import EMBED_ANSWER

VOICE_POSTED = "survey_voice_posted"
"""Notification: the product team made a critique of your survey comment (you are its author)."""

# Promoters from, detractors up to (NPS 0-10; CSAT 1-5: satisfied 4-5, dissatisfied 1-2).
HIGH = {SurveyKind.NPS.value: 9, SurveyKind.CSAT.value: 4}
LOW = {SurveyKind.NPS.value: 6, SurveyKind.CSAT.value: 2}


def bucket(kind: str, score: int) -> str:
    if score >= HIGH[kind]:
        return "promoter"
    if score <= LOW[kind]:
        return "detractor"
    return "passive"


def survey_out(survey: Survey) -> SurveyOut:
    return SurveyOut(
        id=survey.id,
        kind=SurveyKind(survey.kind),
        question_en=survey.question_en,
        question_es=survey.question_es,
        follow_up_en=survey.follow_up_en,
        follow_up_es=survey.follow_up_es,
        audience=SurveyAudience(survey.audience),
        is_open=survey.is_open,
        throttle_days=survey.throttle_days,
        scale=Scale(min=MIN_SCORE[survey.kind], max=MAX_SCORE[survey.kind]),
        created_at=survey.created_at,
    )


def in_audience(survey: Survey, user: User) -> bool:
    return survey.audience == SurveyAudience.EVERYONE.value or survey.audience == user.kind


def my_answer(answer: SurveyAnswer) -> MyAnswer:
    return MyAnswer(
        id=answer.id,
        survey_id=answer.survey_id,
        score=answer.score,
        comment=answer.comment,
        properties=answer.properties or {},
        answered_at=answer.answered_at,
        is_latest=answer.is_latest,
    )


def answer_out(answer: SurveyAnswer, respondent: User, kind: str) -> AnswerOut:
    return AnswerOut(
        id=answer.id,
        survey_id=answer.survey_id,
        respondent=UserPublic(id=respondent.id, display_name=respondent.display_name, kind=respondent.kind),
        respondent_kind=answer.respondent_kind,
        score=answer.score,
        bucket=bucket(kind, answer.score),
        comment=answer.comment,
        language=answer.language,
        properties=answer.properties or {},
        answered_at=answer.answered_at,
        is_latest=answer.is_latest,
        source=answer.source,
        cluster_id=answer.cluster_id,
        similarity=round(answer.similarity, 4) if answer.similarity is not None else None,
        post_id=answer.post_id,
    )


async def refresh_latest(session: AsyncSession, survey_id: UUID, user_ids: Iterable[UUID]) -> None:
    """Mark each of these people's latest answer to the survey (by ``answered_at``, then id) as the one
    that counts. Two statements: the unique index on the latest answer is checked row by row."""
    users = list(dict.fromkeys(user_ids))
    if not users:
        return
    latest = """
        SELECT DISTINCT ON (user_id) id FROM survey_answer
        WHERE survey_id = :survey AND user_id = ANY(:users)
        ORDER BY user_id, answered_at DESC, id DESC
    """
    params = {"survey": survey_id, "users": users}
    await session.execute(
        text(
            f"UPDATE survey_answer SET is_latest = false WHERE survey_id = :survey AND user_id = ANY(:users) "
            f"AND is_latest AND id NOT IN ({latest})"
        ),
        params,
    )
    await session.execute(
        text(f"UPDATE survey_answer SET is_latest = true WHERE id IN ({latest}) AND NOT is_latest"), params
    )


async def enqueue_voices(session: AsyncSession, answer_ids: Sequence[UUID]) -> None:
    await enqueue(session, EMBED_ANSWER, [str(answer_id) for answer_id in answer_ids], dedupe=True)


class SurveyService:
    def __init__(self, session: AsyncSession, default_throttle_days: int = 90) -> None:
        self.session = session
        self.default_throttle_days = default_throttle_days

    # Surveys ------------------------------------------------------------------------------------

    async def _get(self, survey_id: UUID, *, for_update: bool = False) -> Survey:
        survey = await self.session.get(Survey, survey_id, with_for_update=for_update)
        if survey is None:
            raise NotFoundException("Survey not found")
        return survey

    async def create(self, actor: User, data: SurveyCreate) -> SurveyOut:
        if data.question_en is None and data.question_es is None:
            raise UnprocessableError(
                "Give the question in English (question_en), Spanish (question_es) or both", field="question_en"
            )
        survey = Survey(
            kind=data.kind.value,
            question_en=data.question_en,
            question_es=data.question_es,
            follow_up_en=data.follow_up_en,
            follow_up_es=data.follow_up_es,
            audience=data.audience.value,
            is_open=data.is_open,
            throttle_days=self.default_throttle_days if data.throttle_days is None else data.throttle_days,
            created_by_id=actor.id,
        )
        self.session.add(survey)
        await self.session.flush()
        await self.session.refresh(survey)
        return survey_out(survey)

    async def update(self, survey_id: UUID, data: SurveyUpdate) -> SurveyOut:
        survey = await self._get(survey_id, for_update=True)
        for field in ("question_en", "question_es", "follow_up_en", "follow_up_es", "is_open", "throttle_days"):
            value = getattr(data, field)
            if value is not msgspec.UNSET:
                setattr(survey, field, value)
        if data.audience is not msgspec.UNSET:
            survey.audience = data.audience.value
        if survey.question_en is None and survey.question_es is None:
            raise UnprocessableError("A survey keeps its question in English, Spanish or both", field="question_en")
        await self.session.flush()
        await self.session.refresh(survey)
        return survey_out(survey)

    async def list(self, limit: int, offset: int) -> Page[SurveyOut]:
        total = await self.session.scalar(select(func.count()).select_from(Survey)) or 0
        surveys = await self.session.scalars(
            select(Survey).order_by(Survey.created_at.desc(), Survey.id.desc()).limit(limit).offset(offset)
        )
        return Page(items=[survey_out(s) for s in surveys], total=total, limit=limit, offset=offset)

    async def get_for(self, survey_id: UUID, viewer: User) -> SurveyOut:
        survey = await self._get(survey_id)
        if not viewer.is_product_team and not in_audience(survey, viewer):
            raise PermissionDeniedException("This survey is not for you")
        return survey_out(survey)

    async def pending(self, user: User, limit: int, offset: int) -> Page[SurveyOut]:
        """Open surveys for this person that they have neither answered nor dismissed in their period."""
        surveys = await self.session.scalars(
            select(Survey)
            .where(
                Survey.is_open.is_(True),
                Survey.audience.in_([SurveyAudience.EVERYONE.value, user.kind]),
                text(
                    """
                    NOT EXISTS (SELECT FROM survey_answer a WHERE a.survey_id = survey.id AND a.user_id = :user
                                AND a.answered_at > now() - make_interval(days => survey.throttle_days))
                    AND NOT EXISTS (SELECT FROM survey_dismissal d WHERE d.survey_id = survey.id AND d.user_id = :user
                                AND d.dismissed_at > now() - make_interval(days => survey.throttle_days))
                    """
                ).bindparams(user=user.id),
            )
            .order_by(Survey.created_at, Survey.id)
        )
        return Page.of([survey_out(s) for s in surveys], limit, offset)

    async def _answerable(self, survey_id: UUID, user: User) -> Survey:
        survey = await self._get(survey_id)
        if not in_audience(survey, user):
            raise PermissionDeniedException(f"This survey is for {survey.audience} respondents only")
        if not survey.is_open:
            raise ConflictError(detail="This survey is closed")
        return survey

    async def answer(self, survey_id: UUID, user: User, data: AnswerCreate) -> MyAnswer:
        survey = await self._answerable(survey_id, user)
        low, high = MIN_SCORE[survey.kind], MAX_SCORE[survey.kind]
        if not low <= data.score <= high:
            raise UnprocessableError(f"A {survey.kind} score is from {low} to {high}", field="score")
        # One answer at a time per person per survey: the throttle check and the latest flag stay exact.
        await self.session.execute(
            select(func.pg_advisory_xact_lock(func.hashtext(str(survey.id)), func.hashtext(str(user.id))))
        )
        last = await self.session.scalar(
            select(func.max(SurveyAnswer.answered_at)).where(
                SurveyAnswer.survey_id == survey.id, SurveyAnswer.user_id == user.id
            )
        )
        now = datetime.now(UTC)
        if last is not None and survey.throttle_days and last > now - timedelta(days=survey.throttle_days):
            again = (last + timedelta(days=survey.throttle_days)).date().isoformat()
            raise ConflictError(
                detail=f"You answered this survey on {last.date().isoformat()}; answer again from {again}"
            )
        answer = SurveyAnswer(
            survey_id=survey.id,
            user_id=user.id,
            score=data.score,
            comment=data.comment,
            language=post_language(data.comment, "") if data.comment else None,
            respondent_kind=user.kind,
            properties=data.properties,
            answered_at=now,
            is_latest=False,
            source="app",
        )
        self.session.add(answer)
        await self.session.flush()
        await refresh_latest(self.session, survey.id, [user.id])
        if data.comment:
            await enqueue_voices(self.session, [answer.id])
        await self.session.refresh(answer)
        return my_answer(answer)

    async def dismiss(self, survey_id: UUID, user: User) -> Dismissed:
        survey = await self._answerable(survey_id, user)
        stmt = insert(SurveyDismissal).values(survey_id=survey.id, user_id=user.id, dismissed_at=func.now())
        row = await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[SurveyDismissal.survey_id, SurveyDismissal.user_id],
                set_={"dismissed_at": func.now()},
            ).returning(SurveyDismissal.dismissed_at)
        )
        return Dismissed(survey_id=survey.id, dismissed_at=row.scalar_one())

    # Answers ------------------------------------------------------------------------------------

    async def my_answers(self, user: User, limit: int, offset: int) -> Page[MyAnswer]:
        condition = SurveyAnswer.user_id == user.id
        total = await self.session.scalar(select(func.count()).select_from(SurveyAnswer).where(condition)) or 0
        rows = await self.session.scalars(
            select(SurveyAnswer)
            .where(condition)
            .order_by(SurveyAnswer.answered_at.desc(), SurveyAnswer.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return Page(items=[my_answer(a) for a in rows], total=total, limit=limit, offset=offset)

    async def answers(
        self,
        survey_id: UUID,
        *,
        latest_only: bool,
        respondent_kind: str | None,
        properties: dict[str, str],
        limit: int,
        offset: int,
    ) -> Page[AnswerOut]:
        survey = await self._get(survey_id)
        conditions = [SurveyAnswer.survey_id == survey.id]
        if latest_only:
            conditions.append(SurveyAnswer.is_latest.is_(True))
        if respondent_kind:
            conditions.append(SurveyAnswer.respondent_kind == respondent_kind)
        if properties:
            conditions.append(SurveyAnswer.properties.contains(properties))  # GIN jsonb_path_ops
        total = await self.session.scalar(select(func.count()).select_from(SurveyAnswer).where(*conditions)) or 0
        rows = await self.session.execute(
            select(SurveyAnswer, User)
            .join(User, User.id == SurveyAnswer.user_id)
            .where(*conditions)
            .order_by(SurveyAnswer.answered_at.desc(), SurveyAnswer.id.desc())
            .limit(limit)
            .offset(offset)
        )
        items = [answer_out(answer, user, survey.kind) for answer, user in rows]
        return Page(items=items, total=total, limit=limit, offset=offset)

    # Voices -------------------------------------------------------------------------------------

    async def voice_to_post(
        self, answer_id: UUID, actor: User, data: VoicePostRequest, grouping: GroupingService
    ) -> PostOut:
        """A critique authored by the respondent, made of their comment: they are notified and follow it,
        the answer keeps the link, and the post joins the voice's cluster (a person's decision)."""
        answer = await self.session.get(SurveyAnswer, answer_id, with_for_update=True)
        if answer is None:
            raise NotFoundException("Answer not found")
        if answer.post_id is not None:
            raise ConflictError(detail="This voice is already a post", extra={"post_id": str(answer.post_id)})
        if not answer.comment:
            raise UnprocessableError("This answer has no comment to turn into a post", field="answer_id")
        respondent = await self.session.get(User, answer.user_id)
        assert respondent is not None
        try:
            create = msgspec.convert(
                {
                    "kind": PostKind.CRITIQUE.value,
                    "title": data.title or _title_from(answer.comment),
                    "body": answer.comment if data.body is None else data.body,
                },
                PostCreate,
            )
        except msgspec.ValidationError as exc:
            raise UnprocessableError(str(exc), field="title") from exc
        posts = PostService(self.session)
        post = await posts.create(respondent, create)
        answer.post_id = post.id
        await self.session.flush()
        if answer.cluster_id is not None:
            await ClusterDecisions(grouping).move(post.id, answer.cluster_id, actor)
            post = await posts.get_out(post.id, actor)
        await notify_users(
            self.session,
            [respondent.id],
            VOICE_POSTED,
            {"post_id": str(post.id), "title": post.title, "survey_id": str(answer.survey_id)},
            post_id=post.id,
        )
        return post


def _title_from(comment: str, limit: int = 80) -> str:
    words = " ".join(comment.split())
    for end in (". ", "? ", "! ", "\n"):
        if end in words[:limit]:
            words = words[: words.index(end) + 1]
            break
    if len(words) <= limit:
        return words if len(words) >= 3 else f"{words}…"
    return words[: limit - 1].rsplit(" ", 1)[0] + "…"

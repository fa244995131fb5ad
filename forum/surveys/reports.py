"""What the product team reads about surveys. Every figure comes from counts per bucket that PostgreSQL
keeps as answers change (``survey_tally``, maintained by triggers; migration 0011) or, for a ship's
before/after, aggregates over its few respondents; Python only turns counts into shares and never
loops over answers, so a report costs the same over a hundred answers or a million (docs/surveys.md).

NPS = %promoters - %detractors; its 95 % margin of error is 1.96 * 100 * sqrt((p + d - (p - d)^2) / n)
with p and d the shares of promoters and detractors (the variance of a +1/0/-1 score). CSAT = % of
answers of 4-5, with the margin of a proportion, 1.96 * 100 * sqrt(s (1 - s) / n).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from litestar.exceptions import NotFoundException
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from forum.errors import ConflictError
from forum.models import Cluster, Post, ShipEvent, Survey, SurveyAnswer, SurveyKind, User
from forum.schemas import Page
from forum.surveys.schemas import (
    ClusterScore,
    Driver,
    PhaseScores,
    PropertyBreakdown,
    Score,
    ShipReport,
    SurveyReport,
    SurveySegment,
    TrendPoint,
    TrendUnit,
    VoiceOut,
)
from forum.surveys.services import answer_out, survey_out

Z95 = 1.96
MAX_PROPERTIES = 10  # properties broken down in a report
MAX_VALUES = 50  # values per property, the most answered first

# Counts per bucket with the bounds of each answer's survey (the ship report spans surveys).
_COUNTS_BY_KIND = """count(*) AS n, sum(score) AS total,
    count(*) FILTER (WHERE score >= CASE s.kind WHEN 'nps' THEN 9 ELSE 4 END) AS high,
    count(*) FILTER (WHERE score <= CASE s.kind WHEN 'nps' THEN 6 ELSE 2 END) AS low"""


def score_of(kind: str, n: int, total: int | None, high: int, low: int) -> Score:
    """Shares and margins from a group's counts (``high`` promoters, ``low`` detractors)."""
    n, high, low = int(n or 0), int(high or 0), int(low or 0)
    if n == 0:
        return Score(0, None, 0, 0, 0, None, None, None, None)
    p, d = high / n, low / n
    nps = nps_margin = csat = csat_margin = None
    if kind == SurveyKind.NPS.value:
        nps = round(100 * (p - d), 2)
        nps_margin = round(Z95 * 100 * math.sqrt(max(p + d - (p - d) ** 2, 0.0) / n), 2)
    else:
        csat = round(100 * p, 2)
        csat_margin = round(Z95 * 100 * math.sqrt(p * (1 - p) / n), 2)
    return Score(
        responses=n,
        average=round(float(total or 0) / n, 2),
        promoters=high,
        passives=n - high - low,
        detractors=low,
        nps=nps,
        nps_margin=nps_margin,
        csat=csat,
        csat_margin=csat_margin,
    )


def _score(kind: str, row: Any) -> Score:
    return score_of(kind, row.n, row.total, row.high, row.low)


def _segments(kind: str, values: list[tuple[str, Any]], totals: Any) -> list[SurveySegment]:
    """One property's values, the most answered first, and (as ``None``) the answers without it:
    counts add up, so those are the overall counts minus every value's."""
    ranked = sorted(values, key=lambda pair: (-pair[1].n, pair[0]))
    segments = [SurveySegment(value=value, score=_score(kind, row)) for value, row in ranked[:MAX_VALUES]]
    if totals is not None:
        missing = [
            getattr(totals, f) - sum(getattr(row, f) for _, row in values) for f in ("n", "total", "high", "low")
        ]
        if missing[0] > 0:
            segments.append(SurveySegment(value=None, score=score_of(kind, *missing)))
    return segments


class SurveyReports:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _survey(self, survey_id: UUID) -> Survey:
        survey = await self.session.get(Survey, survey_id)
        if survey is None:
            raise NotFoundException("Survey not found")
        return survey

    async def _cluster_titles(self, cluster_ids: list[UUID]) -> dict[UUID, str]:
        if not cluster_ids:
            return {}
        rows = await self.session.execute(
            text(
                """
                SELECT DISTINCT ON (m.cluster_id) m.cluster_id, p.title
                FROM cluster_membership m JOIN post p ON p.id = m.post_id AND p.deleted_at IS NULL
                WHERE m.cluster_id = ANY(:ids) AND m.state <> 'rejected'
                ORDER BY m.cluster_id, p.vote_total DESC, p.created_at, p.id
                """
            ),
            {"ids": cluster_ids},
        )
        return {r.cluster_id: r.title for r in rows}

    async def _tallies(self, survey_id: UUID, dimensions: str) -> list[Any]:
        return list(
            (
                await self.session.execute(
                    text(
                        "SELECT dimension, value, n, total, high, low FROM survey_tally "
                        f"WHERE survey_id = :survey AND n > 0 AND ({dimensions})"
                    ),
                    {"survey": survey_id},
                )
            ).all()
        )

    async def report(self, survey_id: UUID, unit: TrendUnit) -> SurveyReport:
        survey = await self._survey(survey_id)
        kind = survey.kind
        overall = score_of(kind, 0, 0, 0, 0)
        by_kind = {"internal": overall, "external": overall}
        by_cluster: list[tuple[UUID, Score]] = []
        by_property: dict[str, list[tuple[str, Any]]] = {}
        trend: list[TrendPoint] = []
        totals = None
        rows = await self._tallies(
            survey.id, f"dimension IN ('all', 'kind', 'cluster', '{unit.value}') OR dimension LIKE 'property:%'"
        )
        for row in rows:  # a few rows per segment value and period, never the answers
            if row.dimension == "all":
                overall, totals = _score(kind, row), row
            elif row.dimension == "kind":
                by_kind[row.value] = _score(kind, row)
            elif row.dimension == "cluster":
                by_cluster.append((UUID(row.value), _score(kind, row)))
            elif row.dimension == unit.value:
                period = datetime.fromisoformat(row.value).replace(tzinfo=UTC)
                trend.append(TrendPoint(period=period, score=_score(kind, row)))
            else:
                by_property.setdefault(row.dimension.removeprefix("property:"), []).append((row.value, row))
        by_cluster.sort(key=lambda pair: (-pair[1].detractors, -pair[1].responses, str(pair[0])))
        titles = await self._cluster_titles([cluster_id for cluster_id, _ in by_cluster])
        trend.sort(key=lambda point: point.period)
        return SurveyReport(
            survey=survey_out(survey),
            overall=overall,
            by_kind=by_kind,
            by_property=[
                PropertyBreakdown(property=key, values=_segments(kind, by_property[key], totals))
                for key in sorted(by_property)[:MAX_PROPERTIES]
            ],
            by_cluster=[ClusterScore(cluster_id=c, title=titles.get(c), score=s) for c, s in by_cluster],
            trend_unit=unit,
            trend=trend,
        )

    async def overall(self, survey_id: UUID) -> Score:
        """A survey's current score alone (each respondent's latest answer): one tally row."""
        survey = await self._survey(survey_id)
        rows = await self._tallies(survey.id, "dimension = 'all'")
        return _score(survey.kind, rows[0]) if rows else score_of(survey.kind, 0, 0, 0, 0)

    async def cluster_scores(self, cluster_id: UUID) -> list[tuple[Survey, Score]]:
        """Each survey's score among the current answers voiced in one cluster, newest survey first (the
        triage page of a cluster): the same tallies as a report's ``by_cluster``."""
        tallies = {
            r.survey_id: r
            for r in await self.session.execute(
                text(
                    "SELECT survey_id, n, total, high, low FROM survey_tally "
                    "WHERE dimension = 'cluster' AND value = :cluster AND n > 0"
                ),
                {"cluster": str(cluster_id)},
            )
        }
        if not tallies:
            return []
        surveys = await self.session.scalars(
            select(Survey).where(Survey.id.in_(tallies)).order_by(Survey.created_at.desc(), Survey.id)
        )
        return [(survey, _score(survey.kind, tallies[survey.id])) for survey in surveys]

    async def drivers(self, survey_id: UUID, limit: int, offset: int) -> Page[Driver]:
        """Clusters ranked by the detractors among the current answers voiced in them."""
        survey = await self._survey(survey_id)
        ranked = sorted(await self._tallies(survey.id, "dimension = 'cluster'"), key=lambda r: (-r.low, -r.n, r.value))
        rows = ranked[offset : offset + limit]
        titles = await self._cluster_titles([UUID(r.value) for r in rows])
        items = [
            Driver(
                cluster_id=UUID(r.value),
                title=titles.get(UUID(r.value)),
                detractors=int(r.low),
                voices=int(r.n),
                score=_score(survey.kind, r),
            )
            for r in rows
        ]
        return Page(items=items, total=len(ranked), limit=limit, offset=offset)

    async def voices(self, cluster_id: UUID, limit: int, offset: int) -> Page[VoiceOut]:
        """Every answer whose comment is a voice in the cluster, newest first, with its score."""
        if await self.session.get(Cluster, cluster_id) is None:
            raise NotFoundException("Cluster not found")
        condition = SurveyAnswer.cluster_id == cluster_id
        total = await self.session.scalar(select(func.count()).select_from(SurveyAnswer).where(condition))
        rows = await self.session.execute(
            select(SurveyAnswer, User, Survey.kind)
            .join(User, User.id == SurveyAnswer.user_id)
            .join(Survey, Survey.id == SurveyAnswer.survey_id)
            .where(condition)
            .order_by(SurveyAnswer.answered_at.desc(), SurveyAnswer.id.desc())
            .limit(limit)
            .offset(offset)
        )
        items = [VoiceOut(answer=answer_out(a, u, kind), survey_kind=SurveyKind(kind)) for a, u, kind in rows]
        return Page(items=items, total=int(total or 0), limit=limit, offset=offset)

    async def ship_report(self, post_id: UUID) -> ShipReport:
        """The NPS (or CSAT) of the respondents whose voices, given before the ship, are in the post's
        cluster: each one's latest answer before the ship, and their first answer after it."""
        post = await self.session.scalar(select(Post).where(Post.id == post_id, Post.deleted_at.is_(None)))
        if post is None:
            raise NotFoundException("Post not found")
        event = await self.session.scalar(
            select(ShipEvent)
            .where(ShipEvent.post_id == post.id, ShipEvent.revoked_at.is_(None))
            .order_by(ShipEvent.created_at.desc())
        )
        if event is None:
            raise ConflictError(detail="This post has not shipped")
        cluster_id = await self.session.scalar(
            text("SELECT cluster_id FROM cluster_membership WHERE post_id = :post AND state <> 'rejected'"),
            {"post": post.id},
        )
        params = {"cluster": cluster_id, "shipped": event.created_at}
        respondents = await self.session.scalar(
            text(
                "SELECT count(DISTINCT user_id) FROM survey_answer "
                "WHERE cluster_id = :cluster AND answered_at <= :shipped"
            ),
            params,
        )
        rows = (
            await self.session.execute(
                text(
                    f"""
                    WITH respondents AS (
                        SELECT DISTINCT user_id FROM survey_answer
                        WHERE cluster_id = :cluster AND answered_at <= :shipped
                    ),
                    before AS (
                        SELECT DISTINCT ON (a.survey_id, a.user_id) a.survey_id, a.score
                        FROM survey_answer a JOIN respondents r USING (user_id)
                        WHERE a.answered_at <= :shipped
                        ORDER BY a.survey_id, a.user_id, a.answered_at DESC, a.id DESC
                    ),
                    after AS (
                        SELECT DISTINCT ON (a.survey_id, a.user_id) a.survey_id, a.score
                        FROM survey_answer a JOIN respondents r USING (user_id)
                        WHERE a.answered_at > :shipped
                        ORDER BY a.survey_id, a.user_id, a.answered_at, a.id
                    ),
                    phases AS (
                        SELECT 'before' AS phase, * FROM before UNION ALL SELECT 'after', * FROM after
                    )
                    SELECT p.phase, p.survey_id, s.kind, coalesce(s.question_en, s.question_es) AS question,
                           {_COUNTS_BY_KIND}
                    FROM phases p JOIN survey s ON s.id = p.survey_id
                    GROUP BY p.phase, p.survey_id, s.kind, s.question_en, s.question_es
                    ORDER BY p.survey_id
                    """
                ),
                params,
            )
        ).all()
        surveys: dict[UUID, PhaseScores] = {}
        for row in rows:
            empty = score_of(row.kind, 0, 0, 0, 0)
            entry = surveys.setdefault(
                row.survey_id,
                PhaseScores(
                    survey_id=row.survey_id, kind=SurveyKind(row.kind), question=row.question, before=empty, after=empty
                ),
            )
            setattr(entry, row.phase, _score(row.kind, row))
        return ShipReport(
            post_id=post.id,
            shipped_at=event.created_at,
            cluster_id=cluster_id,
            respondents=int(respondents or 0),
            surveys=list(surveys.values()),
        )

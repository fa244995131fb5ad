"""How fast is a survey report over 1,000,000 answers? (docs/surveys.md)

Loads, with ``generate_series`` SQL (about a minute), one NPS survey with ``--answers`` answers from
``--people`` people (the first ``answers - people`` answered twice: an older answer, history, and a
newer one, the latest), a tenth of them employees, properties ``plan`` (3 values) and ``region``
(4 values), and 40 % of the answers voiced in one of 50 clusters; then times, through the app's own
code (``SurveyReports``, ``SurveyService``) on a fresh session each time:

- the full report (overall, internal/external, per property value, per cluster, weekly trend), and
  with a monthly trend;
- the detractor drivers; the first page of the answers list; one answer written (the latest-answer
  flag moved), rolled back.

The database is an embedded PostgreSQL under ``--data`` (default ``/tmp/forum-cache-surveys/bench``),
kept between runs: a second run with the same sizes reuses the loaded answers.

Run: ``python -m bench.surveys [--answers 1000000] [--people 700000] [--repeat 7]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from bench.common import log, machine_info
from forum import database
from forum.models import User
from forum.surveys.reports import SurveyReports
from forum.surveys.schemas import AnswerCreate, TrendUnit
from forum.surveys.services import SurveyService

SURVEY_ID = UUID("00000000-0000-7000-8000-00000000feed")
CLUSTERS = 50

LOAD_SQL = [
    "TRUNCATE survey, survey_answer, survey_dismissal, cluster_membership, cluster, post, user_account CASCADE",
    # People: deterministic ids (md5 of their number); every 10th is an employee.
    """INSERT INTO user_account (id, email, display_name, password_hash, kind, role, is_active, created_at, updated_at)
       SELECT md5('u' || n)::uuid, 'bench' || n || '@bench.example', 'Bench ' || n, '!unclaimed',
              CASE WHEN n % 10 = 0 THEN 'internal' ELSE 'external' END, 'member', true, now(), now()
       FROM generate_series(1, :people) AS n""",
    """INSERT INTO survey (id, kind, question_en, audience, is_open, throttle_days, created_by_id,
                           created_at, updated_at)
       VALUES (:survey, 'nps', 'How likely are you to recommend us?', 'everyone', true, 90,
               md5('u1')::uuid, now(), now())""",
    # One post per cluster, for the clusters' titles.
    """INSERT INTO cluster (id, created_at, updated_at) SELECT md5('c' || k)::uuid, now(), now()
       FROM generate_series(1, :clusters) AS k""",
    """INSERT INTO post (id, kind, title, body, tags, visibility, status, author_id, created_at, updated_at)
       SELECT md5('p' || k)::uuid, 'idea', 'Need number ' || k, '', '{}', 'public', 'open', md5('u1')::uuid,
              now(), now()
       FROM generate_series(1, :clusters) AS k""",
    """INSERT INTO cluster_membership (post_id, cluster_id, similarity, state, manual, created_at, updated_at)
       SELECT md5('p' || k)::uuid, md5('c' || k)::uuid, 1.0, 'suggested', false, now(), now()
       FROM generate_series(1, :clusters) AS k""",
    "SELECT setseed(0.42)",
    # Answer g is person ((g - 1) % people) + 1; answers beyond ``people`` are the second, newer answers
    # (0-199 days ago) of people whose first answer (200-365 days ago) is then history.
    """INSERT INTO survey_answer (id, survey_id, user_id, score, comment, language, respondent_kind, properties,
                                  answered_at, is_latest, source, cluster_id, similarity, created_at, updated_at)
       SELECT uuidv7(), :survey, md5('u' || person)::uuid,
              (ARRAY[0,1,2,3,4,5,6,6,7,7,8,8,8,9,9,9,10,10,10])[1 + floor(random() * 19)::int],
              CASE WHEN g % 5 < 2 THEN 'Comment number ' || g END, NULL,
              CASE WHEN person % 10 = 0 THEN 'internal' ELSE 'external' END,
              jsonb_build_object('plan', (ARRAY['free', 'pro', 'business'])[1 + g % 3],
                                 'region', (ARRAY['eu', 'us', 'latam', 'apac'])[1 + g % 4]),
              now() - make_interval(days => CASE WHEN twice AND g <= :people THEN 200 + g % 166 ELSE g % 200 END,
                                    secs => g % 86400),
              NOT (twice AND g <= :people), 'import',
              CASE WHEN g % 5 < 2 THEN md5('c' || (1 + (g * 7) % :clusters))::uuid END,
              CASE WHEN g % 5 < 2 THEN 0.7 END, now(), now()
       FROM (SELECT g, ((g - 1) % :people) + 1 AS person, ((g - 1) % :people) + 1 <= :answers - :people AS twice
             FROM generate_series(1, :answers) AS g) AS numbered""",
]


async def load(url: str, answers: int, people: int) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            loaded = await conn.scalar(
                text("SELECT count(*) FROM survey_answer WHERE survey_id = :survey"), {"survey": SURVEY_ID}
            )
            users = await conn.scalar(text("SELECT count(*) FROM user_account"))
        if loaded == answers and users == people:
            log(f"reusing {answers:,} loaded answers")
            return
        params = {"survey": SURVEY_ID, "people": people, "answers": answers, "clusters": CLUSTERS}
        started = time.perf_counter()
        async with engine.begin() as conn:
            for statement in LOAD_SQL:
                await conn.execute(text(statement), params)
        log(f"loaded {answers:,} answers from {people:,} people in {time.perf_counter() - started:.1f} s")
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE survey_answer"))
            await conn.execute(text("VACUUM ANALYZE user_account"))
    finally:
        await engine.dispose()


async def timed(session_maker: async_sessionmaker[AsyncSession], repeat: int, work) -> dict[str, float]:
    times = []
    result = None
    for _ in range(repeat):
        async with session_maker() as session:
            started = time.perf_counter()
            result = await work(session)
            times.append((time.perf_counter() - started) * 1000)
            await session.rollback()
    return {"median_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1), "result": result}


async def measure(url: str, repeat: int) -> dict[str, Any]:
    engine = create_async_engine(url, pool_size=2)
    session_maker = async_sessionmaker(engine, expire_on_commit=False)
    try:

        async def weekly(session: AsyncSession) -> Any:
            report = await SurveyReports(session).report(SURVEY_ID, TrendUnit.WEEK)
            return {
                "responses": report.overall.responses,
                "nps": report.overall.nps,
                "margin": report.overall.nps_margin,
            }

        async def monthly(session: AsyncSession) -> Any:
            return len((await SurveyReports(session).report(SURVEY_ID, TrendUnit.MONTH)).trend)

        async def drivers(session: AsyncSession) -> Any:
            return len((await SurveyReports(session).drivers(SURVEY_ID, 20, 0)).items)

        async def answers_page(session: AsyncSession) -> Any:
            page = await SurveyService(session).answers(
                SURVEY_ID, latest_only=True, respondent_kind=None, properties={"plan": "pro"}, limit=50, offset=0
            )
            return page.total

        async def answer_once(session: AsyncSession) -> Any:
            user = await session.get(User, (await session.scalar(text("SELECT md5('u1')::uuid"))))
            assert user is not None
            await session.execute(text("UPDATE survey SET throttle_days = 0 WHERE id = :s"), {"s": SURVEY_ID})
            out = await SurveyService(session).answer(SURVEY_ID, user, AnswerCreate(score=9))
            return out.is_latest

        results = {
            "report_weekly_trend": await timed(session_maker, repeat, weekly),
            "report_monthly_trend": await timed(session_maker, repeat, monthly),
            "drivers": await timed(session_maker, repeat, drivers),
            "answers_page_plan_pro": await timed(session_maker, repeat, answers_page),
            "answer_one": await timed(session_maker, repeat, answer_once),
        }
        return results
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=1_000_000)
    parser.add_argument("--people", type=int, default=700_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--data", type=Path, default=Path("/tmp/forum-cache-surveys/bench"))
    args = parser.parse_args()
    if not 0 < args.people <= args.answers <= 2 * args.people:
        parser.error("need people <= answers <= 2 * people")
    url = database.start_embedded_postgres(args.data / "postgres", "bench_surveys")
    database.upgrade(url)
    asyncio.run(load(url, args.answers, args.people))
    results = asyncio.run(measure(url, args.repeat))
    print(json.dumps({"machine": machine_info(), "answers": args.answers, "people": args.people, **results}, indent=2))


if __name__ == "__main__":
    main()

"""The demo's NPS survey (``survey.json``): answers from the demo's customers and employees in Spanish and
English, two waves (about 80 days ago and the last fortnight), and the business customers who asked
for tax IDs on invoices answering before and after that idea shipped, so that a newcomer sees NPS per
cluster, what drives detractors and a ship's before/after at once. Comments become voices once the
posts are grouped (``forum demo load`` places them right after grouping).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from forum.encoding import post_language
from forum.models import AnswerSource, ShipEvent, Survey, SurveyAnswer, User
from forum.surveys.services import refresh_latest

DEMO_SURVEY_PATH = Path(__file__).with_name("survey.json")


async def load_demo_survey(
    session: AsyncSession, *, user_ids: dict[str, UUID], post_ids: dict[str, UUID], now: datetime
) -> int:
    """Insert the demo survey and its answers in the caller's transaction; returns how many answers."""
    sample: dict[str, Any] = json.loads(DEMO_SURVEY_PATH.read_text(encoding="utf-8"))
    spec = sample["survey"]
    await session.flush()  # the ship events' dates, set by the caller
    shipped = {
        post_id: at
        for post_id, at in await session.execute(
            select(ShipEvent.post_id, ShipEvent.created_at).where(ShipEvent.revoked_at.is_(None))
        )
    }
    survey = Survey(
        kind=spec["kind"],
        question_en=spec["question_en"],
        question_es=spec["question_es"],
        follow_up_en=spec["follow_up_en"],
        follow_up_es=spec["follow_up_es"],
        audience=spec["audience"],
        is_open=True,
        throttle_days=spec["throttle_days"],
        created_by_id=user_ids[spec["creator"]],
        created_at=now - timedelta(days=90),
        updated_at=now - timedelta(days=90),
    )
    session.add(survey)
    await session.flush()
    kinds = dict((await session.execute(select(User.id, User.kind).where(User.id.in_(user_ids.values())))).all())
    rows = []
    for answer in sample["answers"]:
        if "ship" in answer:
            at = min(shipped[post_ids[answer["ship"]]] + timedelta(days=answer["days_from_ship"]), now)
        else:
            at = now - timedelta(days=answer["days_ago"])
        user_id = user_ids[answer["user"]]
        comment = answer.get("comment")
        rows.append(
            {
                "id": UUID(str(uuid7())),
                "survey_id": survey.id,
                "user_id": user_id,
                "score": answer["score"],
                "comment": comment,
                "language": post_language(comment, "") if comment else None,
                "respondent_kind": kinds[user_id],
                "properties": sample["properties"].get(answer["user"], {}),
                "answered_at": at,
                "is_latest": False,
                "source": AnswerSource.APP.value,
                "created_at": at,
                "updated_at": at,
            }
        )
    await session.execute(insert(SurveyAnswer), rows)
    await refresh_latest(session, survey.id, user_ids.values())
    return len(rows)

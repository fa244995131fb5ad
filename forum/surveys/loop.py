"""Closing the loop with survey respondents: when an idea ships, the people whose survey comments are
voices in its cluster hear about it, like its contributors (``ShipService.ship`` calls this).

Kept apart from ``services.py`` (which creates posts) so that shipping can call it without an import cycle.
"""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from forum.models import Post, Visibility
from forum.notifications.services import notify_users

VOICE_SHIPPED = "survey_voice_shipped"
"""Notification: an idea that answers what you told us in a survey has shipped."""

# The shipped post's current cluster; its voices' respondents, active, who may see the post.
_RESPONDENTS_SQL = """
SELECT a.user_id, (array_agg(a.survey_id ORDER BY a.answered_at DESC))[1] AS survey_id
FROM survey_answer a
JOIN cluster_membership m ON m.cluster_id = a.cluster_id AND m.post_id = :post AND m.state <> 'rejected'
JOIN user_account u ON u.id = a.user_id AND u.is_active
WHERE (:public OR u.kind = 'internal' OR u.role IN ('product', 'admin'))
GROUP BY a.user_id
"""


async def notify_voices_of_ship(session: AsyncSession, post: Post) -> int:
    """One ``survey_voice_shipped`` per respondent with a voice in the post's cluster; the payload names
    only the post (which they may see) and their own survey. Returns how many were notified."""
    rows = (
        await session.execute(
            text(_RESPONDENTS_SQL), {"post": post.id, "public": post.visibility == Visibility.PUBLIC.value}
        )
    ).all()
    by_survey: dict[UUID, list[UUID]] = {}
    for row in rows:
        by_survey.setdefault(row.survey_id, []).append(row.user_id)
    for survey_id, user_ids in by_survey.items():
        payload = {"post_id": str(post.id), "title": post.title, "survey_id": str(survey_id)}
        await notify_users(session, user_ids, VOICE_SHIPPED, payload, post_id=post.id)
    return len(rows)

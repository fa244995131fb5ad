"""The two grouping thresholds, and the board-wide values ``forum grouping calibrate --apply`` stores.

A candidate cluster's score (the grouping rule's, opaque here) falls in one of three bands:

- ``sure`` (score ≥ ``FORUM_DUPLICATE_THRESHOLD``): the post joins the cluster automatically;
- ``maybe`` (``FORUM_SUGGEST_THRESHOLD`` ≤ score < sure): the post stays apart and the grouping waits in
  the review queue as a suggestion;
- below: nothing.

With ``FORUM_GROUPING_MODE=suggest`` a sure grouping is a suggestion too. Thresholds applied by
``forum grouping calibrate --apply`` live in the database (``grouping_setting``), per encoder
configuration, so every API and worker process, on any machine, uses them; they win over the
environment's values.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from forum.models import GroupingSetting

SUGGEST_MARGIN = 0.08
"""Default width of the "maybe" band below the sure threshold."""


@dataclass(frozen=True)
class Thresholds:
    sure: float
    maybe: float
    mode: str = "auto"
    applied: bool = False
    """True when the values come from ``forum grouping calibrate --apply``."""

    @classmethod
    def of(cls, threshold: float | Thresholds, suggest: float | None = None, mode: str = "auto") -> Thresholds:
        if isinstance(threshold, Thresholds):
            return threshold
        maybe = suggest if suggest is not None else threshold - SUGGEST_MARGIN
        return cls(sure=float(threshold), maybe=min(float(maybe), float(threshold)), mode=mode)

    @classmethod
    def from_settings(cls, settings: Any) -> Thresholds:
        return cls.of(settings.duplicate_threshold, settings.suggest_threshold, settings.grouping_mode)

    def band(self, score: float) -> str | None:
        """``sure``, ``maybe`` or None (no grouping)."""
        if score >= self.sure:
            return "sure"
        if score >= self.maybe:
            return "maybe"
        return None

    def applies(self, score: float) -> bool:
        """Whether a grouping with this score is applied without asking anybody."""
        return self.mode == "auto" and score >= self.sure


def thresholds_key(encoder_name: str) -> str:
    return f"thresholds:{encoder_name}"


async def stored_thresholds(session: AsyncSession, encoder_name: str) -> dict[str, Any] | None:
    """What ``calibrate --apply`` stored for this encoder configuration (None: nothing applied)."""
    return await session.scalar(
        select(GroupingSetting.value).where(GroupingSetting.key == thresholds_key(encoder_name))
    )


async def effective_thresholds(session: AsyncSession, encoder_name: str, defaults: Thresholds) -> Thresholds:
    """The defaults, overridden by applied values (one primary-key read: each batch of assignments and
    each review request sees a change at once, in every process)."""
    value = await stored_thresholds(session, encoder_name)
    if not value:
        return defaults
    return replace(defaults, sure=float(value["sure"]), maybe=float(value["maybe"]), applied=True)


async def store_thresholds(session: AsyncSession, encoder_name: str, value: dict[str, Any]) -> None:
    stmt = insert(GroupingSetting).values(key=thresholds_key(encoder_name), value=value)
    await session.execute(
        stmt.on_conflict_do_update(index_elements=[GroupingSetting.key], set_={"value": stmt.excluded.value})
    )

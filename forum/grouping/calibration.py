"""Thresholds that fit this board, from its own decisions (``forum grouping calibrate``).

The labelled pairs (forum/grouping/labels.py, plus active merges of posts) are scored again from the
stored vectors, on the grouping scale (forum/grouping/pairs.py). The proposed ``sure`` threshold is the
lowest score at which the pairs above it are duplicates with at least ``target_precision`` (the most
recall at that precision; best F1 when no threshold reaches it); the ``maybe`` threshold is the highest
score below it at which ``queue_recall`` of the duplicates reach at least the review queue. Each
threshold sits half-way between the chosen score and the next lower one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from embeddings.evaluation import average_precision, best_f1, roc_auc
from forum.encoding import PostEmbedder
from forum.grouping.pairs import scores_of
from forum.grouping.thresholds import Thresholds
from forum.models import GroupingLabel, PostMerge

MIN_PAIRS = 10
MIN_PER_CLASS = 3


@dataclass
class BoardLabels:
    scores: np.ndarray
    labels: np.ndarray
    sources: Counter[str] = field(default_factory=Counter)
    unscored: int = 0
    """Labelled pairs left out: a post was deleted or has no current vector."""

    @property
    def positives(self) -> int:
        return int(self.labels.sum())

    @property
    def negatives(self) -> int:
        return len(self.labels) - self.positives

    def enough(self) -> bool:
        return len(self.labels) >= MIN_PAIRS and min(self.positives, self.negatives) >= MIN_PER_CLASS


async def board_labels(session: AsyncSession, embedder: PostEmbedder) -> BoardLabels:
    labelled: dict[tuple[UUID, UUID], tuple[bool, str]] = {}
    for row in await session.execute(
        select(PostMerge.source_id, PostMerge.target_id).where(PostMerge.unmerged_at.is_(None))
    ):
        labelled[(min(row.source_id, row.target_id), max(row.source_id, row.target_id))] = (True, "merge")
    for row in await session.execute(
        select(GroupingLabel.post_a_id, GroupingLabel.post_b_id, GroupingLabel.duplicate, GroupingLabel.source)
    ):
        labelled[(row.post_a_id, row.post_b_id)] = (row.duplicate, row.source)  # a grouping decision is later
    scores = await scores_of(session, embedder, labelled)
    kept = [pair for pair in labelled if pair in scores]
    return BoardLabels(
        scores=np.array([scores[pair] for pair in kept], dtype=np.float64),
        labels=np.array([labelled[pair][0] for pair in kept], dtype=bool),
        sources=Counter(labelled[pair][1] for pair in kept),
        unscored=len(labelled) - len(kept),
    )


def precision_recall(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float | None, float | None]:
    """Precision and recall of ``score >= threshold`` (None when undefined)."""
    predicted = scores >= threshold
    positives = int(labels.sum())
    hits = int((predicted & labels).sum())
    precision = hits / int(predicted.sum()) if predicted.any() else None
    recall = hits / positives if positives else None
    return precision, recall


def _between(scores: np.ndarray, chosen: float) -> float:
    """Half-way between ``chosen`` and the next lower distinct score (so the choice is not on a pair)."""
    lower = scores[scores < chosen]
    return float(round((chosen + float(lower.max())) / 2, 4)) if lower.size else float(round(chosen - 0.01, 4))


def propose(labels: BoardLabels, *, target_precision: float = 0.9, queue_recall: float = 0.95) -> tuple[float, float]:
    """(sure, maybe) for this board."""
    s, y = labels.scores, labels.labels
    candidates = np.unique(s)[::-1]  # highest first
    sure_at = None
    for t in candidates:
        precision, _ = precision_recall(s, y, t)
        if precision is not None and precision >= target_precision:
            sure_at = float(t)
    if sure_at is None:
        sure_at = best_f1(s, y)[1]
    sure = _between(s, sure_at)
    maybe_at = None
    for t in candidates[candidates <= sure]:
        _, recall = precision_recall(s, y, t)
        if recall is not None and recall >= queue_recall:
            maybe_at = float(t)
            break
    maybe = _between(s, maybe_at) if maybe_at is not None else sure
    return sure, min(maybe, sure)


def quality(labels: BoardLabels, thresholds: Thresholds) -> dict[str, Any]:
    """What a pair of thresholds does on the board's labelled pairs."""
    p_sure, r_sure = precision_recall(labels.scores, labels.labels, thresholds.sure)
    p_maybe, r_maybe = precision_recall(labels.scores, labels.labels, thresholds.maybe)
    return {
        "sure": thresholds.sure,
        "maybe": thresholds.maybe,
        "precision": p_sure,
        "recall": r_sure,
        "queue_precision": p_maybe,
        "queue_recall": r_maybe,
    }


def ranking_metrics(labels: BoardLabels) -> dict[str, Any]:
    if not labels.positives or not labels.negatives:
        return dict.fromkeys(("roc_auc", "average_precision", "best_f1", "threshold"))
    f1, threshold, _, _ = best_f1(labels.scores, labels.labels)
    return {
        "roc_auc": roc_auc(labels.scores, labels.labels),
        "average_precision": average_precision(labels.scores, labels.labels),
        "best_f1": f1,
        "threshold": threshold,
    }

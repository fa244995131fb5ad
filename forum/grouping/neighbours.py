"""A cluster's most central member and each member's nearest other member, from the members' stored vectors
in numpy, with bounded work per cluster (issue 14: at 600-1,400 members the sweep's Python loops over
pairs and its pair queries made a 100k board's descriptions take over 20 minutes).

A pair scores as in forum/grouping/pairs.py (the routes the first post's language calls for: the cosine of
the route's encoder, mapped by its calibration), here as matrix products:

- the most central member (the highest mean score to the others) from each route's sum of the members'
  vectors: ``mean_i = (Σ_j score(i, j)) / n_i`` is linear in the vectors, so O(members), exact;
- the nearest member of each, by a matrix product in blocks of ``BLOCK_ROWS`` rows against at most
  ``MAX_COMPARED`` members (every other member up to that size, the newest beyond): O(members · cap).

Scores within ``TIE`` of each other are ties (float noise: PostgreSQL's and numpy's sums of the same
products differ in the last bits); ties go as in :func:`forum.grouping.terms.nearest_of` and ``most_central``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from forum.encoding import PostEmbedder, Route

MAX_COMPARED = 2000
"""Members each member is compared with to find its nearest (the newest this many, beyond that size)."""
BLOCK_ROWS = 256
"""Rows of one block of scores (``BLOCK_ROWS * MAX_COMPARED`` floats at most in memory)."""
TIE = 1e-6
_CLASSES = ("en", "und", "es")


def language_class(language: str | None) -> str:
    """``pairs._LANGUAGE_CLASSES`` in Python: which language's routes score a pair starting at this post."""
    if language == "en":
        return "en"
    return "und" if language in (None, "und") else "es"


@dataclass
class MemberVectors:
    """Posts' vectors per encoder (unit rows, zeros where a post has none), their language classes and
    which routes' candidate conditions they meet, in the order the posts were asked for."""

    post_ids: list[UUID]
    classes: np.ndarray  # (n,) index into ``routes``
    routes: list[list[Route]]  # per class, as ``PostEmbedder.routes``
    vectors: dict[str, np.ndarray]  # model -> (n, dim) float32
    has: dict[str, np.ndarray]  # model -> (n,) bool
    candidates: dict[str | None, np.ndarray]  # route.candidates -> (n,) bool

    def select(self, post_ids: Sequence[UUID]) -> MemberVectors:
        """The same for a subset (a cluster's members, in their order)."""
        index = {post_id: i for i, post_id in enumerate(self.post_ids)}
        rows = np.asarray([index[p] for p in post_ids], dtype=np.intp)
        return MemberVectors(
            post_ids=list(post_ids),
            classes=self.classes[rows],
            routes=self.routes,
            vectors={m: v[rows] for m, v in self.vectors.items()},
            has={m: h[rows] for m, h in self.has.items()},
            candidates={c: k[rows] for c, k in self.candidates.items()},
        )

    def _parts(self) -> list[tuple[np.ndarray, Route]]:
        """(rows of a class, one of its routes) for every class present."""
        return [(self.classes == c, route) for c in range(len(self.routes)) for route in self.routes[c]]

    def central(self) -> int | None:
        """Index of the member with the highest mean score to the others (the first among ties); None
        when no member has a score."""
        n = len(self.post_ids)
        total, count = np.zeros(n), np.zeros(n)
        for rows, route in self._parts():
            has = self.has[route.model]
            others = self.candidates[route.candidates] & has
            rows = rows & has
            if not rows.any() or not others.any():
                continue
            vectors = self.vectors[route.model].astype(np.float64)
            summed = vectors[others].sum(axis=0)
            own = vectors[rows]
            inside = others[rows]  # the member is among its own route's others: leave its self-pair out
            cosines = own @ summed - np.where(inside, np.einsum("ij,ij->i", own, own), 0.0)
            pairs = others.sum() - inside
            calibration = route.calibration
            total[rows] += calibration.slope * cosines + calibration.intercept * pairs
            count[rows] += pairs
        scored = count > 0
        if not scored.any():
            return None
        mean = np.where(scored, total / np.maximum(count, 1), -np.inf)
        return int(np.flatnonzero(mean >= mean.max() - TIE)[0])

    def _scores(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Scores of rows by cols (indices), ``-inf`` where a pair has none."""
        out = np.full((rows.size, cols.size), -np.inf, dtype=np.float32)
        for in_class, route in self._parts():
            has = self.has[route.model]
            r = in_class[rows] & has[rows]
            c = self.candidates[route.candidates][cols] & has[cols]
            if r.any() and c.any():
                vectors = self.vectors[route.model]
                cosines = vectors[rows[r]] @ vectors[cols[c]].T
                out[np.ix_(r, c)] = route.calibration.slope * cosines + route.calibration.intercept
        return out

    def nearest(self) -> list[tuple[int, float] | None]:
        """Each member's nearest other member (index, score) among the compared ones, ties to the greater
        post id as text; None for a member with no score."""
        n = len(self.post_ids)
        cols = np.arange(max(0, n - MAX_COMPARED), n)
        by_text = np.argsort(np.argsort([str(self.post_ids[c]) for c in cols]))  # rank of each column's id
        out: list[tuple[int, float] | None] = []
        for start in range(0, n, BLOCK_ROWS):
            rows = np.arange(start, min(n, start + BLOCK_ROWS))
            scores = self._scores(rows, cols)
            scores[rows[:, None] == cols[None, :]] = -np.inf
            best = scores.max(axis=1)
            ties = scores >= (best - TIE)[:, None]
            pick = np.argmax(np.where(ties, by_text[None, :], -1), axis=1)
            for i, j in enumerate(pick):
                out.append(None if best[i] == -np.inf else (int(cols[j]), float(scores[i, j])))
        return out


async def member_vectors(session: AsyncSession, embedder: PostEmbedder, post_ids: Sequence[UUID]) -> MemberVectors:
    """The live posts' vectors for every encoder the routes use, read in one statement."""
    routes = [embedder.routes(c) for c in _CLASSES] if embedder.multilingual is not None else [embedder.routes("und")]
    conditions = list(dict.fromkeys(route.candidates for group in routes for route in group))
    dims = {route.model: route.dim for group in routes for route in group}
    selected = ", ".join(f"({c or 'TRUE'}) AS c{i}" for i, c in enumerate(conditions))
    sql = f"""
        SELECT p.id, p.language, e.model, e.embedding, {selected}
        FROM post p LEFT JOIN post_embedding e ON e.post_id = p.id AND e.model = ANY(CAST(:models AS text[]))
        WHERE p.id = ANY(CAST(:ids AS uuid[])) AND p.deleted_at IS NULL
    """
    n = len(post_ids)
    index = {post_id: i for i, post_id in enumerate(post_ids)}
    classes = np.zeros(n, dtype=np.intp)
    vectors = {model: np.zeros((n, dim), dtype=np.float32) for model, dim in dims.items()}
    has = {model: np.zeros(n, dtype=bool) for model in dims}
    candidates = {c: np.zeros(n, dtype=bool) for c in conditions}
    rows = await session.execute(text(sql), {"ids": list(post_ids), "models": list(dims)})
    for row in rows:
        i = index[row.id]
        if len(routes) > 1:
            classes[i] = _CLASSES.index(language_class(row.language))
        for k, c in enumerate(conditions):
            candidates[c][i] = bool(row[4 + k])
        if row.embedding is None:
            continue
        vector = np.asarray(row.embedding.to_numpy(), dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        if vector.size == dims[row.model] and norm > 0:
            vectors[row.model][i] = vector / norm
            has[row.model][i] = True
    return MemberVectors(list(post_ids), classes, routes, vectors, has, candidates)

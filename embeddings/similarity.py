"""Cosine similarity and nearest-neighbour search for L2-normalised vectors."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["cosine_matrix", "paired_cosine", "top_k"]

#: Query rows scored at once by :func:`top_k` (bounds memory to ``chunk x len(corpus)``).
_CHUNK_ROWS = 1024


def _as_matrix(x: ArrayLike, what: str) -> NDArray[np.float32]:
    m = np.asarray(x, dtype=np.float32)
    if m.ndim == 1:
        m = m[np.newaxis, :]
    if m.ndim != 2:
        raise ValueError(f"{what} must be a vector or a 2-D array, got shape {m.shape}")
    return m


def cosine_matrix(a: ArrayLike, b: ArrayLike) -> NDArray[np.float32]:
    """Return the ``(len(a), len(b))`` matrix of cosines between rows of ``a`` and ``b``.

    Rows are assumed to be L2-normalised already (as every ``Encoder`` returns
    them), so this is just ``a @ b.T``.  A 1-D input counts as a single row.
    """
    a_m, b_m = _as_matrix(a, "a"), _as_matrix(b, "b")
    if a_m.shape[1] != b_m.shape[1]:
        raise ValueError(f"dimension mismatch: {a_m.shape[1]} != {b_m.shape[1]}")
    return a_m @ b_m.T


def paired_cosine(a: ArrayLike, b: ArrayLike) -> NDArray[np.float32]:
    """Return ``cos(a[i], b[i])`` for each row ``i`` of two equally shaped arrays of normalised rows."""
    a_m, b_m = _as_matrix(a, "a"), _as_matrix(b, "b")
    if a_m.shape != b_m.shape:
        raise ValueError(f"shape mismatch: {a_m.shape} != {b_m.shape}")
    return np.einsum("ij,ij->i", a_m, b_m)


def top_k(
    query_vecs: ArrayLike,
    corpus_vecs: ArrayLike,
    k: int,
    exclude_self: bool = False,
) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    """Find the ``k`` corpus rows most similar (by cosine) to each query row.

    Args:
        query_vecs: ``(n, dim)`` normalised query vectors (1-D for one query).
        corpus_vecs: ``(m, dim)`` normalised corpus vectors.
        k: Neighbours per query; clipped to the number of candidates.
        exclude_self: Queries are the corpus itself (``n == m``): never return
            row ``i`` as a neighbour of query ``i``.

    Returns:
        ``(indices, scores)``, both of shape ``(n, min(k, candidates))``, best
        first.  Among equal scores the lower corpus index comes first, except
        that which of several rows tied exactly at the cut-off is kept is
        unspecified.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    queries, corpus = _as_matrix(query_vecs, "query_vecs"), _as_matrix(corpus_vecs, "corpus_vecs")
    n, m = len(queries), len(corpus)
    if exclude_self and n != m:
        raise ValueError(f"exclude_self needs as many queries as corpus rows, got {n} and {m}")
    k = min(k, m - 1 if exclude_self else m)
    k = max(k, 0)
    indices = np.empty((n, k), dtype=np.intp)
    scores = np.empty((n, k), dtype=np.float32)
    if k == 0:
        return indices, scores
    for start in range(0, n, _CHUNK_ROWS):
        sims = cosine_matrix(queries[start : start + _CHUNK_ROWS], corpus)
        rows = np.arange(len(sims))
        if exclude_self:
            sims[rows, start + rows] = -np.inf
        if k < m:
            candidates = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            candidates = np.broadcast_to(np.arange(m), sims.shape)
        cand_scores = np.take_along_axis(sims, candidates, axis=1)
        # Sort each row by descending score, then ascending index.
        order = np.lexsort((candidates, -cand_scores), axis=1)
        indices[start : start + len(sims)] = np.take_along_axis(candidates, order, axis=1)
        scores[start : start + len(sims)] = np.take_along_axis(cand_scores, order, axis=1)
    return indices, scores

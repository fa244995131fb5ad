"""Cosine similarity and nearest-neighbour search for L2-normalised vectors."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["cosine_matrix", "paired_cosine", "top_k", "top_k_scores"]

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
    k = max(min(k, m - 1 if exclude_self else m), 0)
    indices = np.empty((n, k), dtype=np.intp)
    scores = np.empty((n, k), dtype=np.float32)
    if k == 0:
        return indices, scores
    for start in range(0, n, _CHUNK_ROWS):
        sims = cosine_matrix(queries[start : start + _CHUNK_ROWS], corpus)
        idx, sc = _top_k_rows(sims, k, start if exclude_self else None)
        indices[start : start + len(sims)] = idx
        scores[start : start + len(sims)] = sc
    return indices, scores


def top_k_scores(scores: ArrayLike, k: int, exclude_self: bool = False) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    """Like :func:`top_k`, but from a precomputed ``(n, m)`` score matrix (any similarity, higher is better).

    ``exclude_self`` needs a square matrix and never returns column ``i`` for row ``i``.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    sims = np.array(scores, dtype=np.float32)  # a copy: the diagonal may be overwritten
    if sims.ndim != 2:
        raise ValueError(f"scores must be a 2-D array, got shape {sims.shape}")
    n, m = sims.shape
    if exclude_self and n != m:
        raise ValueError(f"exclude_self needs a square score matrix, got shape {sims.shape}")
    k = max(min(k, m - 1 if exclude_self else m), 0)
    if k == 0:
        return np.empty((n, 0), dtype=np.intp), np.empty((n, 0), dtype=np.float32)
    return _top_k_rows(sims, k, 0 if exclude_self else None)


def _top_k_rows(
    sims: NDArray[np.float32], k: int, self_offset: int | None
) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    """Best ``k`` columns of each row of ``sims`` (modified in place when ``self_offset`` is given).

    ``self_offset``: row ``r`` is corpus row ``self_offset + r`` and must not be returned.
    """
    m = sims.shape[1]
    if self_offset is not None:
        rows = np.arange(len(sims))
        sims[rows, self_offset + rows] = -np.inf
    if k < m:
        candidates = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    else:
        candidates = np.broadcast_to(np.arange(m), sims.shape)
    cand_scores = np.take_along_axis(sims, candidates, axis=1)
    # Sort each row by descending score, then ascending index.
    order = np.lexsort((candidates, -cand_scores), axis=1)
    return np.take_along_axis(candidates, order, axis=1), np.take_along_axis(cand_scores, order, axis=1)

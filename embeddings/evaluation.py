"""Score an encoder on labelled duplicate data (JSONL).

Two file formats are recognised, per file, from the keys of the first record:

* **pairs** (``"a"``, ``"b"``, ``"duplicate"``; optional ``"a_body"``,
  ``"b_body"`` and a graded ``"score"``): each pair is scored by the cosine of
  its two texts and evaluated with ROC-AUC, average precision, the
  F1-maximising cosine threshold and, when every row has a ``score``, the
  Spearman correlation between cosine and score.
* **corpus** (``"id"``, ``"text"``, ``"group"``, ``"source"``; optional
  ``"body"``): items sharing a ``group`` are duplicates.  Within each
  ``source``, every item whose group has another member there is a query; all
  other items of that source are ranked by cosine and recall@k counts queries
  with a same-group item among the top ``k`` (micro average).  With the
  multilingual configuration the combined result also scores what the
  application's grouping makes of each source (one board), pairwise against
  the groups: online, and after the consolidation pass (:func:`corpus_clusters`).

Texts are built with :func:`embeddings.encoder.text_for_embedding`, so titles
and bodies are combined exactly as in the application.  The metric functions
need only numpy and follow scikit-learn's definitions.

The ``"multilingual"`` configuration (:class:`embeddings.multilingual.MultilingualEncoder`) is
scored by its combined score (language-routed, calibrated; pairs are ranked and thresholded on
that scale).  ``evaluate_file(path, multilingual, compare=True)`` returns one result per
*design* from one encoding pass: the English encoder alone, the multilingual encoder alone and
the combined score (``"design"``: ``"english"``, ``"multilingual"``, ``"combined"``).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .encoder import Encoder, text_for_embedding
from .grouping import title_of, title_view_name
from .similarity import paired_cosine, top_k, top_k_scores

if TYPE_CHECKING:
    from .multilingual import MultilingualEncoder

__all__ = [
    "RECALL_KS",
    "average_precision",
    "best_f1",
    "compare_file",
    "evaluate_corpus",
    "evaluate_file",
    "evaluate_pairs",
    "format_json_line",
    "read_jsonl",
    "roc_auc",
    "spearman",
]

#: Cut-offs reported by :func:`evaluate_corpus`.
RECALL_KS = (1, 5, 10)

_PAIR_KEYS = frozenset({"a", "b"})
_CORPUS_KEYS = frozenset({"id", "text", "group", "source"})

Record = Mapping[str, Any]


# --------------------------------------------------------------------------- metrics


def _scores_and_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"scores and labels must be 1-D and of equal length, got {s.shape} and {y.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    if y.dtype != np.bool_:
        if not np.all(np.isin(y, (0, 1))):
            raise ValueError("labels must be booleans or 0/1")
        y = y.astype(np.bool_)
    return s, y


def _average_ranks(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks of ``x``; tied values share the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    run_start = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    starts = np.flatnonzero(run_start)
    ends = np.r_[starts[1:], len(x)]  # exclusive
    mean_rank = (starts + ends + 1) / 2.0  # mean of the ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = mean_rank[np.cumsum(run_start) - 1]
    return ranks


def _counts_at_thresholds(
    s: NDArray[np.float64], y: NDArray[np.bool_]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Distinct scores ``t`` (descending) with the true/false positive counts of ``score >= t``."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[last_of_run].astype(np.float64)
    fps = (last_of_run + 1) - tps
    return s[last_of_run], tps, fps


def _require_both_classes(y: NDArray[np.bool_], metric: str) -> None:
    if y.all() or not y.any():
        raise ValueError(f"{metric} is undefined unless labels contain both classes")


def roc_auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U / (P * N)); tied scores count one half."""
    s, y = _scores_and_labels(scores, labels)
    _require_both_classes(y, "ROC-AUC")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    rank_sum = float(_average_ranks(s)[y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Average precision, as scikit-learn's ``average_precision_score``.

    ``sum_n (R_n - R_{n-1}) * P_n`` over the distinct score thresholds, highest
    first: a step function, no interpolation; tied scores form one threshold.
    """
    s, y = _scores_and_labels(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("average precision is undefined without positive labels")
    _, tps, fps = _counts_at_thresholds(s, y)
    precision = tps / (tps + fps)
    recall_gain = np.diff(np.r_[0.0, tps]) / n_pos
    return float(np.sum(recall_gain * precision))


def best_f1(scores: ArrayLike, labels: ArrayLike) -> tuple[float, float, float, float]:
    """Best F1 over decision rules ``score >= threshold``.

    Returns:
        ``(f1, threshold, precision, recall)``; the threshold is one of the
        scores.  Ties in F1 go to the highest threshold.
    """
    s, y = _scores_and_labels(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("F1 is undefined without positive labels")
    thresholds, tps, fps = _counts_at_thresholds(s, y)
    f1 = 2.0 * tps / (tps + fps + n_pos)
    i = int(np.argmax(f1))
    return float(f1[i]), float(thresholds[i]), float(tps[i] / (tps[i] + fps[i])), float(tps[i] / n_pos)


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks)."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.ndim != 1 or xa.shape != ya.shape or len(xa) < 2:
        raise ValueError("spearman needs two 1-D arrays of equal length >= 2")
    rx, ry = _average_ranks(xa), _average_ranks(ya)
    rx -= rx.mean()
    ry -= ry.mean()
    denominator = math.sqrt(float(rx @ rx) * float(ry @ ry))
    if denominator == 0.0:
        raise ValueError("spearman is undefined for a constant input")
    return float(rx @ ry) / denominator


# --------------------------------------------------------------------------- files


def read_jsonl(path: str | PathLike[str]) -> list[dict[str, Any]]:
    """Read one JSON object per non-blank line."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object")
            records.append(record)
    return records


def _detect_kind(records: Sequence[Record], path: str) -> str:
    if not records:
        raise ValueError(f"{path}: no records")
    keys = records[0].keys()
    kind = "pairs" if _PAIR_KEYS <= keys else "corpus" if _CORPUS_KEYS <= keys else None
    if kind is None:
        raise ValueError(
            f"{path}: unknown format; expected keys {sorted(_PAIR_KEYS)} (pairs) or {sorted(_CORPUS_KEYS)} (corpus)"
        )
    required = _PAIR_KEYS | {"duplicate"} if kind == "pairs" else _CORPUS_KEYS
    for i, record in enumerate(records):
        missing = required - record.keys()
        if missing:
            raise ValueError(f"{path}: record {i + 1} ({kind}) lacks {sorted(missing)}")
    return kind


def _encode_unique(encoder: Encoder, texts: Sequence[str]) -> tuple[NDArray[np.float32], dict[str, Any]]:
    """Encode each distinct text once; return one row per input text plus timing stats."""
    unique = list(dict.fromkeys(texts))
    started = time.perf_counter()
    vectors = encoder.encode(unique)
    seconds = time.perf_counter() - started
    row_of = {text: i for i, text in enumerate(unique)}
    stats = {
        "texts": len(unique),
        "encode_seconds": round(seconds, 3),
        "texts_per_second": round(len(unique) / seconds, 1) if seconds > 0 else None,
    }
    return vectors[[row_of[t] for t in texts]], stats


def _is_multilingual(encoder: Any) -> bool:
    from .multilingual import MultilingualEncoder

    return isinstance(encoder, MultilingualEncoder)


#: Designs scored by :func:`compare_file`, in output order.
DESIGNS = ("english", "multilingual", "combined")


class _Encoded:
    """Languages and per-encoder vectors of a list of texts, with per-design timing stats."""

    def __init__(self, multi: MultilingualEncoder, texts: Sequence[str], *, titles: bool = False) -> None:
        self.multi = multi
        unique = list(dict.fromkeys(texts))
        row_of = {text: i for i, text in enumerate(unique)}
        rows = [row_of[t] for t in texts]
        started = time.perf_counter()
        unique_langs = multi.detect_languages(unique)
        detect_seconds = time.perf_counter() - started
        self.languages = [unique_langs[i] for i in rows]
        self.vectors: dict[str, NDArray[np.float32]] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        for design, encoder in (("english", multi.english), ("multilingual", multi.multilingual)):
            vectors, stats = _encode_unique(encoder, unique)
            self.vectors[encoder.name] = vectors[rows]
            self.stats[design] = stats
        if titles:  # the grouping score's second view of each post (short texts: cheap)
            title_texts = [title_of(t) for t in unique]
            for encoder in (multi.english, multi.multilingual):
                vectors, _ = _encode_unique(encoder, title_texts)
                self.vectors[title_view_name(encoder.name)] = vectors[rows]
        seconds = detect_seconds + sum(self.stats[d]["encode_seconds"] for d in ("english", "multilingual"))
        self.stats["combined"] = {
            "texts": len(unique),
            "encode_seconds": round(seconds, 3),
            "texts_per_second": round(len(unique) / seconds, 1) if seconds > 0 else None,
            "detect_seconds": round(detect_seconds, 3),
            "languages": dict(Counter(unique_langs).most_common()),
        }

    def encoder_name(self, design: str) -> str:
        return self.multi.english.name if design == "english" else self.multi.multilingual.name

    def design_name(self, design: str) -> str:
        return self.multi.name if design == "combined" else self.encoder_name(design)

    def take(self, rows: Sequence[int] | NDArray[np.intp]) -> tuple[list[str], dict[str, NDArray[np.float32]]]:
        idx = np.asarray(rows, dtype=np.intp)
        return [self.languages[i] for i in idx], {name: v[idx] for name, v in self.vectors.items()}


def _pair_texts(records: Sequence[Record]) -> tuple[list[str], list[str]]:
    a_texts = [text_for_embedding(r["a"], r.get("a_body")) for r in records]
    b_texts = [text_for_embedding(r["b"], r.get("b_body")) for r in records]
    return a_texts, b_texts


def _pair_metrics(records: Sequence[Record], scores: NDArray[np.float32]) -> dict[str, Any]:
    labels = np.array([bool(r["duplicate"]) for r in records])
    result: dict[str, Any] = {"positives": int(labels.sum())}
    if 0 < result["positives"] < len(records):
        f1, threshold, precision, recall = best_f1(scores, labels)
        result |= {
            "roc_auc": roc_auc(scores, labels),
            "average_precision": average_precision(scores, labels),
            "best_f1": f1,
            "threshold": threshold,
            "precision": precision,
            "recall": recall,
        }
    else:  # one class only: ranking metrics are undefined
        result |= dict.fromkeys(("roc_auc", "average_precision", "best_f1", "threshold", "precision", "recall"))
    if all(r.get("score") is not None for r in records):
        result["spearman"] = spearman(scores, [float(r["score"]) for r in records])
    return result


def _compare_pairs(
    records: Sequence[Record], multi: MultilingualEncoder, designs: Sequence[str]
) -> list[dict[str, Any]]:
    a_texts, b_texts = _pair_texts(records)
    n = len(records)
    encoded = _Encoded(multi, a_texts + b_texts)
    results = []
    for design in designs:
        if design == "combined":
            langs_a, vecs_a = encoded.take(range(n))
            langs_b, vecs_b = encoded.take(range(n, 2 * n))
            scores = multi.scorer.score_pairs(langs_a, vecs_a, langs_b, vecs_b)
            routes = Counter(multi.scorer.route(x, y) for x, y in zip(langs_a, langs_b, strict=True))
            extra: dict[str, Any] = {"routes": dict(routes.most_common())}
        else:
            vectors = encoded.vectors[encoded.encoder_name(design)]
            scores = paired_cosine(vectors[:n], vectors[n:])
            extra = {}
        head = {"kind": "pairs", "design": design, "encoder": encoded.design_name(design), "n": n}
        results.append(head | _pair_metrics(records, scores) | extra | encoded.stats[design])
    return results


def evaluate_pairs(records: Sequence[Record], encoder: Encoder | MultilingualEncoder) -> dict[str, Any]:
    """Score labelled pairs by cosine (by the combined score for the multilingual configuration)."""
    if _is_multilingual(encoder):
        return _compare_pairs(records, encoder, ("combined",))[0]  # type: ignore[arg-type]
    a_texts, b_texts = _pair_texts(records)
    vectors, stats = _encode_unique(encoder, a_texts + b_texts)
    cosines = paired_cosine(vectors[: len(records)], vectors[len(records) :])
    result: dict[str, Any] = {"kind": "pairs", "encoder": encoder.name, "n": len(records)}
    return result | _pair_metrics(records, cosines) | stats


#: Query rows scored at once when ranking a corpus by a score matrix.
_CHUNK_ROWS = 1024

NeighbourFn = Any  # (rows of one source, k) -> (len(rows), k) neighbour positions within ``rows``


def _corpus_recall(records: Sequence[Record], ks: Sequence[int], neighbours_of: NeighbourFn) -> dict[str, Any]:
    rows_by_source: dict[Any, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        rows_by_source[r["source"]].append(i)

    queries = 0
    hits = dict.fromkeys(ks, 0)
    for rows in rows_by_source.values():
        groups = np.array([str(records[i]["group"]) for i in rows])
        size = Counter(groups.tolist())
        is_query = np.array([size[g] >= 2 for g in groups])
        if not is_query.any():
            continue
        neighbours = neighbours_of(rows, ks[-1])
        same_group = groups[neighbours] == groups[:, np.newaxis]  # (n, k) hit matrix
        first_hit = np.where(same_group.any(axis=1), same_group.argmax(axis=1), np.iinfo(np.intp).max)
        first_hit = first_hit[is_query]
        queries += len(first_hit)
        for k in ks:
            hits[k] += int(np.sum(first_hit < k))

    result: dict[str, Any] = {"queries": queries}
    for k in ks:
        result[f"recall_at_{k}"] = hits[k] / queries if queries else None
    return result


def _check_ks(recall_ks: Iterable[int]) -> list[int]:
    ks = sorted(set(recall_ks))
    if not ks or ks[0] < 1:
        raise ValueError("recall_ks must be positive integers")
    return ks


def _combined_neighbours(multi: MultilingualEncoder, encoded: _Encoded) -> NeighbourFn:
    def neighbours_of(rows: list[int], k: int) -> NDArray[np.intp]:
        langs, vecs = encoded.take(rows)
        n = len(rows)
        out = np.empty((n, min(k, n - 1)), dtype=np.intp)
        for start in range(0, n, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, n)
            chunk = {name: v[start:stop] for name, v in vecs.items()}
            sims = multi.scorer.score_matrix(langs[start:stop], chunk, langs, vecs)
            sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # never the query itself
            out[start:stop] = top_k_scores(sims, out.shape[1])[0]
        return out

    return neighbours_of


def _cosine_neighbours(vectors: NDArray[np.float32]) -> NeighbourFn:
    def neighbours_of(rows: list[int], k: int) -> NDArray[np.intp]:
        return top_k(vectors[rows], vectors[rows], k, exclude_self=True)[0]

    return neighbours_of


#: Boards (sources) larger than this are not clustered by :func:`corpus_clusters` (it builds n x n scores).
MAX_CLUSTERED_BOARD = 20_000


def _pairs_in(labels: NDArray[np.intp]) -> int:
    _, counts = np.unique(labels, return_counts=True)
    return int(np.sum(counts * (counts - 1) // 2))


def corpus_clusters(records: Sequence[Record], multi: MultilingualEncoder, encoded: _Encoded) -> dict[str, Any]:
    """What the default grouping makes of each source (one board), scored pairwise against the groups.

    ``online``: each post in file order meets only the posts before it (``GroupingRule``, "sure");
    ``clustered``: then the worker's consolidation pass over the whole board (``Recluster``, with its word
    overlap), what users see. Pairwise precision / recall / F1 over every board (``None`` where nothing was predicted):
    ``clusters_precision``, ``clusters_recall``, ``clusters_f1`` (after the pass) and the same with
    ``online_clusters_`` (before it)."""
    from .grouping import DEFAULT_DUPLICATE_THRESHOLD, GroupingRule, Recluster, simulate_online

    rows_by_source: dict[Any, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        rows_by_source[r["source"]].append(i)
    rule = GroupingRule()
    recluster = Recluster.for_rule(rule, DEFAULT_DUPLICATE_THRESHOLD)
    counts = {name: [0, 0, 0] for name in ("online", "clustered")}  # right pairs, predicted, labelled
    for rows in rows_by_source.values():
        if len(rows) > MAX_CLUSTERED_BOARD:
            continue
        langs, vecs = encoded.take(rows)
        g = multi.grouping.score_matrix(langs, vecs, langs, vecs)
        route = multi.scorer.score_matrix(langs, vecs, langs, vecs)
        texts = [text_for_embedding(records[i]["text"], records[i].get("body")) for i in rows]
        groups = [str(records[i]["group"]) if records[i].get("group") is not None else f"\0{i}" for i in rows]
        _, truth = np.unique(np.array(groups), return_inverse=True)
        found = {
            "online": simulate_online(g, DEFAULT_DUPLICATE_THRESHOLD, rule, retrieval=route),
            "clustered": recluster.board(g, route, langs, texts),
        }
        for name, labels in found.items():
            counts[name][0] += _pairs_in(np.asarray(labels, dtype=np.int64) * len(rows) + truth)
            counts[name][1] += _pairs_in(labels)
            counts[name][2] += _pairs_in(truth)
    out: dict[str, Any] = {}
    for name, (right, predicted, labelled) in counts.items():
        prefix = "clusters" if name == "clustered" else "online_clusters"
        out[f"{prefix}_precision"] = right / predicted if predicted else None
        out[f"{prefix}_recall"] = right / labelled if labelled else None
        out[f"{prefix}_f1"] = 2 * right / (predicted + labelled) if predicted + labelled else None
    return out


def _compare_corpus(
    records: Sequence[Record], multi: MultilingualEncoder, designs: Sequence[str], recall_ks: Iterable[int]
) -> list[dict[str, Any]]:
    ks = _check_ks(recall_ks)
    texts = [text_for_embedding(r["text"], r.get("body")) for r in records]
    encoded = _Encoded(multi, texts, titles="combined" in designs)
    results = []
    for design in designs:
        if design == "combined":
            neighbours_of = _combined_neighbours(multi, encoded)
        else:
            neighbours_of = _cosine_neighbours(encoded.vectors[encoded.encoder_name(design)])
        head = {"kind": "corpus", "design": design, "encoder": encoded.design_name(design), "n": len(records)}
        result = head | _corpus_recall(records, ks, neighbours_of) | encoded.stats[design]
        if design == "combined":
            result |= corpus_clusters(records, multi, encoded)
        results.append(result)
    return results


def evaluate_corpus(
    records: Sequence[Record], encoder: Encoder | MultilingualEncoder, recall_ks: Iterable[int] = RECALL_KS
) -> dict[str, Any]:
    """Within-source retrieval recall@k for duplicate groups; see the module docstring."""
    if _is_multilingual(encoder):
        return _compare_corpus(records, encoder, ("combined",), recall_ks)[0]  # type: ignore[arg-type]
    ks = _check_ks(recall_ks)
    texts = [text_for_embedding(r["text"], r.get("body")) for r in records]
    vectors, stats = _encode_unique(encoder, texts)
    result: dict[str, Any] = {"kind": "corpus", "encoder": encoder.name, "n": len(records)}
    return result | _corpus_recall(records, ks, _cosine_neighbours(vectors)) | stats


def compare_file(path: str | PathLike[str], encoder: Encoder | MultilingualEncoder) -> list[dict[str, Any]]:
    """One result per design for one JSONL file (see :func:`evaluate_file`).

    For the multilingual configuration: the English encoder alone, the multilingual encoder
    alone and the combined score, in that order (``"design"``: ``"english"``,
    ``"multilingual"``, ``"combined"``), from one encoding pass; the combined result adds
    ``routes`` (pairs per route, pair files only), ``languages`` (detected languages of the
    distinct texts) and ``detect_seconds``, and its ``threshold`` is on the combined scale.
    Any other encoder: a one-element list with :func:`evaluate_file`'s result.
    """
    if not _is_multilingual(encoder):
        return [evaluate_file(path, encoder)]
    records = read_jsonl(path)
    kind = _detect_kind(records, str(path))
    if kind == "pairs":
        results = _compare_pairs(records, encoder, DESIGNS)  # type: ignore[arg-type]
    else:
        results = _compare_corpus(records, encoder, DESIGNS, RECALL_KS)  # type: ignore[arg-type]
    return [{"file": str(path)} | result for result in results]


@overload
def evaluate_file(
    path: str | PathLike[str], encoder: Encoder | MultilingualEncoder, *, compare: Literal[False] = False
) -> dict[str, Any]: ...


@overload
def evaluate_file(
    path: str | PathLike[str], encoder: Encoder | MultilingualEncoder, *, compare: Literal[True]
) -> list[dict[str, Any]]: ...


def evaluate_file(
    path: str | PathLike[str], encoder: Encoder | MultilingualEncoder, *, compare: bool = False
) -> dict[str, Any] | list[dict[str, Any]]:
    """Evaluate ``encoder`` on one JSONL file of either format.

    Returns a JSON-serialisable dict.  Pairs: ``file``, ``kind="pairs"``,
    ``encoder``, ``n``, ``positives``, ``roc_auc``, ``average_precision``,
    ``best_f1``, ``threshold`` (cosine), ``precision``, ``recall`` and, if the
    rows carry a ``score``, ``spearman``.  Corpus: ``file``, ``kind="corpus"``,
    ``encoder``, ``n``, ``queries``, ``recall_at_1``, ``recall_at_5``,
    ``recall_at_10``.  Both add ``texts`` (distinct texts encoded),
    ``encode_seconds`` and ``texts_per_second``.

    ``encoder`` may be the multilingual configuration (``load_encoder("multilingual")``): then
    pairs and neighbours are scored by the combined score (``threshold`` on its scale) and the
    result also has ``design="combined"``, ``routes`` / ``languages`` and ``detect_seconds``.
    ``compare=True`` returns a list, one result per design: see :func:`compare_file`.
    """
    if compare:
        return compare_file(path, encoder)
    records = read_jsonl(path)
    kind = _detect_kind(records, str(path))
    result = evaluate_pairs(records, encoder) if kind == "pairs" else evaluate_corpus(records, encoder)
    return {"file": str(path)} | result


def format_json_line(result: Mapping[str, Any], digits: int = 4) -> str:
    """Render a result as one compact JSON line, floats rounded to ``digits``."""

    def _round(value: Any) -> Any:
        if isinstance(value, float) and math.isfinite(value):
            return round(value, digits)
        return value

    return json.dumps({key: _round(value) for key, value in result.items()}, ensure_ascii=False)

"""Duplicate-detection quality benchmark and threshold calibration on the labelled DEV set.

Usage (from the repository root)::

    python -m bench.quality --data ../shared/data/dupes [--model NAME] [--limit N] [--out FILE]
                            [--grouping-only] [--no-cache]

What it does, with one encoder (default: the bundled all-MiniLM-L6-v2):

1. ``embeddings.evaluation.evaluate_file`` on every ``*.jsonl`` of the data directory, one JSON
   line per file (the same numbers as ``forum eval duplicates FILE.jsonl``);
2. on ``bug_pairs.jsonl``: precision / recall / F1 of ``cosine >= t`` for t = 0.40 .. 0.90
   (step 0.05), and the lowest thresholds whose precision reaches 0.80 and 0.90;
3. on ``bug_corpus.jsonl``: a simulation of the application's online grouping.  Within each
   ``source`` (one board), items arrive in file order; each item joins the cluster of its single
   nearest *earlier* item if their cosine is >= t, otherwise it starts a new cluster.  The
   resulting clustering is scored against the ``group`` labels with pairwise precision / recall /
   F1 (item pairs in the same predicted cluster vs. in the same true group, summed over sources),
   together with the number of clusters, the largest cluster (single-link chaining) and the
   share of joins that attached an item to a post of its own true group.
   ``--grouping-only`` runs step 3 only.

The comparison of other online rules (NN + average link, centroid, NN + founder) that chose the
one-encoder calibration's conservative setting, and ``bench/demo_grouping.py`` that replayed them on the
demo sample, were removed when the default became :mod:`embeddings.grouping` (measured by
``bench.forum_grouping``); docs/duplicates.md says how to get them back from git.

``--model multilingual`` (two vectors per post and a scorer): the per-file lines by the combined score,
then the application's rule on bug_corpus as ``bench.forum_grouping`` replays it.

Each distinct text is encoded once: an in-memory cache wraps the encoder, and the vectors of every
data file are also kept in ``CACHE_DIR`` (``$FORUM_BENCH_CACHE``, default
``<tmp>/forum-bench-embeddings``; keyed by file name, model name and the exact texts; never in the
repository), so later runs encode nothing.  Encoding throughput in the per-file lines is therefore
only meaningful with ``--no-cache`` (or ``cached_texts`` = 0).  ``--limit N`` keeps only the first N
rows of every file for quick runs.  The data directory is not part of the repository (the ``sj-*``
sources may not be redistributed); if it is missing the script exits with status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.common import machine_info
from bench.forum_grouping import build_boards, caching_multilingual, fmt, pair_count, read_bug_corpus, report
from embeddings import evaluate_corpus, evaluate_file, evaluate_pairs, format_json_line, load_encoder
from embeddings.encoder import Encoder, text_for_embedding
from embeddings.evaluation import read_jsonl
from embeddings.multilingual import MultilingualEncoder
from embeddings.similarity import paired_cosine

DEFAULT_DATA = "../shared/data/dupes"
PAIRS_FILE = "bug_pairs.jsonl"
CORPUS_FILE = "bug_corpus.jsonl"

#: Thresholds of the printed tables: 0.40, 0.45, ..., 0.90.
GRID = tuple(round(0.40 + 0.05 * i, 2) for i in range(11))
#: Finer grid searched for the recommendation (written to --out, best rows printed).
FINE_GRID = tuple(round(0.30 + 0.01 * i, 2) for i in range(66))
#: Precision targets for the pair thresholds.
PRECISION_TARGETS = (0.80, 0.90)
#: Minimum clustering pairwise precision for the recommended default threshold.
MIN_CLUSTER_PRECISION = 0.80

EXIT_NO_DATA = 2


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- encoder cache


class CachingEncoder:
    """Wrap an encoder so that every distinct text is encoded at most once per run."""

    def __init__(self, inner: Encoder) -> None:
        self._inner = inner
        self._cache: dict[str, NDArray[np.float32]] = {}
        self.encoded_texts = 0
        self.encode_seconds = 0.0

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def dim(self) -> int:
        return self._inner.dim

    def seed(self, texts: Sequence[str], vectors: NDArray[np.float32]) -> None:
        """Add vectors computed earlier (e.g. read from the disk cache) without encoding them again."""
        for text, vector in zip(texts, vectors, strict=True):
            self._cache.setdefault(text, vector)

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a single string")
        items = list(texts)
        missing = [t for t in dict.fromkeys(items) if t not in self._cache]
        if missing:
            started = time.perf_counter()
            vectors = self._inner.encode(missing)
            self.encode_seconds += time.perf_counter() - started
            self.encoded_texts += len(missing)
            self._cache.update(zip(missing, vectors, strict=True))
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in items]).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- on-disk vector cache

#: Vectors of each data file are kept here between runs (never inside the repository).
CACHE_DIR = Path(os.environ.get("FORUM_BENCH_CACHE") or Path(tempfile.gettempdir()) / "forum-bench-embeddings")
#: Switched off by ``--no-cache`` (e.g. to measure encoding throughput).
DISK_CACHE = {"enabled": True}


def cache_path(tag: str, model: str, texts: Sequence[str]) -> Path:
    """Cache file for the vectors of ``texts`` under ``model``: keyed by file name, model and exact texts."""
    digest = hashlib.sha256(model.encode())
    for text in texts:
        digest.update(b"\0" + text.encode())
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model)[-60:]
    return CACHE_DIR / f"{tag}.{slug}.{len(texts)}.{digest.hexdigest()[:20]}.npy"


def cached_encode(encoder: Encoder, texts: Sequence[str], tag: str) -> NDArray[np.float32]:
    """``encoder.encode(texts)`` (distinct texts, in first-seen order), read from / written to CACHE_DIR.

    A ``CachingEncoder`` is seeded with the vectors, so later ``encode`` calls on these texts are free.
    """
    unique = list(dict.fromkeys(texts))
    if not DISK_CACHE["enabled"]:
        return encoder.encode(texts)
    path = cache_path(tag, encoder.name, unique)
    vectors: NDArray[np.float32] | None = None
    if path.exists():
        try:
            loaded = np.load(path, allow_pickle=False)
            if loaded.ndim == 2 and loaded.shape[0] == len(unique):
                vectors = loaded.astype(np.float32, copy=False)
                log(f"{tag}: {len(unique)} vectors read from {path}")
        except (OSError, ValueError) as exc:
            log(f"{tag}: ignoring unreadable cache {path} ({exc})")
    if vectors is None:
        vectors = encoder.encode(unique)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=CACHE_DIR, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, vectors, allow_pickle=False)
        os.replace(tmp, path)
        log(f"{tag}: {len(unique)} vectors encoded, cached in {path}")
    elif isinstance(encoder, CachingEncoder):
        encoder.seed(unique, vectors)
    row = {text: i for i, text in enumerate(unique)}
    return vectors[[row[t] for t in texts]] if len(texts) else vectors


# --------------------------------------------------------------------------- helpers


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None or p + r == 0:
        return None if p is None or r is None else 0.0
    return 2 * p * r / (p + r)


def _round(obj: Any, digits: int = 4) -> Any:
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: _round(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_round(v, digits) for v in obj]
    return obj


def _read(path: Path, limit: int | None) -> list[dict[str, Any]]:
    records = read_jsonl(path)
    return records[:limit] if limit is not None else records


# --------------------------------------------------------------------------- (a) per-file evaluation


def file_texts(records: Sequence[dict[str, Any]]) -> list[str]:
    """Every text a file's evaluation embeds (pairs: ``a`` and ``b``; corpus: ``text``), as built by the app."""
    if records and {"a", "b"} <= records[0].keys():
        return [text_for_embedding(r["a"], r.get("a_body")) for r in records] + [
            text_for_embedding(r["b"], r.get("b_body")) for r in records
        ]
    return [text_for_embedding(r["text"], r.get("body")) for r in records]


def evaluate_all(files: list[Path], encoder: CachingEncoder, limit: int | None) -> list[dict[str, Any]]:
    results = []
    for path in files:
        log(f"evaluating {path.name} ...")
        encoded_before = encoder.encoded_texts
        cached_encode(encoder, file_texts(_read(path, limit)), path.stem)  # disk cache shared between runs
        if limit is None:
            result = evaluate_file(path, encoder)
        else:  # same computation as evaluate_file, on the first `limit` rows
            records = _read(path, limit)
            is_pairs = bool(records) and {"a", "b"} <= records[0].keys()
            evaluate = evaluate_pairs if is_pairs else evaluate_corpus
            result = {"file": str(path)} | evaluate(records, encoder) | {"limit": limit}
        # Texts already encoded for an earlier file come from the cache: then ``encode_seconds`` and
        # ``texts_per_second`` of this line do not measure the model (see the run's final summary).
        result["cached_texts"] = result["texts"] - (encoder.encoded_texts - encoded_before)
        print(format_json_line(result), flush=True)
        results.append(result)
    return results


# --------------------------------------------------------------------------- (b) pair thresholds


def pair_cosines(records: Sequence[dict[str, Any]], encoder: Encoder) -> tuple[NDArray, NDArray]:
    a = [text_for_embedding(r["a"], r.get("a_body")) for r in records]
    b = [text_for_embedding(r["b"], r.get("b_body")) for r in records]
    cos = paired_cosine(encoder.encode(a), encoder.encode(b)).astype(np.float64)
    labels = np.array([bool(r["duplicate"]) for r in records])
    return cos, labels


def pairs_at(cos: NDArray, labels: NDArray, t: float) -> dict[str, Any]:
    pred = cos >= t
    tp = int(np.sum(pred & labels))
    fp = int(np.sum(pred & ~labels))
    fn = int(np.sum(~pred & labels))
    p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"threshold": t, "precision": p, "recall": r, "f1": _f1(p, r), "predicted": tp + fp}


def lowest_threshold_for_precision(cos: NDArray, labels: NDArray, target: float) -> dict[str, Any] | None:
    """The lowest cosine threshold (one of the scores) whose precision is >= target: max recall at P>=target."""
    order = np.argsort(-cos, kind="mergesort")
    s, y = cos[order], labels[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[last_of_run].astype(np.float64)
    predicted = (last_of_run + 1).astype(np.float64)
    ok = np.flatnonzero(tps / predicted >= target)
    if not len(ok):
        return None
    i = int(ok[-1])  # runs are sorted by descending score: last qualifying run = lowest threshold
    result = pairs_at(cos, labels, float(s[last_of_run[i]]))
    return {"target_precision": target} | result


def pair_thresholds(records: Sequence[dict[str, Any]], encoder: Encoder) -> dict[str, Any]:
    cos, labels = pair_cosines(records, encoder)
    grid = [pairs_at(cos, labels, t) for t in GRID]
    targets = [lowest_threshold_for_precision(cos, labels, p) for p in PRECISION_TARGETS]
    return {"n": len(records), "positives": int(labels.sum()), "grid": grid, "precision_targets": targets}


# --------------------------------------------------------------------------- (c) online clustering


def nearest_earlier(vectors: NDArray[np.float32], chunk: int = 2048) -> tuple[NDArray[np.intp], NDArray]:
    """For each row i, the index of its most similar row j < i and that cosine (-1 / -inf for row 0)."""
    n = len(vectors)
    nn = np.full(n, -1, dtype=np.intp)
    sim = np.full(n, -np.inf, dtype=np.float64)
    for start in range(1, n, chunk):
        stop = min(start + chunk, n)
        sims = vectors[start:stop] @ vectors[:stop].T  # (rows, stop)
        rows = np.arange(start, stop)
        sims[np.arange(stop)[np.newaxis, :] >= rows[:, np.newaxis]] = -np.inf  # only earlier items
        best = np.argmax(sims, axis=1)  # ties: the earliest item
        nn[start:stop] = best
        sim[start:stop] = sims[np.arange(len(rows)), best]
    return nn, sim


def online_clusters(nn: NDArray[np.intp], sim: NDArray, t: float) -> NDArray[np.intp]:
    """Cluster label per item (the index of the item that started its cluster) at threshold t."""
    parent = np.where(sim >= t, nn, np.arange(len(nn)))
    while True:  # pointer jumping; parents always point to earlier items, so this terminates
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent = grand


def clustering_at(boards: list[dict[str, Any]], t: float) -> dict[str, Any]:
    tp = pred_pairs = true_pairs = clusters = groups = largest = impure = joins = good_joins = 0
    for board in boards:
        truth, nn, sim = board["truth"], board["nn"], board["sim"]
        pred = online_clusters(nn, sim, t)
        tp += pair_count(pred, truth)
        pred_pairs += pair_count(pred)
        true_pairs += board["true_pairs"]
        cluster_ids, sizes = np.unique(pred, return_counts=True)
        clusters += len(cluster_ids)
        groups += board["groups"]
        largest = max(largest, int(sizes.max()))
        cluster_group_pairs = np.unique(np.stack([pred, truth], axis=1), axis=0)
        impure += int(np.sum(np.bincount(cluster_group_pairs[:, 0]) > 1))  # clusters mixing true groups
        joined = sim >= t
        joins += int(joined.sum())
        good_joins += int(np.sum(truth[joined] == truth[nn[joined]]))
    p, r = _ratio(tp, pred_pairs), _ratio(tp, true_pairs)
    return {
        "threshold": t,
        "precision": p,
        "recall": r,
        "f1": _f1(p, r),
        "clusters": clusters,
        "true_groups": groups,
        "largest_cluster": largest,
        "impure_clusters": impure,
        "joins": joins,
        "join_precision": _ratio(good_joins, joins),
        "pred_pairs": pred_pairs,
        "true_pairs": true_pairs,
    }


def prepare_boards(records: Sequence[dict[str, Any]], encoder: Encoder) -> list[dict[str, Any]]:
    texts = [text_for_embedding(r["text"], r.get("body")) for r in records]
    vectors = encoder.encode(texts)
    rows_by_source: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):  # file order = arrival order
        rows_by_source[str(r["source"])].append(i)
    boards = []
    for source, rows in rows_by_source.items():
        _, truth = np.unique([str(records[i]["group"]) for i in rows], return_inverse=True)
        truth = truth.astype(np.intp)
        nn, sim = nearest_earlier(vectors[rows])
        boards.append(
            {
                "source": source,
                "n": len(rows),
                "truth": truth,
                "nn": nn,
                "sim": sim,
                "groups": int(truth.max()) + 1,
                "true_pairs": pair_count(truth),
            }
        )
    return boards


def recommend(rows: list[dict[str, Any]], min_precision: float) -> dict[str, Any] | None:
    ok = [r for r in rows if r["precision"] is not None and r["precision"] >= min_precision]
    if not ok:
        return None
    return max(ok, key=lambda r: (r["f1"] or 0.0, r["threshold"]))


# --------------------------------------------------------------------------- output


def print_pairs(section: dict[str, Any]) -> None:
    print(f"\n## {PAIRS_FILE}: cosine >= t  (n={section['n']}, positives={section['positives']})\n")
    print("| t | precision | recall | F1 | predicted dup |")
    print("| --- | --- | --- | --- | --- |")
    for r in section["grid"]:
        print(
            f"| {r['threshold']:.2f} | {fmt(r['precision'])} | {fmt(r['recall'])} | {fmt(r['f1'])} | {r['predicted']} |"
        )
    print()
    for target, r in zip(PRECISION_TARGETS, section["precision_targets"], strict=True):
        if r is None:
            print(f"precision >= {target:.2f}: not reached")
        else:
            print(
                f"precision >= {target:.2f}: t >= {r['threshold']:.4f} "
                f"(P {r['precision']:.3f}, R {r['recall']:.3f}, F1 {r['f1']:.3f})"
            )


def print_clustering(section: dict[str, Any]) -> None:
    print(
        f"\n## {CORPUS_FILE}: online single-link clustering per source (the application's current rule) "
        f"(n={section['n']}, sources={len(section['sources'])}, true groups={section['true_groups']}, "
        f"true pairs={section['true_pairs']})\n"
    )
    print("| t | pair P | pair R | pair F1 | clusters | largest | impure clusters | join precision |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in section["grid"]:
        print(
            f"| {r['threshold']:.2f} | {fmt(r['precision'])} | {fmt(r['recall'])} | {fmt(r['f1'])} "
            f"| {r['clusters']} | {r['largest_cluster']} | {r['impure_clusters']} "
            f"| {fmt(r['join_precision'])} |"
        )
    best = section["best_f1_fine"]
    rec = section["recommended_fine"]
    print(
        f"\nbest clustering F1 (step 0.01): t={best['threshold']:.2f} "
        f"P {fmt(best['precision'])} R {fmt(best['recall'])} F1 {fmt(best['f1'])}"
    )
    if rec is None:
        print(f"no threshold reaches clustering pairwise precision >= {MIN_CLUSTER_PRECISION}")
    else:
        print(
            f"max clustering F1 with pair P >= {MIN_CLUSTER_PRECISION:.2f} (step 0.01): t={rec['threshold']:.2f} "
            f"P {fmt(rec['precision'])} R {fmt(rec['recall'])} F1 {fmt(rec['f1'])} "
            f"largest {rec['largest_cluster']}"
        )
    coarse = section["recommended_grid"]
    if coarse is not None:
        print(f"same on the 0.05 grid: t={coarse['threshold']:.2f}")
    print("\nper source at the recommended threshold:\n")
    print("| source | items | true groups | clusters | pair P | pair R | pair F1 | largest |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for s in section["per_source_at_recommended"]:
        print(
            f"| {s['source']} | {s['n']} | {s['true_groups']} | {s['clusters']} | {fmt(s['precision'])} "
            f"| {fmt(s['recall'])} | {fmt(s['f1'])} | {s['largest_cluster']} |"
        )


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help=f"DEV data directory (default {DEFAULT_DATA})")
    parser.add_argument("--model", default=None, help="model path or cached name (default: bundled MiniLM)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N rows of each file")
    parser.add_argument("--out", default=None, help="also write all results as one JSON document here")
    parser.add_argument(
        "--grouping-only",
        action="store_true",
        help=f"skip the per-file lines and pair thresholds: only the {CORPUS_FILE} grouping simulations",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help=f"neither read nor write the vector cache in {CACHE_DIR}"
    )
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    DISK_CACHE["enabled"] = not args.no_cache

    data = Path(args.data)
    files = sorted(data.glob("*.jsonl")) if data.is_dir() else []
    if not files:
        print(
            f"error: no *.jsonl files in {data} (directory {'exists' if data.is_dir() else 'not found'}).\n"
            "The labelled DEV set is not part of this repository (the sj-* sources must not be\n"
            "redistributed); it is read from ../shared/data/dupes. Pass --data DIR.",
            file=sys.stderr,
        )
        return EXIT_NO_DATA

    started = time.perf_counter()
    loaded = load_encoder(args.model)
    if isinstance(loaded, MultilingualEncoder):
        return multilingual_main(loaded, data, files, args.grouping_only, args.limit)
    encoder = CachingEncoder(loaded)
    report: dict[str, Any] = {
        "encoder": encoder.name,
        "data": str(data),
        "limit": args.limit,
        "machine": machine_info(),
    }

    pairs_path, corpus_path = data / PAIRS_FILE, data / CORPUS_FILE
    if not args.grouping_only:
        print("# per-file evaluation (embeddings.evaluation.evaluate_file)")
        report["files"] = evaluate_all(files, encoder, args.limit)
        if pairs_path.exists():
            report["pairs"] = pair_thresholds(_read(pairs_path, args.limit), encoder)
            print_pairs(report["pairs"])
        else:
            log(f"{PAIRS_FILE} not found: pair thresholds skipped")

    if corpus_path.exists():
        records = _read(corpus_path, args.limit)
        cached_encode(encoder, file_texts(records), corpus_path.stem)  # no-op when already in memory
        boards = prepare_boards(records, encoder)
        fine = [clustering_at(boards, t) for t in FINE_GRID]
        by_t = {r["threshold"]: r for r in fine}
        grid = [by_t[t] if t in by_t else clustering_at(boards, t) for t in GRID]
        rec_fine = recommend(fine, MIN_CLUSTER_PRECISION)
        rec_t = rec_fine["threshold"] if rec_fine else max(GRID)
        per_source = [{"source": b["source"], "n": b["n"]} | clustering_at([b], rec_t) for b in boards]
        report["clustering"] = {
            "n": len(records),
            "sources": [b["source"] for b in boards],
            "true_groups": sum(b["groups"] for b in boards),
            "true_pairs": sum(b["true_pairs"] for b in boards),
            "min_precision": MIN_CLUSTER_PRECISION,
            "grid": grid,
            "fine_grid": fine,
            "best_f1_fine": max(fine, key=lambda r: (r["f1"] or 0.0, r["threshold"])),
            "recommended_fine": rec_fine,
            "recommended_grid": recommend(grid, MIN_CLUSTER_PRECISION),
            "per_source_at_recommended": per_source,
        }
        print_clustering(report["clustering"])
    else:
        log(f"{CORPUS_FILE} not found: clustering simulation skipped")

    report["encode"] = {
        "texts": encoder.encoded_texts,
        "seconds": round(encoder.encode_seconds, 2),
        "texts_per_second": round(encoder.encoded_texts / encoder.encode_seconds, 1)
        if encoder.encode_seconds
        else None,
    }
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    print(
        f"\nencoded {report['encode']['texts']} distinct texts in {report['encode']['seconds']} s "
        f"({report['encode']['texts_per_second']} texts/s, {os.cpu_count()} CPUs); "
        f"total {report['total_seconds']} s"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(_round(report), indent=1, ensure_ascii=False) + "\n")
        log(f"wrote {args.out}")
    return 0


def multilingual_main(
    multi: MultilingualEncoder, data: Path, files: Sequence[Path], grouping_only: bool, limit: int | None
) -> int:
    """``--model multilingual``: two vectors per post and a scorer, not one cosine, so the single-vector
    rules above do not apply. Per-file lines by its combined score (``forum eval duplicates``), then the
    application's rule on bug_corpus as ``bench.forum_grouping`` replays it (the default rule and issue
    6's route score, next to all-MiniLM-L6-v2 alone)."""
    if limit is not None:
        log("--limit is ignored with --model multilingual")
    if not grouping_only:
        print("# per-file evaluation (embeddings.evaluation.evaluate_file, combined score)")
        for path in files:
            print(format_json_line(evaluate_file(path, multi)), flush=True)
    if not (data / CORPUS_FILE).exists():
        log(f"{CORPUS_FILE} not found: clustering simulation skipped")
        return 0
    cached = caching_multilingual(CACHE_DIR)  # the same models, vectors kept between runs
    report({"bug_corpus": build_boards(read_bug_corpus(data), cached)}, 5, 5, do_sweep=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

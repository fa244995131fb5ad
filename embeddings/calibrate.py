"""Derive the multilingual calibration constants and measure the designs on the DEV data.

Usage (from the repository root; the DEV data is never copied into the repository)::

    python -m embeddings.calibrate --data ../shared/data/dupes [--sample forum/demo/sample.json]
        [--cache-dir /tmp/forum-multilingual-cache] [--skip-throughput] [--json results.json]

Prints markdown:

1. the calibration fits behind :data:`embeddings.multilingual.USE_SAME_LANGUAGE` and
   :data:`~embeddings.multilingual.USE_CROSS_LANGUAGE` (they must match the constants in code;
   a mismatch is flagged);
2. per DEV file, all-MiniLM-L6-v2 alone, USE alone and the combined score
   (:func:`embeddings.evaluation.compare_file`);
3. on the demo forum sample: combined scores of duplicate vs non-duplicate pairs per route and
   the online NN + average-link clustering (a post joins its nearest earlier neighbour's
   cluster if the NN score and the mean score to that cluster's members are both >= t) for a
   range of thresholds, in arrival order and in random orders; the same rule on bug_corpus;
4. throughput on this machine (texts/s) of each encoder and of language detection.

``--cache-dir`` keeps vectors between runs (keyed by encoder name and text); throughput is
always measured on fresh, uncached encoders.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .encoder import Encoder, SentenceTransformerEncoder, UniversalSentenceEncoder, text_for_embedding
from .evaluation import average_precision, compare_file, read_jsonl, roc_auc
from .language import detect_languages
from .multilingual import (
    USE_CROSS_LANGUAGE,
    USE_SAME_LANGUAGE,
    LinearCalibration,
    MultilingualEncoder,
    MultilingualScorer,
)

__all__ = [
    "cluster_pairwise_scores",
    "fit_cross_language",
    "fit_logistic",
    "fit_same_language",
    "simulate_nn_average",
]

DEV_FILES = ("bug_pairs.jsonl", "bug_corpus.jsonl", "sts_es_pairs.jsonl", "sts_es_en_pairs.jsonl")
THRESHOLDS = tuple(round(0.40 + 0.02 * i, 2) for i in range(16))  # 0.40 .. 0.70
CORPUS_THRESHOLDS = (0.50, 0.52, 0.55, 0.60, 0.66, 0.70, 0.80, 0.86)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- fitting


def fit_logistic(
    x: Sequence[float] | NDArray[np.floating], y: Sequence[bool] | NDArray[np.bool_]
) -> tuple[float, float]:
    """``(a, b)`` of ``P(y) = sigmoid(a * x + b)`` by maximum likelihood (Newton-Raphson)."""
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    design = np.c_[xa, np.ones_like(xa)]
    w = np.zeros(2)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))
        gradient = design.T @ (ya - p)
        hessian = design.T @ (design * (p * (1 - p))[:, None])
        step = np.linalg.solve(hessian, gradient)
        w += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(w[0]), float(w[1])


def fit_same_language(
    english_cos: NDArray[np.floating], multilingual_cos: NDArray[np.floating], labels: NDArray[np.bool_]
) -> LinearCalibration:
    """Map multilingual cosines to the English cosine with the same fitted duplicate odds (same pairs)."""
    a_e, b_e = fit_logistic(english_cos, labels)
    a_m, b_m = fit_logistic(multilingual_cos, labels)
    return LinearCalibration(slope=a_m / a_e, intercept=(b_m - b_e) / a_e)


def fit_cross_language(same_cos: NDArray[np.floating], cross_cos: NDArray[np.floating]) -> LinearCalibration:
    """Map cross-language cosines onto the same-language scale (same pairs; mean and std matched)."""
    slope = float(np.std(same_cos) / np.std(cross_cos))
    return LinearCalibration(slope=slope, intercept=float(np.mean(same_cos) - slope * np.mean(cross_cos)))


def compose(first: LinearCalibration, then: LinearCalibration) -> LinearCalibration:
    """``then(first(x))``."""
    return LinearCalibration(then.slope * first.slope, then.slope * first.intercept + then.intercept)


# --------------------------------------------------------------------------- clustering


def simulate_nn_average(scores: NDArray[np.floating], threshold: float) -> NDArray[np.intp]:
    """Online NN + average link on a ``(n, n)`` score matrix, posts in row order: cluster id per post.

    Post ``i`` joins the cluster of its most similar earlier post (ties: the earliest) when that
    score and the mean score between ``i`` and the cluster's current members are both >= threshold.
    """
    n = len(scores)
    label = np.arange(n)
    members: dict[int, list[int]] = {}
    for i in range(n):
        if i:
            j = int(np.argmax(scores[i, :i]))
            c = int(label[j])
            if scores[i, j] >= threshold and float(np.mean(scores[i, members[c]])) >= threshold:
                label[i] = c
                members[c].append(i)
                continue
        members[i] = [i]
    return label


def cluster_pairwise_scores(
    truth: Sequence[Any], pred: Sequence[int], mask: NDArray[np.bool_] | None = None
) -> dict[str, Any]:
    """Pairwise precision / recall / F1 of a clustering (optionally over the posts in ``mask`` only)."""
    t, p = np.asarray(truth), np.asarray(pred)
    if mask is not None:
        t, p = t[mask], p[mask]
    iu = np.triu_indices(len(t), 1)
    same_t, same_p = (t[:, None] == t[None, :])[iu], (p[:, None] == p[None, :])[iu]
    tp, pred_pairs, true_pairs = int(np.sum(same_t & same_p)), int(same_p.sum()), int(same_t.sum())
    precision = tp / pred_pairs if pred_pairs else None
    recall = tp / true_pairs if true_pairs else None
    f1 = 2 * tp / (pred_pairs + true_pairs) if pred_pairs + true_pairs else None
    _, sizes = np.unique(p, return_counts=True)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": pred_pairs - tp,
        "true_pairs": true_pairs,
        "multi_clusters": int(np.sum(sizes > 1)),
        "largest": int(sizes.max()) if len(sizes) else 0,
    }


# --------------------------------------------------------------------------- caching


class _CachingEncoder:
    """Wraps an encoder; vectors are kept in ``directory`` (one .npy per text batch digest)."""

    def __init__(self, encoder: Encoder, directory: Path) -> None:
        self.encoder = encoder
        self.directory = directory
        self._memory: dict[str, NDArray[np.float32]] = {}

    @property
    def name(self) -> str:
        return self.encoder.name

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        items = list(texts)
        digest = hashlib.sha256(self.name.encode())
        for text in items:
            digest.update(hashlib.sha256(text.encode()).digest())
        path = self.directory / f"{self.name.replace('/', '_')}.{len(items)}.{digest.hexdigest()[:24]}.npy"
        if path.exists():
            return np.load(path)
        vectors = self.encoder.encode(items)
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, vectors)
        os.replace(tmp, path)
        return vectors


# --------------------------------------------------------------------------- report helpers


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _cosines(encoder: Encoder, a: Sequence[str], b: Sequence[str]) -> NDArray[np.float32]:
    unique = list(dict.fromkeys([*a, *b]))
    vectors = encoder.encode(unique)
    row = {t: i for i, t in enumerate(unique)}
    return np.einsum("ij,ij->i", vectors[[row[t] for t in a]], vectors[[row[t] for t in b]])


def fit_constants(data: Path, english: Encoder, multilingual: Encoder) -> dict[str, Any]:
    """The calibration fits; see the comments at the constants in ``embeddings.multilingual``."""
    out: dict[str, Any] = {}
    pairs = read_jsonl(data / "bug_pairs.jsonl")
    labels = np.array([bool(r["duplicate"]) for r in pairs])
    for fmt in ("title+body", "title"):
        if fmt == "title":
            a = [r["a"].strip() for r in pairs]
            b = [r["b"].strip() for r in pairs]
        else:
            a = [text_for_embedding(r["a"], r.get("a_body")) for r in pairs]
            b = [text_for_embedding(r["b"], r.get("b_body")) for r in pairs]
        e, m = _cosines(english, a, b), _cosines(multilingual, a, b)
        out[fmt] = {
            "english_logistic": fit_logistic(e, labels),
            "multilingual_logistic": fit_logistic(m, labels),
            "same_language": fit_same_language(e, m, labels),
            "english_ap": average_precision(e, labels),
            "multilingual_ap": average_precision(m, labels),
        }
    same_rows = read_jsonl(data / "sts_es_pairs.jsonl")
    cross_rows = read_jsonl(data / "sts_es_en_pairs.jsonl")
    if [r["row"] for r in same_rows] != [r["row"] for r in cross_rows]:
        raise ValueError("sts_es_pairs and sts_es_en_pairs must hold the same pairs in the same order")
    same = _cosines(multilingual, [r["a"] for r in same_rows], [r["b"] for r in same_rows])
    cross = _cosines(multilingual, [r["a"] for r in cross_rows], [r["b"] for r in cross_rows])
    score = np.array([float(r["score"]) for r in same_rows])
    cross_to_same = fit_cross_language(same, cross)
    out["cross_to_same"] = cross_to_same
    out["sts_by_score"] = [
        (lo, hi, int(np.sum(m)), float(same[m].mean()), float(cross[m].mean()), float(cross_to_same(cross[m]).mean()))
        for lo, hi in ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5.01))
        for m in [(score >= lo) & (score < hi)]
    ]
    out["same_language"] = out["title+body"]["same_language"]
    out["cross_language"] = compose(cross_to_same, out["same_language"])
    return out


def print_fit(fit: dict[str, Any]) -> None:
    print("## 1. Calibration fits (DEV)\n")
    for fmt in ("title+body", "title"):
        f = fit[fmt]
        print(
            f"* bug_pairs {fmt}: logistic MiniLM a={f['english_logistic'][0]:.4f} b={f['english_logistic'][1]:.4f}; "
            f"USE a={f['multilingual_logistic'][0]:.4f} b={f['multilingual_logistic'][1]:.4f} -> "
            f"USE-to-MiniLM slope {f['same_language'].slope:.4f} intercept {f['same_language'].intercept:.4f} "
            f"(AP MiniLM {f['english_ap']:.4f}, USE {f['multilingual_ap']:.4f})"
        )
    grid = np.arange(0.4, 0.81, 0.1)
    gap = np.abs(fit["title+body"]["same_language"](grid) - fit["title"]["same_language"](grid)).max()
    print(f"* title-only vs title+body maps differ by at most {gap:.3f} for USE cosines 0.4-0.8")
    c = fit["cross_to_same"]
    print(f"* sts es-en -> es-es (mean/std match): slope {c.slope:.4f} intercept {c.intercept:.4f}")
    print("\n| STS score | pairs | USE es-es | USE es-en | es-en mapped |\n| --- | --- | --- | --- | --- |")
    for lo, hi, n, s, x, mx in fit["sts_by_score"]:
        print(f"| [{lo:g}, {min(hi, 5):g}{']' if hi > 5 else ')'} | {n} | {s:.3f} | {x:.3f} | {mx:.3f} |")
    for key, const in (("same_language", USE_SAME_LANGUAGE), ("cross_language", USE_CROSS_LANGUAGE)):
        fitted = fit[key]
        ok = abs(fitted.slope - const.slope) < 5e-4 and abs(fitted.intercept - const.intercept) < 5e-4
        print(
            f"\n{key}: fitted slope {fitted.slope:.4f} intercept {fitted.intercept:.4f}; in code "
            f"{const.slope:.4f} / {const.intercept:.4f} {'(match)' if ok else '(MISMATCH: update the constants)'}"
        )


def print_compare(results: list[dict[str, Any]]) -> None:
    print("\n## 2. DEV files: each encoder alone and the combined score\n")
    print(
        "| file | design | ROC-AUC | AP | Spearman | best F1 @ threshold (P / R) | recall@1 / @5 / @10 | routes |"
        "\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    for r in results:
        name = Path(r["file"]).name
        if r["kind"] == "pairs":
            f1 = f"{_fmt(r['best_f1'])} @ {_fmt(r['threshold'])} ({_fmt(r['precision'])} / {_fmt(r['recall'])})"
            row = [_fmt(r["roc_auc"]), _fmt(r["average_precision"]), _fmt(r.get("spearman")), f1, "-"]
        else:
            recall = " / ".join(_fmt(r[f"recall_at_{k}"]) for k in (1, 5, 10))
            row = ["-", "-", "-", "-", recall]
        routes = r.get("routes") or r.get("languages") or ""
        print(f"| {name} | {r['design']} | " + " | ".join(row) + f" | {json.dumps(routes) if routes else ''} |")


def demo_report(sample: Path, multi: MultilingualEncoder, seeds: int = 20) -> dict[str, Any]:
    posts = json.loads(sample.read_text(encoding="utf-8"))["posts"]
    order = sorted(range(len(posts)), key=lambda i: (-posts[i]["days_ago"], i))  # oldest first
    posts = [posts[i] for i in order]
    texts = [text_for_embedding(p["title"], p.get("body")) for p in posts]
    emb = multi.embed(texts)
    detected_ok = sum(d == p.get("language") for d, p in zip(emb.languages, posts, strict=True))
    combined = multi.score_matrix(emb)
    designs = {
        "combined": combined,
        "MiniLM alone": emb.vectors[multi.english.name] @ emb.vectors[multi.english.name].T,
        "USE alone": emb.vectors[multi.multilingual.name] @ emb.vectors[multi.multilingual.name].T,
    }
    n = len(posts)
    truth = np.array([p["group"] if p["group"] is not None else f"\0{p['key']}" for p in posts], dtype=object)
    iu = np.triu_indices(n, 1)
    dup = (truth[:, None] == truth[None, :])[iu]
    routes = np.array([[multi.scorer.route(a, b) for b in emb.languages] for a in emb.languages], dtype=object)[iu]
    languages = dict(Counter(emb.languages).most_common())
    out: dict[str, Any] = {"posts": n, "languages": languages}
    print(f"\n## 3. Demo sample ({n} posts; detected {languages}; {detected_ok}/{n} match the labels)\n")
    print("Combined score of every pair of posts, by route:\n")
    print("| route | duplicates: n, min / median / max | non-duplicates: n, median / p99 / max |\n| --- | --- | --- |")
    for route in ("english", "use-cross", "use-same", "all"):
        m = np.ones_like(dup) if route == "all" else routes == route
        s = combined[iu][m]
        d, nd = s[dup[m]], s[~dup[m]]
        if not len(s):
            continue
        dcol = f"{len(d)}: {d.min():.3f} / {np.median(d):.3f} / {d.max():.3f}" if len(d) else "0"
        ncol = f"{len(nd)}: {np.median(nd):.3f} / {np.quantile(nd, 0.99):.3f} / {nd.max():.3f}" if len(nd) else "0"
        print(f"| {route} | {dcol} | {ncol} |")
    print("\n| design | pair ROC-AUC | pair AP |\n| --- | --- | --- |")
    for name, s in designs.items():
        print(f"| {name} | {roc_auc(s[iu], dup):.3f} | {average_precision(s[iu], dup):.3f} |")

    print(
        f"\nOnline NN + average link on the demo (arrival order; random orders: mean [min, max] over {seeds} seeds):\n"
    )
    print(
        "| design | t | P | R | F1 | true pairs grouped | wrong pairs | multi-post clusters | largest "
        "| random-order P | random-order R |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    rng = np.random.default_rng(0)
    perms = [rng.permutation(n) for _ in range(seeds)]
    sweep: list[dict[str, Any]] = []
    for name, s in designs.items():
        for t in THRESHOLDS:
            r = cluster_pairwise_scores(truth, simulate_nn_average(s, t))
            rand = [cluster_pairwise_scores(truth[p], simulate_nn_average(s[np.ix_(p, p)], t)) for p in perms]
            rp = [x["precision"] for x in rand if x["precision"] is not None]
            rr = [x["recall"] for x in rand]
            sweep.append({"design": name, "t": t, **r, "random_precision": rp, "random_recall": rr})
            if name != "combined" and t not in (0.50, 0.52, 0.56, 0.60, 0.66):
                continue
            rpc = f"{np.mean(rp):.3f} [{min(rp):.2f}, {max(rp):.2f}]" if rp else "-"
            print(
                f"| {name} | {t:.2f} | {_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['f1'])} | {r['tp']} "
                f"| {r['fp']} | {r['multi_clusters']} | {r['largest']} | {rpc} "
                f"| {np.mean(rr):.3f} [{min(rr):.2f}, {max(rr):.2f}] |"
            )
    out["sweep"] = sweep
    return out


def corpus_clustering(data: Path, multi: MultilingualEncoder) -> list[dict[str, Any]]:
    records = read_jsonl(data / "bug_corpus.jsonl")
    texts = [text_for_embedding(r["text"], r.get("body")) for r in records]
    emb = multi.embed(texts)
    by_source: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_source.setdefault(r["source"], []).append(i)
    boards = []
    for rows in by_source.values():
        langs = [emb.languages[i] for i in rows]
        vecs = {name: v[rows] for name, v in emb.vectors.items()}
        boards.append(
            (
                np.array([str(records[i]["group"]) for i in rows], dtype=object),
                multi.scorer.score_matrix(langs, vecs, langs, vecs),
            )
        )
    print(
        "\nThe same rule on bug_corpus (5 boards, file order; all English, so the combined score is MiniLM's "
        "cosine except for the few posts detected as non-English):\n"
    )
    print("| t | P | R | F1 | largest |\n| --- | --- | --- | --- | --- |")
    rows_out = []
    for t in CORPUS_THRESHOLDS:
        tp = fp = true_pairs = largest = 0
        for truth, s in boards:
            r = cluster_pairwise_scores(truth, simulate_nn_average(s, t))
            tp, fp, true_pairs = tp + r["tp"], fp + r["fp"], true_pairs + r["true_pairs"]
            largest = max(largest, r["largest"])
        p = tp / (tp + fp) if tp + fp else None
        rc = tp / true_pairs
        f1 = 2 * tp / (tp + fp + true_pairs)
        rows_out.append({"t": t, "precision": p, "recall": rc, "f1": f1, "largest": largest})
        print(f"| {t:.2f} | {_fmt(p)} | {rc:.3f} | {f1:.3f} | {largest} |")
    return rows_out


def _throughput_one(what: str, data: str, n_long: int = 400, n_short: int = 1000) -> dict[str, float]:
    """Measured in the calling (fresh) process: load time including imports, then texts/s."""
    started = time.perf_counter()
    if what == "language":
        detect_languages(["warm up"])
        run = detect_languages
    else:
        encoder = SentenceTransformerEncoder() if what == "minilm" else UniversalSentenceEncoder()
        encoder.load()
        run = encoder.encode
    load = time.perf_counter() - started
    corpus = read_jsonl(Path(data) / "bug_corpus.jsonl")
    long_texts = list(dict.fromkeys(text_for_embedding(r["text"], r.get("body")) for r in corpus))[:n_long]
    sts = read_jsonl(Path(data) / "sts_es_en_pairs.jsonl")
    short_texts = list(dict.fromkeys([r["a"] for r in sts] + [r["b"] for r in sts]))[:n_short]
    out = {"load_seconds": load}
    for key, texts in (("long", long_texts), ("short", short_texts)):
        started = time.perf_counter()
        run(texts)
        out[key] = len(texts) / (time.perf_counter() - started)
    return out


def throughput(data: Path) -> dict[str, Any]:
    """texts/s of each encoder and of language detection, each in a fresh process (nothing cached)."""
    import subprocess

    out: dict[str, Any] = {"cpus": os.cpu_count()}
    print(f"\n## 4. Throughput ({os.cpu_count()} CPUs; texts/s; each in a fresh process)\n")
    print(
        "| what | full posts (400 bug_corpus title + body) | short sentences (1,000 STS) | load incl. imports |"
        "\n| --- | --- | --- | --- |"
    )
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    for what, label in (
        ("minilm", "all-MiniLM-L6-v2"),
        ("use", "use-multilingual-v3"),
        ("language", "language detection (lingua, 5 languages)"),
    ):
        code = (
            "import json; from embeddings.calibrate import _throughput_one; "
            f"print(json.dumps(_throughput_one({what!r}, {str(data)!r})))"
        )
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        out[what] = r
        print(f"| {label} | {r['long']:.0f} | {r['short']:.0f} | {r['load_seconds']:.1f} s |")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embeddings.calibrate", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="directory with the DEV jsonl files")
    parser.add_argument("--sample", default="forum/demo/sample.json", help="demo forum sample (posts with `group`)")
    parser.add_argument("--cache-dir", help="keep vectors here between runs (never inside the repository)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--json", help="write the raw results here")
    args = parser.parse_args(argv)
    data = Path(args.data)
    missing = [f for f in DEV_FILES if not (data / f).exists()]
    if missing:
        print(f"{data}: missing {', '.join(missing)}", file=sys.stderr)
        return 2

    english: Encoder = SentenceTransformerEncoder()
    multilingual: Encoder = UniversalSentenceEncoder()
    if args.cache_dir:
        english = _CachingEncoder(english, Path(args.cache_dir))
        multilingual = _CachingEncoder(multilingual, Path(args.cache_dir))
    log("fitting the calibrations ...")
    fit = fit_constants(data, english, multilingual)
    print_fit(fit)
    multi = MultilingualEncoder(english, multilingual, MultilingualScorer(english.name, multilingual.name))
    results: list[dict[str, Any]] = []
    for name in DEV_FILES:
        log(f"comparing designs on {name} ...")
        results += compare_file(data / name, multi)
    print_compare(results)
    report: dict[str, Any] = {"fit": {k: str(v) for k, v in fit.items()}, "compare": results}
    if Path(args.sample).exists():
        report["demo"] = demo_report(Path(args.sample), multi)
    report["bug_corpus_clustering"] = corpus_clustering(data, multi)
    if not args.skip_throughput:
        report["throughput"] = throughput(data)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

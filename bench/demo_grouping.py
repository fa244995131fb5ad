"""Online duplicate grouping on the demo forum sample, scored against its ``group`` labels.

Usage (from the repository root)::

    python -m bench.demo_grouping [--sample FILE] [--model NAME] [--show RULE:T1[:T2] ...]

The sample (``forum/demo/sample.json``, 70 idea / critique posts in English and Spanish) labels each post
with a duplicate ``group`` (null = a post with no duplicate). Posts arrive by ``days_ago``, oldest first
(ties: file order), as one board; every rule of ``bench.quality`` is simulated exactly as there (each
decision sees only earlier posts; clusters never merge). Scores are pairwise precision / recall / F1
over post pairs, for all pairs and for English-English pairs only (the clustering still contains every
post, as in the application). all-MiniLM-L6-v2 is English-only, so Spanish↔English duplicates are
expected to be missed; the English-only columns show the rule itself.

Printed: the cosine of every labelled English duplicate pair next to the most similar non-duplicate
pairs; a table of settings (the recommended default, the bug-corpus optimum of each rule, lower
reference thresholds, and each rule's best setting *on this sample*, 15 English pairs, so anecdotal);
then the predicted clusters of the settings given with ``--show`` (default: the recommended one and
a low reference), next to the labelled groups they split.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.quality import (
    RECOMMENDED,
    RULES,
    TWO_THRESHOLD_RULES,
    CachingEncoder,
    _fmt,
    cached_encode,
    nearest_earlier,
    rule_settings,
    score_clusters,
    simulate_rule,
)
from embeddings import load_encoder
from embeddings.encoder import text_for_embedding

SAMPLE = Path(__file__).resolve().parent.parent / "forum" / "demo" / "sample.json"

Setting = tuple[str, float, float | None]

#: Settings always shown in the table besides each rule's demo optimum.
FIXED_SETTINGS: tuple[tuple[str, Setting], ...] = (
    ("recommended default", RECOMMENDED),
    ("bug-corpus best, P >= 0.8", ("nn_avg", 0.91, 0.91)),
    ("previous default (single link)", ("single", 0.91, None)),
    ("bug-corpus best, P >= 0.7", ("nn_founder", 0.86, 0.86)),
    ("bug-corpus best, P >= 0.7", ("centroid", 0.91, None)),
    ("original code default", ("single", 0.60, None)),
    ("low reference", ("single", 0.50, None)),
    ("low reference", ("nn_avg", 0.50, 0.50)),
    ("low reference", ("centroid", 0.50, None)),
    ("low reference", ("nn_founder", 0.50, 0.50)),
)
DEFAULT_SHOW: tuple[Setting, ...] = (RECOMMENDED, ("nn_avg", 0.50, 0.50))


def load_sample(path: Path) -> list[dict[str, Any]]:
    posts = json.loads(path.read_text(encoding="utf-8"))["posts"]
    order = sorted(range(len(posts)), key=lambda i: (-posts[i]["days_ago"], i))  # oldest first
    return [posts[i] for i in order]


def setting_name(setting: Setting) -> str:
    rule, t1, t2 = setting
    return f"{rule} t1={t1:.2f}" + (f" t2={t2:.2f}" if t2 is not None else "")


def parse_setting(text: str) -> Setting:
    parts = text.split(":")
    if parts[0] not in RULES or len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected RULE:T1[:T2] with RULE in {RULES}, got {text!r}")
    t1 = float(parts[1])
    t2 = float(parts[2]) if len(parts) == 3 else (t1 if parts[0] in TWO_THRESHOLD_RULES else None)
    return (parts[0], t1, t2)


class Board:
    def __init__(self, posts: list[dict[str, Any]], vectors: NDArray[np.float32]) -> None:
        self.posts = posts
        self.vectors = vectors
        self.sims = vectors @ vectors.T
        self.nn, self.nn_sim = nearest_earlier(vectors)
        labels = [p["group"] if p["group"] is not None else f"\0{p['key']}" for p in posts]
        _, truth = np.unique(labels, return_inverse=True)
        self.truth = truth.astype(np.intp)
        self.english = np.array([p["language"] == "en" for p in posts])
        self.true_pairs = _pairs(self.truth)
        self.true_pairs_en = _pairs(self.truth[self.english])

    def run(self, setting: Setting) -> dict[str, Any]:
        rule, t1, t2 = setting
        pred = simulate_rule(self.vectors, self.sims, self.nn, self.nn_sim, rule, t1, t2)
        every = score_clusters([self.truth], [pred], self.true_pairs)
        english = score_clusters([self.truth[self.english]], [pred[self.english]], self.true_pairs_en)
        return {"setting": setting, "pred": pred, "all": every, "en": english}


def _pairs(labels: NDArray) -> int:
    _, counts = np.unique(labels, return_counts=True)
    return int(np.sum(counts * (counts - 1) // 2))


def demo_optimum(board: Board, rule: str) -> dict[str, Any]:
    """The setting of ``rule`` with the best English-pair F1 on this sample (ties: higher thresholds)."""
    runs = [board.run((rule, t1, t2)) for t1, t2 in rule_settings(rule)]
    return max(runs, key=lambda r: (r["en"]["f1"] or 0.0, r["setting"][1], r["setting"][2] or 0.0))


def print_pair_cosines(board: Board) -> None:
    posts, sims, truth, en = board.posts, board.sims, board.truth, board.english
    n = len(posts)
    rows = [(float(sims[i, j]), j, i) for i in range(n) for j in range(i) if en[i] and en[j]]
    dup = sorted((r for r in rows if truth[r[1]] == truth[r[2]]), reverse=True)
    other = sorted((r for r in rows if truth[r[1]] != truth[r[2]]), reverse=True)[:8]
    mixed = [float(sims[i, j]) for i in range(n) for j in range(i) if truth[i] == truth[j] and en[i] != en[j]]
    spanish = [(float(sims[i, j]), truth[i] == truth[j]) for i in range(n) for j in range(i) if not en[i] and not en[j]]

    def line(r: tuple[float, int, int]) -> str:
        s, a, b = r
        return f"| {s:.3f} | {posts[a]['key']} {posts[a]['title'][:48]} | {posts[b]['key']} {posts[b]['title'][:48]} |"

    print(f"\n## English duplicate pairs (labelled), cosine, {len(dup)} pairs\n")
    print("| cos | earlier post | later post |\n| --- | --- | --- |")
    for r in dup:
        print(line(r))
    print("\nmost similar English pairs that are NOT duplicates:\n")
    print("| cos | earlier post | later post |\n| --- | --- | --- |")
    for r in other:
        print(line(r))
    if mixed:
        print(
            f"\nSpanish-English duplicate pairs: {len(mixed)}, cosine max {max(mixed):.3f}, median "
            f"{float(np.median(mixed)):.3f} (all-MiniLM-L6-v2 is English-only)"
        )
    non_dup_es = [s for s, same in spanish if not same]
    dup_es = [s for s, same in spanish if same]
    if non_dup_es:
        print(
            f"Spanish-Spanish pairs: duplicates {len(dup_es)} (cos {', '.join(f'{s:.2f}' for s in sorted(dup_es))}); "
            f"non-duplicates {len(non_dup_es)}, cos max {max(non_dup_es):.3f}, "
            f"{sum(s >= 0.5 for s in non_dup_es)} at >= 0.50"
        )


def print_table(board: Board, rows: Sequence[tuple[str, dict[str, Any]]]) -> None:
    print(
        f"\n## Settings compared ({len(board.posts)} posts, {int(board.english.sum())} English; labelled duplicate "
        f"pairs: {board.true_pairs} in all, {board.true_pairs_en} English-English)\n"
    )
    print(
        "| setting | why | all P | all R | all F1 | en P | en R | en F1 | en pairs grouped "
        "| clusters | multi-post clusters | largest |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for why, r in rows:
        a, e = r["all"], r["en"]
        multi = a["clusters"] - a["singletons"]
        print(
            f"| {setting_name(r['setting'])} | {why} | {_fmt(a['precision'])} | {_fmt(a['recall'])} | {_fmt(a['f1'])} "
            f"| {_fmt(e['precision'])} | {_fmt(e['recall'])} | {_fmt(e['f1'])} | {e['pred_pairs']} "
            f"| {a['clusters']} | {multi} | {a['largest_cluster']} |"
        )


def print_clusters(board: Board, run: dict[str, Any]) -> None:
    posts, pred = board.posts, run["pred"]
    a, e = run["all"], run["en"]
    print(
        f"\n## Clusters of {setting_name(run['setting'])}: all pairs P {_fmt(a['precision'])} R {_fmt(a['recall'])} "
        f"F1 {_fmt(a['f1'])}; English pairs P {_fmt(e['precision'])} R {_fmt(e['recall'])} F1 {_fmt(e['f1'])}\n"
    )
    ids, sizes = np.unique(pred, return_counts=True)
    multi = [c for c, s in zip(ids, sizes, strict=True) if s > 1]
    if not multi:
        print("no post joined another: every post is its own cluster")
    for c in sorted(multi, key=lambda c: -int(np.sum(pred == c))):
        members = np.flatnonzero(pred == c)
        groups = {posts[m]["group"] for m in members}
        verdict = "correct" if len(groups) == 1 and None not in groups else "MIXED"
        print(f"- cluster of {len(members)} ({verdict}):")
        for m in members:
            p = posts[m]
            print(f"    {p['key']:>4} [{p['language']}] {p['group'] or '-':<22} {p['title'][:70]}")
    # labelled groups this clustering splits
    split = []
    for g in sorted({p["group"] for p in posts if p["group"] is not None}):
        members = [i for i, p in enumerate(posts) if p["group"] == g]
        parts = sorted({int(pred[i]) for i in members})
        if len(parts) > 1:
            pieces = [
                "+".join(f"{posts[i]['key']}({posts[i]['language']})" for i in members if pred[i] == part)
                for part in parts
            ]
            split.append(f"  {g}: " + " | ".join(pieces))
    if split:
        print("\nlabelled groups split across clusters (pieces separated by |):")
        print("\n".join(split))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.demo_grouping", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=Path, default=SAMPLE, help="demo sample JSON (default: the bundled one)")
    parser.add_argument("--model", default=None, help="model path or cached name (default: bundled MiniLM)")
    parser.add_argument(
        "--show",
        type=parse_setting,
        action="append",
        help="print the clusters of RULE:T1[:T2] (repeatable); default: the recommended one and nn_avg:0.5",
    )
    args = parser.parse_args(argv)

    posts = load_sample(args.sample)
    encoder = CachingEncoder(load_encoder(args.model))
    texts = [text_for_embedding(p["title"], p["body"]) for p in posts]
    board = Board(posts, cached_encode(encoder, texts, "demo_sample"))
    print(f"# Demo sample grouping ({encoder.name}, {args.sample})")
    print_pair_cosines(board)

    rows = [(why, board.run(setting)) for why, setting in FIXED_SETTINGS]
    rows += [("best on this sample (en F1)", demo_optimum(board, rule)) for rule in RULES]
    print_table(board, rows)
    for setting in args.show or DEFAULT_SHOW:
        print_clusters(board, board.run(setting))
    return 0


if __name__ == "__main__":
    sys.exit(main())

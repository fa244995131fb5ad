"""Grouping quality on idea-forum posts: the app's online rule replayed over many arrival orders.

Usage (from the repository root)::

    python -m bench.forum_grouping [--data ../shared/data/dupes] [--orders 20] [--sweep] [--json FILE]

Labelled sets, each split into boards (one board = one forum; a post only meets posts of its board):

* ``bench/data/forum_ideas.jsonl`` (shipped): 208 posts of a SaaS product and a mobility app in
  Spanish, English and a mix, 48 needs with 3-5 phrasings each and near-topic posts that are a
  different need; its ``split`` column separates the ``dev`` posts the rule was chosen on from the
  ``test`` posts kept aside;
* ``forum/demo/sample.json`` (shipped): the demo forum, 70 posts, 12 labelled groups;
* ``bug_corpus.jsonl`` from ``--data`` when it exists (not shipped: five bug trackers = five boards).

Configurations: the previous default (all-MiniLM-L6-v2 alone, threshold 0.66), issue 6's
``multilingual`` (route score, 0.44), and the default rule (:mod:`embeddings.grouping`: the ten
nearest candidates by route score re-scored by two encoders' agreement on whole texts and titles;
"sure" threshold, and the "maybe" threshold counting suggestions as grouped), and the default rule
followed by the worker's consolidation pass (:func:`simulate_consolidation`, replaying
forum/grouping/consolidation.py: the board clustered again, every post at once, by average link over
the nearest-neighbour graph; what a board shows once the pass has run, e.g. after
``forum demo load``). Each is replayed exactly as the application assigns posts
(:func:`embeddings.grouping.simulate_online`) in file order and in ``--orders`` random arrival
orders (seeded), scored by pairwise precision / recall / F1
(mean [min, max] over the orders). As-you-type recall@3: for every post with a duplicate on its
board, the other posts ranked by the route score as ``POST /api/posts/similar`` does (query = the
title, then title + body); a hit when a duplicate is among the first three. Hard cases: named pairs
of the demo and how often (of the orders) they share a cluster.

Vectors are cached on disk (``--cache-dir``, default ``/tmp/forum-bench-grouping``), keyed by model
and texts, never inside the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from embeddings.calibrate import _CachingEncoder
from embeddings.encoder import Encoder, SentenceTransformerEncoder, UniversalSentenceEncoder, text_for_embedding
from embeddings.grouping import (
    CANDIDATES,
    DEFAULT_DUPLICATE_THRESHOLD,
    DEFAULT_SUGGEST_THRESHOLD,
    GroupingRule,
    Recluster,
    simulate_online,
    title_of,
)
from embeddings.multilingual import DEFAULT_MULTILINGUAL_THRESHOLD, MultilingualEncoder

ROOT = Path(__file__).resolve().parent.parent
IDEAS = ROOT / "bench" / "data" / "forum_ideas.jsonl"
DEMO = ROOT / "forum" / "demo" / "sample.json"
DEFAULT_DATA = "../shared/data/dupes"
ENGLISH_THRESHOLD = 0.66  # the previous default's FORUM_DUPLICATE_THRESHOLD (docs/duplicates.md)

#: Demo pairs the issue names: (title prefix, title prefix, should they share a cluster?).
HARD_CASES: tuple[tuple[str, str, bool], ...] = (
    ("Quiero modo oscuro en la app", "Please add a dark theme", True),
    ("Please add a dark theme", "Dark colours would save my battery", True),
    ("Quiero modo oscuro en la app", "La app tarda mucho en abrir", False),
    ("Stop tracking my location", "Avisar cuando la estación de destino", False),
    ("Stop tracking my location", "Arrived at a full station", False),
    ("Reserve a car a day in advance", "Precio fijo para ir al aeropuerto", False),
)


@dataclass
class Board:
    """One forum: posts in file order with their labels, languages and vectors."""

    name: str
    posts: list[dict[str, Any]]
    truth: NDArray[np.intp]
    route: NDArray[np.float32]  # route score (what the nearest-neighbour search ranks by)
    grouping: NDArray[np.float32]  # the default rule's re-scoring
    minilm: NDArray[np.float32]  # all-MiniLM-L6-v2 cosine (the previous default)
    title_route: NDArray[np.float32]  # route score of each post's title (as typed) against whole posts
    languages: list[str] | None = None  # each post's detected language (the pass's word overlap reads both)
    texts: list[str] | None = None  # each post's text_for_embedding string

    @property
    def duplicate_pairs(self) -> int:
        return pair_count(self.truth)


def pair_count(*labels: NDArray[np.intp]) -> int:
    """Unordered pairs of items that share every one of ``labels`` (each: one label per item)."""
    _, counts = np.unique(np.stack(labels, axis=1), axis=0, return_counts=True)
    return int(np.sum(counts * (counts - 1) // 2))


def caching_multilingual(cache_dir: Path) -> MultilingualEncoder:
    """The default configuration, its two encoders' vectors cached on disk."""
    english: Encoder = _CachingEncoder(SentenceTransformerEncoder(), cache_dir)
    multilingual: Encoder = _CachingEncoder(UniversalSentenceEncoder(threads=1), cache_dir)
    return MultilingualEncoder(english, multilingual)


def read_ideas(path: Path = IDEAS, split: str | None = None) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]


def read_demo(path: Path = DEMO) -> list[dict[str, Any]]:
    posts = json.loads(path.read_text(encoding="utf-8"))["posts"]
    order = sorted(range(len(posts)), key=lambda i: (-posts[i]["days_ago"], i))  # oldest first
    return [posts[i] | {"id": posts[i]["key"], "board": "demo"} for i in order]


def read_bug_corpus(data: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (data / "bug_corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r | {"title": r["text"], "board": r["source"]} for r in rows]


def build_boards(posts: Sequence[dict[str, Any]], multi: MultilingualEncoder) -> list[Board]:
    """Encode every post once (all boards in one batch), then cut the score matrices per board."""
    texts = [text_for_embedding(p["title"], p.get("body")) for p in posts]
    emb = multi.embed(texts)
    title_langs = multi.detect_languages([title_of(t) for t in texts])
    english, use = multi.english.name, multi.multilingual.name
    boards: dict[str, list[int]] = {}
    for i, p in enumerate(posts):
        boards.setdefault(p["board"], []).append(i)
    out = []
    for name, rows in boards.items():
        langs = [emb.languages[i] for i in rows]
        vecs = {k: v[rows] for k, v in emb.vectors.items()}
        titles = {english: vecs[f"{english}:title"], use: vecs[f"{use}:title"]}
        labels = [posts[i]["group"] if posts[i]["group"] is not None else f"\0{posts[i]['id']}" for i in rows]
        _, truth = np.unique(np.array(labels, dtype=object).astype(str), return_inverse=True)
        out.append(
            Board(
                name=name,
                posts=[posts[i] for i in rows],
                truth=truth.astype(np.intp),
                route=multi.scorer.score_matrix(langs, vecs, langs, vecs),
                grouping=multi.grouping.score_matrix(langs, vecs, langs, vecs),
                minilm=vecs[english] @ vecs[english].T,
                title_route=multi.scorer.score_matrix([title_langs[i] for i in rows], titles, langs, vecs),
                languages=langs,
                texts=[texts[i] for i in rows],
            )
        )
    return out


# --------------------------------------------------------------------------- configurations

Config = tuple[str, str, float, GroupingRule]  # (label, score: route | grouping | minilm, threshold, rule)
# A fifth element ``True`` replays the consolidation pass after the online assignment (:func:`consolidated`).

PLAIN = GroupingRule(ENGLISH_THRESHOLD, ENGLISH_THRESHOLD, stand_out=None, candidates=1)
CONSOLIDATED = "default rule, sure, then the consolidation pass (what users see)"


def configs(sure: float = DEFAULT_DUPLICATE_THRESHOLD, maybe: float = DEFAULT_SUGGEST_THRESHOLD) -> list[Config]:
    return [
        ("all-MiniLM-L6-v2 alone (previous default)", "minilm", ENGLISH_THRESHOLD, PLAIN),
        ("multilingual route score (issue 6)", "route", DEFAULT_MULTILINGUAL_THRESHOLD, PLAIN),
        ("default rule, sure (automatic)", "grouping", sure, GroupingRule()),
        ("default rule, sure + maybe (suggestions too)", "grouping", maybe, GroupingRule()),
        (CONSOLIDATED, "grouping", sure, GroupingRule(), True),  # type: ignore[list-item]
    ]


def cluster(board: Board, config: Config, order: Sequence[int] | None = None) -> NDArray[np.intp]:
    """Cluster labels of the board's posts arriving in ``order``: the online rule, then (when the
    configuration asks for it) the consolidation pass."""
    _, score, threshold, rule, *consolidate = config
    scores = getattr(board, score)
    retrieval = board.minilm if score == "minilm" else board.route
    labels = simulate_online(scores, threshold, rule, retrieval=retrieval, order=order)
    if not any(consolidate):
        return labels
    return simulate_consolidation(
        scores,
        threshold,
        retrieval=retrieval,
        two_encoders=rule.stand_out is not None,
        languages=board.languages,
        texts=board.texts,
    )


def simulate_consolidation(
    scores: NDArray[np.floating],
    sure: float,
    *,
    retrieval: NDArray[np.floating] | None = None,
    two_encoders: bool = True,
    languages: Sequence[str] | None = None,
    texts: Sequence[str] | None = None,
) -> NDArray[np.intp]:
    """Replay ``Consolidator.run`` (forum/grouping/consolidation.py) over a whole board whose every post is
    new to the pass (e.g. right after ``forum demo load``): the board clustered again from scratch by
    :class:`embeddings.grouping.Recluster`, whatever the online clusters were (no decision by a person is
    simulated). ``scores``: grouping scores; ``retrieval``: what the nearest-neighbour search ranks by
    (default: ``scores``); ``two_encoders``: the default configuration (background term on) or a single
    encoder; ``languages`` and ``texts`` (``text_for_embedding``): the posts' own, for the pass's word
    overlap (left out when not given). Labels ``0..k-1``."""
    s = np.asarray(scores, dtype=np.float64)
    r = s if retrieval is None else np.asarray(retrieval, dtype=np.float64)
    rule = Recluster.for_rule(GroupingRule() if two_encoders else GroupingRule(1.0, 1.0, None), sure)
    return rule.board(s, r, languages, texts)


def pairwise(boards: Sequence[Board], preds: Sequence[NDArray[np.intp]]) -> dict[str, float | None]:
    tp = pred_pairs = true_pairs = 0
    for board, pred in zip(boards, preds, strict=True):
        tp += pair_count(pred, board.truth)
        pred_pairs += pair_count(pred)
        true_pairs += board.duplicate_pairs
    precision = tp / pred_pairs if pred_pairs else None
    recall = tp / true_pairs if true_pairs else None
    f1 = 2 * tp / (pred_pairs + true_pairs) if pred_pairs + true_pairs else None
    return {"precision": precision, "recall": recall, "f1": f1}


def orders_of(boards: Sequence[Board], n_orders: int, seed: int = 0) -> list[list[NDArray[np.intp]]]:
    rng = np.random.default_rng(seed)
    return [[rng.permutation(len(b.posts)) for b in boards] for _ in range(n_orders)]


def evaluate(boards: Sequence[Board], config: Config, orders: Sequence[Sequence[NDArray[np.intp]]]) -> dict[str, Any]:
    """Pairwise scores in file order and in each arrival order of ``orders``."""
    file_order = pairwise(boards, [cluster(b, config) for b in boards])
    runs = [pairwise(boards, [cluster(b, config, o) for b, o in zip(boards, order, strict=True)]) for order in orders]
    out: dict[str, Any] = {"config": config[0], "score": config[1], "threshold": config[2], "file_order": file_order}
    for key in ("precision", "recall", "f1"):
        values = [r[key] if r[key] is not None else (1.0 if key == "precision" else 0.0) for r in runs]
        out[key] = {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values))}
    return out


def recall_at(boards: Sequence[Board], k: int = 3, title_only: bool = False) -> float | None:
    """As-you-type recall@k: ranking by the route score, as ``POST /api/posts/similar``."""
    queries = hits = 0
    for board in boards:
        scores = (board.title_route if title_only else board.route).astype(np.float64).copy()
        np.fill_diagonal(scores, -np.inf)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        for i in range(len(board.posts)):
            if np.sum(board.truth == board.truth[i]) < 2:
                continue
            queries += 1
            hits += bool(np.any(board.truth[top[i]] == board.truth[i]))
    return hits / queries if queries else None


def hard_cases(board: Board, config: Config, orders: Sequence[Sequence[NDArray[np.intp]]]) -> list[dict[str, Any]]:
    """For each named pair of the demo: in how many arrival orders the two share a cluster."""
    titles = [p["title"] for p in board.posts]

    def find(prefix: str) -> int:
        return next(i for i, t in enumerate(titles) if t.startswith(prefix))

    preds = [cluster(board, config, order[0]) for order in orders]
    out = []
    for a, b, should in HARD_CASES:
        i, j = find(a), find(b)
        together = sum(int(p[i] == p[j]) for p in preds)
        out.append({"a": titles[i], "b": titles[j], "should_group": should, "together": together, "orders": len(preds)})
    return out


def sweep(boards: Sequence[Board], orders: Sequence[Sequence[NDArray[np.intp]]]) -> list[dict[str, Any]]:
    rows = []
    for t in np.round(np.arange(0.34, 0.60, 0.02), 2):
        r = evaluate(boards, ("sweep", "grouping", float(t), GroupingRule()), orders)
        rows.append({"t": float(t)} | {k: r[k]["mean"] for k in ("precision", "recall", "f1")})
    return rows


# --------------------------------------------------------------------------- report


def fmt(x: Any, digits: int = 3) -> str:
    """A number for a table: ``-`` for none, floats to ``digits`` places."""
    if x is None:
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _band(r: dict[str, Any], key: str) -> str:
    v = r[key]
    return f"{v['mean']:.3f} [{v['min']:.2f}, {v['max']:.2f}]"


def report(sets: dict[str, list[Board]], n_orders: int, corpus_orders: int, do_sweep: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, boards in sets.items():
        n = corpus_orders if name == "bug_corpus" else n_orders
        orders = orders_of(boards, n)
        pairs = sum(b.duplicate_pairs for b in boards)
        posts = sum(len(b.posts) for b in boards)
        print(f"\n## {name}: {posts} posts on {len(boards)} board(s), {pairs} duplicate pairs\n")
        print(f"| configuration | threshold | P ({n} orders) | R | F1 | file order P / R / F1 |")
        print("| --- | --- | --- | --- | --- | --- |")
        rows = []
        for config in configs():
            r = evaluate(boards, config, orders)
            rows.append(r)
            fo = r["file_order"]
            print(
                f"| {config[0]} | {config[2]:.2f} | {_band(r, 'precision')} | {_band(r, 'recall')} | {_band(r, 'f1')} "
                f"| {fmt(fo['precision'])} / {fmt(fo['recall'])} / {fmt(fo['f1'])} |"
            )
        r3, r3t = recall_at(boards), recall_at(boards, title_only=True)
        print(f"\nAs-you-type recall@3 (route score): title + body {fmt(r3)}, title only {fmt(r3t)}")
        results[name] = {"posts": posts, "pairs": pairs, "configs": rows, "recall_at_3": r3, "recall_at_3_title": r3t}
        if do_sweep:
            results[name]["sweep"] = sw = sweep(boards, orders)
            print("\n| t | P | R | F1 |\n| --- | --- | --- | --- |")
            for row in sw:
                print(f"| {row['t']:.2f} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} |")
        if name == "demo":
            print("\nHard cases (demo): orders in which the two posts share a cluster\n")
            print("| pair | should | " + " | ".join(c[0] for c in configs()) + " |")
            print("| --- | --- |" + " --- |" * len(configs()))
            cases = {c[0]: hard_cases(boards[0], c, orders) for c in configs()}
            results[name]["hard_cases"] = cases
            for k, (a, b, should) in enumerate(HARD_CASES):
                cells = " | ".join(f"{cases[c[0]][k]['together']}/{n}" for c in configs())
                print(f"| {a[:32]} / {b[:32]} | {'together' if should else 'apart'} | {cells} |")
    return results


# --------------------------------------------------------------------------- through the app


def through_app(posts: Sequence[dict[str, Any]], multi: MultilingualEncoder, data_dir: Path, burst: int = 20) -> None:
    """The application's own code on one board: every post but the last ``burst`` is stored and grouped
    online (``embed_stale_now``, the default embedder, its vectors from the cache), then one consolidation
    pass over everything (as ``forum demo load`` ends); then ``burst`` new posts arrive and one incremental
    pass runs (as the worker does after a burst). Prints the pairwise scores of the clusters in the database
    and how long each pass took."""
    import asyncio
    import time
    import uuid

    from sqlalchemy import insert, text
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from forum import database
    from forum.encoding import PostEmbedder
    from forum.grouping.thresholds import Thresholds
    from forum.jobs import consolidate_now, embed_stale_now
    from forum.models import Post, User

    embedder = PostEmbedder(multi)
    thresholds = Thresholds.of(DEFAULT_DUPLICATE_THRESHOLD)
    url = database.start_embedded_postgres(data_dir / "postgres", "forum_bench_grouping")
    database.upgrade(url)

    async def run() -> None:
        engine = create_async_engine(url, pool_size=2)
        maker = async_sessionmaker(engine, expire_on_commit=False)
        author = uuid.uuid4()
        async with maker() as session, session.begin():
            await session.execute(text("TRUNCATE post, cluster, user_account, grouping_setting CASCADE"))
            user = {"id": author, "email": "bench@example.com", "password_hash": "x", "display_name": "bench"}
            await session.execute(insert(User), [user])
        ids = [uuid.uuid4() for _ in posts]

        async def add(rows: range) -> None:
            async with maker() as session, session.begin():
                values = [
                    {"id": ids[i], "kind": "idea", "title": posts[i]["title"][:160], "body": posts[i].get("body") or ""}
                    for i in rows
                ]
                await session.execute(insert(Post), [v | {"author_id": author} for v in values])

        async def clusters() -> NDArray[np.intp]:
            async with maker() as session:
                found = dict(
                    (
                        await session.execute(
                            text("SELECT post_id, cluster_id FROM cluster_membership WHERE state <> 'rejected'")
                        )
                    ).all()
                )
            names = {c: k for k, c in enumerate(dict.fromkeys(found.values()))}
            return np.array([names.get(found.get(i), len(names) + k) for k, i in enumerate(ids)], dtype=np.intp)

        n = len(posts) - burst
        await add(range(n))
        t = time.perf_counter()
        await embed_stale_now(url, embedder, thresholds, consolidate=False)
        online = time.perf_counter() - t
        t = time.perf_counter()
        full = await consolidate_now(maker, embedder, thresholds, everything=True)
        full_seconds = time.perf_counter() - t
        await add(range(n, len(posts)))
        await embed_stale_now(url, embedder, thresholds, consolidate=False)
        t = time.perf_counter()
        step = await consolidate_now(maker, embedder, thresholds)
        step_seconds = time.perf_counter() - t
        labels = await clusters()
        truth = np.unique(
            np.array([p["group"] or f"\0{p['id']}" for p in posts], dtype=object).astype(str), return_inverse=True
        )[1]
        board = Board("app", list(posts), truth.astype(np.intp), *(np.zeros((0, 0), np.float32),) * 4)
        result = pairwise([board], [labels])
        print(
            f"through the app ({len(posts)} posts): online grouping {online:.1f} s; a pass over all {n} posts "
            f"{full_seconds:.1f} s ({full.rehomed} moved, {full.merged} merged); after {burst} new posts an "
            f"incremental pass {step_seconds:.2f} s ({step.posts} posts looked at, {step.rehomed} moved); "
            f"clusters in the database: P {fmt(result['precision'])} / R {fmt(result['recall'])} / "
            f"F1 {fmt(result['f1'])}"
        )
        await engine.dispose()

    try:
        asyncio.run(run())
    finally:
        database.release_embedded_postgres()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.forum_grouping", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(DEFAULT_DATA), help="DEV data dir with bug_corpus.jsonl")
    parser.add_argument("--orders", type=int, default=20, help="random arrival orders per forum set (default 20)")
    parser.add_argument("--corpus-orders", type=int, default=5, help="random arrival orders on bug_corpus (default 5)")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/forum-bench-grouping"))
    parser.add_argument("--sweep", action="store_true", help="also print the default score's threshold sweep")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    parser.add_argument(
        "--through-app",
        metavar="BOARD",
        help="also run the app's own grouping and consolidation on one board (demo, saas, mobility, or a "
        "bug_corpus source such as sj-firefox) in an embedded PostgreSQL, and time the passes",
    )
    args = parser.parse_args(argv)

    multi = caching_multilingual(args.cache_dir)
    if args.through_app:
        every = read_ideas() + read_demo()
        if (args.data / "bug_corpus.jsonl").exists():
            every += read_bug_corpus(args.data)
        board = [p for p in every if p["board"] == args.through_app]
        if not board:
            parser.error(f"no board {args.through_app!r}")
        through_app(board, multi, args.cache_dir / "app")
        return 0
    sets = {
        "forum ideas, dev split": build_boards(read_ideas(split="dev"), multi),
        "forum ideas, test split": build_boards(read_ideas(split="test"), multi),
        "demo": build_boards(read_demo(), multi),
    }
    if (args.data / "bug_corpus.jsonl").exists():
        sets["bug_corpus"] = build_boards(read_bug_corpus(args.data), multi)
    else:
        print(f"({args.data}/bug_corpus.jsonl not found: bug_corpus skipped)", file=sys.stderr)
    print(f"# Grouping on idea-forum posts ({multi.name}; candidates re-scored: {CANDIDATES})")
    results = report(sets, args.orders, args.corpus_orders, args.sweep)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tests for embeddings.evaluation: metrics on hand-computed examples and both file formats.

The labelled samples are made up here and written to ``tmp_path``; scoring uses
the deterministic :class:`HashingEncoder`, so no model or shared data is needed.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embeddings import (
    HashingEncoder,
    MultilingualEncoder,
    average_precision,
    best_f1,
    evaluate_file,
    format_json_line,
    roc_auc,
    spearman,
    text_for_embedding,
)

# The classic example from scikit-learn's documentation.
SCORES = [0.1, 0.4, 0.35, 0.8]
LABELS = [0, 0, 1, 1]


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


class CountingEncoder(HashingEncoder):
    """HashingEncoder that records what it was asked to encode."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return super().encode(texts)


# --------------------------------------------------------------------------- metrics


def test_roc_auc_hand_computed() -> None:
    # Positive/negative pairs ordered correctly: (0.35>0.1), (0.8>0.1), (0.8>0.4); wrong: (0.35<0.4).
    assert roc_auc(SCORES, LABELS) == pytest.approx(3 / 4)
    assert roc_auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert roc_auc([0.1, 0.8, 0.9], [True, False, False]) == 0.0
    # A tie between a positive and a negative counts one half.
    assert roc_auc([0.5, 0.5, 0.2], [1, 0, 0]) == pytest.approx((1 + 0.5) / 2)


def test_average_precision_hand_computed() -> None:
    # Thresholds 0.8, 0.4, 0.35, 0.1: recall steps 0.5 at P=1 and 0.5 at P=2/3.
    assert average_precision(SCORES, LABELS) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # Tied scores form one threshold (no optimistic ordering inside the tie):
    # t=0.5 -> TP=1, FP=1 (P=1/2, R=1/2); t=0.2 -> TP=2, FP=1 (P=2/3, R=1).
    assert average_precision([0.5, 0.5, 0.2], [1, 0, 1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert average_precision([0.3, 0.2, 0.1], [1, 1, 1]) == 1.0


def test_best_f1_hand_computed() -> None:
    # F1 by threshold: 0.8 -> 2/3, 0.4 -> 1/2, 0.35 -> 4/5 (P=2/3, R=1), 0.1 -> 2/3.
    f1, threshold, precision, recall = best_f1(SCORES, LABELS)
    assert f1 == pytest.approx(0.8)
    assert threshold == 0.35
    assert precision == pytest.approx(2 / 3)
    assert recall == 1.0
    # F1 = 2 TP / (TP + FP + P): 0.9 -> 2/3, 0.8 -> 1/2, 0.7 -> 2/5, 0.1 -> 2/3; the tie goes
    # to the higher threshold.
    assert best_f1([0.9, 0.8, 0.7, 0.1], [1, 0, 0, 1])[:2] == (pytest.approx(2 / 3), 0.9)


def test_spearman_hand_computed() -> None:
    # One swapped neighbour pair: 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / 60.
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    # Ties get average ranks: x ranks (1, 2.5, 2.5, 4) -> r = 4.5 / sqrt(4.5 * 5).
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(3 / math.sqrt(10))


def test_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError):
        roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError):
        average_precision([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError):
        best_f1([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError):
        roc_auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError):
        spearman([1, 1, 1], [1, 2, 3])


# --------------------------------------------------------------------------- pair files

# Customer feature requests: each duplicate pair shares most words; each negative is unrelated.
PAIRS = [
    ("Add a dark mode", "Dark mode please", True),
    ("Export invoices as PDF", "PDF export for invoices", True),
    ("Sync with Google Calendar", "Google Calendar sync", True),
    ("Allow login with two-factor authentication", "Two-factor authentication for login", True),
    ("Bulk delete old messages", "Delete old messages in bulk", True),
    ("Add a dark mode", "Export invoices as PDF", False),
    ("Sync with Google Calendar", "Bulk delete old messages", False),
    ("Allow login with two-factor authentication", "Slack notifications for new orders", False),
    ("Export invoices as PDF", "Keyboard shortcuts for the editor", False),
    ("Bulk delete old messages", "Customisable dashboard widgets", False),
    ("Dark mode please", "Faster search results", False),
    ("PDF export for invoices", "Offline mode for the mobile app", False),
]


def test_pair_file_scores_paraphrases_above_unrelated(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"a": a, "b": b, "duplicate": d} for a, b, d in PAIRS])
    result = evaluate_file(path, HashingEncoder())

    assert result["file"] == str(path)
    assert result["kind"] == "pairs"
    assert result["encoder"] == "hashing-test"
    assert (result["n"], result["positives"]) == (12, 5)
    # Every duplicate pair out-scores every unrelated pair.
    assert result["roc_auc"] == 1.0
    assert result["average_precision"] == 1.0
    assert (result["best_f1"], result["precision"], result["recall"]) == (1.0, 1.0, 1.0)
    # The threshold is the lowest duplicate cosine, well above unrelated pairs.
    encoder = HashingEncoder()
    cosines = [float(np.dot(*encoder.encode([a, b]))) for a, b, _ in PAIRS]
    assert result["threshold"] == pytest.approx(min(c for c, (_, _, d) in zip(cosines, PAIRS, strict=True) if d))
    assert result["threshold"] > max(c for c, (_, _, d) in zip(cosines, PAIRS, strict=True) if not d) + 0.2
    assert "spearman" not in result


def test_pair_file_uses_bodies_and_dedupes_texts(tmp_path: Path) -> None:
    rows = [
        # Titles share nothing; only the bodies reveal the duplicate.
        {
            "a": "Night owls",
            "a_body": "Please add a dark mode to the app",
            "b": "Eyes hurt",
            "b_body": "Dark mode for the app please",
            "duplicate": True,
        },
        {
            "a": "Night owls",
            "a_body": "Please add a dark mode to the app",
            "b": "Invoices",
            "b_body": "Export invoices as PDF files",
            "duplicate": False,
        },
        {"a": "Eyes hurt", "b": "Invoices", "duplicate": False},
    ]
    encoder = CountingEncoder()
    result = evaluate_file(write_jsonl(tmp_path / "bodies.jsonl", rows), encoder)

    a0 = text_for_embedding("Night owls", "Please add a dark mode to the app")
    b0 = text_for_embedding("Eyes hurt", "Dark mode for the app please")
    assert result["threshold"] == pytest.approx(float(np.dot(*HashingEncoder().encode([a0, b0]))), abs=1e-6)
    assert result["roc_auc"] == 1.0
    # One encode call; each of the 5 distinct texts once ("Night owls ..." appears twice).
    assert len(encoder.calls) == 1
    b1 = text_for_embedding("Invoices", "Export invoices as PDF files")
    assert sorted(encoder.calls[0]) == sorted({a0, b0, b1, "Eyes hurt", "Invoices"})
    assert result["texts"] == 5


def test_pair_file_with_scores_reports_spearman(tmp_path: Path) -> None:
    # Graded similarity, like STS: more shared words, higher score.
    rows = [
        {"a": "Add a dark mode", "b": "Add a dark mode", "score": 5.0},
        {"a": "Add a dark mode to the app", "b": "Add a dark mode", "score": 4.0},
        {"a": "Add a dark theme", "b": "Add a dark mode", "score": 3.0},
        {"a": "Add a theme", "b": "Add a dark mode", "score": 2.0},
        {"a": "Export invoices as PDF", "b": "Add a dark mode", "score": 0.0},
    ]
    for row in rows:
        row["duplicate"] = row["score"] >= 4.0
    result = evaluate_file(write_jsonl(tmp_path / "sts.jsonl", rows), HashingEncoder())
    assert result["positives"] == 2
    assert result["spearman"] == pytest.approx(1.0)
    assert result["roc_auc"] == 1.0


def test_single_class_pair_file_has_no_ranking_metrics(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pos.jsonl", [{"a": "Dark mode", "b": "Dark theme", "duplicate": True}])
    result = evaluate_file(path, HashingEncoder())
    assert result["positives"] == 1
    assert result["roc_auc"] is None and result["threshold"] is None


# --------------------------------------------------------------------------- corpus files


def corpus_rows() -> list[dict[str, Any]]:
    def item(id_: str, text: str, group: str, source: str, body: str | None = None) -> dict[str, Any]:
        row = {"id": id_, "text": text, "group": group, "source": source}
        if body is not None:
            row["body"] = body
        return row

    return [
        # Board "app": two easy groups, one group whose members share no words, two singletons.
        item("a1", "Add a dark mode", "dark", "app"),
        item("a2", "Dark mode please", "dark", "app"),
        item("a3", "Export invoices as PDF", "pdf", "app"),
        item("a4", "PDF export of invoices", "pdf", "app"),
        item("a5", "Support two-factor login", "2fa", "app"),
        item("a6", "Please add 2FA", "2fa", "app"),
        item("a7", "Slack integration", "a7", "app"),
        item("a8", "Calendar sync", "cal", "app"),
        # Board "web": b1 is textually identical to a1 but in another group; it must not be
        # retrieved for app queries. "cal" has one member per board, so it yields no query.
        item("b1", "Add a dark mode", "web-dark", "web"),
        item("b2", "Dark mode for the website", "web-dark", "web", body="The white background is too bright"),
        item("b3", "Invoice PDF export", "b3", "web"),
        item("b4", "Calendar sync", "cal", "web"),
    ]


def test_corpus_file_recall_within_source(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "corpus.jsonl", corpus_rows())
    result = evaluate_file(path, HashingEncoder())

    assert result["kind"] == "corpus"
    assert result["n"] == 12
    # Queries: a1-a6 and b1-b2 (a7, b3 are singletons; "cal" has one member per source).
    assert result["queries"] == 8
    # a1<->a2, a3<->a4, b1<->b2 find each other first; a5 and a6 share no words, and
    # a6 ("Please add 2FA") is closer to a2/a1 ("please", "add"), so both miss at k=1.
    assert result["recall_at_1"] == pytest.approx(6 / 8)
    # Each board has at most 7 other items, so at k=10 every query hits.
    assert result["recall_at_10"] == 1.0
    assert result["recall_at_1"] <= result["recall_at_5"] <= result["recall_at_10"]


def test_corpus_recall_at_1_matches_brute_force(tmp_path: Path) -> None:
    rows = corpus_rows()
    result = evaluate_file(write_jsonl(tmp_path / "corpus.jsonl", rows), HashingEncoder())
    vectors = HashingEncoder().encode([text_for_embedding(r["text"], r.get("body")) for r in rows])
    hits = queries = 0
    for i, row in enumerate(rows):
        same_board = [j for j, r in enumerate(rows) if r["source"] == row["source"] and j != i]
        if not any(rows[j]["group"] == row["group"] for j in same_board):
            continue
        queries += 1
        best = max(same_board, key=lambda j: float(vectors[i] @ vectors[j]))
        hits += rows[best]["group"] == row["group"]
    assert (result["queries"], result["recall_at_1"]) == (queries, hits / queries)


# --------------------------------------------------------------------------- format handling


def test_unknown_format_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        evaluate_file(write_jsonl(tmp_path / "x.jsonl", [{"title": "Dark mode"}]), HashingEncoder())
    with pytest.raises(ValueError, match="lacks"):
        evaluate_file(write_jsonl(tmp_path / "y.jsonl", [{"a": "x", "b": "y"}]), HashingEncoder())
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no records"):
        evaluate_file(empty, HashingEncoder())


def test_format_json_line_rounds_floats() -> None:
    line = format_json_line({"file": "p.jsonl", "roc_auc": 0.876543, "n": 3, "threshold": None, "x": "é"})
    assert "\n" not in line
    assert json.loads(line) == {"file": "p.jsonl", "roc_auc": 0.8765, "n": 3, "threshold": None, "x": "é"}


# --------------------------------------------------------------------------- multilingual: compare mode

BILINGUAL_PAIRS = [
    ("Add a dark mode", "Dark mode please", True),
    ("Quiero modo oscuro en la app", "Modo oscuro para la app, por favor", True),
    ("Exportar las facturas en PDF", "Export invoices as PDF", True),
    ("Add a dark mode", "Export invoices as PDF", False),
    ("Quiero modo oscuro en la app", "Exportar las facturas en PDF", False),
    ("Sync with Google Calendar", "Me cobraron dos veces el mismo viaje", False),
]


def _multi(english: HashingEncoder | None = None) -> MultilingualEncoder:
    return MultilingualEncoder(
        english or HashingEncoder(dim=384, name="hashing-test"), HashingEncoder(dim=512, name="hashing-multi")
    )


def test_compare_mode_on_pairs_returns_one_result_per_design(tmp_path: Path) -> None:
    rows = [{"a": a, "b": b, "duplicate": d} for a, b, d in BILINGUAL_PAIRS]
    path = write_jsonl(tmp_path / "bilingual.jsonl", rows)
    english = CountingEncoder()
    results = evaluate_file(path, _multi(english), compare=True)

    assert [r["design"] for r in results] == ["english", "multilingual", "combined"]
    names = ["hashing-test", "hashing-multi", "multilingual:hashing-test+hashing-multi"]
    assert [r["encoder"] for r in results] == names
    assert all(r["file"] == str(path) and r["kind"] == "pairs" and r["n"] == 6 for r in results)
    # The English encoder alone gives exactly the single-encoder evaluation.
    single = evaluate_file(path, HashingEncoder())
    for key in ("roc_auc", "average_precision", "best_f1", "threshold"):
        assert results[0][key] == single[key]
    # Each encoder encoded each distinct text once, in one call.
    assert len(english.calls) == 1 and len(english.calls[0]) == len({t for a, b, _ in BILINGUAL_PAIRS for t in (a, b)})
    combined = results[2]
    assert sum(combined["routes"].values()) == 6
    assert combined["routes"]["english"] == 2  # the two English-English pairs
    assert set(combined["languages"]) <= {"en", "es", "und"}
    assert combined["detect_seconds"] >= 0 and combined["texts"] == results[0]["texts"]
    json.loads(format_json_line(combined))  # serialisable, nested dicts included


def test_combined_score_of_an_english_file_is_the_english_encoders(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"a": a, "b": b, "duplicate": d} for a, b, d in PAIRS])
    english, _, combined = evaluate_file(path, _multi(), compare=True)
    assert combined["routes"] == {"english": len(PAIRS)}
    for key in ("roc_auc", "average_precision", "best_f1", "threshold", "precision", "recall"):
        assert combined[key] == pytest.approx(english[key], abs=1e-6)
    # Without compare, the multilingual configuration is scored by its combined score.
    alone = evaluate_file(path, _multi())
    assert alone["design"] == "combined" and alone["average_precision"] == pytest.approx(combined["average_precision"])


def test_compare_mode_with_a_single_encoder_is_a_one_element_list(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"a": a, "b": b, "duplicate": d} for a, b, d in PAIRS])
    results = evaluate_file(path, HashingEncoder(), compare=True)
    assert isinstance(results, list) and len(results) == 1
    assert results[0] == evaluate_file(path, HashingEncoder()) | {
        k: results[0][k] for k in ("encode_seconds", "texts_per_second")
    }


def test_compare_mode_on_a_corpus_matches_brute_force(tmp_path: Path) -> None:
    rows = [
        *corpus_rows(),
        {"id": "s1", "text": "Quiero modo oscuro en la app", "group": "dark", "source": "app"},
        {"id": "s2", "text": "Facturas en PDF, por favor", "group": "pdf", "source": "app"},
    ]
    path = write_jsonl(tmp_path / "corpus.jsonl", rows)
    multi = _multi()
    english, multilingual, combined = evaluate_file(path, multi, compare=True)
    assert [r["kind"] for r in (english, multilingual, combined)] == ["corpus"] * 3
    assert english["queries"] == multilingual["queries"] == combined["queries"] == 10
    assert english["recall_at_1"] == evaluate_file(path, HashingEncoder())["recall_at_1"]
    assert "es" in combined["languages"]

    posts = multi.embed([text_for_embedding(r["text"], r.get("body")) for r in rows])
    scores = multi.score_matrix(posts)
    hits = queries = 0
    for i, row in enumerate(rows):
        same_board = [j for j, r in enumerate(rows) if r["source"] == row["source"] and j != i]
        if not any(rows[j]["group"] == row["group"] for j in same_board):
            continue
        queries += 1
        best = max(same_board, key=lambda j: (float(scores[i, j]), -j))
        hits += rows[best]["group"] == row["group"]
    assert (combined["queries"], combined["recall_at_1"]) == (queries, hits / queries)
    assert combined["recall_at_1"] <= combined["recall_at_5"] <= combined["recall_at_10"]


def test_a_corpus_reports_what_the_default_grouping_makes_of_each_board(tmp_path: Path) -> None:
    """The combined result of a corpus file scores the default grouping's clusters pairwise against the
    groups, online (file order) and after the consolidation pass, each board apart: the same numbers as
    replaying simulate_online and Recluster (with its word overlap) on the board's own scores here."""
    from embeddings.grouping import DEFAULT_DUPLICATE_THRESHOLD, GroupingRule, Recluster, simulate_online

    rows = [
        *corpus_rows(),
        {"id": "a9", "text": "Add a dark mode please", "group": "dark", "source": "app"},
        {"id": "b5", "text": "Dark mode for the website please", "group": "web-dark", "source": "web"},
    ]
    path = write_jsonl(tmp_path / "corpus.jsonl", rows)
    multi = _multi()
    *_, clusters = evaluate_file(path, multi, compare=True)

    posts = multi.embed([text_for_embedding(r["text"], r.get("body")) for r in rows])
    right = {"online": 0, "clustered": 0}
    predicted = {"online": 0, "clustered": 0}
    labelled = 0
    for source in ("app", "web"):
        idx = [i for i, r in enumerate(rows) if r["source"] == source]
        langs = [posts.languages[i] for i in idx]
        vecs = {name: v[idx] for name, v in posts.vectors.items()}
        g = multi.grouping.score_matrix(langs, vecs, langs, vecs)
        route = multi.scorer.score_matrix(langs, vecs, langs, vecs)
        made = {
            "online": simulate_online(g, DEFAULT_DUPLICATE_THRESHOLD, GroupingRule(), retrieval=route),
            "clustered": Recluster.for_rule(GroupingRule(), DEFAULT_DUPLICATE_THRESHOLD).board(
                g, route, langs, [text_for_embedding(rows[i]["text"], rows[i].get("body")) for i in idx]
            ),
        }
        for a, b in itertools.combinations(range(len(idx)), 2):
            same = rows[idx[a]]["group"] == rows[idx[b]]["group"]
            labelled += same
            for name, labels in made.items():
                together = labels[a] == labels[b]
                predicted[name] += together
                right[name] += together and same
    for name, prefix in (("online", "online_clusters"), ("clustered", "clusters")):
        assert predicted[name] > 0, "the check is not vacuous: something was grouped"
        assert clusters[f"{prefix}_precision"] == pytest.approx(right[name] / predicted[name])
        assert clusters[f"{prefix}_recall"] == pytest.approx(right[name] / labelled)
    assert clusters["clusters_recall"] > 0

"""The maintenance commands as an operator runs them: demo, embeddings rebuild, jobs, eval."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e import forum_cli

PAIRS = [
    {"a": "Dark mode for the app", "b": "Please add a dark mode to the app", "duplicate": True},
    {"a": "Dark mode for the app", "b": "Export invoices as PDF", "duplicate": False},
    {"a": "Pay with Apple Pay", "b": "Support Apple Pay and Google Pay payments", "duplicate": True},
    {"a": "Pay with Apple Pay", "b": "Offline maps in tunnels", "duplicate": False},
    {"a": "Offline maps in tunnels", "b": "Maps that work offline underground", "duplicate": True},
    {"a": "Offline maps in tunnels", "b": "Family accounts with shared payment", "duplicate": False},
]
CORPUS = [
    {"id": "1", "text": "Dark mode for the app", "group": "g1", "source": "board"},
    {"id": "2", "text": "Please add a dark mode to the app", "group": "g1", "source": "board"},
    {"id": "3", "text": "Pay with Apple Pay", "group": "g2", "source": "board"},
    {"id": "4", "text": "Support Apple Pay payments", "group": "g2", "source": "board"},
    {"id": "5", "text": "Export invoices as PDF", "group": "g3", "source": "board"},
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_duplicates_prints_one_json_line_per_file(env, tmp_path: Path) -> None:
    pairs, corpus = _jsonl(tmp_path / "pairs.jsonl", PAIRS), _jsonl(tmp_path / "corpus.jsonl", CORPUS)
    r = forum_cli("eval", "duplicates", str(pairs), str(corpus), env=env)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 2
    pair_result, corpus_result = lines
    for key in ("roc_auc", "average_precision", "best_f1", "threshold", "precision", "recall"):
        assert 0.0 <= pair_result[key] <= 1.0 or key == "threshold", key
    assert pair_result["roc_auc"] == 1.0, "the stand-in encoder separates these easy pairs"
    assert corpus_result["recall_at_1"] == 1.0 and corpus_result["recall_at_5"] == 1.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"neither": "format"}\n')
    r = forum_cli("eval", "duplicates", str(bad), env=env)
    assert r.returncode != 0 and "bad.jsonl" in r.stderr


def test_eval_duplicates_compares_each_encoder_with_the_combined_design(env, tmp_path: Path) -> None:
    pairs = _jsonl(tmp_path / "pairs.jsonl", PAIRS)
    mixed = _jsonl(
        tmp_path / "mixed.jsonl",
        [*PAIRS, {"a": "Quiero modo oscuro en la aplicación", "b": "Modo oscuro en la aplicación", "duplicate": True}],
    )
    r = forum_cli("eval", "duplicates", "--model", "multilingual-hashing", str(pairs), str(mixed), env=env)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(Path(x["file"]).name, x["design"]) for x in lines] == [
        (name, design) for name in ("pairs.jsonl", "mixed.jsonl") for design in ("english", "multilingual", "combined")
    ]
    english, multilingual, combined = lines[:3]
    assert combined["average_precision"] == english["average_precision"]  # English pairs: the English encoder
    assert multilingual["encoder"] == "hashing-multilingual-test"
    assert lines[5]["routes"]["use-same"] == 1  # the Spanish pair took the multilingual route

    table = forum_cli("eval", "duplicates", "--model", "multilingual-hashing", "--format", "table", str(pairs), env=env)
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if line.startswith("| pairs.jsonl")]
    assert len(rows) == 3 and "combined" in rows[2]


def test_demo_load_rebuild_and_jobs(env) -> None:
    r = forum_cli("demo", "load", "--no-embed", env=env)
    assert r.returncode == 0, r.stderr
    assert "loaded 28 users, 70 posts" in r.stdout
    assert "already loaded" in forum_cli("demo", "load", "--no-embed", env=env).stdout
    r = forum_cli("embeddings", "rebuild", env=env)
    assert r.returncode == 0, r.stderr
    assert "embedded 70 post(s)" in r.stdout
    assert "embedded 0 post(s)" in forum_cli("embeddings", "rebuild", env=env).stdout, "nothing is embedded twice"
    assert forum_cli("jobs", "failed", env=env).stdout.strip() == "no failed jobs"
    r = forum_cli("jobs", "retry", env=env)
    assert r.returncode != 0 and "--all" in r.stderr
    assert "re-queued 0 job(s)" in forum_cli("jobs", "retry", "--all", env=env).stdout
    users = forum_cli("demo", "users", env=env).stdout.splitlines()
    assert len(users) == 28 and any(line.split()[-1] == "admin" for line in users)

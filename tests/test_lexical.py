"""The consolidation pass's word overlap (embeddings.lexical) and how Recluster uses it. No models: handmade
texts and scores (the real models' numbers are in docs/duplicates.md, and tests/test_demo_grouping.py checks
the demo through `forum demo load` with them)."""

from __future__ import annotations

import numpy as np
import pytest

from embeddings.grouping import GroupingRule, Recluster
from embeddings.lexical import LexicalCheck, identifiers, stems


def test_stems_fold_accents_drop_stop_words_and_cut_words() -> None:
    assert stems("Please add a dark colour scheme") == {"dark", "colou", "schem"}
    assert stems("Dark colours would save my battery") == {"dark", "colou", "save", "batte"}
    assert stems("Avisar cuando la estación está llena") == {"avisa", "estac", "llena"}  # "está" is a stop word
    assert stems("a an the 42") == frozenset()


def test_identifiers_are_tokens_with_a_digit_an_underscore_or_an_inner_dot() -> None:
    assert identifiers("Backport HADOOP-17837 to branch-3.2") == {"hadoop-17837", "branch-3.2"}
    assert identifiers("Replace deprecated gdk_screen_height()") == {"gdk_screen_height"}
    assert identifiers("www.nu.nl - The page is blank.") == {"www.nu.nl"}
    assert identifiers("Please add a dark theme. Thanks") == frozenset()


def test_english_pairs_move_by_their_word_overlap_and_other_pairs_do_not() -> None:
    check = LexicalCheck()
    texts = [
        "Dark mode for the dashboard",
        "Dashboard dark mode",
        "Export invoices as PDF",
        "Modo oscuro para el panel",
        "Modo oscuro del panel",
    ]
    languages = ["en", "en", "en", "es", "es"]
    scores = np.full((5, 5), 0.5)
    moved = check.adjust(scores, languages, texts) - scores
    assert moved[0, 1] == pytest.approx(check.weight * (1 - check.neutral))  # the same words: +0.15
    assert moved[0, 2] == pytest.approx(-check.weight * check.neutral)  # none shared: -0.05
    assert moved[3, 4] == 0 and moved[0, 3] == 0  # Spanish and cross-language pairs are left alone
    assert np.allclose(moved, moved.T)
    with pytest.raises(ValueError):
        check.adjust(scores, languages[:4], texts)


def test_titles_naming_different_identifiers_conflict() -> None:
    check = LexicalCheck(weight=0.0)
    texts = [
        "Update the year to 2023\nThe NOTICE file still says 2022",
        "Update the year to 2024",
        "Update the copyright year to 2024",
        "Update the year in the NOTICE file",
    ]
    moved = check.adjust(np.zeros((4, 4)), ["en"] * 4, texts)
    assert moved[0, 1] == pytest.approx(-check.conflict)  # 2023 vs 2024: two different chores
    assert moved[1, 2] == 0  # both name 2024
    assert moved[0, 3] == 0  # only one title names an identifier (bodies are not read)


def test_the_pass_keeps_templated_chores_apart_on_a_crowded_board() -> None:
    """14 posts that all look alike (0.6: a templated board, background 0.6): two chores a year apart score
    0.70, which stands out of the background by 0.10 (> 0.08); two reports of one chore score the same.
    Both pairs share all their words (+0.15), but 2023 vs 2024 conflict (-0.2): that pair no longer stands
    out and stays apart, the other merges; without the texts both merge."""
    n = 14
    g = np.full((n, n), 0.6)
    np.fill_diagonal(g, 1.0)
    g[0, 1] = g[1, 0] = g[2, 3] = g[3, 2] = 0.70
    texts = ["Update the year to 2023", "Update the year to 2024", "Upgrade jetty to 9.4.51", "Jetty 9.4.51 upgrade"]
    texts += [f"Flaky test number {i}" for i in range(n - 4)]
    rule = Recluster.for_rule(GroupingRule(), 0.44)
    assert rule.lexical == LexicalCheck()
    without = rule.board(g, g)
    assert without[0] == without[1] and without[2] == without[3]
    with_words = rule.board(g, g, ["en"] * n, texts)
    assert with_words[0] != with_words[1] and with_words[2] == with_words[3]
    assert Recluster.for_rule(GroupingRule(1.0, 1.0, None), 0.44).lexical is None  # one encoder: plain rule

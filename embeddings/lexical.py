"""Words two posts share, as a second opinion on a pair's grouping score (pure Python and numpy).

The worker's consolidation pass (:class:`embeddings.grouping.Recluster`) scores every pair of a
neighbourhood by two encoders. On a board where many reports look alike (templated bug reports,
recurring chores: "Update the year to 2024", "Backport HADOOP-17837 to branch-3.2") the encoders place
posts about different things as close as real duplicates, while the words tell them apart.
:class:`LexicalCheck` moves a pair's score by what the texts say literally:

* **word overlap** (English pairs only): the cosine of the two posts' sets of content-word stems
  (accents and case folded, stop words dropped, each word cut to its first five letters: a stem that
  works well enough in English and Spanish, "colours"/"colour", "exportar"/"export"). A pair gains
  ``weight * (overlap - neutral)``: two posts that share most of their words gain up to 0.15, two
  that share none lose 0.05. Across languages words rarely meet, so pairs with a non-English post are
  left alone.
* **identifier conflict**: both titles name identifiers (a token with a digit, an underscore or a dot
  inside: versions, years, ticket keys, file and host names) and none of them is shared. Such a pair
  loses ``conflict``.

Each value depends on the two texts only, so the application and the replay compute the same numbers.
How the constants were chosen, and what they measure: docs/duplicates.md ("Word overlap").
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .language import is_english_route

__all__ = ["STOPWORDS", "LexicalCheck", "fold", "identifiers", "stems"]

#: English and Spanish words that say nothing about a post's need (folded: no accents).
STOPWORDS = frozenset(
    """
    a an and any are as at be been but by can could do does for from get had has have i if in into is
    it its just let like make me more my need no not of on or our please should so some than that the
    their them then there these they this to too us use very want was we were what when where which while
    who why will with would you your also add allow able way
    al algo como con cuando de del desde el ella ellos en entre es esta este esto estos favor hay la las
    le les lo los mas me mi mis muy no nos o para pero poder por porque puede que quiero se sea ser si sin
    sobre su sus tambien tener tiene todo un una uno unos y ya yo poner
    """.split()
)
_WORD = re.compile(r"[^\W\d_][\w'-]*", re.UNICODE)
_TOKEN = re.compile(r"[\w.\-/]+", re.UNICODE)
_INNER_DOT = re.compile(r"\w\.\w")
#: Letters of a word kept as its stem.
STEM_LENGTH = 5


@functools.lru_cache(maxsize=65536)
def fold(word: str) -> str:
    """Lower case, accents dropped ("Estación" -> "estacion"). Cached: key phrases fold every stem of every
    member, ~1.6M calls in a 100k board's largest clusters."""
    return "".join(c for c in unicodedata.normalize("NFKD", word.casefold()) if not unicodedata.combining(c))


def stems(text: str) -> frozenset[str]:
    """The content words of a text (three letters or more, no stop words), each cut to its first five letters."""
    words = (fold(m.group()).strip("'-") for m in _WORD.finditer(text))
    return frozenset(w[:STEM_LENGTH] for w in words if len(w) >= 3 and w not in STOPWORDS)


def identifiers(text: str) -> frozenset[str]:
    """Tokens that name one thing: with a digit ("2024", "HADOOP-17837", "branch-3.2"), an underscore
    ("gdk_screen_height") or a dot inside ("www.nu.nl", "passwords_help.xhtml"); lower-cased."""
    out = set()
    for token in _TOKEN.findall(text):
        token = token.strip(".-/")
        if any(c.isdigit() for c in token) or "_" in token or _INNER_DOT.search(token):
            out.add(token.lower())
    return frozenset(out)


def _overlap(sets: Sequence[frozenset[str]]) -> NDArray[np.float64]:
    """``(n, n)`` cosine of the sets (0 where either is empty). Only items in two sets or more can be shared,
    so only those get a column: the matrix stays small on a board of long reports."""
    counts = Counter(item for s in sets for item in s)
    vocabulary = {item: k for k, item in enumerate(item for item, c in counts.items() if c > 1)}
    m = np.zeros((len(sets), max(1, len(vocabulary))), dtype=np.float32)
    for i, s in enumerate(sets):
        m[i, [vocabulary[item] for item in s if item in vocabulary]] = 1.0
    sizes = np.sqrt(np.array([len(s) for s in sets], dtype=np.float64))
    sizes[sizes == 0] = 1.0
    return (m @ m.T).astype(np.float64) / np.outer(sizes, sizes)


def _conflicts(sets: Sequence[frozenset[str]]) -> NDArray[np.bool_]:
    """``(n, n)``: both have identifiers and share none."""
    shared = _overlap(sets) > 0
    named = np.array([bool(s) for s in sets])
    return named[:, None] & named[None, :] & ~shared


@dataclass(frozen=True)
class LexicalCheck:
    """Moves grouping scores by the words two posts share (see the module); defaults chosen on the dev
    split of bench/data/forum_ideas.jsonl and bug_corpus together."""

    weight: float = 0.2
    neutral: float = 0.25
    conflict: float = 0.2

    def adjust(self, scores: ArrayLike, languages: Sequence[str], texts: Sequence[str]) -> NDArray[np.float64]:
        """``scores`` (``(n, n)``, grouping scale) of posts in ``languages`` whose ``text_for_embedding``
        strings are ``texts`` (title first line), moved by word overlap and identifier conflicts."""
        s = np.array(scores, dtype=np.float64)
        n = len(s)
        if len(languages) != n or len(texts) != n:
            raise ValueError(f"{n} posts, {len(languages)} languages, {len(texts)} texts")
        if n == 0:
            return s
        english = np.array([is_english_route(x) for x in languages], dtype=bool)
        overlap = _overlap([stems(t) for t in texts])
        s += np.where(english[:, None] & english[None, :], self.weight * (overlap - self.neutral), 0.0)
        s -= self.conflict * _conflicts([identifiers(t.split("\n", 1)[0]) for t in texts])
        return s

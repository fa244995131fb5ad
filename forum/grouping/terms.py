"""Why posts are grouped: the words two posts share, a cluster's key phrases and its most central post.

Words are compared by their stems in English and in Spanish (the posts' ``search`` vector, PostgreSQL's
Snowball stemmers), so "colours"/"colour" or "oscuro"/"oscura" count as one word; they are shown as
written in the post. Across languages ("modo oscuro" / "dark mode") stems do not meet: the words of the
two titles are then paired by the multilingual encoder (:func:`aligned_terms`, detail pages only).
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from uuid import UUID

import numpy as np

from embeddings.lexical import STOPWORDS
from embeddings.lexical import fold as _fold

_WORD = re.compile(r"[^\W\d_][\w'-]*", re.UNICODE)
MAX_TERMS = 6


def _content_words(text: str) -> Iterator[str]:
    for match in _WORD.finditer(text):
        word = match.group().lower().strip("'-")
        if len(word) > 1 and _fold(word) not in STOPWORDS:
            yield word


def words(text: str) -> list[str]:
    """The content words of a text, in order, as written (lower-cased), without stop words."""
    return list(_content_words(text))


def _surface(lexeme: str, text_words: Sequence[str]) -> str | None:
    """The first word of the text this stem came from (stems are prefixes of their words, near enough)."""
    stem = _fold(lexeme)
    prefix = stem[: max(3, len(stem) - 1)]
    for word in text_words:
        folded = _fold(word)
        if folded == stem or folded.startswith(prefix):
            return word
    return None


def shared_terms(lexemes_a: Iterable[str], lexemes_b: Iterable[str], text_a: str, text_b: str) -> list[str]:
    """Words of ``text_a`` whose stem ``text_b`` has too (each stem's first word, as :func:`_surface`
    finds it), in the order they appear in ``text_a``. The text is read only until ``MAX_TERMS`` words
    are found or every shared stem is: a cluster's sweep explains every member, bodies and all."""
    pending = {}
    for lexeme in set(lexemes_a) & set(lexemes_b):
        stem = _fold(lexeme)
        if stem not in STOPWORDS:
            pending[lexeme] = (stem, stem[: max(3, len(stem) - 1)])
    out: list[str] = []
    for word in _content_words(text_a):
        if not pending or len(out) == MAX_TERMS:
            break
        folded = _fold(word)
        found = [lexeme for lexeme, (stem, prefix) in pending.items() if folded == stem or folded.startswith(prefix)]
        for lexeme in found:
            del pending[lexeme]
        if found and word not in out:
            out.append(word)
    return out


def key_phrases(
    member_lexemes: Mapping[UUID, set[str]], texts: Mapping[UUID, str], document_frequency: Mapping[str, int]
) -> list[str]:
    """Stems shared by the most members (rarer on the board first among ties), as written in a member."""
    counts: Counter[str] = Counter()
    for lexemes in member_lexemes.values():
        counts.update(lexeme for lexeme in lexemes if _fold(lexeme) not in STOPWORDS)
    if not counts:
        return []
    least = 2 if len(member_lexemes) > 1 else 1
    ranked = sorted(
        (lexeme for lexeme, n in counts.items() if n >= least),
        key=lambda lexeme: (-counts[lexeme], document_frequency.get(lexeme, math.inf), lexeme),
    )
    phrases: list[str] = []
    for lexeme in ranked:
        for post_id, lexemes in member_lexemes.items():
            if lexeme in lexemes:
                word = _surface(lexeme, words(texts[post_id]))
                if word is not None and word not in phrases:
                    phrases.append(word)
                break
        if len(phrases) == MAX_TERMS:
            break
    return phrases


def nearest_of(
    post_id: UUID, others: Iterable[UUID], scores: Mapping[tuple[UUID, UUID], float]
) -> tuple[UUID, float] | None:
    found = [(scores[(post_id, other)], other) for other in others if other != post_id and (post_id, other) in scores]
    if not found:
        return None
    score, other = max(found, key=lambda pair: (pair[0], str(pair[1])))
    return other, score


def aligned_terms(
    words_a: Sequence[str], words_b: Sequence[str], vectors: Mapping[str, np.ndarray], min_cosine: float
) -> list[str]:
    """Pairs ``"a ↔ b"`` of words (or bigrams) of two texts in different languages whose vectors are close:
    each word of ``a`` with its best match in ``b``, best pairs first, every word used once."""
    pairs = []
    for a in words_a:
        for b in words_b:
            if a in vectors and b in vectors and not {_fold(w) for w in a.split()} & {_fold(w) for w in b.split()}:
                pairs.append((float(vectors[a] @ vectors[b]), a, b))
    used: set[str] = set()
    out = []
    for cosine, a, b in sorted(pairs, reverse=True):
        if cosine < min_cosine:
            break
        if used.isdisjoint(a.split() + b.split()):
            out.append(f"{a} ↔ {b}")
            used.update(a.split() + b.split())
    return out[:MAX_TERMS]


def candidate_phrases(text: str) -> list[str]:
    """Content words and bigrams of a title: what :func:`aligned_terms` tries to pair."""
    content = words(text)
    return list(dict.fromkeys([*content, *(f"{a} {b}" for a, b in itertools.pairwise(content))]))

"""Multilingual duplicate scoring: all-MiniLM-L6-v2 for English pairs, USE multilingual v3 for the rest.

all-MiniLM-L6-v2 is the better model for English posts (bug_pairs AP 0.760 against 0.680 for USE)
but English-only (Spanish-English STS Spearman 0.40); Google's Universal Sentence Encoder
multilingual v3 (:class:`~embeddings.encoder.UniversalSentenceEncoder`) puts Spanish and English
in one space (Spearman 0.79).  Averaging the two cosines loses on both sides, so every **pair** of
posts is routed to one model, by the languages of its two posts
(:func:`embeddings.language.detect_language`):

* both posts English (``"en"`` or ``"und"``, see :func:`~embeddings.language.is_english_route`)
  -> cosine of the all-MiniLM-L6-v2 vectors, unchanged;
* otherwise -> cosine of the USE vectors, mapped by a linear calibration onto the MiniLM scale:
  :data:`USE_CROSS_LANGUAGE` when one post is ``"en"`` (the other is then confidently
  non-English: USE gives a translation pair a lower cosine than the same pair in one language),
  :data:`USE_SAME_LANGUAGE` for every other pair (Spanish-Spanish, Spanish-``"und"``, and also
  Spanish-Portuguese: among our users' posts that is nearly always Spanish misread as Portuguese,
  17 of 2,895 Spanish STS sentences, and the cross-language map was fitted on Spanish-English only).

The result, the **combined score**, is on the scale of MiniLM cosines: English boards behave
exactly as with all-MiniLM-L6-v2 alone (same scores, same thresholds), and one threshold and one
ranking apply across the three routes.  The app stores, per post, its language and one vector per
encoder, and calls :meth:`MultilingualScorer.score` (one query against candidates) or
:meth:`MultilingualScorer.score_matrix`.  See ``docs/multilingual.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .encoder import (
    DEFAULT_MODEL_NAME,
    MULTILINGUAL_SPEC,
    USE_MODEL_NAME,
    Encoder,
    HashingEncoder,
    SentenceTransformerEncoder,
    UniversalSentenceEncoder,
)
from .grouping import DEFAULT_DUPLICATE_THRESHOLD, GroupingScorer, TitleView
from .language import ENGLISH, detect_languages, is_english_route

__all__ = [
    "DEFAULT_MULTILINGUAL_THRESHOLD",
    "ENGLISH_ROUTE",
    "USE_CROSS_LANGUAGE",
    "USE_SAME_LANGUAGE",
    "LinearCalibration",
    "MultilingualEmbedding",
    "MultilingualEncoder",
    "MultilingualScorer",
    "route_of",
]


@dataclass(frozen=True)
class LinearCalibration:
    """``score = slope * cosine + intercept``: a monotone map of one encoder's cosine onto the common scale."""

    slope: float = 1.0
    intercept: float = 0.0

    def __post_init__(self) -> None:
        if not self.slope > 0:
            raise ValueError(f"a calibration must be increasing, got slope {self.slope}")

    def __call__(self, cosines: ArrayLike) -> NDArray[np.float32]:
        c = np.asarray(cosines, dtype=np.float32)
        return (c * np.float32(self.slope) + np.float32(self.intercept)).astype(np.float32, copy=False)


#: MiniLM cosines are the common scale.
ENGLISH_ROUTE = LinearCalibration()

# How the two USE calibrations were derived (DEV data only; reproduce with
# ``python -m embeddings.calibrate --data ../shared/data/dupes``):
#
# * USE_SAME_LANGUAGE maps a USE cosine to the MiniLM cosine with the same duplicate odds.  On
#   bug_pairs (3,981 English pairs, title + body, 1,327 duplicates) one logistic regression
#   P(duplicate) = sigmoid(a * cos + b) was fitted per encoder; equal odds give
#   minilm = (a_use * use + b_use - b_minilm) / a_minilm.  Fits on title-only bug pairs agree
#   within 0.025 over the useful range (0.4-0.8); see docs/multilingual.md.
# * USE_CROSS_LANGUAGE first maps a Spanish-English USE cosine onto the Spanish-Spanish USE scale,
#   then applies USE_SAME_LANGUAGE.  sts_es_pairs and sts_es_en_pairs hold the same 1,500 sentence
#   pairs, once Spanish-Spanish and once Spanish-English: the map matches the mean and standard
#   deviation of the two cosine distributions (duplicates, score >= 4: USE cosine 0.72 across
#   languages against 0.82 within Spanish).
#   Fitted: MiniLM a = 7.9884, b = -4.6124; USE a = 6.0568, b = -3.7067 (title only: 0.8691 / 0.0495).
#   Cross-language map es-en -> es-es: slope 1.1561, intercept -0.0207; composed below.
USE_SAME_LANGUAGE = LinearCalibration(slope=0.7582, intercept=0.1134)
USE_CROSS_LANGUAGE = LinearCalibration(slope=0.8766, intercept=0.0977)

#: Issue 6's ``FORUM_DUPLICATE_THRESHOLD`` for the combined (route) score alone; since issue 15 grouping
#: re-scores candidates (embeddings.grouping, DEFAULT_DUPLICATE_THRESHOLD) and this stays as the
#: reference the benches compare with. Issue 6's notes: online NN + average-link
#: grouping: join the nearest neighbour's cluster if the NN score and the mean score to the
#: cluster's members are both >= t).  Chosen on the 70-post demo forum (48 labelled duplicate
#: pairs, 28 of them Spanish-English) as the middle of the pairwise-F1 plateau (0.43-0.45, F1 0.62):
#: precision 0.66 / recall 0.59 averaged over 50 arrival orders (Spanish-English pairs: 0.70 / 0.54),
#: against 0.79 / 0.20 at 0.52 and one pair grouped at 0.66 (the English default).  Memberships
#: are suggestions the product team confirms, so recall is worth more than on a bug tracker.
#: Few labels: see docs/multilingual.md before relying on it.
DEFAULT_MULTILINGUAL_THRESHOLD = 0.44


def route_of(language_a: str, language_b: str) -> str:
    """``"english"``, ``"use-same"`` or ``"use-cross"``: which cosine and calibration score a pair."""
    if is_english_route(language_a) and is_english_route(language_b):
        return "english"
    if ENGLISH in (language_a, language_b):  # the other post is confidently non-English
        return "use-cross"
    return "use-same"


def _matrix(x: ArrayLike, what: str) -> NDArray[np.float32]:
    m = np.asarray(x, dtype=np.float32)
    if m.ndim == 1:
        m = m[np.newaxis, :]
    if m.ndim != 2:
        raise ValueError(f"{what} must be a vector or a 2-D array, got shape {m.shape}")
    return m


class MultilingualScorer:
    """Combined similarity of posts from their languages and their vectors of two encoders.

    Args:
        english_name: ``Encoder.name`` of the English model (its vectors score English pairs).
        multilingual_name: ``Encoder.name`` of the multilingual model (every other pair).
        same_language / cross_language: calibrations of the multilingual cosine (see the module).
        english: calibration of the English cosine (identity: it defines the scale).

    Vectors are passed as mappings ``{encoder name: array}`` of L2-normalised rows.  Only the
    vectors a pair's route needs are read: the English model's vector of a confidently
    non-English post is never used (any row, e.g. zeros, may stand in for it), the multilingual
    vector of every post is needed as soon as one non-English post takes part.

    Stateless apart from its constants: thread-safe.
    """

    def __init__(
        self,
        english_name: str = DEFAULT_MODEL_NAME,
        multilingual_name: str = USE_MODEL_NAME,
        same_language: LinearCalibration = USE_SAME_LANGUAGE,
        cross_language: LinearCalibration = USE_CROSS_LANGUAGE,
        english: LinearCalibration = ENGLISH_ROUTE,
    ) -> None:
        if english_name == multilingual_name:
            raise ValueError("the two encoders must have different names")
        self.english_name = english_name
        self.multilingual_name = multilingual_name
        self.calibrations: dict[str, LinearCalibration] = {
            "english": english,
            "use-same": same_language,
            "use-cross": cross_language,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(english_name={self.english_name!r}, multilingual_name={self.multilingual_name!r}, "
            f"calibrations={self.calibrations!r})"
        )

    def route(self, language_a: str, language_b: str) -> str:
        """See :func:`route_of`."""
        return route_of(language_a, language_b)

    def encoder_for(self, language_a: str, language_b: str) -> str:
        """Name of the encoder whose cosine scores a pair of posts in these languages."""
        return self.english_name if route_of(language_a, language_b) == "english" else self.multilingual_name

    def calibrate(self, route: str, cosines: ArrayLike) -> NDArray[np.float32]:
        """Map cosines of ``route``'s encoder onto the combined scale."""
        return self.calibrations[route](cosines)

    def score_matrix(
        self,
        languages_a: Sequence[str],
        vectors_a: Mapping[str, ArrayLike],
        languages_b: Sequence[str],
        vectors_b: Mapping[str, ArrayLike],
    ) -> NDArray[np.float32]:
        """``(len(a), len(b))`` combined scores between two sets of posts."""
        langs_a, langs_b = np.asarray(languages_a, dtype=object), np.asarray(languages_b, dtype=object)
        n, m = len(langs_a), len(langs_b)
        out = np.empty((n, m), dtype=np.float32)
        if n == 0 or m == 0:
            return out
        eng_a = np.array([is_english_route(x) for x in langs_a], dtype=bool)
        eng_b = np.array([is_english_route(x) for x in langs_b], dtype=bool)
        english = eng_a[:, None] & eng_b[None, :]
        if english.any():
            ra, rb = np.flatnonzero(eng_a), np.flatnonzero(eng_b)
            ea = self._rows(vectors_a, self.english_name, n, ra)
            eb = self._rows(vectors_b, self.english_name, m, rb)
            out[np.ix_(ra, rb)] = self.calibrations["english"](ea @ eb.T)
        if not english.all():
            # Rows / columns taking part in at least one non-English pair.
            ra = np.flatnonzero(~eng_a) if eng_b.all() else np.arange(n)
            rb = np.flatnonzero(~eng_b) if eng_a.all() else np.arange(m)
            ua = self._rows(vectors_a, self.multilingual_name, n, ra)
            ub = self._rows(vectors_b, self.multilingual_name, m, rb)
            cos = ua @ ub.T
            # In a non-English pair, an "en" post means the other one is confidently non-English.
            cross = (langs_a[ra] == ENGLISH)[:, None] | (langs_b[rb] == ENGLISH)[None, :]
            multi = np.where(cross, self.calibrations["use-cross"](cos), self.calibrations["use-same"](cos)).astype(
                np.float32
            )
            block = out[np.ix_(ra, rb)]
            keep = english[np.ix_(ra, rb)]
            out[np.ix_(ra, rb)] = np.where(keep, block, multi)
        return out

    def score(
        self,
        query_language: str,
        query_vectors: Mapping[str, ArrayLike],
        candidate_languages: Sequence[str],
        candidate_vectors: Mapping[str, ArrayLike],
    ) -> NDArray[np.float32]:
        """Combined scores ``(len(candidates),)`` of one query post against candidate posts.

        ``query_vectors``: ``{encoder name: (dim,) vector}``; ``candidate_vectors``:
        ``{encoder name: (m, dim) array}``, rows in the order of ``candidate_languages``.
        """
        query = {name: _matrix(v, f"query_vectors[{name!r}]") for name, v in query_vectors.items()}
        return self.score_matrix([query_language], query, candidate_languages, candidate_vectors)[0]

    def score_pairs(
        self,
        languages_a: Sequence[str],
        vectors_a: Mapping[str, ArrayLike],
        languages_b: Sequence[str],
        vectors_b: Mapping[str, ArrayLike],
    ) -> NDArray[np.float32]:
        """Combined score of each pair ``(a[i], b[i])``; shape ``(n,)``."""
        n = len(languages_a)
        if len(languages_b) != n:
            raise ValueError(f"{n} languages for a, {len(languages_b)} for b")
        routes = [route_of(x, y) for x, y in zip(languages_a, languages_b, strict=True)]
        out = np.empty(n, dtype=np.float32)
        for route, name in (
            ("english", self.english_name),
            ("use-same", self.multilingual_name),
            ("use-cross", self.multilingual_name),
        ):
            rows = np.array([i for i, r in enumerate(routes) if r == route], dtype=np.intp)
            if len(rows):
                va = self._rows(vectors_a, name, n, rows)
                vb = self._rows(vectors_b, name, n, rows)
                out[rows] = self.calibrations[route](np.einsum("ij,ij->i", va, vb))
        return out

    @staticmethod
    def _rows(vectors: Mapping[str, ArrayLike], name: str, n: int, rows: NDArray[np.intp]) -> NDArray[np.float32]:
        if name not in vectors:
            raise KeyError(f"vectors of encoder {name!r} are needed for these languages")
        m = _matrix(vectors[name], f"vectors[{name!r}]")
        if len(m) != n:
            raise ValueError(f"vectors[{name!r}] has {len(m)} rows for {n} posts")
        return m[rows]


@dataclass
class MultilingualEmbedding:
    """What the app stores per post: its language and one vector per encoder (row ``i`` = text ``i``)."""

    languages: list[str]
    vectors: dict[str, NDArray[np.float32]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.languages)


class MultilingualEncoder:
    """The ``"multilingual"`` configuration: an English encoder, a multilingual one and their scorer.

    Not an :class:`~embeddings.encoder.Encoder` (a post has two vectors, and a pair's similarity
    depends on both posts' languages).  Use :meth:`embed` to get a post's language and vectors,
    store them, and :meth:`score` / :meth:`score_matrix` to compare posts on the combined scale,
    against :attr:`threshold`.  Models load lazily; everything is thread-safe.
    """

    def __init__(
        self,
        english: Encoder | None = None,
        multilingual: Encoder | None = None,
        scorer: MultilingualScorer | None = None,
        threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
        titles: bool = True,
    ) -> None:
        self.english: Encoder = english if english is not None else SentenceTransformerEncoder()
        # One BLAS thread: OpenBLAS's idle threads spin after each call and starve the next MiniLM call
        # on a 2-core machine (one title through both models: p50 191 ms with 2 threads, 11 ms with 1;
        # docs/multilingual.md). USE stays ~2.5x faster than MiniLM in batches even so.
        self.multilingual: Encoder = multilingual if multilingual is not None else UniversalSentenceEncoder(threads=1)
        self.scorer = scorer or MultilingualScorer(self.english.name, self.multilingual.name)
        if (self.scorer.english_name, self.scorer.multilingual_name) != (self.english.name, self.multilingual.name):
            raise ValueError("the scorer's encoder names differ from the encoders'")
        self.threshold = threshold
        #: Re-scores the nearest candidates (two encoders' agreement, whole text and title: embeddings.grouping).
        self.grouping = GroupingScorer(self.scorer, titles=titles)
        self._title_views = [TitleView(self.english), TitleView(self.multilingual)] if titles else []

    @classmethod
    def from_spec(cls, spec: str) -> MultilingualEncoder:
        """``"multilingual"``: MiniLM + USE; ``"multilingual-hashing"``: two hashing encoders (tests only)."""
        if spec == MULTILINGUAL_SPEC:
            return cls()
        if spec == f"{MULTILINGUAL_SPEC}-hashing":
            english = HashingEncoder(dim=384, name="hashing-test")
            return cls(english, HashingEncoder(dim=512, name="hashing-multilingual-test"))
        raise ValueError(f"unknown multilingual spec {spec!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(english={self.english!r}, multilingual={self.multilingual!r})"

    @property
    def name(self) -> str:
        """``"multilingual:all-MiniLM-L6-v2+use-multilingual-v3"``: identifies the configuration."""
        return f"{MULTILINGUAL_SPEC}:{self.english.name}+{self.multilingual.name}"

    @property
    def encoders(self) -> dict[str, Encoder]:
        """``{vector name: encoder}``: one stored vector per post for each. English first, then USE, then
        their title views (``"<name>:title"``, re-scoring only; :class:`embeddings.grouping.TitleView`)."""
        views: list[Encoder] = [self.english, self.multilingual, *self._title_views]
        return {encoder.name: encoder for encoder in views}

    @property
    def dims(self) -> dict[str, int]:
        """``{encoder name: vector length}`` (may load the English model)."""
        return {name: encoder.dim for name, encoder in self.encoders.items()}

    def load(self) -> None:
        """Load both models and the language detector now (otherwise on first use)."""
        for encoder in (self.english, self.multilingual):
            loader = getattr(encoder, "load", None)
            if loader is not None:
                loader()
        detect_languages(["warm up"])

    def detect_languages(self, texts: Sequence[str]) -> list[str]:
        """:func:`embeddings.language.detect_language` of each text."""
        return detect_languages(texts)

    def embed(self, texts: Sequence[str], languages: Sequence[str] | None = None) -> MultilingualEmbedding:
        """Languages and both encoders' vectors of ``texts`` (``text_for_embedding(title, body)``).

        ``languages`` overrides detection (e.g. a language the author chose).
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings, not a single string")
        items = list(texts)
        langs = list(languages) if languages is not None else self.detect_languages(items)
        if len(langs) != len(items):
            raise ValueError(f"{len(langs)} languages for {len(items)} texts")
        return MultilingualEmbedding(langs, {name: enc.encode(items) for name, enc in self.encoders.items()})

    def score(
        self,
        query_language: str,
        query_vectors: Mapping[str, ArrayLike],
        candidate_languages: Sequence[str],
        candidate_vectors: Mapping[str, ArrayLike],
    ) -> NDArray[np.float32]:
        """See :meth:`MultilingualScorer.score`."""
        return self.scorer.score(query_language, query_vectors, candidate_languages, candidate_vectors)

    def score_matrix(self, a: MultilingualEmbedding, b: MultilingualEmbedding | None = None) -> NDArray[np.float32]:
        """Combined (route) scores between the posts of ``a`` and ``b`` (default: ``a`` with itself)."""
        b = a if b is None else b
        return self.scorer.score_matrix(a.languages, a.vectors, b.languages, b.vectors)

    def grouping_matrix(self, a: MultilingualEmbedding, b: MultilingualEmbedding | None = None) -> NDArray[np.float32]:
        """Grouping scores (:class:`embeddings.grouping.GroupingScorer`) between the posts of ``a`` and ``b``."""
        b = a if b is None else b
        return self.grouping.score_matrix(a.languages, a.vectors, b.languages, b.vectors)

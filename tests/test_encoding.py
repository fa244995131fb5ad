"""As-you-type encoding under concurrency (forum/encoding.py): texts typed at the same time share one model
call, and requests' model calls run on one torch thread while bulk calls keep torch's default."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import numpy as np
import torch

import forum.encoding
from embeddings import HashingEncoder
from forum.encoding import REQUEST_THREADS, EncodeBatcher, PostEmbedder


class Recording(HashingEncoder):
    """Records each model call's texts and the torch threads it ran with; each call takes ``seconds``."""

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__(name="recording")
        self.seconds = seconds
        self.calls: list[list[str]] = []
        self.threads: list[int] = []
        self.started = threading.Event()

    def encode(self, texts):  # type: ignore[no-untyped-def]
        self.calls.append(list(texts))
        self.threads.append(torch.get_num_threads())
        self.started.set()
        time.sleep(self.seconds)
        return super().encode(texts)


TYPED = ["Pause a scoo", "Dark mode in", "Refund for a br", "Export invoi"]


def test_texts_typed_together_are_encoded_in_one_model_call() -> None:
    encoder = Recording()
    embedder = PostEmbedder(encoder)
    embedder.load()

    async def run() -> list:
        return list(await asyncio.gather(*(embedder.encode_query(text) for text in TYPED)))

    queries = asyncio.run(run())
    assert encoder.calls == [TYPED]
    for text, query in zip(TYPED, queries, strict=True):
        np.testing.assert_allclose(query.vectors["recording"], HashingEncoder().encode([text])[0], atol=1e-6)


def test_texts_typed_while_the_model_runs_share_the_next_call() -> None:
    """Four typists out of step: the first text is encoded at once, the three that arrive during its model
    call wait for it and then go to the model together, not one call each."""
    encoder = Recording(seconds=0.05)
    embedder = PostEmbedder(encoder)
    embedder.load()

    async def run() -> list:
        first = asyncio.create_task(embedder.encode_query(TYPED[0]))
        await asyncio.to_thread(encoder.started.wait, 5)  # the first call is in the model
        rest = [asyncio.create_task(embedder.encode_query(text)) for text in TYPED[1:]]
        return [await first, *[await task for task in rest]]

    queries = asyncio.run(run())
    assert encoder.calls == [TYPED[:1], TYPED[1:]]
    assert [q.vectors["recording"].shape for q in queries] == [(384,)] * 4


def test_requests_encode_on_one_torch_thread_and_bulk_calls_on_the_default() -> None:
    """On two shared cores a second OpenMP thread makes a typed title several times slower
    (docs/benchmarks.md, issue 14): requests' calls use REQUEST_THREADS, a bulk encode torch's default,
    and neither setting leaks into the other (they run on the same encoder thread)."""
    encoder = Recording()

    async def run() -> None:
        batcher = EncodeBatcher(encoder)
        await batcher.encode_many(["bulk before"])
        await batcher.encode_one("typed")
        await batcher.encode_many(["bulk after"])

    asyncio.run(run())
    default = forum.encoding._default_threads  # torch's own count, read before the first call set one
    assert REQUEST_THREADS == 1
    assert encoder.threads == [default, 1, default]
    if (os.cpu_count() or 1) > 1:
        assert default is not None and default > 1

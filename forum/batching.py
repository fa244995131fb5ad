"""Concurrent single requests served as batches (model calls, embedding jobs)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Serves :meth:`submit` calls in batches through :meth:`run_batch`.

    An idle coalescer starts a batch at once (it never waits to fill one); whatever is submitted while
    a batch runs goes into the next, up to ``max_batch`` items. Each caller gets its own item's result.
    A failed batch fails all its callers, or with ``isolate_failures`` is retried item by item so that
    one bad item fails only its own caller. ``gather_first`` yields to the event loop once before
    taking a batch, so that tasks started together (jobs dequeued at once) all join it.
    """

    def __init__(self, max_batch: int = 64, *, isolate_failures: bool = False, gather_first: bool = False) -> None:
        self.max_batch = max_batch
        self.isolate_failures = isolate_failures
        self.gather_first = gather_first
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running: asyncio.Task[None] | None = None

    async def run_batch(self, items: list[T]) -> Sequence[R]:
        """One result per item, in order."""
        raise NotImplementedError

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if self._running is None:
            self._running = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                if self.gather_first:
                    await asyncio.sleep(0)
                chunk, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                try:
                    results = await self.run_batch([item for item, _ in chunk])
                except Exception as exc:
                    if not self.isolate_failures or len(chunk) == 1:
                        for _, future in chunk:
                            _settle(future, exception=exc)
                        continue
                    for item, future in chunk:  # isolate the failure: one item at a time
                        try:
                            (result,) = await self.run_batch([item])
                        except Exception as single:
                            _settle(future, exception=single)
                        else:
                            _settle(future, result)
                    continue
                for (_, future), result in zip(chunk, results, strict=True):
                    _settle(future, result)
        finally:
            self._running = None


def _settle(future: asyncio.Future[R], result: R | None = None, *, exception: BaseException | None = None) -> None:
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)  # type: ignore[arg-type]

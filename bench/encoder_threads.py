"""How fast the encoder is for one short text depending on which threads have run the model.

The server warms the model up with ``asyncio.to_thread`` (the event loop's default executor) and
encodes requests with ``anyio.to_thread.run_sync`` (anyio's worker threads): two different threads
run torch. torch's CPU wheel uses GNU OpenMP, which keeps one thread team per calling thread; two teams
of 2 threads on a 2-core machine make it stop spinning between parallel regions, and every small
forward pass pays for waking its threads up. This script measures that, with the server's pattern and
alternatives, in one process per case (``python -m bench.encoder_threads``)::

    server:       warm-up via asyncio.to_thread, then encodes via anyio.to_thread.run_sync
    same-thread:  warm-up and encodes via anyio.to_thread.run_sync (one worker thread)
    dedicated:    warm-up and encodes on one ThreadPoolExecutor(max_workers=1)
    torch1:       the server's pattern with torch.set_num_threads(1)
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

TEXTS = ["We need a lo", "Let me exp", "cargo bike prices are conf", "Option to pay with Apple P"]
CASES = ("server", "same-thread", "dedicated", "torch1")


def run_case(case: str, rounds: int = 100) -> None:
    import anyio

    if case == "torch1":
        import torch

        torch.set_num_threads(1)
    from embeddings import load_encoder

    encoder = load_encoder(None)
    inner: list[float] = []

    def encode(text: str) -> None:
        t = time.perf_counter()
        encoder.encode([text])
        inner.append(time.perf_counter() - t)

    async def main() -> None:
        if case == "dedicated":
            pool = ThreadPoolExecutor(max_workers=1)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(pool, encoder.encode, ["warm up"])
            for i in range(rounds):
                await loop.run_in_executor(pool, encode, TEXTS[i % len(TEXTS)])
            return
        if case == "same-thread":
            await anyio.to_thread.run_sync(encoder.encode, ["warm up"])
        else:
            await asyncio.to_thread(encoder.encode, ["warm up"])
        for i in range(rounds):
            await anyio.to_thread.run_sync(encode, TEXTS[i % len(TEXTS)])

    asyncio.run(main())
    ms = np.asarray(inner[5:]) * 1000
    print(
        f"{case:12s} model time for one partial title: p50 {np.percentile(ms, 50):.2f} ms, "
        f"p95 {np.percentile(ms, 95):.2f} ms"
    )


def main() -> int:
    if len(sys.argv) > 1:
        run_case(sys.argv[1])
        return 0
    from bench.common import busy_cores_elsewhere

    print(f"other processes keep {busy_cores_elsewhere()} cores busy")
    for case in CASES:
        out = subprocess.run([sys.executable, "-m", "bench.encoder_threads", case], capture_output=True, text=True)
        print(out.stdout.strip() or out.stderr[-2000:], flush=True)
    print(f"other processes keep {busy_cores_elsewhere()} cores busy")
    return 0


if __name__ == "__main__":
    sys.exit(main())

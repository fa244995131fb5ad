"""Where the time of ``POST /api/posts/similar`` goes inside the server, and what changing it would gain.

Diagnostic companion of ``bench/similar.py`` (run that one first with ``--prepare-only`` or a full
run: it leaves a loaded data dir). This script serves the same application (``forum.app.create_app``,
uvicorn, one process, access log on, as ``forum serve``) from a child process with timers wrapped
around the request's phases, drives it with the same typing workload, and prints per-phase times:

* ``dep``: the ``grouping`` dependency (``provide_grouping``: reads ``encoder.dim`` in a worker thread);
* ``encode``: ``EncodeBatcher.encode_one`` (the batcher's wait, the queue, the thread hop, the model);
* ``knn``: ``GroupingService.nearest`` (``SET LOCAL`` x2 + the KNN statement; the first statement
  of the request also checks out a connection: pre-ping and ``BEGIN``);
* ``posts``: ``PostService.get_many_out``;
* ``total``: the whole request inside the server (ASGI call); ``other`` = total minus the above
  (routing, auth, validation, serialisation, commit, the event loop's waits).

``--variant`` monkeypatches the child process only (``forum/`` is not modified), to measure candidate
fixes: ``shipped`` (no change), ``no-wait`` (``EncodeBatcher`` max_wait 0), ``no-dim-lock`` (the
dependency reads the already-known dimension instead of a thread hop that takes the encoder lock),
``one-thread`` (every model call, start-up warm-up included, on one dedicated thread), ``torch1``
(``torch.set_num_threads(1)``), ``coalesce`` (no timer: texts that arrive while the model is busy form
the next batch), ``fixed`` (no-wait + no-dim-lock + one-thread), or several joined with ``+``.

    python -m bench.similar_breakdown --data-dir /tmp/forum-bench-similar/real-n100000-s1 \\
        --variants shipped,fixed --concurrency 1,4 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import numpy as np
from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncSession

FLAGS = ("no-wait", "no-dim-lock", "one-thread", "torch1", "coalesce")
ALIASES = {"shipped": (), "fixed": ("no-wait", "no-dim-lock", "one-thread")}


def variant_flags(variant: str) -> set[str]:
    """``shipped``, ``fixed``, a flag, or flags joined with ``+`` (e.g. ``one-thread+no-wait``)."""
    flags: set[str] = set()
    for part in variant.split("+"):
        if part in ALIASES:
            flags.update(ALIASES[part])
        elif part in FLAGS:
            flags.add(part)
        else:
            raise ValueError(f"unknown variant part {part!r}: use {', '.join([*ALIASES, *FLAGS])}")
    return flags


class _NoWarmUp:
    """The batcher as the shipped lifespan sees it, with a warm-up that does nothing (it ran elsewhere)."""

    def __init__(self, batcher: Any) -> None:
        self._batcher = batcher
        self.encoder = self

    def encode(self, texts: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batcher, name)


# Child: the instrumented server -----------------------------------------------------------------

_current: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("bench_phases", default=None)


def _add(name: str, seconds: float) -> None:
    rec = _current.get()
    if rec is not None:
        rec[name] = rec.get(name, 0.0) + seconds


def serve(port: int, variant: str, stats_path: Path) -> None:
    import uvicorn
    from litestar.di import Provide

    from forum.encoding import EncodeBatcher
    from forum.grouping import controllers
    from forum.grouping.services import GroupingService
    from forum.posts.services import PostService

    flags = variant_flags(variant)
    if "no-wait" in flags:
        EncodeBatcher.__init__.__defaults__ = (64, 0.0)  # max_batch, max_wait
    if "coalesce" in flags:
        # No timer: one drain loop encodes what is pending, and whatever arrives meanwhile is the next batch.
        async def encode_one_coalescing(self: EncodeBatcher, text: str) -> Any:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            self._pending.append((text, future))
            if self._flusher is None:
                self._flusher = loop.create_task(drain(self))
            return await future

        async def drain(self: EncodeBatcher) -> None:
            try:
                while self._pending:
                    await asyncio.sleep(0)  # requests parsed in the same loop iteration join this batch
                    batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                    try:
                        vectors = await self.encode_many([t for t, _ in batch])
                    except Exception as exc:
                        for _, future in batch:
                            if not future.done():
                                future.set_exception(exc)
                        continue
                    for (_, future), vector in zip(batch, vectors, strict=True):
                        if not future.done():
                            future.set_result(vector)
            finally:
                self._flusher = None

        EncodeBatcher.encode_one = encode_one_coalescing  # type: ignore[method-assign]
    if "torch1" in flags:
        import torch

        torch.set_num_threads(1)
    if "one-thread" in flags:
        # Every model call (the start-up warm-up included) on one dedicated thread.
        from concurrent.futures import ThreadPoolExecutor

        import forum.app

        model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

        async def encode_on_model_thread(self: EncodeBatcher, texts: Any) -> Any:
            return await asyncio.get_running_loop().run_in_executor(model_thread, self.encoder.encode, list(texts))

        EncodeBatcher.encode_many = encode_on_model_thread  # type: ignore[method-assign]
        shipped_lifespan = forum.app._background_lifespan

        def background_lifespan(settings: Any, database_url: str, batcher: EncodeBatcher) -> Any:
            model_thread.submit(batcher.encoder.encode, ["warm up"])  # queued before any request
            settings.run_worker_in_server = False  # (already false in the benchmark)
            return shipped_lifespan(settings, database_url, _NoWarmUp(batcher))

        forum.app._background_lifespan = background_lifespan

    records: list[dict[str, float]] = []
    batches: list[tuple[float, int, float]] = []

    def timed(cls: Any, name: str, label: str) -> None:
        original = getattr(cls, name)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                _add(label, time.perf_counter() - t)

        setattr(cls, name, wrapper)

    timed(EncodeBatcher, "encode_one", "encode")
    timed(GroupingService, "nearest", "knn")
    timed(PostService, "get_many_out", "posts")
    original_many = EncodeBatcher.encode_many

    async def encode_many(self: EncodeBatcher, texts: Any) -> Any:
        t = time.perf_counter()
        try:
            return await original_many(self, texts)
        finally:
            batches.append((time.time(), len(texts), time.perf_counter() - t))

    EncodeBatcher.encode_many = encode_many  # type: ignore[method-assign]

    shipped_provide = controllers.provide_grouping
    no_lock = "no-dim-lock" in flags

    async def provide_grouping(db_session: AsyncSession, state: State) -> AsyncGenerator[Any, None]:
        t = time.perf_counter()
        if no_lock:
            batcher = state["forum_batcher"]
            dim = getattr(batcher.encoder, "_dim", None) or batcher.encoder.dim
            service = GroupingService(
                db_session, batcher.encoder.name, dim, state["forum_settings"].duplicate_threshold
            )
            _add("dep", time.perf_counter() - t)
            yield service
            return
        gen = shipped_provide(db_session, state)
        service = await gen.__anext__()
        _add("dep", time.perf_counter() - t)
        try:
            yield service
        finally:
            await gen.aclose()

    controllers.SimilarController.dependencies = {"grouping": Provide(provide_grouping)}

    from forum.app import create_app

    app = create_app()

    async def timed_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/api/posts/similar":
            await app(scope, receive, send)
            return
        rec: dict[str, float] = {"t": time.time()}
        token = _current.set(rec)
        t = time.perf_counter()
        try:
            await app(scope, receive, send)
        finally:
            rec["total"] = time.perf_counter() - t
            _current.reset(token)
            records.append(rec)

    # uvicorn re-raises the SIGTERM it handled once it has shut down: let it return here instead.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.run(timed_app, host="127.0.0.1", port=port, log_level="info", proxy_headers=False)
    finally:
        stats_path.write_text(json.dumps({"records": records, "batches": batches}))


# Parent: drive it ---------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values) * 1000, q)), 2) if values else float("nan")


def breakdown(records: list[dict[str, float]], batches: list[tuple[float, int, float]], t0: float, t1: float) -> dict:
    recs = [r for r in records if t0 <= r["t"] <= t1]
    phases = ["dep", "encode", "knn", "posts"]
    out: dict[str, Any] = {"requests": len(recs)}
    for name in [*phases, "total"]:
        vals = [r.get(name, 0.0) for r in recs]
        mean = round(float(np.mean(vals)) * 1000, 2) if vals else float("nan")
        out[name] = {"p50": _pct(vals, 50), "p95": _pct(vals, 95), "mean": mean}
    other = [r["total"] - sum(r.get(p, 0.0) for p in phases) for r in recs]
    out["other"] = {
        "p50": _pct(other, 50),
        "p95": _pct(other, 95),
        "mean": round(float(np.mean(other)) * 1000, 2) if other else 0,
    }
    bs = [b for b in batches if t0 <= b[0] <= t1]
    if bs:
        out["model_calls"] = {
            "count": len(bs),
            "mean_batch": round(float(np.mean([b[1] for b in bs])), 2),
            "p50_ms": round(float(np.median([b[2] for b in bs])) * 1000, 2),
            "p95_ms": round(float(np.percentile([b[2] for b in bs], 95)) * 1000, 2),
        }
    return out


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.similar_breakdown")
    parser.add_argument("--data-dir", type=Path, required=False)
    parser.add_argument("--variants", default="shipped,fixed")
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--anonymous", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="shipped", help=argparse.SUPPRESS)
    parser.add_argument("--stats", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.port, args.variant, args.stats)
        return 0

    import httpx

    from bench.mobility_text import generate_posts, generate_queries
    from bench.similar import (
        BENCH_EMAIL,
        BENCH_PASSWORD,
        _stop_embedded,
        drive,
        free_port,
        machine_info,
        wait_quiet,
    )
    from forum import database

    if args.data_dir is None or not (args.data_dir / "bench-load.json").exists():
        parser.error("--data-dir must be a data dir loaded by bench.similar")
    data_dir = args.data_dir.resolve()
    load = json.loads((data_dir / "bench-load.json").read_text())
    n_posts = load["key"]["posts"]
    posts = {p.title for p in generate_posts(n_posts, load["key"]["seed"])}
    held_out = [q for q in generate_queries(2000, load["key"]["seed"]) if q not in posts]
    levels = [int(x) for x in args.concurrency.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        try:
            variant_flags(v)
        except ValueError as exc:
            parser.error(str(exc))
    signal.signal(signal.SIGTERM, _interrupt)

    pgdata = data_dir / "postgres"
    database.start_embedded_postgres(pgdata)  # keeps it up between the variants
    postmaster = database._embedded_servers[pgdata].get_pid()  # type: ignore[attr-defined]
    machine = machine_info()
    print(f"machine: {machine}; posts: {n_posts} ({load['key']['vectors']} vectors)", flush=True)
    results: dict[str, Any] = {"machine": machine, "posts": n_posts, "vectors": load["key"]["vectors"], "variants": {}}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORUM_")}
    env.update(FORUM_DATA_DIR=str(data_dir), FORUM_WORKER_IN_SERVER="false", FORUM_RATE_LIMIT_ENABLED="false")
    try:
        for variant in variants:
            port = free_port()
            stats = data_dir / f"breakdown-{variant}.json"
            log_path = data_dir / f"breakdown-{variant}.log"
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.similar_breakdown",
                    "--serve",
                    "--port",
                    str(port),
                    "--variant",
                    variant,
                    "--stats",
                    str(stats),
                ],
                env=env,
                stdout=log_path.open("wb"),
                stderr=subprocess.STDOUT,
            )
            url = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + 180
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(log_path.read_text()[-3000:])
                    try:
                        if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError("server did not start")
                    time.sleep(0.3)
                headers = {}
                if not args.anonymous:
                    r = httpx.post(f"{url}/api/auth/login", json={"email": BENCH_EMAIL, "password": BENCH_PASSWORD})
                    r.raise_for_status()
                    headers["Authorization"] = f"Bearer {r.json()['access_token']}"
                while True:  # warm-up until the model is loaded
                    w = asyncio.run(drive(url, headers, held_out, 2, 3.0, args.seed + 1000))
                    if w.requests and not w.errors and w.latency_ms["p50"] < 500:
                        break
                idle = wait_quiet()
                windows = []
                for level in levels:
                    wait_quiet()
                    t0 = time.time()
                    r = asyncio.run(drive(url, headers, held_out, level, args.seconds, args.seed, proc.pid, postmaster))
                    windows.append((level, t0, time.time(), r))
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            data = json.loads(stats.read_text())
            results["variants"][variant] = {"busy_cores_elsewhere_before": idle, "levels": {}}
            for level, t0, t1, r in windows:
                b = breakdown(data["records"], data["batches"], t0, t1)
                results["variants"][variant]["levels"][level] = {"client": r.__dict__, "server": b}
                lat = r.latency_ms
                print(
                    f"[{variant}] concurrency {level}: {r.req_per_s} req/s, client p50 {lat.get('p50')} "
                    f"p95 {lat.get('p95')} p99 {lat.get('p99')} ms, errors {r.errors or 0}, cores {r.cpu_cores}",
                    flush=True,
                )
                print(
                    "    server p50/p95 ms: "
                    + ", ".join(
                        f"{k} {b[k]['p50']}/{b[k]['p95']}" for k in ("dep", "encode", "knn", "posts", "other", "total")
                    )
                    + f"; model calls {b.get('model_calls')}",
                    flush=True,
                )
    finally:
        _stop_embedded(pgdata)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

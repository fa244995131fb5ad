"""Latency benchmark of the as-you-type lookup ``POST /api/posts/similar`` against the real server.

Target: p95 <= 50 ms with 100,000 posts on a 2-core machine.

Usage (from the repository root, in the project's virtualenv)::

    python -m bench.similar --posts 100000 [--data-dir DIR] [--seconds 30] [--concurrency 1,4]
                            [--vectors real|random] [--seed 1] [--anonymous] [--reuse] [--json FILE]

What one run does:

1. generates ``--posts`` varied English ideas and critiques for a mobility app
   (``bench/mobility_text.py``, deterministic per ``--seed``) and their vectors: with
   ``--vectors real`` (default) the real default encoder (all-MiniLM-L6-v2) embeds
   ``post_text(title, body)`` of every post, cached in ``/tmp/forum-bench-cache`` (a cache made for more
   posts of the same seed is reused, the corpus of N posts being the first N of a larger one);
   ``--vectors random`` uses random unit vectors (quick runs only: query vectors are real, so the
   neighbours and the index's work are not representative) and every output line says so;
2. creates a fresh embedded PostgreSQL in the data dir (default ``/tmp/forum-bench-similar/<vectors>-n<N>-s<seed>``,
   wiped first unless ``--reuse`` finds a completed load with the same parameters), applies the
   migrations and bulk-loads the realistic forum of ``bench.common.bulk_load`` (users, posts, votes,
   comments, clusters, vectors) with ``COPY``; secondary indexes, the HNSW index
   ``ix_post_embedding_hnsw_384`` included, are dropped before and re-created after the load with
   their own definitions read from ``pg_indexes``; then ``VACUUM ANALYZE`` and ``CHECKPOINT``;
3. measures, with the server not running: the KNN SQL alone (the statement ``forum.grouping.similar``
   compiles for this endpoint, as an asyncpg prepared statement inside a transaction after the same
   transaction-scoped settings; a first pass over the query
   vectors warms the pages and is reported apart), prints its ``EXPLAIN``
   (custom and generic plans) and checks that it uses the HNSW index; then the encoder alone on one
   short text, and the application's ``EncodeBatcher.encode_one`` on one text;
4. starts the real server (``python -m forum.cli serve --port P``, ``FORUM_WORKER_IN_SERVER=false``,
   ``FORUM_RATE_LIMIT_ENABLED=false``), waits for ``/health``, logs in the bench user (unless
   ``--anonymous``) and warms up; then, for each ``--concurrency`` level, runs that many simulated
   typing users for ``--seconds`` with ``httpx.AsyncClient``: each user types held-out titles (not in
   the corpus) and sends the partial title every 2 to 6 characters (3 to 60 characters), back to back
   (closed loop, no think time). Prints req/s, p50/p95/p99, errors, and the CPU used meanwhile by the
   server, PostgreSQL and this client (the client shares the machine's cores);
5. stops the server (always) and the embedded PostgreSQL, and prints the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from bench.common import (
    DIM,
    CpuMeter,
    ForumServer,
    busy_cores_elsewhere,
    free_port,
    interrupt,
    log,
    login,
    machine_info,
    markdown_table,
    prepare_forum,
    process_tree,
    summary_ms,
    wait_quiet,
)
from bench.mobility_text import generate_posts, generate_queries, typing_prefixes

DEFAULT_ROOT = Path("/tmp/forum-bench-similar")
TARGET_P95_MS = 50.0


# The KNN statement, as the server builds it -----------------------------------------------------


class _CaptureSession:
    """Stands in for the AsyncSession: records what ``GroupingService.prepare_search`` sends."""

    sync_session = SimpleNamespace(get_nested_transaction=lambda: None, get_transaction=lambda: None)

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def execute(self, statement: Any, params: dict[str, Any] | None = None) -> None:
        self.calls.append(str(statement))


@dataclass
class KnnStatement:
    setup: list[str]
    sql: str  # with $1.. placeholders
    statement: Any  # forum.posts.services.DriverStatement
    params: dict[str, Any]

    def args(self, vector: Any) -> list[Any]:
        return self.statement.args(dict(self.params, v=vector))


def capture_knn_statement(model: str, viewer: Any) -> KnnStatement:
    """The statement ``POST /api/posts/similar`` runs (``forum.grouping.similar``, compiled as the server
    compiles it) for the defaults: one encoder whose route searches every post, limit 5, no kind; and the
    transaction-scoped settings it sends first (``GroupingService.prepare_search``)."""
    from forum.encoding import Route
    from forum.grouping import similar
    from forum.grouping.services import GroupingService, visible_neighbours_filter
    from forum.models import visibility_scope

    class _OneModel:  # the default configuration: one encoder, one search over all posts
        models = [model]

        def routes(self, language: str | None) -> list[Route]:
            return [Route(model, DIM, None)]

    session = _CaptureSession()
    service = GroupingService(session, _OneModel(), 0.6)  # type: ignore[arg-type]
    (route,) = _OneModel().routes(None)
    conditions = [*similar._CONDITIONS, visible_neighbours_filter(viewer)]

    async def build() -> Any:
        await service.prepare_search(5)
        where, order = await service.route_search(route, conditions)  # no query for a route over all posts
        return similar._statement(route, where, order, visibility_scope(viewer), viewer is None)

    statement = asyncio.run(build())
    params: dict[str, Any] = {"limit": 5, "model": model}
    if viewer is not None:
        params["viewer_id"] = uuid.UUID(int=1)  # votes nobody cast: the EXISTS probe costs the same
    return KnnStatement(session.calls, statement.sql, statement, params)


async def knn_alone(dsn: str, stmt: KnnStatement, query_vectors: np.ndarray, rounds: int) -> dict[str, Any]:
    """The KNN statement alone over asyncpg (prepared, binary vector parameter, as the app sends it)."""
    import asyncpg
    from pgvector.asyncpg import register_vector

    from forum.grouping.services import vector_literal, vector_param

    conn = await asyncpg.connect(dsn)
    try:
        await register_vector(conn)
        literals = [vector_param(v) for v in query_vectors]
        prepared = await conn.prepare(stmt.sql)
        q_times, tx_times, hits, first_pass = [], [], [], []
        # A first pass over every query vector (pages of the index and heap not yet in shared_buffers),
        # reported apart; then ``rounds`` measured executions (the steady state of a running server).
        for i in range(len(literals) + rounds):
            args = stmt.args(literals[i % len(literals)])
            t0 = time.perf_counter()
            async with conn.transaction():
                for s in stmt.setup:
                    await conn.execute(s)
                t1 = time.perf_counter()
                rows = await prepared.fetch(*args)
                t2 = time.perf_counter()
            t3 = time.perf_counter()
            if i < len(literals):
                first_pass.append(t2 - t1)
            else:
                q_times.append(t2 - t1)
                tx_times.append(t3 - t0)
                hits.append(len(rows))

        # EXPLAIN: the custom plan (with the values, as the first executions of a prepared statement)
        # and the generic plan (what a prepared statement may switch to after 5 executions).
        explain: dict[str, str] = {}
        async with conn.transaction():
            for s in stmt.setup:
                await conn.execute(s)
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + stmt.sql, *stmt.args(literals[0]))
            explain["custom"] = "\n".join(r[0] for r in rows)
        async with conn.transaction():
            for s in stmt.setup:
                await conn.execute(s)
            await conn.execute("PREPARE bench_knn AS " + stmt.sql)
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            values = ", ".join(_sql_literal(a) for a in stmt.args(vector_literal(literals[0])))
            rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_knn({values})")
            explain["generic"] = "\n".join(r[0] for r in rows)
            await conn.execute("DEALLOCATE bench_knn")
        settings = {
            r["name"]: r["setting"] + (r["unit"] or "")
            for r in await conn.fetch(
                "SELECT name, setting, unit FROM pg_settings WHERE name IN "
                "('shared_buffers', 'work_mem', 'effective_cache_size', 'max_connections', 'jit', 'server_version')"
            )
        }
        settings["pgvector"] = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        return {
            "query_ms": summary_ms(q_times),
            "first_pass_query_ms": summary_ms(first_pass),
            "transaction_ms": summary_ms(tx_times),
            "mean_rows": round(float(np.mean(hits)), 2) if hits else 0,
            "explain": explain,
            "pg_settings": settings,
        }
    finally:
        await conn.close()


def _sql_literal(value: Any) -> str:
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def encoder_alone(encoder: Any, texts: Sequence[str], rounds: int) -> dict[str, Any]:
    times = []
    for i in range(rounds + 5):
        t = time.perf_counter()
        encoder.encode([texts[i % len(texts)]])
        if i >= 5:
            times.append(time.perf_counter() - t)
    return summary_ms(times)


def batcher_alone(encoder: Any, texts: Sequence[str], rounds: int) -> dict[str, Any]:
    """One text at a time through the app's EncodeBatcher (its wait + a worker thread + the model)."""
    from forum.encoding import EncodeBatcher

    async def run() -> list[float]:
        batcher = EncodeBatcher(encoder)
        times = []
        for i in range(rounds + 5):
            t = time.perf_counter()
            await batcher.encode_one(texts[i % len(texts)])
            if i >= 5:
                times.append(time.perf_counter() - t)
        return times

    return summary_ms(asyncio.run(run()))


@dataclass
class RunResult:
    concurrency: int
    seconds: float
    requests: int
    errors: dict[str, int]
    latency_ms: dict[str, float]
    req_per_s: float
    mean_results: float
    cpu_cores: dict[str, float] = field(default_factory=dict)


async def drive(
    url: str,
    headers: dict[str, str],
    titles: Sequence[str],
    concurrency: int,
    seconds: float,
    seed: int,
    server_pid: int | None = None,
    postmaster_pid: int | None = None,
) -> RunResult:
    import httpx
    import psutil

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    counts: list[int] = []
    errors: collections.Counter[str] = collections.Counter()
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:
        deadline = time.perf_counter() + seconds

        async def typist(i: int) -> None:
            rng = random.Random(f"typist-{seed}-{concurrency}-{i}")
            while True:
                title = titles[rng.randrange(len(titles))]
                for prefix in typing_prefixes(title, rng):
                    if time.perf_counter() >= deadline:
                        return
                    t0 = time.perf_counter()
                    try:
                        r = await client.post("/api/posts/similar", json={"title": prefix})
                    except httpx.HTTPError as exc:
                        errors[type(exc).__name__] += 1
                        continue
                    dt = time.perf_counter() - t0
                    if r.status_code == 200:
                        latencies.append(dt)
                        counts.append(len(r.json()["items"]))
                    else:
                        errors[str(r.status_code)] += 1

        meter = CpuMeter(
            client=[psutil.Process()], server=process_tree(server_pid), postgres=process_tree(postmaster_pid)
        )
        started = time.perf_counter()
        await asyncio.gather(*(typist(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
        cores = meter.cores()
    return RunResult(
        concurrency=concurrency,
        seconds=round(elapsed, 1),
        requests=len(latencies),
        errors=dict(errors),
        latency_ms=summary_ms(latencies),
        req_per_s=round(len(latencies) / elapsed, 1),
        mean_results=round(float(np.mean(counts)), 2) if counts else 0.0,
        cpu_cores=cores,
    )


# Main ------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.similar", description=__doc__.split("\n")[0])
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=30.0, help="duration of each concurrency level")
    parser.add_argument("--concurrency", default="1,4", help="comma-separated numbers of simulated typists")
    parser.add_argument("--vectors", choices=["real", "random"], default="real")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--anonymous", action="store_true", help="send no token (default: a logged-in member)")
    parser.add_argument("--reuse", action="store_true", help="reuse a completed load in the data dir")
    parser.add_argument(
        "--no-wait-quiet",
        dest="wait_quiet",
        action="store_false",
        help="do not wait for other processes to go quiet before each measurement",
    )
    parser.add_argument("--prepare-only", action="store_true", help="load the data dir, then stop")
    parser.add_argument("--knn-rounds", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None, help="write all results to this file")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    label = "REAL vectors (all-MiniLM-L6-v2)" if args.vectors == "real" else "RANDOM vectors (not representative)"

    # SIGTERM (e.g. from a timeout) still runs the cleanup below.
    signal.signal(signal.SIGTERM, interrupt)

    runs: list[RunResult] = []
    machine = machine_info()
    log(f"machine: {machine}")
    data_dir = (args.data_dir or DEFAULT_ROOT / f"{args.vectors}-n{args.posts}-s{args.seed}").expanduser().resolve()
    results: dict[str, Any] = {
        "posts": args.posts,
        "vectors": args.vectors,
        "seed": args.seed,
        "anonymous": args.anonymous,
        "machine": machine,
        "data_dir": str(data_dir),
        "command": "python -m bench.similar " + " ".join(sys.argv[1:] if argv is None else argv),
    }

    from embeddings import load_encoder
    from forum import database
    from forum.models import User
    from forum.queue import asyncpg_dsn

    encoder = load_encoder(None)
    t = time.perf_counter()
    encoder.encode(["warm up"])
    log(
        f"encoder: {encoder.name} loaded in {time.perf_counter() - t:.1f} s "
        f"(torch threads: {machine.get('torch_threads')})"
    )

    posts = generate_posts(args.posts, args.seed)
    queries = generate_queries(2000, args.seed)
    corpus_titles = {p.title for p in posts}
    held_out = [q for q in queries if q not in corpus_titles]
    log(
        f"corpus: {len(posts)} posts, {len(corpus_titles)} distinct titles; "
        f"{len(held_out)} held-out query titles (of 2000 generated, those not in the corpus)"
    )

    server: ForumServer | None = None
    pgdata = data_dir / "postgres"
    try:
        url, results["load"], _ = prepare_forum(data_dir, posts, args.vectors, args.seed, encoder, reuse=args.reuse)
        dsn = asyncpg_dsn(url)
        if args.prepare_only:
            log(f"prepared {data_dir}: run again with --reuse")
            return 0
        idle = wait_quiet() if args.wait_quiet else busy_cores_elsewhere()
        results["busy_cores_elsewhere_before"] = idle
        log(
            f"other processes keep {idle} cores busy before the measurements"
            + (" (WARNING: noisy machine)" if idle > 0.2 else "")
        )

        # The workload: partial titles as they are typed.
        rng = random.Random(f"forum-bench-prefixes-{args.seed}")
        sample_prefixes = [p for title in held_out[:60] for p in typing_prefixes(title, rng)]
        query_vectors = encoder.encode(sample_prefixes[:200])
        viewer = None if args.anonymous else User(kind="external", role="member")
        stmt = capture_knn_statement(encoder.name, viewer)
        log("KNN statement (forum.grouping.similar, compiled as the server does):")
        for s in stmt.setup:
            log(f"  {s}")
        log("  " + "\n  ".join(line.strip() for line in stmt.sql.strip().splitlines()))
        knn = asyncio.run(knn_alone(dsn, stmt, query_vectors, args.knn_rounds))
        uses_index = "ix_post_embedding_hnsw_384" in knn["explain"]["custom"]
        uses_index_generic = "ix_post_embedding_hnsw_384" in knn["explain"]["generic"]
        log("EXPLAIN (ANALYZE, BUFFERS), custom plan:\n" + knn["explain"]["custom"])
        log("EXPLAIN (ANALYZE, BUFFERS) EXECUTE, forced generic plan:\n" + knn["explain"]["generic"])
        log(f"KNN uses ix_post_embedding_hnsw_384: custom plan {uses_index}, generic plan {uses_index_generic}")
        log(
            f"KNN alone [{label}]: query {knn['query_ms']}, whole transaction {knn['transaction_ms']}; "
            f"first pass over the query vectors (cold pages): {knn['first_pass_query_ms']}"
        )
        log(f"postgres: {knn['pg_settings']}")
        results["knn"] = knn | {"uses_hnsw_custom": uses_index, "uses_hnsw_generic": uses_index_generic}
        results["knn_sql"] = {"setup": stmt.setup, "sql": stmt.sql}

        enc = encoder_alone(encoder, sample_prefixes, 100)
        bat = batcher_alone(encoder, sample_prefixes, 100)
        log(f"encoder alone, one partial title per call: {enc}")
        log(f"EncodeBatcher.encode_one alone (the app's path: {1000 * 0.005:.0f} ms wait + thread + model): {bat}")
        results["encoder_ms"] = enc
        results["batcher_ms"] = bat

        # The real server.
        port = free_port()
        server = ForumServer(data_dir, port, data_dir / "server.log")
        t = time.perf_counter()
        server.start()
        log(f"server: up on {server.url} in {time.perf_counter() - t:.1f} s (log: {server.log_path})")
        headers = {} if args.anonymous else {"Authorization": f"Bearer {login(server.url)}"}
        postmaster = database._embedded_servers[pgdata.resolve()].get_pid()  # type: ignore[attr-defined]
        # Warm-up: the model loads in the background at startup; wait until requests succeed quickly.
        t = time.perf_counter()
        while True:
            w = asyncio.run(drive(server.url, headers, held_out, 2, 3.0, args.seed + 1000))
            if w.requests and not w.errors and w.latency_ms["p50"] < 500:
                break
            if time.perf_counter() - t > 120:
                raise RuntimeError(f"warm-up never settled: {w}")
        log(f"warm-up: done in {time.perf_counter() - t:.1f} s")

        for level in levels:
            if args.wait_quiet:
                wait_quiet()
            r = asyncio.run(
                drive(server.url, headers, held_out, level, args.seconds, args.seed, server.proc.pid, postmaster)
            )
            runs.append(r)
            lat = r.latency_ms
            log(
                f"RESULT [{label}] posts={args.posts} concurrency={level}: {r.req_per_s} req/s, "
                f"p50 {lat.get('p50')} ms, p95 {lat.get('p95')} ms, p99 {lat.get('p99')} ms, "
                f"{r.requests} ok, errors {r.errors or 0}, mean results {r.mean_results}, "
                f"CPU cores busy {r.cpu_cores}"
                + (" NOISY (other processes were busy)" if r.cpu_cores["other"] > 0.2 else "")
            )
        results["runs"] = [r.__dict__ for r in runs]
    finally:
        if server is not None:
            server.stop()
            log("server: stopped")
        database.release_embedded_postgres()

    log("")
    log(f"== POST /api/posts/similar, {args.posts} posts, {label}, {'anonymous' if args.anonymous else 'logged in'} ==")
    log(f"machine: {machine['nproc']} cores ({machine['cpu_model']}), {machine['ram_gb']} GB RAM")
    log(
        f"encoder alone p50 {results['encoder_ms']['p50']} ms; EncodeBatcher.encode_one p50 "
        f"{results['batcher_ms']['p50']} ms; KNN query alone p50 {knn['query_ms']['p50']} ms "
        f"(p95 {knn['query_ms']['p95']}), KNN transaction p50 {knn['transaction_ms']['p50']} ms"
    )
    rows = []
    for r in runs:
        lat, ok = r.latency_ms, "yes" if r.latency_ms.get("p95", 1e9) <= TARGET_P95_MS else "no"
        rows.append([r.concurrency, r.req_per_s, lat.get("p50"), lat.get("p95"), lat.get("p99")])
        rows[-1] += [sum(r.errors.values()), ok, r.cpu_cores.get("other")]
    header = ["concurrency", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "p95 <= 50 ms", "other processes (cores)"]
    log(markdown_table(header, rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
        log(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

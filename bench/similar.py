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
   migrations and bulk-loads users, posts, vectors and clusters with ``COPY``; the HNSW index
   ``ix_post_embedding_hnsw_384`` is dropped before and re-created after the load with its own
   definition read from ``pg_indexes``; then ``VACUUM ANALYZE`` and ``CHECKPOINT``;
3. measures, with the server not running: the KNN SQL alone (the exact statement
   ``GroupingService.nearest`` builds for this endpoint, captured from the service, as an asyncpg
   prepared statement inside a transaction with the same ``SET LOCAL``s; a first pass over the query
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
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.mobility_text import GENERATOR_VERSION, SyntheticPost, generate_posts, generate_queries, typing_prefixes

DEFAULT_ROOT = Path("/tmp/forum-bench-similar")
CACHE_DIR = Path("/tmp/forum-bench-cache")
BENCH_EMAIL = "bench-typist@bench.example"
BENCH_PASSWORD = "bench password 1234"
DIM = 384
N_USERS = 2000
TARGET_P95_MS = 50.0


def log(msg: str) -> None:
    print(msg, flush=True)


# Machine ---------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    ram_gb = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or str(os.cpu_count())
    info: dict[str, Any] = {
        "nproc": int(nproc),
        "cpu_model": cpu_model,
        "ram_gb": ram_gb,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(Exception):
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    with contextlib.suppress(Exception):
        root = Path(__file__).resolve().parent.parent
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "forum", "migrations"], capture_output=True, text=True
        )
        info["git"] = head.stdout.strip() + ("+uncommitted changes in forum/" if dirty.stdout.strip() else "")
    with contextlib.suppress(OSError):
        info["loadavg_at_start"] = Path("/proc/loadavg").read_text().split()[:3]
    return info


# Corpus and vectors ----------------------------------------------------------------------------


def _cache_name(vectors: str, model: str, seed: int, n: int) -> Path:
    safe_model = re.sub(r"[^A-Za-z0-9_.-]", "_", model)
    return CACHE_DIR / f"{vectors}-{safe_model}-g{GENERATOR_VERSION}-s{seed}-n{n}.npy"


def _find_cache(vectors: str, model: str, seed: int, n: int) -> Path | None:
    exact = _cache_name(vectors, model, seed, n)
    if exact.exists():
        return exact
    pattern = re.compile(re.escape(_cache_name(vectors, model, seed, 0).name).replace("n0", r"n(\d+)"))
    best: tuple[int, Path] | None = None
    for path in CACHE_DIR.glob("*.npy") if CACHE_DIR.exists() else []:
        m = pattern.fullmatch(path.name)
        if m and int(m.group(1)) >= n and (best is None or int(m.group(1)) < best[0]):
            best = (int(m.group(1)), path)
    return best[1] if best else None


def corpus_vectors(posts: Sequence[SyntheticPost], mode: str, seed: int, encoder: Any) -> np.ndarray:
    from forum.encoding import post_text

    n = len(posts)
    if mode == "random":
        rng = np.random.default_rng(seed)
        v = rng.standard_normal((n, DIM), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        log(f"vectors: RANDOM unit vectors ({n} x {DIM}), not the model's")
        return v
    cached = _find_cache("real", encoder.name, seed, n)
    if cached is not None:
        v = np.load(cached, mmap_mode="r")[:n]
        log(f"vectors: real {encoder.name}, {n} rows from cache {cached}")
        return np.ascontiguousarray(v, dtype=np.float32)
    texts = [post_text(p.title, p.body) for p in posts]
    unique = list(dict.fromkeys(texts))
    log(f"vectors: encoding {len(unique)} distinct texts of {n} posts with the real {encoder.name} (cached after)")
    out = np.zeros((len(unique), DIM), dtype=np.float32)
    chunk, started = 2048, time.perf_counter()
    for start in range(0, len(unique), chunk):
        out[start : start + chunk] = encoder.encode(unique[start : start + chunk])
        done = min(start + chunk, len(unique))
        rate = done / (time.perf_counter() - started)
        log(f"  {done}/{len(unique)} texts, {rate:.0f}/s, ~{(len(unique) - done) / rate:.0f} s left")
    row = {text: i for i, text in enumerate(unique)}
    vectors = out[[row[t] for t in texts]]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    target = _cache_name("real", encoder.name, seed, n)
    tmp = target.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(target)
    log(f"vectors: {n} encoded in {time.perf_counter() - started:.0f} s, cached in {target}")
    return vectors


# Bulk load -------------------------------------------------------------------------------------


def _uuid7(ms: int, rng: random.Random) -> uuid.UUID:
    rand_a, rand_b = rng.getrandbits(12), rng.getrandbits(62)
    return uuid.UUID(int=(ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b)


def _at(ts: datetime, rng: random.Random) -> uuid.UUID:
    return _uuid7(int(ts.timestamp() * 1000), rng)


async def bulk_load(dsn: str, posts: Sequence[SyntheticPost], vectors: np.ndarray, model: str, seed: int) -> dict:
    import asyncpg
    from argon2 import PasswordHasher
    from pgvector.asyncpg import register_vector

    from forum.encoding import content_hash, post_text

    rng = random.Random(f"forum-bench-load-{seed}")
    timings: dict[str, float] = {}
    conn = await asyncpg.connect(dsn)
    try:
        await register_vector(conn)
        indexdef = await conn.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_post_embedding_hnsw_384'")
        if not indexdef:
            raise RuntimeError("ix_post_embedding_hnsw_384 is missing after the migrations")
        await conn.execute("DROP INDEX ix_post_embedding_hnsw_384")

        now = datetime.now(UTC)
        t = time.perf_counter()
        password_hash = PasswordHasher().hash(BENCH_PASSWORD)
        users = []
        user_ids = []
        start = now - timedelta(days=800)
        for i in range(N_USERS):
            created = start + timedelta(minutes=i)
            uid = _at(created, rng)
            user_ids.append(uid)
            kind = "internal" if i % 10 == 0 else "external"
            role = "product" if i % 100 == 0 else "member"
            email = BENCH_EMAIL if i == 1 else f"user{i}@bench.example"
            users.append((uid, email, f"User {i}", password_hash, kind, role, True, created, created))
        await conn.copy_records_to_table(
            "user_account",
            records=users,
            columns=[
                "id",
                "email",
                "display_name",
                "password_hash",
                "kind",
                "role",
                "is_active",
                "created_at",
                "updated_at",
            ],
        )
        statuses = ["open", "under_review", "planned", "in_progress", "shipped", "declined", "duplicate"]
        status_w = [70, 8, 5, 3, 6, 5, 3]
        span = timedelta(days=730)
        post_rows, emb_rows, post_ids, created_ats = [], [], [], []
        for i, p in enumerate(posts):
            created = now - span + span * (i / max(1, len(posts))) + timedelta(seconds=rng.random() * 60)
            pid = _at(created, rng)
            post_ids.append(pid)
            created_ats.append(created)
            votes = min(5000, int(rng.paretovariate(1.3)) - 1)
            internal_votes = sum(1 for _ in range(min(votes, 50)) if rng.random() < 0.1)
            deleted = created + timedelta(days=1) if rng.random() < 0.01 else None
            post_rows.append(
                (
                    pid,
                    p.kind,
                    p.title,
                    p.body,
                    list(p.tags),
                    "internal" if rng.random() < 0.08 else "public",
                    rng.choices(statuses, weights=status_w)[0],
                    user_ids[rng.randrange(N_USERS)],
                    votes,
                    internal_votes,
                    votes - internal_votes,
                    min(200, int(rng.expovariate(0.5))),
                    0,
                    deleted,
                    created,
                    created,
                )
            )
            text = post_text(p.title, p.body)
            emb_rows.append((pid, model, content_hash(text), vectors[i], created + timedelta(seconds=30)))
        await conn.copy_records_to_table(
            "post",
            records=post_rows,
            columns=[
                "id",
                "kind",
                "title",
                "body",
                "tags",
                "visibility",
                "status",
                "author_id",
                "vote_total",
                "vote_internal",
                "vote_external",
                "comment_count",
                "internal_note_count",
                "deleted_at",
                "created_at",
                "updated_at",
            ],
        )
        timings["users_posts_s"] = time.perf_counter() - t

        # Clusters: posts with the same need share one (the first such post starts it), as grouping would.
        t = time.perf_counter()
        clusters: dict[str, uuid.UUID] = {}
        cluster_rows, member_rows = [], []
        for i, p in enumerate(posts):
            if post_rows[i][13] is not None:  # deleted
                continue
            created = created_ats[i]
            if p.need not in clusters:
                cid = _at(created, rng)
                clusters[p.need] = cid
                cluster_rows.append((cid, created, created))
                similarity = 1.0
            else:
                similarity = round(0.6 + 0.35 * rng.random(), 4)
            manual = rng.random() < 0.05
            member_rows.append(
                (
                    post_ids[i],
                    clusters[p.need],
                    similarity,
                    "confirmed" if manual else "suggested",
                    manual,
                    created,
                    created,
                )
            )
        await conn.copy_records_to_table("cluster", records=cluster_rows, columns=["id", "created_at", "updated_at"])
        await conn.copy_records_to_table(
            "cluster_membership",
            records=member_rows,
            columns=["post_id", "cluster_id", "similarity", "state", "manual", "created_at", "updated_at"],
        )
        timings["clusters_s"] = time.perf_counter() - t

        t = time.perf_counter()
        await conn.copy_records_to_table(
            "post_embedding",
            records=emb_rows,
            columns=["post_id", "model", "content_hash", "embedding", "embedded_at"],
        )
        timings["embeddings_s"] = time.perf_counter() - t

        t = time.perf_counter()
        # Build settings for this session only: the index itself is the migration's definition.
        await conn.execute("SET maintenance_work_mem = '2GB'")
        await conn.execute("SET max_parallel_maintenance_workers = 1")
        await conn.execute(indexdef)
        timings["hnsw_build_s"] = time.perf_counter() - t
        t = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
        timings["vacuum_analyze_s"] = time.perf_counter() - t
        log(f"index: {indexdef}")
        sizes = await conn.fetchrow(
            """SELECT pg_size_pretty(pg_relation_size('ix_post_embedding_hnsw_384')) AS hnsw,
                      pg_size_pretty(pg_total_relation_size('post_embedding')) AS embeddings,
                      pg_size_pretty(pg_total_relation_size('post')) AS posts"""
        )
        log(
            f"sizes: HNSW index {sizes['hnsw']}, post_embedding total {sizes['embeddings']}, "
            f"post total {sizes['posts']}"
        )
        return {
            "timings": {k: round(v, 1) for k, v in timings.items()},
            "clusters": len(cluster_rows),
            "users": len(users),
            "sizes": dict(sizes),
        }
    finally:
        await conn.close()


# The KNN statement, as the service builds it -----------------------------------------------------


class _CaptureSession:
    """Stands in for the AsyncSession: records what ``GroupingService.nearest`` executes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any] | None]] = []

    async def execute(self, statement: Any, params: dict[str, Any] | None = None) -> Any:
        self.calls.append((str(statement), params))

        class _Empty:
            def all(self) -> list[Any]:
                return []

        return _Empty()


@dataclass
class KnnStatement:
    setup: list[str]
    sql: str  # with $1.. placeholders
    names: list[str]
    params: dict[str, Any]

    def args(self, vector_literal: str) -> list[Any]:
        values = dict(self.params, v=vector_literal)
        return [values[name] for name in self.names]


def capture_knn_statement(model: str, viewer: Any) -> KnnStatement:
    from forum.grouping.services import GroupingService, visible_neighbours_filter

    session = _CaptureSession()
    service = GroupingService(session, model, DIM, 0.6)  # type: ignore[arg-type]
    # Exactly what SimilarController.similar asks for with the defaults (limit 5, no kind).
    asyncio.run(
        service.nearest(
            np.zeros(DIM, dtype=np.float32),
            limit=5,
            viewer_filter=visible_neighbours_filter(viewer),
            skip_duplicates=True,
            kind=None,
        )
    )
    *setup, (sql, params) = session.calls
    names: list[str] = []

    def positional(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    sql_positional = re.sub(r"(?<![:\w]):(\w+)", positional, sql)
    return KnnStatement([s for s, _ in setup], sql_positional, names, dict(params or {}))


async def knn_alone(dsn: str, stmt: KnnStatement, query_vectors: np.ndarray, rounds: int) -> dict[str, Any]:
    """The KNN statement alone over asyncpg (prepared, text-format vector parameter, as the app sends it)."""
    import asyncpg

    from forum.grouping.services import vector_literal

    conn = await asyncpg.connect(dsn)
    try:
        literals = [vector_literal(v) for v in query_vectors]
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
            values = ", ".join(_sql_literal(a) for a in stmt.args(literals[0]))
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
            "query_ms": _summary(q_times),
            "first_pass_query_ms": _summary(first_pass),
            "transaction_ms": _summary(tx_times),
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


def _summary(seconds: Sequence[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ms = np.asarray(seconds) * 1000
    return {
        "n": int(ms.size),
        "p50": round(float(np.percentile(ms, 50)), 2),
        "p95": round(float(np.percentile(ms, 95)), 2),
        "p99": round(float(np.percentile(ms, 99)), 2),
        "mean": round(float(ms.mean()), 2),
    }


def encoder_alone(encoder: Any, texts: Sequence[str], rounds: int) -> dict[str, Any]:
    times = []
    for i in range(rounds + 5):
        t = time.perf_counter()
        encoder.encode([texts[i % len(texts)]])
        if i >= 5:
            times.append(time.perf_counter() - t)
    return _summary(times)


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

    return _summary(asyncio.run(run()))


# The real server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ForumServer:
    def __init__(self, data_dir: Path, port: int, log_path: Path) -> None:
        self.port, self.log_path = port, log_path
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORUM_")}
        env.update(
            FORUM_DATA_DIR=str(data_dir),
            FORUM_WORKER_IN_SERVER="false",
            FORUM_RATE_LIMIT_ENABLED="false",
        )
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> None:
        import httpx

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "forum.cli", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the server exited:\n" + self.log_path.read_text()[-3000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError("the server did not answer /health:\n" + self.log_path.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


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


def _cpu_seconds(procs: Sequence[Any]) -> dict[int, float]:
    out = {}
    for p in procs:
        with contextlib.suppress(Exception):
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
    return out


def _machine_cpu_seconds() -> float:
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


def busy_cores_elsewhere(seconds: float = 2.0) -> float:
    """Cores kept busy by other processes right now (this process is idle meanwhile)."""
    before = _machine_cpu_seconds()
    time.sleep(seconds)
    return round((_machine_cpu_seconds() - before) / seconds, 2)


def wait_quiet(threshold: float = 0.15, max_wait: float = 900.0) -> float:
    """Wait (up to ``max_wait`` s) until other processes keep fewer than ``threshold`` cores busy;
    the machine may be shared. Returns the last reading."""
    deadline = time.monotonic() + max_wait
    busy = busy_cores_elsewhere(3.0)
    while busy >= threshold and time.monotonic() < deadline:
        log(f"  waiting for a quiet machine: other processes keep {busy} cores busy")
        time.sleep(10)
        busy = busy_cores_elsewhere(3.0)
    return busy


def _pg_processes(postmaster_pid: int | None) -> list[Any]:
    import psutil

    if postmaster_pid is None:
        return []
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(postmaster_pid)
        return [root, *root.children(recursive=True)]
    return []


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
                        counts.append(len(r.json()))
                    else:
                        errors[str(r.status_code)] += 1

        me = psutil.Process()
        server = [psutil.Process(server_pid)] if server_pid else []
        if server:
            server += server[0].children(recursive=True)
        pg = _pg_processes(postmaster_pid)
        before = (_cpu_seconds([me]), _cpu_seconds(server), _cpu_seconds(pg))
        total_before = _machine_cpu_seconds()
        started = time.perf_counter()
        await asyncio.gather(*(typist(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
        after = (_cpu_seconds([me]), _cpu_seconds(server), _cpu_seconds(pg))
        total_after = _machine_cpu_seconds()
    cores = {}
    for name, b, a in zip(("client", "server", "postgres"), before, after, strict=True):
        cores[name] = round(sum(a[pid] - b.get(pid, 0.0) for pid in a) / elapsed, 2)
    # Everything else on the machine (other users' jobs disturb the numbers: reported, not hidden).
    cores["other"] = round(max(0.0, (total_after - total_before) / elapsed - sum(cores.values())), 2)
    return RunResult(
        concurrency=concurrency,
        seconds=round(elapsed, 1),
        requests=len(latencies),
        errors=dict(errors),
        latency_ms=_summary(latencies),
        req_per_s=round(len(latencies) / elapsed, 1),
        mean_results=round(float(np.mean(counts)), 2) if counts else 0.0,
        cpu_cores=cores,
    )


# Main ------------------------------------------------------------------------------------------


def _stop_embedded(pgdata: Path) -> None:
    import psutil

    from forum import database

    server = database._embedded_servers.get(pgdata.expanduser().resolve())
    if server is not None:
        with contextlib.suppress(Exception):
            # A `forum serve` stopped by SIGTERM exits without running its atexit hooks, so its pid stays
            # in the embedded server's list of users and the server would never be stopped: forget the
            # pids of processes that no longer exist first.
            handles = server.global_process_id_list  # type: ignore[attr-defined]
            with server._lock:  # type: ignore[attr-defined]
                handles.put([pid for pid in handles.get() if psutil.pid_exists(pid)])
            server._cleanup()  # type: ignore[attr-defined]  # stops it when no other process uses it


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


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
    signal.signal(signal.SIGTERM, _interrupt)

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
    from forum.jobs import asyncpg_dsn
    from forum.models import User

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

    marker = data_dir / "bench-load.json"
    marker_key = {"posts": args.posts, "vectors": args.vectors, "seed": args.seed, "gen": GENERATOR_VERSION}
    reuse = args.reuse and marker.exists() and json.loads(marker.read_text()).get("key") == marker_key
    server: ForumServer | None = None
    pgdata = data_dir / "postgres"
    try:
        if reuse:
            log(f"data dir: reusing the completed load in {data_dir}")
            url = database.start_embedded_postgres(pgdata)
            results["load"] = json.loads(marker.read_text()).get("load")
        else:
            vectors = corpus_vectors(posts, args.vectors, args.seed, encoder)
            if data_dir.exists():
                log(f"data dir: wiping {data_dir}")
                shutil.rmtree(data_dir)
            data_dir.mkdir(parents=True)
            t = time.perf_counter()
            url = database.start_embedded_postgres(pgdata)
            database.upgrade(url)
            log(f"database: embedded PostgreSQL started and migrated in {time.perf_counter() - t:.1f} s")
            t = time.perf_counter()
            load = asyncio.run(bulk_load(asyncpg_dsn(url), posts, vectors, encoder.name, args.seed))
            load["total_s"] = round(time.perf_counter() - t, 1)
            log(f"load: {load}")
            results["load"] = load
            marker.write_text(json.dumps({"key": marker_key, "load": load}))
            del vectors
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
        log("KNN statement (captured from GroupingService.nearest):")
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
        import httpx

        headers: dict[str, str] = {}
        if not args.anonymous:
            r = httpx.post(f"{server.url}/api/auth/login", json={"email": BENCH_EMAIL, "password": BENCH_PASSWORD})
            r.raise_for_status()
            headers["Authorization"] = f"Bearer {r.json()['access_token']}"
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
        _stop_embedded(pgdata)

    log("")
    log(f"== POST /api/posts/similar, {args.posts} posts, {label}, {'anonymous' if args.anonymous else 'logged in'} ==")
    log(f"machine: {machine['nproc']} cores ({machine['cpu_model']}), {machine['ram_gb']} GB RAM")
    log(
        f"encoder alone p50 {results['encoder_ms']['p50']} ms; EncodeBatcher.encode_one p50 "
        f"{results['batcher_ms']['p50']} ms; KNN query alone p50 {knn['query_ms']['p50']} ms "
        f"(p95 {knn['query_ms']['p95']}), KNN transaction p50 {knn['transaction_ms']['p50']} ms"
    )
    log("| concurrency | req/s | p50 ms | p95 ms | p99 ms | errors | p95 <= 50 ms | other processes (cores) |")
    log("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        ok = "yes" if r.latency_ms.get("p95", 1e9) <= TARGET_P95_MS else "no"
        log(
            f"| {r.concurrency} | {r.req_per_s} | {r.latency_ms.get('p50')} | {r.latency_ms.get('p95')} | "
            f"{r.latency_ms.get('p99')} | {sum(r.errors.values())} | {ok} | {r.cpu_cores.get('other')} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
        log(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

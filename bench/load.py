"""Load benchmark: the real server under a real HTTP load generator, next to its floor.

Usage (from the repository root, in the project's virtualenv)::

    python -m bench.load --posts 100000 [--seconds 15] [--concurrency 8] [--similar-concurrency 1,4]
                         [--client auto|wrk|python] [--data-dir DIR] [--reuse] [--json FILE]

One run:

1. builds a realistic forum of ``--posts`` posts (``bench.common.bulk_load``: users, posts, power-law
   votes with consistent counters, comments, merges, subscriptions, clusters, vectors) in a fresh
   embedded PostgreSQL under ``/tmp/forum-bench-load`` (``--reuse`` keeps a completed load, and undoes
   what an earlier run wrote: see ``reset_bench_writes``);
2. measures the raw encoder: ``encode()`` of the model alone, in batches, texts/s;
3. starts the real server (``python -m forum.cli serve``, one process, ``FORUM_WORKER_IN_SERVER=false``,
   ``FORUM_RATE_LIMIT_ENABLED=false``) and drives each endpoint for ``--seconds`` at a fixed number of
   connections (closed loop) with ``wrk`` (Lua scripts: tokens, bodies, varying ids) or, without wrk,
   a Python asyncio client: list top posts, get one post, create a post, vote/unvote, similar-as-you-type
   (at ``--similar-concurrency``), list clusters (product team); then as-you-type as people send it
   (``--paced-typists``: each typist one request per composer debounce, open loop, Python client);
4. the floor: stops the server and serves the same list and vote requests from ``bench/floor.py`` (the same
   SQL for the list, the same row changes for a vote, raw asyncpg, Litestar on uvicorn, one process) on
   the same database, with the same scripts and connections;
5. the worker: inserts a backlog of posts without vectors, restarts the server, starts ``forum worker``,
   counts ``post_embedding`` rows to get posts embedded per second, then posts again (create) while the
   worker is busy;
6. prints one table (req/s, p50/p95/p99, errors, floor and ratio, targets) and writes ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH_EMAIL,
    REAL_VECTORS_DEFAULT,
    RESERVED_USERS,
    CpuMeter,
    ForumServer,
    busy_cores_elsewhere,
    cluster_tally_rebuild,
    free_port,
    interrupt,
    log,
    login,
    machine_info,
    open_loop,
    prepare_forum,
    process_tree,
    summary_ms,
    user_email,
    uuid_at,
    wait_quiet,
)
from bench.mobility_text import generate_posts, generate_queries, typing_prefixes

DEFAULT_ROOT = Path("/tmp/forum-bench-load")
ROOT = Path(__file__).resolve().parent.parent
QUIET_MAX_WAIT = 20.0  # the machine is shared: wait at most this long for it to go quiet
N_VOTERS = 64  # users 2..65 vote (reserved: no loaded votes)
# The composer's title field asks for similar posts 400 ms after the last keystroke (forum/web/templates/
# compose.html: hx-trigger "input changed delay:400ms", hx-sync replace): a typist sends at most one request
# per 400 ms, and only when pausing that long; four people typing send at most ~10 requests/s together.
DEBOUNCE_MS = 400.0
CLUSTER_SORTS = ("voters", "members", "growth", "new", "detractors")  # GET /api/clusters?sort=
TARGETS = {
    "list_top": "ours >= 60 % of the floor's req/s",
    "vote": "ours >= 60 % of the floor's req/s",
    "similar": "p95 <= 50 ms (one typist)",
    "similar_4": "p95 <= 50 ms (four typists back to back: saturation, not people)",
    "similar_4_paced": "p95 <= 50 ms (four typists at the composer's pace)",
    "worker": ">= 80 % of the raw encoder's texts/s",
    "create_busy": "p99 within 20 % of p99 with the worker idle",
    "list_deep": "ours >= 60 % of the floor's req/s",
    "clusters": "p95 <= 50 ms (every sort)",
    "cluster_detail": "p95 <= 50 ms",
    **{f"clusters_{sort}": "p95 <= 50 ms" for sort in CLUSTER_SORTS},
}


# Requests ----------------------------------------------------------------------------------------


@dataclass
class Req:
    method: str
    path: str
    headers: dict[str, str]
    body: str | None = None


@dataclass
class Workload:
    name: str
    requests: list[Req]
    sequential: bool = False  # walk the list in order (vote then unvote) instead of at random
    ok_status: tuple[int, ...] = (200,)


@dataclass
class Run:
    name: str
    concurrency: int
    seconds: float
    client: str
    requests: int
    errors: dict[str, int]
    req_per_s: float
    latency_ms: dict[str, float]
    cpu_cores: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def _lua_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'


def wrk_script(workload: Workload, out: Path) -> str:
    header_sets: dict[tuple, int] = {}
    lines = []
    for r in workload.requests:
        key = tuple(sorted(r.headers.items()))
        idx = header_sets.setdefault(key, len(header_sets) + 1)
        body = _lua_str(r.body) if r.body is not None else "nil"
        lines.append(f"{{{_lua_str(r.method)}, {_lua_str(r.path)}, {idx}, {body}}},")
    headers = [
        "{" + ", ".join(f"[{_lua_str(k)}] = {_lua_str(v)}" for k, v in key) + "},"
        for key, _ in sorted(header_sets.items(), key=lambda kv: kv[1])
    ]
    return f"""
local reqs = {{
{chr(10).join(lines)}
}}
local hdrs = {{
{chr(10).join(headers)}
}}
local sequential = {"true" if workload.sequential else "false"}
local counter = 0
init = function(args) math.randomseed(12345) end
request = function()
  counter = counter + 1
  local r
  if sequential then r = reqs[((counter - 1) % #reqs) + 1] else r = reqs[math.random(#reqs)] end
  return wrk.format(r[1], r[2], hdrs[r[3]], r[4])
end
done = function(summary, latency, requests)
  local f = io.open({_lua_str(str(out))}, "w")
  f:write(string.format(
    '{{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, ' ..
    '"p50": %f, "p95": %f, "p99": %f, "max": %f, "mean": %f}}',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, latency.mean))
  f:close()
end
"""


def _cmdline(process: Any) -> list[str]:
    try:
        return process.cmdline()
    except Exception:
        return []


def embedded_worker_rss_mb(server_pid: int) -> dict[str, float]:
    """Resident memory of ``forum serve`` and of its embedded worker process (its own model copy)."""
    import psutil

    server = psutil.Process(server_pid)
    out = {"server": round(server.memory_info().rss / 2**20)}
    for child in server.children(recursive=True):
        if any("forum.worker_process" in part for part in _cmdline(child)):
            out["worker_process"] = round(child.memory_info().rss / 2**20)
    return out


class Driver:
    """Runs one workload for a bounded time at a fixed concurrency; wrk when present, else Python."""

    def __init__(self, client: str, work_dir: Path, server_pid: int | None = None, postmaster: int | None = None):
        self.client = client
        self.work_dir = work_dir
        self.server_pid = server_pid
        self.postmaster = postmaster
        self.worker_pid: int | None = None  # a `forum worker` running meanwhile (its CPU reported apart)

    def run(
        self,
        url: str,
        workload: Workload,
        concurrency: int,
        seconds: float,
        name: str | None = None,
        interval: float | None = None,
    ) -> Run:
        """Closed loop: ``concurrency`` connections, each sending its next request when the last is answered.
        With ``interval``: open loop (always the Python client), ``concurrency`` senders each sending one
        request every ``interval`` s, latency measured from the scheduled time (``bench.common.open_loop``)."""
        import psutil

        worker = [psutil.Process(self.worker_pid)] if self.worker_pid else []
        server = process_tree(self.server_pid)
        # `forum serve`'s embedded worker is a child process: its CPU is the worker's, not the server's.
        embedded = [p for p in server if any("forum.worker_process" in part for part in _cmdline(p))]
        meter = CpuMeter(
            server=[p for p in server if p not in embedded],
            postgres=process_tree(self.postmaster),
            worker=worker + embedded,
            client=[psutil.Process()],
        )
        if self.client == "wrk" and interval is None:
            run, client_cpu = self._wrk(url, workload, concurrency, seconds)
        else:
            run = asyncio.run(self._python(url, workload, concurrency, seconds, interval))
            client_cpu = 0.0
        run.cpu_cores = meter.cores(client=client_cpu)
        run.name = name or workload.name
        return run

    def _wrk(self, url: str, workload: Workload, concurrency: int, seconds: float) -> tuple[Run, float]:
        out = self.work_dir / f"wrk-{workload.name}-out.json"
        script = self.work_dir / f"wrk-{workload.name}.lua"
        script.write_text(wrk_script(workload, out))
        out.unlink(missing_ok=True)
        cmd = [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        _, status, rusage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        text = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"wrk failed ({proc.returncode}): {text}")
        r = json.loads(out.read_text())
        duration = r["duration_us"] / 1e6
        errors = {k: r[k] for k in ("connect", "read", "write", "timeout") if r[k]}
        if r["status"]:
            errors["non-2xx/3xx"] = r["status"]
        ok = r["requests"] - r["status"]
        lat = {k: round(r[k] / 1000, 2) for k in ("p50", "p95", "p99", "max", "mean")}
        run = Run(workload.name, concurrency, round(duration, 1), "wrk", ok, errors, round(ok / duration, 1), lat)
        return run, rusage.ru_utime + rusage.ru_stime

    async def _python(
        self, url: str, workload: Workload, concurrency: int, seconds: float, interval: float | None = None
    ) -> Run:
        import httpx

        # Open loop: a request is sent on time even while the sender's last one is still being answered.
        connections = concurrency if interval is None else None
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=concurrency)
        latencies: list[float] = []
        errors: collections.Counter[str] = collections.Counter()
        counter = 0
        rng = random.Random(12345)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

            async def send(since: float) -> None:
                nonlocal counter
                counter += 1
                reqs = workload.requests
                r = reqs[(counter - 1) % len(reqs)] if workload.sequential else reqs[rng.randrange(len(reqs))]
                try:
                    resp = await client.request(r.method, r.path, headers=r.headers, content=r.body)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                    return
                if resp.status_code < 400:
                    latencies.append(time.perf_counter() - since)
                else:
                    errors[str(resp.status_code)] += 1

            if interval is None:
                deadline = time.perf_counter() + seconds

                async def user() -> None:
                    while time.perf_counter() < deadline:
                        await send(time.perf_counter())

                started = time.perf_counter()
                await asyncio.gather(*(user() for _ in range(concurrency)))
                elapsed = time.perf_counter() - started
            else:
                elapsed = await open_loop(concurrency, interval, seconds, send)
        return Run(
            workload.name,
            concurrency,
            round(elapsed, 1),
            "python (httpx asyncio)" if interval is None else f"python, open loop every {interval * 1000:.0f} ms",
            len(latencies),
            dict(errors),
            round(len(latencies) / elapsed, 1),
            summary_ms(latencies),
        )


# Database helpers ---------------------------------------------------------------------------------


async def _fetch_ids(dsn: str, seed: int) -> dict[str, Any]:
    import asyncpg

    from forum.posts.schemas import PostSort
    from forum.posts.services import _encode_cursor

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"SELECT setseed({(seed % 1000) / 1000})")
        ids = [
            r["id"]
            for r in await conn.fetch(
                """SELECT id FROM post WHERE deleted_at IS NULL AND visibility = 'public' AND merged_into_id IS NULL
                   ORDER BY random() LIMIT 5000"""
            )
        ]
        clusters = [
            r["cluster_id"]
            for r in await conn.fetch(
                """(SELECT cluster_id FROM cluster_tally WHERE member_count > 0 ORDER BY voters DESC LIMIT 100)
                   UNION ALL
                   (SELECT cluster_id FROM cluster_tally WHERE member_count > 0 ORDER BY random() LIMIT 100)"""
            )
        ]
        # Deep pages of the board's top list, as the `next` cursors forum gives (the keys of the post just
        # before each page).
        board = """FROM post WHERE deleted_at IS NULL AND visibility = 'public'
                   AND status IN ('open', 'under_review', 'planned', 'in_progress')"""
        n_board = await conn.fetchval(f"SELECT count(*) {board}")
        cursors = []
        for depth in (n_board // 10, n_board // 4, n_board // 2, (3 * n_board) // 4):
            row = await conn.fetchrow(
                f"SELECT vote_total, created_at, id {board} ORDER BY vote_total DESC, created_at DESC, id DESC "
                "OFFSET $1 LIMIT 1",
                depth - 1,
            )
            cursors.append((depth, _encode_cursor(PostSort.TOP, [row["vote_total"], row["created_at"], row["id"]])))
        counts = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM post) AS posts, (SELECT count(*) FROM vote) AS votes,
                      (SELECT count(*) FROM comment) AS comments, (SELECT count(*) FROM cluster) AS clusters"""
        )
        return {"ids": ids, "clusters": clusters, "cursors": cursors, "counts": dict(counts)}
    finally:
        await conn.close()


async def reset_bench_writes(dsn: str, loaded_at: datetime) -> dict[str, int]:
    """Undo what a run wrote, so a reused load starts the same: the reserved users' votes (counters and
    ``post_vote_day`` adjusted), their subscriptions and opt-outs, every post created after the load
    (with its rows), the clusters left empty, and the job queue."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        reserved = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM user_account WHERE email = ANY($1::text[])",
                [user_email(i) for i in range(RESERVED_USERS)],
            )
        ]
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                """CREATE TEMP TABLE gone ON COMMIT DROP AS
                   WITH d AS (DELETE FROM vote WHERE user_id = ANY($1::uuid[])
                              RETURNING post_id, voter_kind, created_at)
                   SELECT * FROM d""",
                reserved,
            )
            votes = await conn.fetchval("SELECT count(*) FROM gone")
            await conn.execute(
                """UPDATE post p SET vote_total = p.vote_total - g.n, vote_internal = p.vote_internal - g.ni,
                          vote_external = p.vote_external - (g.n - g.ni)
                   FROM (SELECT post_id, count(*) AS n, count(*) FILTER (WHERE voter_kind = 'internal') AS ni
                         FROM gone GROUP BY post_id) g
                   WHERE p.id = g.post_id"""
            )
            await conn.execute(
                """UPDATE post_vote_day d SET votes = d.votes - g.n
                   FROM (SELECT post_id, (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n
                         FROM gone GROUP BY 1, 2) g
                   WHERE d.post_id = g.post_id AND d.day = g.day"""
            )
            await conn.execute("DELETE FROM post_vote_day WHERE votes = 0")
            await conn.execute(
                "DELETE FROM subscription WHERE user_id = ANY($1::uuid[]) AND created_at > $2", reserved, loaded_at
            )
            await conn.execute("DELETE FROM unsubscription WHERE user_id = ANY($1::uuid[])", reserved)
            await conn.execute(
                "CREATE TEMP TABLE new_posts ON COMMIT DROP AS SELECT id FROM post WHERE created_at > $1", loaded_at
            )
            posts = await conn.fetchval("SELECT count(*) FROM new_posts")
            for table in (
                "vote",
                "post_vote_day",
                "post_embedding",
                "cluster_membership",
                "status_change",
                "subscription",
                "comment",
                "notification",
            ):
                await conn.execute(f"DELETE FROM {table} WHERE post_id IN (SELECT id FROM new_posts)")
            await conn.execute("DELETE FROM post WHERE id IN (SELECT id FROM new_posts)")
            await conn.execute(
                """DELETE FROM cluster c WHERE c.created_at > $1
                   AND NOT EXISTS (SELECT 1 FROM cluster_membership m WHERE m.cluster_id = c.id)""",
                loaded_at,
            )
            for table in ("pgqueuer", "pgqueuer_log"):
                if await conn.fetchval("SELECT to_regclass($1)", table):
                    await conn.execute(f"DELETE FROM {table}")
            for statement in cluster_tally_rebuild():  # the deletes above bypassed its triggers
                await conn.execute(statement)
        await conn.execute("VACUUM ANALYZE")
        return {"votes": votes, "posts": posts}
    finally:
        await conn.close()


async def insert_backlog(dsn: str, texts: Sequence[Any], author_email: str) -> int:
    """Posts without vectors (as if written while no worker ran): the worker's startup sweep queues them."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        # The loaded corpus (English, bench/mobility_text.py) records its language, as posts written through
        # the API do: otherwise the worker's sweep would queue every corpus post to record it, and the
        # measured window would group old posts again instead of embedding the backlog.
        await conn.execute("UPDATE post SET language = 'en' WHERE language IS NULL")
        author = await conn.fetchval("SELECT id FROM user_account WHERE email = $1", author_email)
        rng = random.Random()
        now = datetime.now(UTC)
        rows = [
            (uuid_at(now, rng), p.kind, p.title, p.body, list(p.tags), "public", "open", author, now, now)
            for p in texts
        ]
        await conn.copy_records_to_table(
            "post",
            records=rows,
            columns=[
                "id",
                "kind",
                "title",
                "body",
                "tags",
                "visibility",
                "status",
                "author_id",
                "created_at",
                "updated_at",
            ],
        )
        return len(rows)
    finally:
        await conn.close()


async def count_embeddings(dsn: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM post_embedding")
    finally:
        await conn.close()


# Measurements -------------------------------------------------------------------------------------


def raw_encoder(encoder: Any, texts: Sequence[str], batch: int, seconds: float) -> dict[str, Any]:
    """The model alone: ``encode()`` on batches of ``batch`` texts, back to back, texts/s."""
    encoder.encode(list(texts[:batch]))  # warm
    done, started, i = 0, time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        chunk = [texts[(i + k) % len(texts)] for k in range(batch)]
        encoder.encode(chunk)
        done += len(chunk)
        i += batch
    elapsed = time.perf_counter() - started
    return {"batch": batch, "texts": done, "seconds": round(elapsed, 1), "texts_per_s": round(done / elapsed, 1)}


class _Done(Exception):
    """Every measurement asked for (``--only``) is done: skip the worker phase."""


def same_answers(ours: str, floor: str, cursors: Sequence[tuple[int, str]]) -> None:
    """The floor must answer what forum answers, or its ratio means nothing: compare a few list pages."""
    import httpx

    for query in ["sort=top&limit=20", "sort=top&limit=20&offset=40"] + [
        f"sort=top&limit=20&after={c}" for _, c in cursors[:2]
    ]:
        a, b = (httpx.get(f"{url}/api/posts?{query}", timeout=60).json() for url in (ours, floor))
        if a != b:
            raise RuntimeError(f"the floor answers {query} differently from forum:\n{a}\n{b}")
    log("floor: answers the same list pages as forum")


def build_workloads(
    fetched: dict[str, Any], tokens: dict[str, Any], new_posts: Sequence[Any], queries: Sequence[str], seed: int
) -> dict[str, Workload]:
    ids = fetched["ids"]
    rng = random.Random(f"forum-bench-load-workloads-{seed}")
    json_h = {"Content-Type": "application/json"}
    writer = {"Authorization": f"Bearer {tokens['writer']}", **json_h}
    product = {"Authorization": f"Bearer {tokens['product']}"}
    w: dict[str, Workload] = {}
    w["list_top"] = Workload(
        "list_top", [Req("GET", f"/api/posts?sort=top&limit=20&offset={o}", {}) for o in (0, 0, 0, 0, 20, 40, 60, 80)]
    )
    w["get_post"] = Workload("get_post", [Req("GET", f"/api/posts/{i}", {}) for i in ids])
    w["create_post"] = Workload(
        "create_post",
        [
            Req(
                "POST",
                "/api/posts",
                writer,
                json.dumps({"kind": p.kind, "title": p.title, "body": p.body, "tags": list(p.tags)}),
            )
            for p in new_posts
        ],
        ok_status=(201,),
    )
    votes = []
    for _ in range(4000):
        post_id = ids[rng.randrange(len(ids))]
        voter = {"Authorization": f"Bearer {tokens['voters'][rng.randrange(len(tokens['voters']))]}"}
        votes += [Req("PUT", f"/api/posts/{post_id}/vote", voter), Req("DELETE", f"/api/posts/{post_id}/vote", voter)]
    w["vote"] = Workload("vote", votes, sequential=True)
    prefixes = [p for title in queries for p in typing_prefixes(title, rng)]
    w["similar"] = Workload(
        "similar",
        [Req("POST", "/api/posts/similar", writer, json.dumps({"title": p})) for p in prefixes[:4000]],
        sequential=True,
    )
    deep = [Req("GET", f"/api/posts?sort=top&limit=20&after={cursor}", {}) for _, cursor in fetched["cursors"]]
    w["list_deep"] = Workload("list_deep", deep)
    w["clusters"] = Workload(
        "clusters",
        [
            Req("GET", f"/api/clusters?sort={sort}&limit=20&offset={offset}", product)
            for sort in CLUSTER_SORTS
            for offset in (0, 0, 20)
        ],
    )
    for sort in CLUSTER_SORTS:  # each sort alone (--only clusters_sorts): the target is per sort
        w[f"clusters_{sort}"] = Workload(
            f"clusters_{sort}",
            [Req("GET", f"/api/clusters?sort={sort}&limit=20&offset={offset}", product) for offset in (0, 0, 20)],
        )
    w["cluster_detail"] = Workload(
        "cluster_detail", [Req("GET", f"/api/clusters/{c}", product) for c in fetched["clusters"]]
    )
    return w


# Main ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured duration of each endpoint")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured run before each endpoint")
    parser.add_argument("--concurrency", type=int, default=8, help="connections (closed loop) per endpoint")
    parser.add_argument(
        "--similar-concurrency", default="1,4", help="typists for similar-as-you-type, back to back (closed loop)"
    )
    parser.add_argument(
        "--paced-typists",
        default="4",
        help="typists for similar-as-you-type at the composer's pace: one request every --debounce-ms each, "
        "open loop (empty: none)",
    )
    parser.add_argument(
        "--debounce-ms",
        type=float,
        default=DEBOUNCE_MS,
        help="the composer's wait after the last keystroke before it asks for similar posts",
    )
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--vectors", choices=["real", "random"], default="real")
    parser.add_argument(
        "--real-vectors", type=int, default=REAL_VECTORS_DEFAULT, help="posts encoded by the model; others borrow"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reuse", action="store_true", help="reuse a completed load in the data dir")
    parser.add_argument("--prepare-only", action="store_true", help="load the data dir, then stop")
    parser.add_argument("--worker-seconds", type=float, default=20.0, help="measured worker throughput window")
    parser.add_argument(
        "--worker",
        choices=["server", "process"],
        default="server",
        help="the worker inside `forum serve` (the embedded default) or a `forum worker` process beside it",
    )
    parser.add_argument(
        "--no-wait-quiet", dest="wait_quiet", action="store_false", help="do not wait for a quiet machine"
    )
    parser.add_argument(
        "--only",
        default=None,
        help="measure only these, comma-separated (list_top, list_deep, vote, get_post, create_post, clusters, "
        "clusters_sorts (each sort alone), cluster_detail, similar, worker); default: all."
        " The worker's rows alone: --only create_post,worker",
    )
    parser.add_argument("--json", type=Path, default=None, help="write all results to this file")
    parser.add_argument(
        "--table", type=Path, nargs="+", default=None, help="print one table from earlier --json files, then stop"
    )
    args = parser.parse_args(argv)
    if args.table:
        scaling_table([json.loads(p.read_text()) for p in args.table])
        return 0
    signal.signal(signal.SIGTERM, interrupt)
    only = {name.strip() for name in args.only.split(",")} if args.only else None

    def wanted(name: str) -> bool:
        return only is None or name in only

    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    if client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk), use --client python")
    machine = machine_info()
    log(f"machine: {machine}")
    log(f"load generator: {client}" + ("" if client == "wrk" else " (wrk not found: the Python client is slower)"))
    data_dir = (args.data_dir or DEFAULT_ROOT / f"{args.vectors}-n{args.posts}-s{args.seed}").expanduser().resolve()
    results: dict[str, Any] = {
        "posts": args.posts,
        "machine": machine,
        "client": client,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "data_dir": str(data_dir),
        "command": "python -m bench.load " + " ".join(sys.argv[1:] if argv is None else argv),
    }

    from embeddings import load_encoder
    from forum import database
    from forum.encoding import post_text
    from forum.queue import asyncpg_dsn

    encoder = load_encoder(None)
    encoder.encode(["warm up"])
    extra = 60_000  # posts beyond the corpus: bodies for create, and the worker's backlog
    all_posts = generate_posts(args.posts + extra, args.seed)
    posts, spare = all_posts[: args.posts], all_posts[args.posts :]
    del all_posts
    new_posts, backlog_pool = spare[:5000], spare[5000:]
    queries = generate_queries(400, args.seed)

    pgdata = data_dir / "postgres"
    servers: list[ForumServer] = []
    worker_proc: subprocess.Popen[bytes] | None = None
    runs: list[Run] = []
    try:
        url, results["load"], reused = prepare_forum(
            data_dir, posts, args.vectors, args.seed, encoder, reuse=args.reuse, real_vectors=args.real_vectors
        )
        if reused:
            t = time.perf_counter()
            undone = asyncio.run(
                reset_bench_writes(asyncpg_dsn(url), datetime.fromisoformat(results["load"]["loaded_at"]))
            )
            log(f"reset: removed what earlier runs wrote {undone} in {time.perf_counter() - t:.1f} s")
        dsn = asyncpg_dsn(url)
        if args.prepare_only:
            log(f"prepared {data_dir}: run again with --reuse")
            return 0
        work_dir = data_dir / "run"
        work_dir.mkdir(exist_ok=True)
        fetched = asyncio.run(_fetch_ids(dsn, args.seed))
        results["dataset"] = fetched["counts"]
        log(f"dataset: {fetched['counts']}")

        quiet = (
            (lambda: wait_quiet(max_wait=QUIET_MAX_WAIT)) if args.wait_quiet else (lambda: busy_cores_elsewhere(1.0))
        )
        # The raw encoder: encode() alone on the texts the worker will embed, in batches.
        backlog_texts = [post_text(p.title, p.body) for p in backlog_pool[:2048]]
        raw_measures = []
        if wanted("worker"):
            quiet()
            raw_measures.append({b: raw_encoder(encoder, backlog_texts, b, 8.0) for b in (32, 64)})
            log(f"raw encoder ({encoder.name}, encode() alone): {raw_measures[0]}")
        postmaster = database._embedded_servers[pgdata.resolve()].get_pid()  # type: ignore[attr-defined]

        def start_forum(name: str, **env: str) -> ForumServer:
            # The model whose vectors were loaded (and the raw encoder's): the worker's sweep then finds the
            # corpus current, and its texts/s compare with the raw encoder's on the same model.
            extra_env = {"FORUM_EMBEDDING_MODEL": encoder.name, **env}
            srv = ForumServer(data_dir, free_port(), work_dir / f"{name}.log", extra_env=extra_env)
            t = time.perf_counter()
            srv.start()
            servers.append(srv)
            log(f"{name}: up on {srv.url} in {time.perf_counter() - t:.1f} s")
            return srv

        def measure(
            driver: Driver,
            srv: ForumServer,
            workload: Workload,
            concurrency: int,
            name: str,
            interval: float | None = None,
        ) -> Run:
            if args.warmup > 0:
                driver.run(srv.url, workload, concurrency, args.warmup, interval=interval)
            if args.wait_quiet:
                wait_quiet(max_wait=QUIET_MAX_WAIT)
            r = driver.run(srv.url, workload, concurrency, args.seconds, name, interval)
            runs.append(r)
            lat = r.latency_ms
            log(
                f"RESULT {name} c={concurrency}: {r.req_per_s} req/s, p50 {lat.get('p50')} ms, "
                f"p95 {lat.get('p95')} ms, "
                f"p99 {lat.get('p99')} ms, errors {r.errors or 0}, CPU cores {r.cpu_cores}"
                + (" NOISY" if r.cpu_cores.get("other", 0) > 0.2 else "")
            )
            return r

        # The real server, and the floor next to it (idle while the other is measured).
        srv = start_forum("server")
        # The floor: the same database, the same scripts; each measured right after ours.
        secret = (data_dir / "secret_key").read_text().strip()
        cfg_path = work_dir / "floor.json"
        cfg_path.write_text(json.dumps({"dsn": dsn, "secret": secret}))
        floor = ForumServer(
            data_dir,
            free_port(),
            work_dir / "floor.log",
            extra_env={"BENCH_FLOOR_CONFIG": str(cfg_path)},
            command=[
                sys.executable,
                "-m",
                "uvicorn",
                "bench.floor:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
                "--log-level",
                "info",
            ],
        )
        floor.start()
        servers.append(floor)
        log(f"floor: up on {floor.url}")
        fdriver = Driver(client, work_dir, floor.proc.pid if floor.proc else None, postmaster)
        tokens = {
            "writer": login(srv.url, BENCH_EMAIL),
            "product": login(srv.url, user_email(0)),
            "voters": [login(srv.url, user_email(i)) for i in range(2, 2 + N_VOTERS)],
        }
        workloads = build_workloads(fetched, tokens, new_posts, queries, args.seed)
        if any(wanted(name) for name in ("list_top", "list_deep", "vote")):  # the floor serves only those
            same_answers(srv.url, floor.url, fetched["cursors"])
        driver = Driver(client, work_dir, srv.proc.pid if srv.proc else None, postmaster)
        # The model loads in the background at startup: wait until as-you-type answers.
        driver.run(srv.url, workloads["similar"], 1, 5.0)
        for name in ("list_top", "list_deep", "vote"):
            if wanted(name):
                measure(driver, srv, workloads[name], args.concurrency, name)
                measure(fdriver, floor, workloads[name], args.concurrency, f"floor_{name}")
        floor.stop()
        if wanted("clusters") or wanted("clusters_sorts") or wanted("cluster_detail"):
            # What the worker's sweep does after a load (forum/grouping/descriptions.py): store every
            # cluster's description, so that the lists read them (the bench's server runs no worker).
            t = time.perf_counter()
            described = subprocess.run(
                [sys.executable, "-m", "forum.cli", "grouping", "describe"],
                env=srv.env,
                capture_output=True,
                text=True,
                check=True,
            )
            results["describe_s"] = round(time.perf_counter() - t, 1)
            log(f"descriptions: {described.stdout.strip()} ({results['describe_s']} s with the CLI's start-up)")
        for name in ("get_post", "create_post", "clusters", "cluster_detail"):
            if wanted(name):
                measure(driver, srv, workloads[name], args.concurrency, name)
            if name == "clusters" and wanted("clusters_sorts"):
                for sort in CLUSTER_SORTS:
                    measure(driver, srv, workloads[f"clusters_{sort}"], args.concurrency, f"clusters_{sort}")
        for level in [int(x) for x in args.similar_concurrency.split(",") if x.strip()]:
            if wanted("similar"):
                measure(driver, srv, workloads["similar"], level, f"similar@{level}")
        for level in [int(x) for x in args.paced_typists.split(",") if x.strip()]:
            if wanted("similar"):
                pace = args.debounce_ms / 1000
                measure(driver, srv, workloads["similar"], level, f"similar_paced@{level}", pace)
        if not wanted("worker"):
            srv.stop()
            results["runs"] = [r.__dict__ for r in runs]
            raise _Done

        # The raw encoder again, next to the worker phase (the servers idle); the best reading counts: other
        # processes can only slow it down.
        quiet()
        raw_measures.append({b: raw_encoder(encoder, backlog_texts, b, 8.0) for b in (32, 64)})
        best = max((r for m in raw_measures for r in m.values()), key=lambda r: r["texts_per_s"])
        results["raw_encoder"] = {"measures": raw_measures, "best_texts_per_s": best["texts_per_s"]}
        log(f"raw encoder ({encoder.name}, encode() alone): {raw_measures[-1]}; best {best}")

        # The worker: a backlog of posts without vectors, `forum worker`, then posting while it is busy.
        # Enough to keep the worker busy through both windows even if it ran at twice the raw rate.
        window = args.worker_seconds + args.seconds + args.warmup + 40
        n_backlog = int(min(len(backlog_pool), max(4000, 2 * best["texts_per_s"] * window)))
        t = time.perf_counter()
        asyncio.run(insert_backlog(dsn, backlog_pool[:n_backlog], BENCH_EMAIL))
        log(f"worker: {n_backlog} posts without vectors inserted in {time.perf_counter() - t:.1f} s")
        env = dict(srv.env)
        base = asyncio.run(count_embeddings(dsn))
        if args.wait_quiet:
            wait_quiet(max_wait=QUIET_MAX_WAIT)
        if args.worker == "server":  # `forum serve` with its embedded worker: posting competes with it in-process
            srv.stop()
            srv = start_forum("server-with-worker", FORUM_WORKER_IN_SERVER="true")
            driver = Driver(client, work_dir, srv.proc.pid if srv.proc else None, postmaster)
            worker_proc = srv.proc
            worker_log = work_dir / "server-with-worker.log"
        else:
            worker_log = work_dir / "worker.log"
            worker_proc = subprocess.Popen(
                [sys.executable, "-m", "forum.cli", "worker"],
                env=env,
                cwd=ROOT,
                stdout=worker_log.open("ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            driver.worker_pid = worker_proc.pid
        assert worker_proc is not None
        results["worker_in"] = args.worker
        t_start = time.perf_counter()
        while asyncio.run(count_embeddings(dsn)) == base:
            if worker_proc.poll() is not None:
                raise RuntimeError("the worker exited:\n" + worker_log.read_text()[-3000:])
            if time.perf_counter() - t_start > 300:
                raise RuntimeError("forum worker embedded nothing in 300 s")
            time.sleep(0.2)
        first = time.perf_counter() - t_start
        # Steady state: past the first batches (model warm-up, connection pool, first dequeues).
        settle_from, settle_t = asyncio.run(count_embeddings(dsn)), time.perf_counter()
        while asyncio.run(count_embeddings(dsn)) < settle_from + 128 and time.perf_counter() - settle_t < 30:
            time.sleep(0.2)
        log(
            f"worker: first vector {first:.1f} s after start (model load, sweep), steady after another "
            f"{time.perf_counter() - settle_t:.1f} s"
        )
        c0, t0 = asyncio.run(count_embeddings(dsn)), time.perf_counter()
        time.sleep(args.worker_seconds)
        c1, t1 = asyncio.run(count_embeddings(dsn)), time.perf_counter()
        worker_rate = (c1 - c0) / (t1 - t0)
        busy = measure(driver, srv, workloads["create_post"], args.concurrency, "create_post_busy")
        c2, t2 = asyncio.run(count_embeddings(dsn)), time.perf_counter()
        remaining = n_backlog - (c2 - base)
        results["worker"] = {
            "backlog": n_backlog,
            "embedded_per_s": round(worker_rate, 1),
            "window_s": round(t1 - t0, 1),
            "embedded_per_s_while_posting": round((c2 - c1) / (t2 - t1), 1),
            "backlog_left_at_end": remaining,
        }
        if args.worker == "server" and srv.proc is not None:
            with contextlib.suppress(Exception):
                results["worker"]["rss_mb"] = embedded_worker_rss_mb(srv.proc.pid)
        log(f"worker: {results['worker']}")
        if remaining <= 0:
            log("WARNING: the worker ran out of backlog before the end: 'busy' was not busy throughout")
        if args.worker == "process":
            worker_proc.send_signal(signal.SIGTERM)
            try:
                worker_proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker_proc.kill()
                worker_proc.wait()
        srv.stop()
        busy.extra["worker_embedded_per_s"] = results["worker"]["embedded_per_s_while_posting"]
        results["runs"] = [r.__dict__ for r in runs]
    except _Done:
        pass
    finally:
        if worker_proc is not None and worker_proc.poll() is None:
            worker_proc.kill()
        for s in servers:
            s.stop()
        if "url" in locals() and "loaded_at" in json.dumps(results.get("load") or {}):
            try:
                asyncio.run(reset_bench_writes(asyncpg_dsn(url), datetime.fromisoformat(results["load"]["loaded_at"])))
            except Exception as exc:
                log(f"reset after the run failed: {exc}")
        database.release_embedded_postgres()

    report(results, runs)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
        log(f"results written to {args.json}")
    return 0


def report(results: dict[str, Any], runs: Sequence[Run]) -> None:
    by = {r.name: r for r in runs}
    machine = results["machine"]
    verdicts: dict[str, dict[str, Any]] = {}

    def ratio(name: str) -> float | None:
        if name in by and f"floor_{name}" in by and by[f"floor_{name}"].req_per_s:
            return round(by[name].req_per_s / by[f"floor_{name}"].req_per_s, 2)
        return None

    for name in ("list_top", "list_deep", "vote"):
        value = ratio(name)
        if value is not None:
            verdicts[name] = {"value": value, "met": value >= 0.6}
    for name in ("clusters", "cluster_detail", *(f"clusters_{sort}" for sort in CLUSTER_SORTS)):
        if name in by:
            p95 = by[name].latency_ms.get("p95")
            verdicts[name] = {"value": p95, "met": p95 is not None and p95 <= 50}
    for name, run in (("similar", "similar@1"), ("similar_4", "similar@4"), ("similar_4_paced", "similar_paced@4")):
        if run in by:
            p95 = by[run].latency_ms.get("p95")
            verdicts[name] = {"value": p95, "met": p95 is not None and p95 <= 50}
    worker = results.get("worker")
    raw = results.get("raw_encoder", {}).get("best_texts_per_s")
    if worker and raw:
        value = round(worker["embedded_per_s"] / raw, 2)
        verdicts["worker"] = {"value": value, "met": value >= 0.8}
    if "create_post" in by and "create_post_busy" in by:
        idle, busy = by["create_post"].latency_ms.get("p99"), by["create_post_busy"].latency_ms.get("p99")
        value = round(busy / idle, 2) if idle and busy is not None else None
        verdicts["create_busy"] = {"value": value, "met": value is not None and value <= 1.2}
    results["targets"] = {k: v | {"target": TARGETS[k]} for k, v in verdicts.items()}

    log("")
    log(
        f"== load benchmark: {results['posts']} posts, {results['client']}, {results['concurrency']} connections, "
        f"{results['seconds']:.0f} s per endpoint =="
    )
    log(
        f"machine: {machine['nproc']} cores ({machine['cpu_model']}), {machine['ram_gb']} GB RAM; "
        f"git {machine.get('git')}"
    )
    if results.get("dataset"):
        log(f"dataset: {results['dataset']}")
    log("| endpoint | conns | req/s | p50 ms | p95 ms | p99 ms | errors | floor req/s | ours/floor | other CPU |")
    log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        if r.name.startswith("floor_"):
            continue
        fl = by.get(f"floor_{r.name}")
        log(
            f"| {r.name} | {r.concurrency} | {r.req_per_s} | {r.latency_ms.get('p50')} | {r.latency_ms.get('p95')} | "
            f"{r.latency_ms.get('p99')} | {r.error_count} | {fl.req_per_s if fl else ''} | "
            f"{ratio(r.name) if fl else ''} | {r.cpu_cores.get('other')} |"
        )
    for r in runs:
        if r.name.startswith("floor_"):
            log(
                f"floor {r.name[6:]}: {r.req_per_s} req/s, p50 {r.latency_ms.get('p50')} ms, "
                f"p99 {r.latency_ms.get('p99')} ms, errors {r.error_count}"
            )
    if worker and raw:
        log(
            f"worker: {worker['embedded_per_s']} posts/s (raw encoder {raw} texts/s); "
            f"{worker['embedded_per_s_while_posting']} posts/s while posting"
        )
    log("targets:")
    for k, v in results["targets"].items():
        log(f"  {k}: {v['value']} ({v['target']}): {'MET' if v['met'] else 'MISSED'}")


def scaling_table(results: Sequence[dict[str, Any]]) -> None:
    """One markdown table, a column per run (e.g. 10k / 100k / 1M posts): req/s and p50/p95/p99 per endpoint."""
    results = sorted(results, key=lambda r: r["posts"])
    names = [r["name"] for r in results[0]["runs"]]
    print("| endpoint | " + " | ".join(f"{r['posts']:,} posts" for r in results) + " |")
    print("| --- |" + " --- |" * len(results))
    for name in names:
        cells = []
        for res in results:
            run = next((r for r in res.get("runs", []) if r["name"] == name), None)
            if run is None:
                cells.append("")
                continue
            lat = run["latency_ms"]
            errors = sum(run["errors"].values())
            cell = f"{run['req_per_s']} ({lat.get('p50')} / {lat.get('p95')} / {lat.get('p99')})"
            cell += f", {errors} errors" if errors else ""
            cell += f", other {run['cpu_cores'].get('other')}" if run["cpu_cores"].get("other", 0) > 0.2 else ""
            cells.append(cell)
        print(f"| {name} | " + " | ".join(cells) + " |")
    for key in TARGETS:
        row = [str(res.get("targets", {}).get(key, {}).get("value", "")) for res in results]
        print(f"| target {key}: {TARGETS[key]} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    sys.exit(main())

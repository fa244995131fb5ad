"""What the benchmarks share: the machine, the synthetic corpus and its vectors, the bulk load of a
realistic forum with ``COPY`` into a data dir that later runs reuse, the real server as a child process,
logging in, CPU accounting, latency percentiles and markdown tables.

Used by ``bench/load.py`` (the load benchmark), ``bench/similar.py`` (as-you-type latency) and, for a few
helpers, the other benchmarks.

The dataset (``bulk_load``), deterministic per seed:

- users: ``max(2000, posts // 10)``; every 10th is an employee (``internal``), every 100th is on the
  product team. Users 0..``RESERVED_USERS``-1 are the benchmark's own actors: they have no loaded
  votes, so the load generator's votes can be told apart and removed again (``reset_bench_writes``);
- posts: ideas and critiques from ``bench/mobility_text.py``, created over the last two years, 8 %
  internal, statuses open/under review/planned/in progress/shipped/declined, 1 % deleted, ~3 %
  merged as duplicates into the first post of their need (with their votes carried over, as a merge
  does);
- votes: a power law per post (Pareto, alpha 1.3: most posts get a handful, a few get thousands),
  distinct voters, vote times skewed towards the post's first days; ``vote_total``/``vote_internal``/
  ``vote_external`` and ``post_vote_day`` are computed from the vote rows, so they agree exactly;
- comments and internal notes (with ``comment_count``/``internal_note_count`` from the rows);
- subscriptions of authors and voters, as the app makes them;
- clusters: posts with the same need share one, the first post of the need starting it;
- vectors: see ``corpus_vectors``.
"""

from __future__ import annotations

import asyncio
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
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.mobility_text import GENERATOR_VERSION, SyntheticPost

CACHE_DIR = Path("/tmp/forum-bench-cache")
BENCH_EMAIL = "bench-typist@bench.example"
BENCH_PASSWORD = "bench password 1234"
DIM = 384
LOADER_VERSION = "2"  # bump when bulk_load's data changes: completed loads are then not reused
RESERVED_USERS = 100
REAL_VECTORS_DEFAULT = 100_000
BORROW_NOISE = 0.025


def log(msg: str) -> None:
    print(msg, flush=True)


def n_users_for(n_posts: int) -> int:
    return max(2000, n_posts // 10)


def user_email(i: int) -> str:
    return BENCH_EMAIL if i == 1 else f"user{i}@bench.example"


def user_kind(i: int) -> str:
    return "internal" if i % 10 == 0 else "external"


def user_role(i: int) -> str:
    return "product" if i % 100 == 0 else "member"


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


def _encode_real(posts: Sequence[SyntheticPost], seed: int, encoder: Any) -> np.ndarray:
    from forum.encoding import post_text

    n = len(posts)
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


def corpus_vectors(
    posts: Sequence[SyntheticPost], mode: str, seed: int, encoder: Any, real_limit: int = REAL_VECTORS_DEFAULT
) -> tuple[np.ndarray, str]:
    """The posts' vectors and a one-line description of how they were made.

    ``real``: the first ``real_limit`` posts are embedded by the real encoder (cached in ``CACHE_DIR``).
    Posts beyond it (1M posts would take over an hour to encode on 2 cores) *borrow* a real vector: that
    of a random post with the same need among the first ``real_limit`` (of post ``i % real_limit`` when
    no such post exists), plus Gaussian noise (sigma ``BORROW_NOISE`` per dimension, renormalised:
    cosine ~0.9 to the original), so that they are near-duplicates, not exact copies, in the HNSW graph.
    ``random``: random unit vectors (quick runs only).
    """
    n = len(posts)
    if mode == "random":
        rng = np.random.default_rng(seed)
        v = rng.standard_normal((n, DIM), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        log(f"vectors: RANDOM unit vectors ({n} x {DIM}), not the model's")
        return v, f"random unit vectors ({n})"
    n_real = min(n, real_limit)
    real = _encode_real(posts[:n_real], seed, encoder)
    if n_real == n:
        return real, f"real {encoder.name} vectors for all {n} posts"
    by_need: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(posts[:n_real]):
        by_need[p.need].append(i)
    rng = random.Random(f"forum-bench-borrow-{seed}")
    sources = np.empty(n - n_real, dtype=np.int64)
    no_need = 0
    for j, p in enumerate(posts[n_real:]):
        same = by_need.get(p.need)
        if same:
            sources[j] = same[rng.randrange(len(same))]
        else:
            sources[j] = (n_real + j) % n_real
            no_need += 1
    out = np.empty((n, DIM), dtype=np.float32)
    out[:n_real] = real
    noise_rng = np.random.default_rng(seed)
    step = 100_000
    for start in range(0, n - n_real, step):
        src = sources[start : start + step]
        block = real[src] + noise_rng.standard_normal((len(src), DIM), dtype=np.float32) * BORROW_NOISE
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[n_real + start : n_real + start + len(src)] = block
    how = (
        f"real {encoder.name} vectors for the first {n_real} posts; the other {n - n_real} borrow the vector of a "
        f"post with the same need among those ({no_need} with no such need borrow post i mod {n_real}) "
        f"plus Gaussian noise sigma {BORROW_NOISE}"
    )
    log(f"vectors: {how}")
    return out, how


# Bulk load -------------------------------------------------------------------------------------


def _uuid7(ms: int, rng: random.Random) -> uuid.UUID:
    rand_a, rand_b = rng.getrandbits(12), rng.getrandbits(62)
    return uuid.UUID(int=(ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b)


def uuid_at(ts: datetime, rng: random.Random) -> uuid.UUID:
    return _uuid7(int(ts.timestamp() * 1000), rng)


COMMENT_BODIES = [
    "+1, this would save me a lot of time.",
    "Same here, it happens to me every week.",
    "Any news on this? It has been open for a while.",
    "We discussed this with the city team, it is on their list too.",
    "Workaround: restart the app and try again, it usually works the second time.",
    "I would pay extra for this.",
    "This is the main reason I still use another app.",
    "Please also consider people who ride at night.",
    "Happened again today at the station.",
    "Thanks for looking into it!",
]
INTERNAL_NOTES = [
    "Checked with engineering: needs a backend change first.",
    "Related to the payments roadmap for next quarter.",
    "Support gets about ten tickets a week about this.",
    "Legal review needed before we can ship this.",
]
STATUSES = ["open", "under_review", "planned", "in_progress", "shipped", "declined", "duplicate"]
STATUS_WEIGHTS = [70, 8, 5, 3, 6, 5, 3]

# Tables the load writes to: their secondary (non-constraint) indexes are dropped before the COPY and
# re-created afterwards from their own definitions (pg_indexes), which is much faster than updating them
# row by row. Constraint indexes (primary keys, unique constraints) stay.
LOADED_TABLES = [
    "user_account",
    "post",
    "vote",
    "post_vote_day",
    "comment",
    "subscription",
    "cluster",
    "cluster_membership",
    "post_embedding",
    "post_merge",
]


def cluster_tally_rebuild() -> tuple[str, ...]:
    """Migrations 0015's, 0017's, 0018's and 0019's from-scratch recounts (``cluster_tally``/``cluster_voter``,
    then ``cluster_day``, then the tally's stored growth and survey voices): run after loads that bypass their
    triggers (``session_replication_role = replica``)."""
    import importlib.util

    statements: list[str] = []
    versions = Path(__file__).resolve().parent.parent / "migrations" / "versions"
    for name in ("0015_cluster_tally", "0017_cluster_day", "0018_cluster_growth", "0019_cluster_tally_voices"):
        spec = importlib.util.spec_from_file_location(f"migration_{name}", versions / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        statements += module.REBUILD_SQL
    return tuple(statements)


async def bulk_load(dsn: str, posts: Sequence[SyntheticPost], vectors: np.ndarray, model: str, seed: int) -> dict:
    """Load the realistic forum described in the module docstring with ``COPY`` (explicit columns, so new
    nullable columns do not break it), then re-create the dropped indexes, ``VACUUM ANALYZE``, ``CHECKPOINT``."""
    import asyncpg
    from argon2 import PasswordHasher
    from pgvector.asyncpg import register_vector

    from forum.encoding import content_hash, post_text

    rng = random.Random(f"forum-bench-load-{seed}")
    vrng = random.Random(f"forum-bench-votes-{seed}")
    timings: dict[str, float] = {}
    counts: dict[str, int] = {}
    conn = await asyncpg.connect(dsn)
    try:
        await register_vector(conn)
        t = time.perf_counter()
        indexes = await conn.fetch(
            """SELECT i.indexname, i.indexdef FROM pg_indexes i
               WHERE i.schemaname = 'public' AND i.tablename = ANY($1::text[])
                 AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)""",
            LOADED_TABLES,
        )
        if not any(r["indexname"] == "ix_post_embedding_hnsw_384" for r in indexes):
            raise RuntimeError("ix_post_embedding_hnsw_384 is missing after the migrations")
        for r in indexes:
            await conn.execute(f'DROP INDEX "{r["indexname"]}"')
        # The data is consistent by construction: skip the foreign-key triggers during the COPY.
        await conn.execute("SET session_replication_role = replica")

        now = datetime.now(UTC)
        n_users = n_users_for(len(posts))
        password_hash = PasswordHasher().hash(BENCH_PASSWORD)
        users, user_ids = [], []
        start = now - timedelta(days=800)
        for i in range(n_users):
            created = start + timedelta(seconds=i * 30)
            uid = uuid_at(created, rng)
            user_ids.append(uid)
            users.append(
                (uid, user_email(i), f"User {i}", password_hash, user_kind(i), user_role(i), True, created, created)
            )
        kinds = [user_kind(i) for i in range(n_users)]
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
        counts["users"] = n_users
        timings["users_s"] = time.perf_counter() - t

        # Posts, with their votes (distinct voters among the non-reserved users) drawn per post.
        t = time.perf_counter()
        span = timedelta(days=730)
        post_ids, created_ats, status_of, visibility_of, deleted_of, authors = [], [], [], [], [], []
        voters_of: list[list[int]] = []
        vote_rows: list[tuple] = []
        n_posts = len(posts)
        pool = range(RESERVED_USERS, n_users)
        max_votes = min(5000, n_users - RESERVED_USERS)
        for i in range(n_posts):
            created = now - span + span * (i / max(1, n_posts)) + timedelta(seconds=rng.random() * 60)
            post_ids.append(uuid_at(created, rng))
            created_ats.append(created)
            k = min(max_votes, int(rng.paretovariate(1.3)) - 1)
            voters_of.append(vrng.sample(pool, k) if k else [])
            deleted_of.append(created + timedelta(days=1) if rng.random() < 0.01 else None)
            visibility_of.append("internal" if rng.random() < 0.08 else "public")
            status_of.append(rng.choices(STATUSES, weights=STATUS_WEIGHTS)[0])
            authors.append(rng.randrange(n_users))

        # Merges: a 'duplicate' post is merged into the first live post of its need (its voters carried
        # over with their vote times, as MergeService.merge does); without such a post it stays open.
        first_of_need: dict[str, int] = {}
        merged_into: list[int | None] = [None] * n_posts
        for i, p in enumerate(posts):
            if deleted_of[i] is not None:
                continue
            root = first_of_need.setdefault(p.need, i)
            if status_of[i] == "duplicate":
                ok = (
                    root != i
                    and deleted_of[root] is None
                    and not (visibility_of[i] == "public" and visibility_of[root] != "public")
                    and status_of[root] != "duplicate"
                )
                if ok:
                    merged_into[i] = root
                else:
                    status_of[i] = "open"
        vote_times: dict[tuple[int, int], datetime] = {}
        merge_rows = []
        carried: dict[int, list[tuple[int, int]]] = defaultdict(list)  # target -> [(voter, source)]
        voting_on: dict[int, set[int]] = {}
        for i in range(n_posts):
            age = (now - created_ats[i]).total_seconds()
            for u in voters_of[i]:
                vote_times[(i, u)] = created_ats[i] + timedelta(seconds=age * vrng.random() ** 3)
        for i, target in enumerate(merged_into):
            if target is None:
                continue
            own = voting_on.setdefault(target, set(voters_of[target]))  # with voters carried by earlier merges
            for u in voters_of[i]:
                if u not in own:
                    carried[target].append((u, i))
                    own.add(u)
            merged_at = max(created_ats[i], created_ats[target]) + timedelta(days=2)
            merge_rows.append(
                (uuid_at(merged_at, rng), post_ids[i], post_ids[target], user_ids[0], "open", merged_at, merged_at)
            )

        post_rows, day_counts = [], defaultdict(int)
        for i, p in enumerate(posts):
            total = internal = 0
            for u in voters_of[i]:
                ts = vote_times[(i, u)]
                vote_rows.append((post_ids[i], user_ids[u], kinds[u], ts, None))
                day_counts[(i, ts.date())] += 1
                total += 1
                internal += kinds[u] == "internal"
            for u, source in carried.get(i, ()):
                ts = vote_times[(source, u)]
                vote_rows.append((post_ids[i], user_ids[u], kinds[u], ts, post_ids[source]))
                day_counts[(i, ts.date())] += 1
                total += 1
                internal += kinds[u] == "internal"
            post_rows.append(
                [
                    post_ids[i],
                    p.kind,
                    p.title,
                    p.body,
                    list(p.tags),
                    visibility_of[i],
                    status_of[i],
                    user_ids[authors[i]],
                    total,
                    internal,
                    total - internal,
                    0,
                    0,
                    deleted_of[i],
                    post_ids[merged_into[i]] if merged_into[i] is not None else None,
                    created_ats[i],
                    created_ats[i],
                ]
            )
        # Comments and internal notes (an exponential number per post), counters from the rows.
        comment_rows = []
        for i in range(n_posts):
            age = (now - created_ats[i]).total_seconds()
            for _ in range(min(200, int(rng.expovariate(0.5)))):
                ts = created_ats[i] + timedelta(seconds=age * rng.random() ** 2)
                internal_note = rng.random() < 0.1
                if internal_note:
                    author = rng.randrange(0, n_users, 10)  # employees
                    body = INTERNAL_NOTES[rng.randrange(len(INTERNAL_NOTES))]
                else:
                    author = rng.randrange(n_users)
                    body = COMMENT_BODIES[rng.randrange(len(COMMENT_BODIES))]
                comment_rows.append((uuid_at(ts, rng), post_ids[i], user_ids[author], body, internal_note, ts, ts))
                post_rows[i][12 if internal_note else 11] += 1
        timings["generate_s"] = time.perf_counter() - t

        t = time.perf_counter()
        await conn.copy_records_to_table(
            "post",
            records=[tuple(r) for r in post_rows],
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
                "merged_into_id",
                "created_at",
                "updated_at",
            ],
        )
        timings["copy_posts_s"] = time.perf_counter() - t
        t = time.perf_counter()
        await conn.copy_records_to_table(
            "vote", records=vote_rows, columns=["post_id", "user_id", "voter_kind", "created_at", "merged_from_id"]
        )
        await conn.copy_records_to_table(
            "post_vote_day",
            records=[(post_ids[i], day, c) for (i, day), c in day_counts.items()],
            columns=["post_id", "day", "votes"],
        )
        await conn.copy_records_to_table(
            "post_merge",
            records=merge_rows,
            columns=[
                "id",
                "source_id",
                "target_id",
                "merged_by_id",
                "source_status_before",
                "created_at",
                "updated_at",
            ],
        )
        subs = {(authors[i], i) for i in range(n_posts)} | {(u, i) for i in range(n_posts) for u in voters_of[i]}
        subs |= {(u, i) for i, cs in carried.items() for u, _ in cs}
        await conn.copy_records_to_table(
            "subscription",
            records=[(user_ids[u], post_ids[i], created_ats[i]) for u, i in subs],
            columns=["user_id", "post_id", "created_at"],
        )
        await conn.copy_records_to_table(
            "comment",
            records=comment_rows,
            columns=["id", "post_id", "author_id", "body", "internal", "created_at", "updated_at"],
        )
        timings["copy_votes_comments_s"] = time.perf_counter() - t
        counts |= {
            "posts": n_posts,
            "votes": len(vote_rows),
            "vote_days": len(day_counts),
            "merged": len(merge_rows),
            "subscriptions": len(subs),
            "comments": len(comment_rows),
        }
        del vote_rows, comment_rows, subs, vote_times

        # Clusters: posts with the same need share one (the first such post starts it), as grouping would.
        t = time.perf_counter()
        clusters: dict[str, uuid.UUID] = {}
        cluster_rows, member_rows = [], []
        for i, p in enumerate(posts):
            if deleted_of[i] is not None:
                continue
            created = created_ats[i]
            if p.need not in clusters:
                cid = uuid_at(created, rng)
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
        counts["clusters"] = len(cluster_rows)
        timings["clusters_s"] = time.perf_counter() - t

        t = time.perf_counter()
        step = 50_000
        for s in range(0, n_posts, step):
            rows = [
                (
                    post_ids[i],
                    model,
                    content_hash(post_text(posts[i].title, posts[i].body)),
                    vectors[i],
                    created_ats[i] + timedelta(seconds=30),
                )
                for i in range(s, min(n_posts, s + step))
            ]
            await conn.copy_records_to_table(
                "post_embedding", records=rows, columns=["post_id", "model", "content_hash", "embedding", "embedded_at"]
            )
        timings["embeddings_s"] = time.perf_counter() - t
        await conn.execute("SET session_replication_role = origin")

        # Indexes, with build settings for this session only: each is its migration's own definition.
        await conn.execute("SET maintenance_work_mem = '4GB'")
        await conn.execute("SET max_parallel_maintenance_workers = 1")
        t = time.perf_counter()
        for r in indexes:
            if r["indexname"] != "ix_post_embedding_hnsw_384":
                await conn.execute(r["indexdef"])
        timings["btree_gin_indexes_s"] = time.perf_counter() - t
        t = time.perf_counter()
        for r in indexes:
            if r["indexname"] == "ix_post_embedding_hnsw_384":
                await conn.execute(r["indexdef"])
                log(f"index: {r['indexdef']}")
        timings["hnsw_build_s"] = time.perf_counter() - t
        t = time.perf_counter()
        # The memberships' post_created_at (migration 0016's trigger, bypassed like the tally's).
        await conn.execute(
            "UPDATE cluster_membership m SET post_created_at = p.created_at FROM post p WHERE p.id = m.post_id"
        )
        for statement in cluster_tally_rebuild():
            await conn.execute(statement)
        timings["cluster_tally_s"] = time.perf_counter() - t
        t = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
        timings["vacuum_analyze_s"] = time.perf_counter() - t
        sizes = await conn.fetchrow(
            """SELECT pg_size_pretty(pg_relation_size('ix_post_embedding_hnsw_384')) AS hnsw,
                      pg_size_pretty(pg_total_relation_size('post_embedding')) AS embeddings,
                      pg_size_pretty(pg_total_relation_size('post')) AS posts,
                      pg_size_pretty(pg_total_relation_size('vote')) AS votes,
                      pg_size_pretty(pg_database_size(current_database())) AS database"""
        )
        log(f"sizes: {dict(sizes)}")
        return {
            "timings": {k: round(v, 1) for k, v in timings.items()},
            "counts": counts,
            "clusters": len(cluster_rows),
            "users": n_users,
            "sizes": dict(sizes),
            "loaded_at": now.isoformat(),
        }
    finally:
        await conn.close()


def prepare_forum(
    data_dir: Path,
    posts: Sequence[SyntheticPost],
    vectors: str,
    seed: int,
    encoder: Any,
    *,
    reuse: bool,
    real_vectors: int | None = None,
) -> tuple[str, dict[str, Any], bool]:
    """An embedded PostgreSQL in ``data_dir`` holding the forum of ``bulk_load`` over ``posts`` (vectors
    from ``corpus_vectors``), migrated. With ``reuse``, a completed load of the same parameters (recorded
    in ``bench-load.json``) is kept; otherwise the data dir is wiped and loaded again.
    Returns the database URL, the load's report and whether it was reused."""
    from forum import database
    from forum.queue import asyncpg_dsn

    key: dict[str, Any] = {
        "posts": len(posts),
        "vectors": vectors,
        "seed": seed,
        "gen": GENERATOR_VERSION,
        "loader": LOADER_VERSION,
    }
    if real_vectors is not None:
        key["real_vectors"] = real_vectors
    marker = data_dir / "bench-load.json"
    pgdata = data_dir / "postgres"
    saved = json.loads(marker.read_text()) if reuse and marker.exists() else {}
    if saved.get("key") == key:
        log(f"data dir: reusing the completed load in {data_dir}")
        url = database.start_embedded_postgres(pgdata)
        database.upgrade(url)
        return url, saved.get("load") or {}, True
    t = time.perf_counter()
    vecs, how = corpus_vectors(posts, vectors, seed, encoder, real_vectors or REAL_VECTORS_DEFAULT)
    vectors_s = time.perf_counter() - t
    if data_dir.exists():
        log(f"data dir: wiping {data_dir}")
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    t = time.perf_counter()
    url = database.start_embedded_postgres(pgdata)
    database.upgrade(url)
    log(f"database: embedded PostgreSQL started and migrated in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    load = asyncio.run(bulk_load(asyncpg_dsn(url), posts, vecs, encoder.name, seed))
    load |= {"total_s": round(time.perf_counter() - t, 1), "vectors_s": round(vectors_s, 1), "vectors_how": how}
    log(f"load: {load}")
    marker.write_text(json.dumps({"key": key, "load": load}))
    return url, load, False


# Statistics and CPU ------------------------------------------------------------------------------


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ms = np.asarray(seconds) * 1000
    return {
        "n": int(ms.size),
        "p50": round(float(np.percentile(ms, 50)), 2),
        "p95": round(float(np.percentile(ms, 95)), 2),
        "p99": round(float(np.percentile(ms, 99)), 2),
        "max": round(float(ms.max()), 2),
        "mean": round(float(ms.mean()), 2),
    }


async def open_loop(
    senders: int, interval: float, seconds: float, send: Callable[[float], Awaitable[None]], seed: int = 0
) -> float:
    """``senders`` senders each calling ``send(scheduled)`` every ``interval`` s for ``seconds`` (open loop).

    Each sender starts at a random point of its first interval, then keeps its pace whatever the answers
    take: a call is started at its scheduled time even when the sender's previous call is still running,
    and ``send`` gets that ``perf_counter()`` time to measure latency from (no coordinated omission: a
    slow answer does not delay, and so hide, the calls scheduled behind it). Returns the elapsed seconds
    once every call has finished.
    """
    rng = random.Random(f"open-loop-{seed}")
    started = time.perf_counter()
    end = started + seconds
    calls: list[asyncio.Task[None]] = []

    async def sender(first: float) -> None:
        scheduled = first
        while scheduled < end:
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            calls.append(asyncio.create_task(send(scheduled)))
            scheduled += interval

    await asyncio.gather(*(sender(started + rng.uniform(0, interval)) for _ in range(senders)))
    await asyncio.gather(*calls)
    return time.perf_counter() - started


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def cpu_seconds(procs: Sequence[Any]) -> dict[int, float]:
    out = {}
    for p in procs:
        with contextlib.suppress(Exception):
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
    return out


def machine_cpu_seconds() -> float:
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


def busy_cores_elsewhere(seconds: float = 2.0) -> float:
    """Cores kept busy by other processes right now (this process is idle meanwhile)."""
    before = machine_cpu_seconds()
    time.sleep(seconds)
    return round((machine_cpu_seconds() - before) / seconds, 2)


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


def process_tree(pid: int | None) -> list[Any]:
    """The process ``pid`` and its descendants (none when ``pid`` is None or gone)."""
    import psutil

    if pid is None:
        return []
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []


class CpuMeter:
    """Cores used by named groups of processes from its creation to ``cores()``, and by every other
    process of the machine (``other``: other users' jobs disturb the numbers, reported, not hidden)."""

    def __init__(self, **groups: Sequence[Any]) -> None:
        self.groups = groups
        self.before = {name: cpu_seconds(procs) for name, procs in groups.items()}
        self.machine_before = machine_cpu_seconds()
        self.started = time.perf_counter()

    def cores(self, **extra_seconds: float) -> dict[str, float]:
        """Per group (plus ``extra_seconds`` of CPU measured otherwise, e.g. a child's rusage), then ``other``."""
        elapsed = time.perf_counter() - self.started
        machine = machine_cpu_seconds() - self.machine_before
        out = {}
        for name, procs in self.groups.items():
            after, before = cpu_seconds(procs), self.before[name]
            used = sum(after[pid] - before.get(pid, 0.0) for pid in after) + extra_seconds.get(name, 0.0)
            out[name] = round(used / elapsed, 2)
        out["other"] = round(max(0.0, machine / elapsed - sum(out.values())), 2)
        return out


# The real server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ForumServer:
    """A child process serving HTTP on 127.0.0.1: by default the real ``python -m forum.cli serve``
    (worker off, rate limits off), or any ``command`` (``{port}`` is filled in)."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        log_path: Path,
        *,
        extra_env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
        health_path: str = "/health",
    ) -> None:
        self.port, self.log_path, self.health_path = port, log_path, health_path
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORUM_")}
        env.update(
            FORUM_DATA_DIR=str(data_dir),
            FORUM_WORKER_IN_SERVER="false",
            FORUM_RATE_LIMIT_ENABLED="false",
        )
        env.update(extra_env or {})
        self.env = env
        base = command or [sys.executable, "-m", "forum.cli", "serve", "--port", "{port}"]
        self.command = [part.replace("{port}", str(port)) for part in base]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> None:
        import httpx

        self.proc = subprocess.Popen(
            self.command,
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
                if httpx.get(f"{self.url}{self.health_path}", timeout=2).status_code == 200:
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


def login(url: str, email: str = BENCH_EMAIL) -> str:
    """An access token of a loaded user (they all share ``BENCH_PASSWORD``)."""
    import httpx

    r = httpx.post(f"{url}/api/auth/login", json={"email": email, "password": BENCH_PASSWORD}, timeout=30)
    r.raise_for_status()
    return r.json()["access_token"]


def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")

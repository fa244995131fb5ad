"""How much memory does a CSV export of 1,000,000 rows take? (docs/benchmarks.md)

Loads, with ``generate_series`` SQL, ``--posts`` posts by ``--voters`` customers, each of whom votes on
every post (``posts * voters`` votes: 1,000 x 1,000 = 1,000,000 by default), then streams
``votes.csv`` through the app's own ``csv_chunks`` (the code behind ``GET /api/export/votes.csv`` and
``forum export votes``) to nowhere, and prints the rows, bytes, seconds and the peak memory: Python's
own allocations (``tracemalloc``) and the process's peak resident set before and after.

The database is an embedded PostgreSQL under ``--data`` (default ``/tmp/forum-cache-export/bench``),
kept between runs: a second run with the same sizes reuses the loaded rows.

Run: ``python -m bench.export [--posts 1000] [--voters 1000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
import tracemalloc
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.common import log, machine_info
from forum import database
from forum.board.exports import ExportKind, csv_chunks


async def load(url: str, posts: int, voters: int) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            have = await conn.scalar(text("SELECT count(*) FROM vote"))
            if have == posts * voters:
                log(f"reusing {have:,} votes")
                return
            await conn.execute(text("TRUNCATE vote, post, user_account CASCADE"))
            log(f"loading {posts:,} posts and {posts * voters:,} votes")
            await conn.execute(
                text(
                    "INSERT INTO user_account (id, email, display_name, password_hash, kind, role, created_at, "
                    "updated_at) SELECT gen_random_uuid(), 'bench' || i || '@example.com', 'Customer ' || i, '!', "
                    "CASE WHEN i % 10 = 0 THEN 'internal' ELSE 'external' END, 'member', now(), now() "
                    "FROM generate_series(1, :n) AS i"
                ),
                {"n": voters},
            )
            await conn.execute(
                text(
                    "INSERT INTO post (id, kind, title, body, visibility, status, author_id, created_at, updated_at) "
                    "SELECT gen_random_uuid(), 'idea', 'Bench idea ' || i, 'A few words', 'public', 'open', "
                    "(SELECT id FROM user_account LIMIT 1), now(), now() FROM generate_series(1, :n) AS i"
                ),
                {"n": posts},
            )
            await conn.execute(
                text(
                    "INSERT INTO vote (post_id, user_id, voter_kind, created_at) "
                    "SELECT p.id, u.id, u.kind, now() - random() * interval '300 days' "
                    "FROM post p CROSS JOIN user_account u"
                )
            )
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE vote"))
    finally:
        await engine.dispose()


async def measure(url: str) -> dict[str, float]:
    engine = create_async_engine(url)
    try:
        async with engine.connect():
            pass  # the dialect's first connection is not part of the export
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        start, rows, size = time.perf_counter(), -1, 0
        async for chunk in csv_chunks(engine, ExportKind.VOTES):
            rows += chunk.count(b"\r\n")
            size += len(chunk)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {
            "rows": rows,
            "csv_mb": round(size / 1e6, 1),
            "seconds": round(seconds, 1),
            "rows_per_second": round(rows / seconds),
            "python_peak_mb": round(peak / 1e6, 1),
            "rss_peak_before_mb": round(rss_before / 1e3, 1),
            "rss_peak_after_mb": round(rss_after / 1e3, 1),
        }
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=1_000)
    parser.add_argument("--voters", type=int, default=1_000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/forum-cache-export/bench"))
    args = parser.parse_args()
    url = database.start_embedded_postgres(args.data / "postgres", "bench_export")
    database.upgrade(url)
    asyncio.run(load(url, args.posts, args.voters))
    print(json.dumps({"machine": machine_info(), **asyncio.run(measure(url))}, indent=2))


if __name__ == "__main__":
    main()

"""How long one page of the board and of search takes, with the live-status default and word-prefix search.

Usage (from the repository root, in the project's virtualenv)::

    python -m bench.search [--posts 100000] [--vocabulary zipf|dense] [--data-dir DIR] [--runs 5]

Fills an embedded PostgreSQL in ``--data-dir`` (default ``/tmp/forum-bench-search``; reused when it
already holds the posts) with ``--posts`` posts whose title (4-8 words) and body (15-34 words) are drawn
from a vocabulary: ``dense`` is 60 real English and Spanish words, so every query word matches a large
share of the board (a worst case); ``zipf`` hides those 60 words among 3,000 made-up ones drawn with a
skew, closer to real text. 10% are internal; statuses cycle through open (4/10), under_review,
planned, in_progress, shipped, declined and duplicate. Then times ``PostService.list`` (one page of 20
and its total, as the API does them) anonymously, ``--runs`` times per case, and prints the median and
the fastest run. The total of a large result is cached for 5 seconds, so only the first run counts it.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from forum import database
from forum.posts.schemas import PostSort
from forum.posts.services import PostFilters, PostService

REAL_WORDS = (
    "authentication authorization export invoice invoices pdf dark mode theme night bright refund card payment "
    "checkout scooter rental pause app login password account team role project report monthly spreadsheet "
    "factura facturas exportar pago tarjeta modo oscuro cuenta equipo informe mensual notification email push "
    "calendar sync offline mobile web search filter sort tag label"
).split()

CASES = [
    ("board, trending (default)", PostFilters(), None),
    ("board, top", PostFilters(), PostSort.TOP),
    ("board, new", PostFilters(), PostSort.NEW),
    ("status=shipped, top", PostFilters(status=["shipped"]), PostSort.TOP),
    ("q=auth (relevance)", PostFilters(q="auth"), None),
    ("q=auth, sort=new", PostFilters(q="auth"), PostSort.NEW),
    ("q=export pdf monthly spreadsheet", PostFilters(q="export pdf monthly spreadsheet"), None),
    ('q="dark mode" -night', PostFilters(q='"dark mode" -night'), None),
    ("q=zzzz (no match)", PostFilters(q="zzzz"), None),
]

FILL = """
INSERT INTO post (id, kind, title, body, visibility, status, author_id, created_at, updated_at,
                  vote_total, comment_count)
SELECT gen_random_uuid(), 'idea',
  (SELECT string_agg(w, ' ') FROM (SELECT (CAST(:words AS text[]))[1 + floor(power(random(), :skew)
      * array_length(CAST(:words AS text[]), 1))::int] w FROM generate_series(1, 4 + (g % 5))) t),
  (SELECT string_agg(w, ' ') FROM (SELECT (CAST(:words AS text[]))[1 + floor(power(random(), :skew)
      * array_length(CAST(:words AS text[]), 1))::int] w FROM generate_series(1, 15 + (g % 20))) t),
  CASE WHEN g % 10 = 0 THEN 'internal' ELSE 'public' END,
  (ARRAY['open', 'open', 'open', 'under_review', 'planned', 'in_progress', 'shipped', 'declined', 'duplicate',
         'open'])[1 + g % 10],
  CAST(:author AS uuid), now() - make_interval(mins => g), now(), g % 97, g % 13
FROM generate_series(1, :posts) g
"""
AUTHOR = "01a20000-0000-7000-8000-000000000001"


def vocabulary(kind: str) -> tuple[list[str], float]:
    if kind == "dense":
        return list(REAL_WORDS), 1.0
    rng = random.Random(7)
    syllables = ["ka", "lo", "mi", "ren", "tu", "sa", "vor", "el", "qui", "dan", "pe", "rho", "zi", "mar", "tex"]
    made_up = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(6000)})
    rng.shuffle(made_up)
    words, real = [], list(REAL_WORDS)
    for i, word in enumerate(made_up[:3000]):
        words.append(word)
        if i % 50 == 10 and real:
            words.append(real.pop(0))
    return words, 2.5


async def run(url: str, posts: int, kind: str, runs: int) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        if (await conn.scalar(text("SELECT count(*) FROM post"))) < posts:
            words, skew = vocabulary(kind)
            await conn.execute(
                text(
                    "INSERT INTO user_account (id, email, display_name, password_hash, kind, role, is_active, "
                    "created_at, updated_at) VALUES (:a, 'bench@example.com', 'Bench', 'x', 'external', 'member', "
                    "true, now(), now()) ON CONFLICT DO NOTHING"
                ),
                {"a": AUTHOR},
            )
            await conn.execute(text(FILL), {"words": words, "skew": skew, "author": AUTHOR, "posts": posts})
            await conn.execute(text("ANALYZE post"))
    sessions = async_sessionmaker(engine)
    for name, filters, sort in CASES:
        times = []
        for _ in range(runs):
            async with sessions() as session:
                started = time.perf_counter()
                page = await PostService(session).list(filters, sort, 20, 0, None)
                times.append((time.perf_counter() - started) * 1000)
        print(f"{name:36s} total {page.total:7d}  median {statistics.median(times):7.1f} ms  min {min(times):7.1f} ms")
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--vocabulary", choices=["zipf", "dense"], default="zipf")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/forum-bench-search"))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    database_name = f"bench_{args.vocabulary}_{args.posts}"
    pgdata = args.data_dir / "postgres"
    try:
        url = database.start_embedded_postgres(pgdata, database_name)
        database.upgrade(url)
        asyncio.run(run(url, args.posts, args.vocabulary, args.runs))
    finally:
        database.release_embedded_postgres()


if __name__ == "__main__":
    main()

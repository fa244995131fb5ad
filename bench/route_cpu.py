"""CPU per request of one route, in-process: forum's ``create_app`` and ``bench/floor.py`` driven through
``httpx.ASGITransport`` with the same requests, rounds alternating between the two; ``time.process_time`` of
this one process (app and client) per request. The best and the median round of each are printed.
``--profile app|floor`` adds one cProfile run (CPU clock).

Routes (``--route``), the load benchmark's:

- ``vote``: the same 200 posts and the same 64 voters (its reserved users), PUT then DELETE; each vote is
  taken back, so the data dir is left as it was found.
- ``list_top``: ``GET /api/posts?sort=top`` anonymous, offsets 0-80 (the first five pages).

PYTHONPATH decides which ``forum`` is measured; run the file by its path to measure an exported old tree::

    PYTHONPATH=$PWD python -m bench.route_cpu /tmp/forum-bench-votes/n10k --rounds 10 --n 300
    PYTHONPATH=/tmp/votes-old python bench/route_cpu.py /tmp/forum-bench-votes/n10k --route list_top

DATA_DIR is a data dir ``bench.load --prepare-only`` made.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import time
from pathlib import Path


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--route", choices=["vote", "list_top"], default="vote")
    ap.add_argument("--profile", choices=["app", "floor"], default=None)
    args = ap.parse_args()

    import asyncpg
    import httpx

    from forum import database

    url = database.start_embedded_postgres(args.data_dir / "postgres")
    dsn = url.replace("postgresql+asyncpg", "postgresql")
    os.environ.update(
        FORUM_DATA_DIR=str(args.data_dir),
        FORUM_DATABASE_URL=url,
        FORUM_RATE_LIMIT_ENABLED="false",
        FORUM_WORKER_IN_SERVER="false",
        FORUM_EMBEDDING_MODEL="hashing",
    )
    from forum.settings import Settings

    secret = Settings.from_env().jwt_secret()
    (args.data_dir / "run").mkdir(exist_ok=True)
    cfg = args.data_dir / "run" / "floor-inproc.json"
    cfg.write_text(json.dumps({"dsn": dsn, "secret": secret}))
    os.environ["BENCH_FLOOR_CONFIG"] = str(cfg)

    conn = await asyncpg.connect(dsn)
    await conn.execute("SELECT setseed(0.5)")
    posts = [
        r["id"]
        for r in await conn.fetch(
            """SELECT id FROM post WHERE deleted_at IS NULL AND visibility = 'public' AND merged_into_id IS NULL
               ORDER BY random() LIMIT 200"""
        )
    ]
    voters = [
        r["id"]
        for r in await conn.fetch(
            "SELECT id FROM user_account WHERE email = ANY($1::text[]) ORDER BY email",
            [f"user{i}@bench.example" for i in range(2, 66)],
        )
    ]
    await conn.close()

    from bench.floor import create_app as floor_app
    from forum.app import create_app
    from forum.auth import build_jwt_auth, issue_token
    from forum.models import User

    jwt_auth = build_jwt_auth(secret, 60)
    tokens = []
    for uid in voters:
        u = User(id=uid, role="member")
        tokens.append(issue_token(jwt_auth, u))
    reqs = []
    if args.route == "vote":
        for i in range(args.n // 2):
            post = posts[i % len(posts)]
            h = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"}
            reqs += [("PUT", f"/api/posts/{post}/vote", h), ("DELETE", f"/api/posts/{post}/vote", h)]
    else:
        reqs = [("GET", f"/api/posts?sort=top&offset={20 * (i % 5)}", {}) for i in range(args.n)]

    apps = {"app": create_app(), "floor": floor_app()}
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    results: dict[str, list[float]] = {"app": [], "floor": []}
    statuses: dict[str, dict[int, int]] = {"app": {}, "floor": {}}

    async def run(name: str, client: httpx.AsyncClient, profile: bool = False) -> float:
        prof = cProfile.Profile(time.process_time) if profile else None
        t0 = time.process_time()
        if prof:
            prof.enable()
        for method, path, h in reqs:
            r = await client.request(method, path, headers=h)
            statuses[name][r.status_code] = statuses[name].get(r.status_code, 0) + 1
        if prof:
            prof.disable()
        dt = time.process_time() - t0
        if prof:
            prof.dump_stats(str(args.data_dir / "run" / f"{name}.prof"))
        return dt / len(reqs) * 1000

    floor = apps["floor"]
    async with apps["app"].lifespan():
        for h in floor.on_startup:
            await h() if asyncio.iscoroutinefunction(h) else h()
        clients = {
            name: httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://t")
            for name, a in apps.items()
        }
        for name in ("app", "floor"):  # warm-up
            await run(name, clients[name])
        for _ in range(args.rounds):
            for name in ("app", "floor"):
                results[name].append(await run(name, clients[name]))
        if args.profile:
            await run(args.profile, clients[args.profile], profile=True)
        for c in clients.values():
            await c.aclose()
        for h in floor.on_shutdown:
            await h() if asyncio.iscoroutinefunction(h) else h()
    best = {k: min(v) for k, v in results.items()}
    import statistics

    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"median: app {med['app']:.3f} floor {med['floor']:.3f} floor/app {med['floor'] / med['app']:.2f}")
    print(
        f"CPU ms per {args.route} request: app {best['app']:.3f} (runs {[round(x, 3) for x in results['app']]}), "
        f"floor {best['floor']:.3f} (runs {[round(x, 3) for x in results['floor']]}), "
        f"floor/app {best['floor'] / best['app']:.2f}; statuses {statuses}"
    )
    if args.profile:
        stats = pstats.Stats(str(args.data_dir / "run" / f"{args.profile}.prof"))
        stats.sort_stats("cumulative").print_stats(60)


if __name__ == "__main__":
    asyncio.run(main())

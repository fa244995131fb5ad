"""As-you-type latency with ``FORUM_EMBEDDING_MODEL=multilingual`` (issue 6: p95 <= 50 ms at 100k posts).

Usage (from the repository root, in the project's virtualenv)::

    python -m bench.similar --posts 100000 --prepare-only          # once: the English-only forum
    python -m bench.similar_multilingual --posts 100000 [--spanish 0,0.3,0.9] [--seconds 20]
                                         [--concurrency 1,4] [--json FILE]

What one run does, for each share of Spanish posts in ``--spanish``:

1. copies the data dir that ``bench.similar --prepare-only`` loaded (posts with all-MiniLM-L6-v2
   vectors) to a scratch dir, starts its embedded PostgreSQL and applies the migrations;
2. gives every post a USE multilingual v3 vector of its text (encoded once per distinct text and
   cached in ``/tmp/forum-bench-cache``) and a language: that share of the posts, chosen by a hash of
   their id, is labelled ``es``, the rest ``en``.  The synthetic texts are English: a query's
   latency depends on index sizes and how selective each route's language filter is, not on what
   the texts say, so relabelling stands in for a bilingual board (the scores are not meaningful);
   the 512-d HNSW index is built after the load;
3. starts the real ``forum serve`` with the multilingual setting (worker off, rate limits off) and
   drives ``POST /api/posts/similar`` with simulated typists (``bench.similar.drive``), half of them
   typing English titles, half Spanish ones (Spanish queries take the two USE routes, English ones
   the MiniLM route and a USE route), and prints req/s and p50/p95/p99 per concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import CACHE_DIR, ForumServer, free_port, log, machine_info, markdown_table
from bench.similar import drive

SPANISH_TITLES = [
    "Quiero modo oscuro en la app",
    "Pagar el alquiler con la tarjeta de la empresa",
    "Avisar cuando la estación esté llena",
    "Pausar el alquiler mientras tomo un café",
    "Exportar las facturas en PDF para contabilidad",
    "La app se cierra al abrir el mapa",
    "Mapas sin conexión en el metro",
    "Cuenta familiar para compartir viajes",
    "Letra más grande en la pantalla de viaje",
    "Los puntos de recompensa caducan demasiado pronto",
    "Dividir el pago entre varias personas",
    "Pagar con Bizum o Apple Pay",
    "El soporte tarda días en responder",
    "Desbloquear el patinete en el aparcamiento subterráneo",
    "Mostrar la batería de cada patinete en el mapa",
    "Reservar una bici para mañana por la mañana",
]


def use_vectors(texts: Sequence[str], cache_key: str) -> np.ndarray:
    from embeddings import UniversalSentenceEncoder

    path = CACHE_DIR / f"use-multilingual-v3-{cache_key}.npy"
    if path.exists():
        cached = np.load(path)
        if len(cached) == len(texts):
            log(f"USE vectors: {len(texts)} rows from cache {path}")
            return cached
    encoder = UniversalSentenceEncoder()
    unique = list(dict.fromkeys(texts))
    log(f"USE vectors: encoding {len(unique)} distinct texts (cached after)")
    started = time.perf_counter()
    out = np.empty((len(unique), encoder.dim), dtype=np.float32)
    for start in range(0, len(unique), 256):
        out[start : start + 256] = encoder.encode(unique[start : start + 256])
    row = {text: i for i, text in enumerate(unique)}
    vectors = out[[row[t] for t in texts]]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    log(f"USE vectors: {len(unique)} encoded in {time.perf_counter() - started:.0f} s")
    return vectors


async def add_multilingual(dsn: str, spanish_share: float, cache_key: str) -> dict[str, Any]:
    """USE vectors for every post and a language per post (see the module); the 512-d index after."""
    import asyncpg
    from pgvector.asyncpg import register_vector

    from embeddings import USE_MODEL_NAME
    from forum.encoding import content_hash, post_text

    conn = await asyncpg.connect(dsn)
    try:
        await register_vector(conn)
        rows = await conn.fetch("SELECT id, title, body FROM post ORDER BY created_at, id")
        texts = [post_text(r["title"], r["body"]) for r in rows]
        vectors = use_vectors(texts, cache_key)
        cut = int(spanish_share * 10_000)
        spanish = [
            int.from_bytes(hashlib.blake2b(r["id"].bytes, digest_size=4).digest(), "big") % 10_000 < cut for r in rows
        ]
        started = time.perf_counter()
        index_def = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_post_embedding_hnsw_512'"
        )
        assert index_def, "migration 0004 creates ix_post_embedding_hnsw_512"
        await conn.execute("DROP INDEX ix_post_embedding_hnsw_512")
        await conn.execute("DELETE FROM post_embedding WHERE model = $1", USE_MODEL_NAME)
        await conn.copy_records_to_table(
            "post_embedding",
            columns=["post_id", "model", "content_hash", "embedding"],
            records=[
                (r["id"], USE_MODEL_NAME, content_hash(text), vector)
                for r, text, vector in zip(rows, texts, vectors, strict=True)
            ],
        )
        await conn.execute("CREATE TEMP TABLE bench_language (id uuid, language text)")
        await conn.copy_records_to_table(
            "bench_language", records=[(r["id"], "es" if s else "en") for r, s in zip(rows, spanish, strict=True)]
        )
        await conn.execute("UPDATE post SET language = b.language FROM bench_language b WHERE b.id = post.id")
        index_started = time.perf_counter()
        await conn.execute(index_def)
        index_seconds = time.perf_counter() - index_started
        await conn.execute("VACUUM ANALYZE post")
        await conn.execute("VACUUM ANALYZE post_embedding")
        await conn.execute("CHECKPOINT")
        return {
            "posts": len(rows),
            "spanish_posts": int(sum(spanish)),
            "load_seconds": round(time.perf_counter() - started, 1),
            "hnsw_512_seconds": round(index_seconds, 1),
        }
    finally:
        await conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--source", type=Path, default=None, help="data dir of bench.similar --prepare-only")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/forum-bench-similar-multilingual"))
    parser.add_argument("--spanish", default="0,0.3,0.9", help="comma-separated shares of Spanish posts")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from bench.mobility_text import generate_posts, generate_queries
    from forum import database
    from forum.queue import asyncpg_dsn

    source = (args.source or Path(f"/tmp/forum-bench-similar/real-n{args.posts}-s{args.seed}")).resolve()
    if not (source / "bench-load.json").exists():
        print(f"{source} has no completed load: run `python -m bench.similar --posts {args.posts} --prepare-only`")
        return 2
    posts = generate_posts(args.posts, args.seed)
    corpus = {p.title for p in posts}
    english = [q for q in generate_queries(2000, args.seed) if q not in corpus]
    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    results: dict[str, Any] = {
        "command": "python -m bench.similar_multilingual " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(),
        "runs": [],
    }
    for share in [float(x) for x in args.spanish.split(",") if x.strip()]:
        scratch = (args.scratch / f"spanish-{share:g}").resolve()  # one embedded server per data dir
        if scratch.exists():
            shutil.rmtree(scratch)
        log(f"copying {source} to {scratch}")
        shutil.copytree(source, scratch, symlinks=True)
        pgdata = scratch / "postgres"
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
        owner = (source / "postgres").stat()  # the embedded server runs as its own user: keep its files its own
        subprocess.run(["chown", "-R", f"{owner.st_uid}:{owner.st_gid}", str(pgdata)], check=True)
        server: ForumServer | None = None
        try:
            url = database.start_embedded_postgres(pgdata)
            database.upgrade(url)
            load = asyncio.run(add_multilingual(asyncpg_dsn(url), share, f"s{args.seed}-n{args.posts}"))
            log(f"Spanish share {share}: {load}")
            server = ForumServer(
                scratch, free_port(), scratch / "server.log", extra_env={"FORUM_EMBEDDING_MODEL": "multilingual"}
            )
            server.start()
            for level in levels:
                # Half the typists type English titles, half Spanish ones (separate clients, same moment).
                async def both(level: int = level, server: ForumServer = server) -> list[Any]:
                    n_en, n_es = max(1, level // 2), max(1, level - level // 2) if level > 1 else 0
                    jobs = [drive(server.url, {}, english, n_en, args.seconds, args.seed)]
                    if n_es:
                        jobs.append(drive(server.url, {}, SPANISH_TITLES, n_es, args.seconds, args.seed + 1))
                    return await asyncio.gather(*jobs)

                if level == 1:  # one typist: English, then Spanish, one after the other
                    runs = [
                        asyncio.run(drive(server.url, {}, english, 1, args.seconds, args.seed)),
                        asyncio.run(drive(server.url, {}, SPANISH_TITLES, 1, args.seconds, args.seed + 1)),
                    ]
                else:
                    runs = asyncio.run(both())
                for language, run in zip(("en", "es"), runs, strict=False):
                    entry = {"spanish_share": share, "typists": level, "typing": language} | run.__dict__
                    results["runs"].append(entry | {"load": load})
                    log(
                        f"share {share} typists {level} typing {language}: {run.req_per_s} req/s, "
                        f"latency ms {run.latency_ms}, errors {run.errors}, mean results {run.mean_results}"
                    )
        finally:
            if server is not None:
                server.stop()
            database.release_embedded_postgres()
    rows = []
    for r in results["runs"]:
        lat = r["latency_ms"]
        rows.append([f"{r['spanish_share']:.0%}", r["typists"], r["typing"], r["req_per_s"], lat.get("p50")])
        rows[-1] += [lat.get("p95"), lat.get("p99"), sum(r["errors"].values())]
    header = ["Spanish posts", "typists", "typing", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"]
    print(markdown_table(header, rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

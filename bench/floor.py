"""The floor of the load benchmark: a minimal hand-written app on the same stack as forum (Litestar on
uvicorn, one process) with a raw asyncpg pool, serving the same two operations as forum on the same
database, at the same paths, so the same load-generator scripts drive both:

- ``GET /api/posts?sort=top&limit=L&offset=O``: the exact SQL statement forum's list endpoint sends for
  an anonymous "top" page (captured from ``PostService.list`` by ``bench/load.py``, passed here with
  the positions of its limit and offset parameters), one prepared statement, the same JSON page shape
  (``{items, total, limit, offset}``, each item a post with author, votes, comment count, cluster);
- ``PUT``/``DELETE /api/posts/{id}/vote``: the bearer token checked (HS256, the server's own key), the
  voter read (kind, active), then one transaction: lock the visible, unmerged post; insert (or delete)
  the vote row; update the post's three counters; upsert ``post_vote_day``; subscribe the voter unless
  they opted out; answer ``{post_id, has_voted, voted_at, votes}``. The same rows change as in forum,
  with fewer round trips and no ORM.

Configured by a JSON file named in ``BENCH_FLOOR_CONFIG`` (``dsn``, ``secret``, ``list_sql``,
``list_params``, ``limit_index``, ``offset_index``, ``count_sql``, ``count_params``).
Run: ``uvicorn bench.floor:create_app --factory``.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import jwt
import msgspec
from litestar import Litestar, Request, Response, delete, get, put

_encoder = msgspec.json.Encoder()
_JSON = "application/json"

LOCK_POST = """SELECT merged_into_id FROM post
WHERE id = $1 AND deleted_at IS NULL AND (visibility = 'public' OR $2) FOR UPDATE"""
INSERT_VOTE = """INSERT INTO vote (post_id, user_id, voter_kind, created_at) VALUES ($1, $2, $3, now())
ON CONFLICT (post_id, user_id) DO NOTHING RETURNING created_at"""
DELETE_VOTE = "DELETE FROM vote WHERE post_id = $1 AND user_id = $2 RETURNING voter_kind, created_at"
COUNT = """UPDATE post SET vote_total = vote_total + $2, vote_internal = vote_internal + $3,
vote_external = vote_external + $4 WHERE id = $1 RETURNING vote_total, vote_internal, vote_external"""
VOTE_DAY = """INSERT INTO post_vote_day (post_id, day, votes) VALUES ($1, $2, $3)
ON CONFLICT (post_id, day) DO UPDATE SET votes = post_vote_day.votes + EXCLUDED.votes"""
SUBSCRIBE = """INSERT INTO subscription (user_id, post_id, created_at) SELECT $1, $2, now()
WHERE NOT EXISTS (SELECT 1 FROM unsubscription WHERE user_id = $1 AND post_id = $2)
ON CONFLICT DO NOTHING"""
STATE = """SELECT p.vote_total, p.vote_internal, p.vote_external, v.created_at FROM post p
LEFT JOIN vote v ON v.post_id = p.id AND v.user_id = $2 WHERE p.id = $1"""


def _problem(status: int, detail: str) -> Response[bytes]:
    body = _encoder.encode({"status": status, "title": detail, "detail": detail})
    return Response(body, status_code=status, media_type="application/problem+json")


def create_app() -> Litestar:
    config = json.loads(open(os.environ["BENCH_FLOOR_CONFIG"]).read())
    state: dict[str, Any] = {}

    async def startup() -> None:
        state["pool"] = await asyncpg.create_pool(config["dsn"], min_size=2, max_size=10)

    async def shutdown() -> None:
        await state["pool"].close()

    @get("/health", sync_to_thread=False)
    def health() -> Response[bytes]:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    totals: list[Any] = []

    @get("/api/posts")
    async def list_top(limit: int = 20, offset: int = 0) -> Response[bytes]:
        params = list(config["list_params"])
        params[config["limit_index"]] = limit
        params[config["offset_index"]] = offset
        async with state["pool"].acquire() as conn:
            rows = await conn.fetch(config["list_sql"], *params)
            if offset == 0 and len(rows) < limit:  # the same shortcut as PostService.list
                total = len(rows)
            elif totals and time.monotonic() - totals[0] < 5.0:  # ... and the same 5 s reuse of a large total
                total = totals[1]
            else:
                total = await conn.fetchval(config["count_sql"], *config["count_params"])
                if total > 5_000:
                    totals[:] = [time.monotonic(), total]
        items = [
            {
                "id": r["id"],
                "kind": r["kind"],
                "title": r["title"],
                "body": r["body"],
                "status": r["status"],
                "visibility": r["visibility"],
                "tags": r["tags"],
                "author": {"id": r["id_1"], "display_name": r["display_name"], "kind": r["kind_1"]},
                "created_at": r["created_at"],
                "updated_at": r["updated_at"],
                "votes": {"total": r["vote_total"], "internal": r["vote_internal"], "external": r["vote_external"]},
                "has_voted": r["has_voted"],
                "comment_count": r["comment_count"],
                "cluster_id": r["cluster_id"],
                "merged_into": r["merged_into_id"],
            }
            for r in rows
        ]
        return Response(
            _encoder.encode({"items": items, "total": total, "limit": limit, "offset": offset}), media_type=_JSON
        )

    async def _voter(request: Request[Any, Any, Any], conn: asyncpg.Connection) -> asyncpg.Record | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        try:
            claims = jwt.decode(token.strip(), config["secret"], algorithms=["HS256"])
            user_id = UUID(claims["sub"])
        except (jwt.PyJWTError, KeyError, ValueError):
            return None
        return await conn.fetchrow("SELECT id, kind FROM user_account WHERE id = $1 AND is_active", user_id)

    async def _vote(request: Request[Any, Any, Any], post_id: UUID, up: bool) -> Response[bytes]:
        async with state["pool"].acquire() as conn:
            voter = await _voter(request, conn)
            if voter is None:
                return _problem(401, "Log in to do this")
            user_id, kind = voter["id"], voter["kind"]
            async with conn.transaction():
                post = await conn.fetchrow(LOCK_POST, post_id, kind == "internal")
                if post is None:
                    return _problem(404, "Post not found")
                if post["merged_into_id"] is not None:
                    return _problem(409, "This post was merged into another: vote there")
                changed_at: datetime | None = None
                if up:
                    changed_at = await conn.fetchval(INSERT_VOTE, post_id, user_id, kind)
                    step, voter_kind = 1, kind
                else:
                    row = await conn.fetchrow(DELETE_VOTE, post_id, user_id)
                    if row is not None:
                        changed_at, voter_kind = row["created_at"], row["voter_kind"]
                    step = -1
                if changed_at is not None:
                    internal = step if voter_kind == "internal" else 0
                    counts = await conn.fetchrow(COUNT, post_id, step, internal, step - internal)
                    await conn.execute(VOTE_DAY, post_id, changed_at.astimezone(UTC).date(), step)
                    if up:
                        await conn.execute(SUBSCRIBE, user_id, post_id)
                    voted_at = changed_at if up else None
                else:
                    state_row = await conn.fetchrow(STATE, post_id, user_id)
                    counts, voted_at = state_row, state_row["created_at"]
        body = {
            "post_id": post_id,
            "has_voted": voted_at is not None,
            "voted_at": voted_at,
            "votes": {
                "total": counts["vote_total"],
                "internal": counts["vote_internal"],
                "external": counts["vote_external"],
            },
        }
        return Response(_encoder.encode(body), media_type=_JSON)

    @put("/api/posts/{post_id:uuid}/vote")
    async def vote(request: Request[Any, Any, Any], post_id: UUID) -> Response[bytes]:
        return await _vote(request, post_id, True)

    @delete("/api/posts/{post_id:uuid}/vote", status_code=200)
    async def unvote(request: Request[Any, Any, Any], post_id: UUID) -> Response[bytes]:
        return await _vote(request, post_id, False)

    return Litestar(
        route_handlers=[health, list_top, vote, unvote],
        on_startup=[startup],
        on_shutdown=[shutdown],
        openapi_config=None,
    )

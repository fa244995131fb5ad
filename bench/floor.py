"""The floor of the load benchmark: what a strong engineer would hand-write for the two measured routes,
on the same stack as forum (Litestar on uvicorn, one process, access log on) with a raw asyncpg pool, on
the same database and at the same paths, so the same load-generator scripts drive both. It answers the
same JSON as forum, byte for byte in shape (the keys, their order, the same cursor), and changes the
same rows:

- ``GET /api/posts?sort=top&limit=L&offset=O`` or ``&after=<cursor>`` (anonymous): one hand-written
  prepared statement, the live board's public posts by ``vote_total, created_at, id`` descending, with
  the author, the cluster and the visible merge target joined; keyset pages compare those keys as one
  row. The total is counted apart with forum's own shortcuts (a page that holds the whole list is its
  own total; a total above 5,000 is reused for 5 s).
- ``PUT``/``DELETE /api/posts/{id}/vote``: the bearer token checked (HS256, the server's own key), the
  voter read (kind, active), then one transaction: lock the visible post (409 when merged or closed);
  insert (or delete) the vote row; update the post's three counters, answering with their new values;
  upsert ``post_vote_day``; subscribe the voter unless they opted out. Nothing is read again when
  nothing changed but the counters and the vote time, in one statement.

What it leaves out that forum does (docs/benchmarks.md): SQLAlchemy and the ORM load of the voter, token
revocation (``tokens_valid_after``), Litestar's guards, DI, problem-details mapping, the NUL-rejecting
middleware, and the advanced-alchemy session and autocommit hook.

Configured by a JSON file named in ``BENCH_FLOOR_CONFIG`` (``dsn``, ``secret``).
Run: ``uvicorn bench.floor:create_app --factory``.
"""

from __future__ import annotations

import base64
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

_BOARD = """SELECT p.id, p.kind, p.title, p.body, p.status, p.visibility, p.tags, p.language, p.created_at,
p.updated_at, p.vote_total, p.vote_internal, p.vote_external, p.comment_count, u.id AS author_id, u.display_name,
u.kind AS author_kind, m.cluster_id, t.id AS merged_into, p.channel
FROM post p JOIN user_account u ON u.id = p.author_id
LEFT JOIN cluster_membership m ON m.post_id = p.id AND m.state <> 'rejected'
LEFT JOIN post t ON t.id = p.merged_into_id AND t.deleted_at IS NULL AND t.visibility = 'public'
WHERE p.deleted_at IS NULL AND p.hidden_at IS NULL AND p.visibility = 'public'
AND p.status IN ('open', 'under_review', 'planned', 'in_progress')"""
LIST_TOP = _BOARD + " ORDER BY p.vote_total DESC, p.created_at DESC, p.id DESC LIMIT $1 OFFSET $2"
LIST_TOP_AFTER = (
    _BOARD + " AND (p.vote_total, p.created_at, p.id) < ($2, $3, $4)"
    " ORDER BY p.vote_total DESC, p.created_at DESC, p.id DESC LIMIT $1"
)
COUNT_BOARD = """SELECT count(*) FROM post WHERE deleted_at IS NULL AND hidden_at IS NULL AND visibility = 'public'
AND status IN ('open', 'under_review', 'planned', 'in_progress')"""

LOCK_POST = """SELECT merged_into_id, status FROM post
WHERE id = $1 AND deleted_at IS NULL AND (visibility = 'public' OR $2) FOR UPDATE"""
CLOSED = ("shipped", "declined", "addressed")
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
    recounting: set[bool] = set()

    @get("/api/posts")
    async def list_top(limit: int = 20, offset: int = 0, after: str | None = None) -> Response[bytes]:
        if not 1 <= limit <= 100 or offset < 0:
            return _problem(422, "Validation failed")
        async with state["pool"].acquire() as conn:
            if after is None:
                rows = await conn.fetch(LIST_TOP, limit + 1, offset)
            else:
                try:
                    sort, (votes, created_at, last_id) = msgspec.json.decode(
                        base64.urlsafe_b64decode(after + "=" * (-len(after) % 4))
                    )
                    keys = (int(votes), datetime.fromisoformat(created_at), UUID(last_id))
                except (ValueError, TypeError, msgspec.DecodeError):
                    return _problem(422, "Invalid cursor")
                if sort != "top" or offset:
                    return _problem(422, "Invalid cursor")
                rows = await conn.fetch(LIST_TOP_AFTER, limit + 1, *keys)
            more, rows = len(rows) > limit, rows[:limit]
            if offset == 0 and after is None and not more:  # the same shortcuts as PostService.list
                total = len(rows)
            elif totals and (time.monotonic() - totals[0] < 5.0 or recounting):
                total = totals[1]  # fresh, or being counted again by another request: as PostService._total
            else:
                recounting.add(True)
                try:
                    total = await conn.fetchval(COUNT_BOARD)
                finally:
                    recounting.clear()
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
                "language": r["language"],
                "author": {"id": r["author_id"], "display_name": r["display_name"], "kind": r["author_kind"]},
                "created_at": r["created_at"],
                "updated_at": r["updated_at"],
                "votes": {"total": r["vote_total"], "internal": r["vote_internal"], "external": r["vote_external"]},
                "has_voted": False,
                "comment_count": r["comment_count"],
                "cluster_id": r["cluster_id"],
                "merged_into": r["merged_into"],
                "hidden": False,  # a hidden post is on nobody's board but the product team's
                "channel": r["channel"],
                "capture": None,  # who captured a post is for employees only
            }
            for r in rows
        ]
        cursor = None
        if more:
            last = rows[-1]
            raw = _encoder.encode(["top", [last["vote_total"], last["created_at"], last["id"]]])
            cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        page = {"items": items, "total": total, "limit": limit, "offset": offset, "next": cursor}
        return Response(_encoder.encode(page), media_type=_JSON)

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
                if post["status"] in CLOSED:
                    return _problem(409, "This post no longer takes votes")
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

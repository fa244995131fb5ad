"""Posts similar to what someone is typing: one home for the API's ``POST /api/posts/similar`` and the
composer's suggestions on the web pages, so both apply the same visibility rule.

This runs on every keystroke pause, several people at once, so it is the lean twin of
``GroupingService.nearest`` (which grouping and the consolidation pass keep using): per route, one
statement finds the nearest posts through the HNSW index *and* reads everything their answer needs
(author, the viewer's vote, cluster, merge target), as plain rows, not ORM objects.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sqlalchemy import Float, Uuid, bindparam, column, exists, literal, select, text

from forum.auth import SignedIn
from forum.driver import DriverStatement, driver_of
from forum.encoding import Route, post_text
from forum.grouping.schemas import SimilarPost, SimilarRequest
from forum.grouping.services import (
    TITLE_VIEWS_EXCLUDED,
    GroupingService,
    calibrated,
    vector_param,
    visible_neighbours_filter,
)
from forum.models import Post, PostStatus, User, Vote, visibility_scope, visible_to
from forum.posts.services import POST_COLUMNS, PostService

SIMILAR_BODY_CHARS = 2_000
"""The schema caps what is accepted; only the start of a long draft is encoded (the models read 256 word
pieces anyway), so a request costs the same bounded model time whatever it sends."""

# The search's own filters, as in ``nearest(skip_duplicates=True)``; the viewer's is added per request.
_CONDITIONS = (
    "e.model = :model",
    TITLE_VIEWS_EXCLUDED,
    "p.deleted_at IS NULL",
    "p.hidden_at IS NULL",
    f"p.status <> '{PostStatus.DUPLICATE.value}'",
)


_STATEMENTS: dict[tuple[Any, ...], DriverStatement] = {}
"""The as-you-type statements, compiled once per shape (route, filters, viewer scope): asyncpg prepares each
once per connection, and a call skips SQLAlchemy's per-execution work (as the vote path does)."""


def _statement(route: Route, where: list[str], order: str, scope: str, anonymous: bool) -> DriverStatement:
    key = (route.model, route.dim, tuple(where), order, scope, anonymous)
    statement = _STATEMENTS.get(key)
    if statement is None:
        search = text(
            f"SELECT e.post_id, 1 - {GroupingService.distance(route)} AS similarity "
            "FROM post_embedding e JOIN post p ON p.id = e.post_id "
            f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT :limit"
        ).columns(column("post_id", Uuid), column("similarity", Float))
        nearest = search.subquery("nearest")
        # The same rule and columns as PostService's reads, for any viewer of this scope (visibility_scope).
        viewer = _SCOPE_VIEWERS[scope]
        has_voted = (
            literal(False)
            if anonymous
            else exists().where(Vote.post_id == Post.id, Vote.user_id == bindparam("viewer_id", type_=Uuid))
        )
        statement = DriverStatement(
            select(
                nearest.c.similarity,
                *POST_COLUMNS,
                has_voted.label("has_voted"),
                PostService.cluster_id_column().label("cluster_id"),
                PostService.merged_into_column(viewer).label("merged_into"),
            )
            .join_from(nearest, Post, Post.id == nearest.c.post_id)
            .join(User, User.id == Post.author_id)
            .where(visible_to(viewer))
        )
        _STATEMENTS[key] = statement
    return statement


_SCOPE_VIEWERS: dict[str, Any] = {
    "public": None,
    "internal": SimpleNamespace(is_product_team=False, sees_internal=True),
    "staff": SimpleNamespace(is_product_team=True, sees_internal=True),
}
"""A stand-in viewer per ``visibility_scope``: ``visible_to`` reads nothing else of a viewer."""


async def similar_posts(
    grouping: GroupingService, data: SimilarRequest, viewer: User | SignedIn | None
) -> list[SimilarPost]:
    """The nearest existing posts the viewer may see (duplicates left out), most similar first."""
    query = await grouping.embedder.encode_query(post_text(data.title, data.body[:SIMILAR_BODY_CHARS]))
    await grouping.prepare_search(data.limit)
    conditions = [*_CONDITIONS, visible_neighbours_filter(viewer)]
    params: dict[str, Any] = {"limit": data.limit}
    if data.kind:
        conditions.append("p.kind = :kind")
        params["kind"] = data.kind.value
    if viewer is not None:
        params["viewer_id"] = viewer.id
    scope = visibility_scope(viewer)
    conn = await driver_of(grouping.session)
    found: list[tuple[float, Any]] = []
    for route in grouping.embedder.routes(query.language):
        where, order = await grouping.route_search(route, conditions)
        statement = _statement(route, where, order, scope, viewer is None)
        route_params = {**params, "v": vector_param(query.vectors[route.model]), "model": route.model}
        rows = await conn.fetch(statement.sql, *statement.args(route_params))
        found.extend((calibrated(route, row["similarity"]), row) for row in rows)
    found.sort(key=lambda pair: pair[0], reverse=True)
    sees_internal = viewer is not None and viewer.sees_internal
    return [
        SimilarPost(similarity=round(similarity, 4), post=PostService.out_of_row(row, sees_internal))
        for similarity, row in found[: data.limit]
        if similarity >= data.min_similarity
    ]

"""Posts similar to what someone is typing: one home for the API's ``POST /api/posts/similar`` and the
composer's suggestions on the web pages, so both apply the same visibility rule.

This runs on every keystroke pause, several people at once, so it is the lean twin of
``GroupingService.nearest`` (which grouping and the consolidation pass keep using): per route, one
statement finds the nearest posts through the HNSW index *and* reads everything their answer needs
(author, the viewer's vote, cluster, merge target), as plain rows, not ORM objects.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Uuid, column, select, text

from forum.accounts.schemas import UserPublic
from forum.encoding import post_text
from forum.grouping.schemas import SimilarPost, SimilarRequest
from forum.grouping.services import (
    TITLE_VIEWS_EXCLUDED,
    GroupingService,
    calibrated,
    vector_literal,
    visible_neighbours_filter,
)
from forum.models import Post, PostStatus, User, visible_to
from forum.posts.schemas import PostOut, VoteCounts
from forum.posts.services import PostService

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
_POST_COLUMNS = (
    Post.id,
    Post.kind,
    Post.title,
    Post.body,
    Post.status,
    Post.visibility,
    Post.tags,
    Post.language,
    Post.created_at,
    Post.updated_at,
    Post.vote_total,
    Post.vote_internal,
    Post.vote_external,
    Post.comment_count,
    Post.internal_note_count,
    Post.hidden_at,
    Post.channel,
    User.id.label("author_id"),
    User.display_name.label("author_name"),
    User.kind.label("author_kind"),
)


async def similar_posts(grouping: GroupingService, data: SimilarRequest, viewer: User | None) -> list[SimilarPost]:
    """The nearest existing posts the viewer may see (duplicates left out), most similar first."""
    query = await grouping.embedder.encode_query(post_text(data.title, data.body[:SIMILAR_BODY_CHARS]))
    await grouping.prepare_search(data.limit)
    conditions = [*_CONDITIONS, visible_neighbours_filter(viewer)]
    params: dict[str, Any] = {"limit": data.limit}
    if data.kind:
        conditions.append("p.kind = :kind")
        params["kind"] = data.kind.value
    columns = PostService(grouping.session)._columns(viewer)
    found: list[tuple[float, Any]] = []
    for route in grouping.embedder.routes(query.language):
        where, order = await grouping.route_search(route, conditions)
        search = text(
            f"SELECT e.post_id, 1 - {grouping._distance(route)} AS similarity "
            "FROM post_embedding e JOIN post p ON p.id = e.post_id "
            f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT :limit"
        ).columns(column("post_id", Uuid), column("similarity", Float))
        nearest = search.subquery("nearest")
        stmt = (
            select(nearest.c.similarity, *_POST_COLUMNS, *columns)
            .join_from(nearest, Post, Post.id == nearest.c.post_id)
            .join(User, User.id == Post.author_id)
            .where(visible_to(viewer))
        )
        route_params = {**params, "v": vector_literal(query.vectors[route.model]), "model": route.model}
        rows = (await grouping.session.execute(stmt, route_params)).all()
        found.extend((calibrated(route, row.similarity), row) for row in rows)
    found.sort(key=lambda pair: pair[0], reverse=True)
    sees_internal = viewer is not None and viewer.sees_internal
    return [
        SimilarPost(similarity=round(similarity, 4), post=_post_out(row, sees_internal))
        for similarity, row in found[: data.limit]
        if similarity >= data.min_similarity
    ]


def _post_out(row: Any, sees_internal: bool) -> PostOut:
    """``PostService.to_out`` from a plain row (no ``capture``: as ``get_many_out``)."""
    return PostOut(
        id=row.id,
        kind=row.kind,
        title=row.title,
        body=row.body,
        status=row.status,
        visibility=row.visibility,
        tags=list(row.tags or []),
        language=row.language,
        author=UserPublic(id=row.author_id, display_name=row.author_name, kind=row.author_kind),
        created_at=row.created_at,
        updated_at=row.updated_at,
        votes=VoteCounts(total=row.vote_total, internal=row.vote_internal, external=row.vote_external),
        has_voted=bool(row.has_voted),
        comment_count=row.comment_count + (row.internal_note_count if sees_internal else 0),
        cluster_id=row.cluster_id,
        merged_into=row.merged_into,
        hidden=row.hidden_at is not None,
        channel=row.channel,
    )

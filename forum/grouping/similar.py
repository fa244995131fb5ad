"""Posts similar to what someone is typing: one home for the API's ``POST /api/posts/similar`` and the
composer's suggestions on the web pages, so both apply the same visibility rule."""

from __future__ import annotations

from forum.encoding import post_text
from forum.grouping.schemas import SimilarPost, SimilarRequest
from forum.grouping.services import GroupingService, visible_neighbours_filter
from forum.models import User
from forum.posts.services import PostService

SIMILAR_BODY_CHARS = 2_000
"""The schema caps what is accepted; only the start of a long draft is encoded (the models read 256 word
pieces anyway), so a request costs the same bounded model time whatever it sends."""


async def similar_posts(grouping: GroupingService, data: SimilarRequest, viewer: User | None) -> list[SimilarPost]:
    """The nearest existing posts the viewer may see (duplicates left out), most similar first."""
    query = await grouping.embedder.encode_query(post_text(data.title, data.body[:SIMILAR_BODY_CHARS]))
    neighbours = await grouping.nearest(
        query,
        limit=data.limit,
        viewer_filter=visible_neighbours_filter(viewer),
        skip_duplicates=True,
        kind=data.kind.value if data.kind else None,
    )
    neighbours = [n for n in neighbours if n.similarity >= data.min_similarity]
    posts = await PostService(grouping.session).get_many_out([n.post_id for n in neighbours], viewer)
    return [
        SimilarPost(similarity=round(n.similarity, 4), post=posts[n.post_id]) for n in neighbours if n.post_id in posts
    ]

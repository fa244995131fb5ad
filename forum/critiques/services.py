"""Critiques linked to the ideas that answer them; links are suggested by the similarity engine."""

from __future__ import annotations

from uuid import UUID

from litestar.exceptions import NotFoundException
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from forum.errors import ConflictError, UnprocessableError
from forum.grouping.schemas import SimilarPost
from forum.grouping.services import GroupingService, visible_neighbours_filter
from forum.models import CritiqueLink, Post, PostKind, User
from forum.posts.schemas import PostOut
from forum.posts.services import PostService


class CritiqueLinkService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.posts = PostService(session)

    async def _pair(self, idea_id: UUID, critique_id: UUID, actor: User) -> tuple[Post, Post]:
        idea = await self.posts.get_visible(idea_id, actor)
        if idea.kind != PostKind.IDEA.value:
            raise UnprocessableError("Critiques are linked to ideas: this post is a critique", field="idea_id")
        try:
            critique = await self.posts.get_visible(critique_id, actor)
        except NotFoundException as exc:
            raise NotFoundException("Critique not found") from exc
        if critique.kind != PostKind.CRITIQUE.value:
            raise UnprocessableError("Only a critique can be linked to an idea", field="critique_id")
        if critique.visibility == "public" and idea.visibility != "public":
            # Shipping the idea would tell the critique's public followers about an internal post.
            raise UnprocessableError("A public critique cannot be answered by an internal idea", field="critique_id")
        return idea, critique

    async def link(self, idea_id: UUID, critique_id: UUID, actor: User) -> list[PostOut]:
        await self._pair(idea_id, critique_id, actor)
        inserted = await self.session.scalar(
            insert(CritiqueLink)
            .values(idea_id=idea_id, critique_id=critique_id, linked_by_id=actor.id)
            .on_conflict_do_nothing()
            .returning(CritiqueLink.critique_id)
        )
        if inserted is None:
            raise ConflictError(detail="This critique is already linked to this idea")
        return await self.linked(idea_id, actor)

    async def unlink(self, idea_id: UUID, critique_id: UUID, actor: User) -> None:
        await self.posts.get_visible(idea_id, actor)
        result = await self.session.execute(
            delete(CritiqueLink).where(CritiqueLink.idea_id == idea_id, CritiqueLink.critique_id == critique_id)
        )
        if not result.rowcount:
            raise NotFoundException("This critique is not linked to this idea")

    async def linked(self, idea_id: UUID, viewer: User | None) -> list[PostOut]:
        await self.posts.get_visible(idea_id, viewer)
        ids = list(
            await self.session.scalars(
                select(CritiqueLink.critique_id)
                .where(CritiqueLink.idea_id == idea_id)
                .order_by(CritiqueLink.created_at)
            )
        )
        posts = await self.posts.get_many_out(ids, viewer)
        return [posts[i] for i in ids if i in posts]

    async def suggestions(
        self, idea_id: UUID, viewer: User, grouping: GroupingService, limit: int
    ) -> list[SimilarPost]:
        """Critiques closest in meaning to the idea, not linked yet (needs the idea's vector)."""
        await self.posts.get_visible(idea_id, viewer)
        query = await grouping.stored_vectors(idea_id)
        if query is None:
            return []
        linked = set(
            await self.session.scalars(select(CritiqueLink.critique_id).where(CritiqueLink.idea_id == idea_id))
        )
        neighbours = await grouping.nearest(
            query,
            limit=limit + len(linked),
            exclude_post=idea_id,
            kind=PostKind.CRITIQUE.value,
            viewer_filter=visible_neighbours_filter(viewer),
            skip_duplicates=True,
        )
        neighbours = [n for n in neighbours if n.post_id not in linked][:limit]
        posts = await self.posts.get_many_out([n.post_id for n in neighbours], viewer)
        return [
            SimilarPost(similarity=round(n.similarity, 4), post=posts[n.post_id])
            for n in neighbours
            if n.post_id in posts
        ]

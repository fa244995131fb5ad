"""The product team's board: who voted, what was edited, hiding spam, the roadmap and the managed tags.
Services never commit: the request boundary does. Which posts a person may see is ``visible_to``'s rule."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import msgspec
from litestar.exceptions import NotFoundException
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from forum.board.schemas import PostEditOut, Roadmap, RoadmapColumn, TagCreate, TagOut, TagUpdate, VoterOut
from forum.errors import ConflictError
from forum.models import FeedbackCapture, Post, PostEdit, PostStatus, Tag, User, Vote
from forum.posts.schemas import PostOut, PostSort
from forum.posts.services import PostFilters, PostService, author_public
from forum.schemas import Page


class BoardService:
    def __init__(self, posts: PostService) -> None:
        self.posts = posts
        self.session = posts.session

    async def voters(self, post_id: UUID, viewer: User, limit: int, offset: int) -> Page[VoterOut]:
        """Everyone whose vote counts on the post, earliest first (votes carried from merged duplicates too)."""
        await self.posts.get_visible(post_id, viewer)
        rows = (
            await self.session.execute(
                select(Vote, User, FeedbackCapture.channel)
                .join(User, User.id == Vote.user_id)
                .outerjoin(  # a vote captured on the voter's behalf (kept on the post it was given to)
                    FeedbackCapture,
                    (FeedbackCapture.subject == "vote")
                    & (FeedbackCapture.customer_id == Vote.user_id)
                    & (FeedbackCapture.post_id == func.coalesce(Vote.merged_from_id, Vote.post_id)),
                )
                .where(Vote.post_id == post_id)
                .order_by(Vote.created_at, Vote.user_id)
                .limit(limit)
                .offset(offset)
            )
        ).all()
        total = await self.session.scalar(select(func.count()).select_from(Vote).where(Vote.post_id == post_id))
        items = [
            VoterOut(
                user=author_public(user),
                kind=vote.voter_kind,
                voted_at=vote.created_at,
                merged_from=vote.merged_from_id,
                channel=channel or "web",
            )
            for vote, user, channel in rows
        ]
        return Page(items=items, total=total or 0, limit=limit, offset=offset)

    async def edits(self, post_id: UUID, viewer: User, limit: int, offset: int) -> Page[PostEditOut]:
        """Changes of the title and body, oldest first."""
        await self.posts.get_visible(post_id, viewer)
        condition = PostEdit.post_id == post_id
        edits = await self.session.scalars(
            select(PostEdit).where(condition).order_by(PostEdit.created_at, PostEdit.id).limit(limit).offset(offset)
        )
        total = await self.session.scalar(select(func.count(PostEdit.id)).where(condition))
        items = [
            PostEditOut(
                id=e.id,
                editor=author_public(e.editor),
                created_at=e.created_at,
                title_before=e.title_before,
                title_after=e.title_after,
                body_before=e.body_before,
                body_after=e.body_after,
            )
            for e in edits
        ]
        return Page(items=items, total=total or 0, limit=limit, offset=offset)

    async def hide(self, post_id: UUID, actor: User) -> PostOut:
        """Spam: the post then exists for the product team only, and its votes count nowhere."""
        post = await self.posts.get_visible(post_id, actor, for_update=True)
        if post.hidden_at is not None:
            raise ConflictError(detail="The post is already hidden")
        if post.status == PostStatus.SHIPPED.value:
            raise ConflictError(
                detail="This post has shipped and its contributors are credited: move it out of shipped first"
            )
        post.hidden_at, post.hidden_by_id = datetime.now(UTC), actor.id
        await self.session.flush()
        return await self.posts.get_out(post.id, actor)

    async def unhide(self, post_id: UUID, actor: User) -> PostOut:
        post = await self.posts.get_visible(post_id, actor, for_update=True)
        if post.hidden_at is None:
            raise ConflictError(detail="The post is not hidden")
        post.hidden_at, post.hidden_by_id = None, None
        await self.session.flush()
        return await self.posts.get_out(post.id, actor)


class RoadmapService:
    """Planned and in progress by votes, then recently shipped: what the viewer may see, each column paged."""

    def __init__(self, posts: PostService) -> None:
        self.posts = posts

    async def column(self, column: RoadmapColumn, viewer: User | None, limit: int, offset: int) -> Page[PostOut]:
        if column is RoadmapColumn.SHIPPED:
            return await self.posts.list_recently_shipped(limit, offset, viewer)
        return await self.posts.list(PostFilters(status=[column.value]), PostSort.TOP, limit, offset, viewer)

    async def overview(self, viewer: User | None, limit: int) -> Roadmap:
        pages = {column.value: await self.column(column, viewer, limit, 0) for column in RoadmapColumn}
        return Roadmap(**pages)


def _tag_out(tag: Tag) -> TagOut:
    return TagOut(
        id=tag.id,
        name=tag.name,
        colour=tag.colour,
        description=tag.description,
        created_at=tag.created_at,
        updated_at=tag.updated_at,
    )


class TagService:
    """The managed tag list. Posts carry tags by name and may still carry tags that are not on the list."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list(self, limit: int, offset: int) -> Page[TagOut]:
        tags = await self.session.scalars(select(Tag).order_by(Tag.name).limit(limit).offset(offset))
        total = await self.session.scalar(select(func.count(Tag.id)))
        return Page(items=[_tag_out(t) for t in tags], total=total or 0, limit=limit, offset=offset)

    async def colours(self) -> dict[str, str]:
        """Every managed tag's colour by name (for painting tag chips: the list is short)."""
        return dict((await self.session.execute(select(Tag.name, Tag.colour).order_by(Tag.name))).tuples().all())

    async def _get(self, tag_id: UUID, *, for_update: bool = False) -> Tag:
        stmt = select(Tag).where(Tag.id == tag_id)
        tag = await self.session.scalar(stmt.with_for_update() if for_update else stmt)
        if tag is None:
            raise NotFoundException("Tag not found")
        return tag

    async def get(self, tag_id: UUID) -> TagOut:
        return _tag_out(await self._get(tag_id))

    async def create(self, data: TagCreate) -> TagOut:
        tag = await self.session.scalar(
            insert(Tag)
            .values(name=data.name, colour=data.colour, description=data.description)
            .on_conflict_do_nothing(index_elements=[Tag.name])
            .returning(Tag)
        )
        if tag is None:
            raise ConflictError(detail=f"There is already a tag named “{data.name}”")
        return _tag_out(tag)

    async def update(self, tag_id: UUID, data: TagUpdate) -> TagOut:
        tag = await self._get(tag_id, for_update=True)
        for field in ("colour", "description"):
            value = getattr(data, field)
            if value is not msgspec.UNSET:
                setattr(tag, field, value)
        await self.session.flush()
        await self.session.refresh(tag)
        return _tag_out(tag)

    async def delete(self, tag_id: UUID) -> None:
        """A tag that posts still carry is kept (409): deleting it would silently retag them."""
        tag = await self._get(tag_id, for_update=True)
        carried = int(
            await self.session.scalar(
                select(func.count(Post.id)).where(Post.tags.contains([tag.name]), Post.deleted_at.is_(None))
            )
            or 0
        )
        if carried:
            noun = "post carries" if carried == 1 else "posts carry"
            raise ConflictError(detail=f"{carried} {noun} this tag: take it off them first", extra={"posts": carried})
        await self.session.delete(tag)
        await self.session.flush()

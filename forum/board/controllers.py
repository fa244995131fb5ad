from __future__ import annotations

from collections.abc import AsyncGenerator
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.response import Stream
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from forum.auth import requires_product_team
from forum.board.exports import ExportKind, csv_chunks
from forum.board.schemas import PostEditOut, Roadmap, RoadmapColumn, TagCreate, TagOut, TagUpdate, VoterOut
from forum.board.services import BoardService, RoadmapService, TagService
from forum.http import LOCATION, created
from forum.models import User
from forum.posts.controllers import provide_posts
from forum.posts.schemas import PostOut
from forum.posts.services import PostService
from forum.schemas import Limit, Offset, Page


async def provide_board(posts: PostService) -> AsyncGenerator[BoardService, None]:
    yield BoardService(posts)


async def provide_roadmap(posts: PostService) -> AsyncGenerator[RoadmapService, None]:
    yield RoadmapService(posts)


async def provide_tags(db_session: AsyncSession) -> AsyncGenerator[TagService, None]:
    yield TagService(db_session)


class BoardController(Controller):
    """The product team's tools on one post."""

    path = "/api/posts/{post_id:uuid}"
    tags = ["board"]
    guards = [requires_product_team]
    dependencies = {"posts": Provide(provide_posts), "board": Provide(provide_board)}

    @get("/voters", summary="Who voted, earliest first, internal or external (product team)")
    async def list_post_voters(
        self,
        request: Request[User, object, object],
        post_id: UUID,
        board: BoardService,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> Page[VoterOut]:
        return await board.voters(post_id, request.user, limit, offset)

    @get("/edits", summary="Changes of the title and body: who, when, before and after (product team)")
    async def list_post_edits(
        self,
        request: Request[User, object, object],
        post_id: UUID,
        board: BoardService,
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> Page[PostEditOut]:
        return await board.edits(post_id, request.user, limit, offset)

    @post(
        "/hide", status_code=200, summary="Hide a post as spam: only the product team sees it, its votes stop counting"
    )
    async def hide_post(self, request: Request[User, object, object], post_id: UUID, board: BoardService) -> PostOut:
        return await board.hide(post_id, request.user)

    @post("/unhide", status_code=200, summary="Show a hidden post again")
    async def unhide_post(self, request: Request[User, object, object], post_id: UUID, board: BoardService) -> PostOut:
        return await board.unhide(post_id, request.user)


class RoadmapController(Controller):
    path = "/api/roadmap"
    tags = ["board"]
    dependencies = {"posts": Provide(provide_posts), "roadmap": Provide(provide_roadmap)}

    @get(summary="Planned, in progress and recently shipped: the first page of each column")
    async def get_roadmap(
        self, request: Request[User | None, object, object], roadmap: RoadmapService, limit: Limit = 20
    ) -> Roadmap:
        return await roadmap.overview(request.user, limit)

    @get("/{column:str}", summary="One roadmap column, paged (shipped: most recently shipped first)")
    async def list_roadmap_column(
        self,
        request: Request[User | None, object, object],
        column: RoadmapColumn,
        roadmap: RoadmapService,
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> Page[PostOut]:
        return await roadmap.column(column, request.user, limit, offset)


class TagController(Controller):
    path = "/api/tags"
    tags = ["board"]
    dependencies = {"tags": Provide(provide_tags)}

    @get(summary="The managed tags, by name")
    async def list_tags(self, tags: TagService, limit: Limit = 100, offset: Offset = 0) -> Page[TagOut]:
        return await tags.list(limit, offset)

    @post(guards=[requires_product_team], response_headers=[LOCATION], summary="Add a tag (product team)")
    async def create_tag(self, data: TagCreate, tags: TagService) -> Response[TagOut]:
        tag = await tags.create(data)
        return created(tag, f"/api/tags/{tag.id}")

    @get("/{tag_id:uuid}", summary="One tag")
    async def get_tag(self, tag_id: UUID, tags: TagService) -> TagOut:
        return await tags.get(tag_id)

    @patch("/{tag_id:uuid}", guards=[requires_product_team], summary="Change a tag's colour or description")
    async def update_tag(self, tag_id: UUID, data: TagUpdate, tags: TagService) -> TagOut:
        return await tags.update(tag_id, data)

    @delete("/{tag_id:uuid}", guards=[requires_product_team], summary="Delete a tag no post carries (else 409)")
    async def delete_tag(self, tag_id: UUID, tags: TagService) -> None:
        await tags.delete(tag_id)


async def export_stream(kind: ExportKind, db_session: AsyncSession, state: State) -> Stream:
    """The CSV download of one kind (also served to the product team's browser by ``forum.web.board``)."""
    await db_session.execute(text("SELECT 1"))  # an unreachable database is a 503 before the first byte
    engine = state["forum_alchemy_config"].get_engine()
    return Stream(
        csv_chunks(engine, kind),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{kind.value}.csv"'},
    )


class ExportController(Controller):
    """CSV downloads of the whole board, internal and hidden posts included (product team)."""

    path = "/api/export"
    tags = ["board"]
    guards = [requires_product_team]

    @get("/posts.csv", media_type="text/csv", summary="Every post as CSV (streamed)")
    async def export_posts(self, db_session: AsyncSession, state: State) -> Stream:
        return await export_stream(ExportKind.POSTS, db_session, state)

    @get("/votes.csv", media_type="text/csv", summary="Every vote as CSV (streamed)")
    async def export_votes(self, db_session: AsyncSession, state: State) -> Stream:
        return await export_stream(ExportKind.VOTES, db_session, state)

    @get("/clusters.csv", media_type="text/csv", summary="Every cluster membership as CSV (streamed)")
    async def export_clusters(self, db_session: AsyncSession, state: State) -> Stream:
        return await export_stream(ExportKind.CLUSTERS, db_session, state)

    @get("/credits.csv", media_type="text/csv", summary="The whole credit ledger as CSV (streamed)")
    async def export_credits(self, db_session: AsyncSession, state: State) -> Stream:
        return await export_stream(ExportKind.CREDITS, db_session, state)

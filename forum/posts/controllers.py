from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from forum.auth import LIGHT_USER, SignedIn, orm_user, requires_login, requires_product_team
from forum.channels.schemas import OnBehalfVote
from forum.channels.services import CaptureService
from forum.credits.services import CreditPolicy
from forum.http import LOCATION, created
from forum.models import Channel, PostKind, PostStatus, User, Visibility
from forum.posts.schemas import (
    CommentCreate,
    CommentOut,
    PostCreate,
    PostLanguage,
    PostOut,
    PostPage,
    PostSort,
    PostUpdate,
    StatusChangeOut,
    StatusChangeRequest,
    VoteState,
)
from forum.posts.services import PostFilters, PostService
from forum.schemas import Limit, Offset, Page


async def provide_posts(db_session: AsyncSession, state: State) -> AsyncGenerator[PostService, None]:
    yield PostService(db_session, CreditPolicy.from_settings(state["forum_settings"]))


class PostController(Controller):
    path = "/api/posts"
    tags = ["posts"]
    dependencies = {"posts": Provide(provide_posts)}

    @get(summary="List posts with filters, sorts and pagination")
    async def list_posts(
        self,
        request: Request[User | None, object, object],
        posts: PostService,
        kind: PostKind | None = None,
        status: Annotated[
            list[PostStatus] | None,
            Parameter(
                description="Repeat to match any of several; without it, the live board: "
                "open, under_review, planned, in_progress"
            ),
        ] = None,
        tag: Annotated[
            list[Annotated[str, Parameter(max_length=40)]] | None,
            Parameter(description="Repeat: all must match"),
        ] = None,
        author: UUID | None = None,
        visibility: Visibility | None = None,
        language: Annotated[
            list[PostLanguage] | None,
            Parameter(
                description="Detected language, ISO 639-1 (en, es, pt, fr, ca) or und; repeat for any of several"
            ),
        ] = None,
        q: Annotated[
            str | None,
            Parameter(
                max_length=200,
                pattern=r"^[^\x00]*$",
                description="Search title and body: any of the words, each as a word prefix or by its English "
                'or Spanish stem, more matching words first; "a phrase", -word to exclude',
            ),
        ] = None,
        channel: Annotated[
            list[Channel] | None,
            Parameter(description="Where it came from: web (typed by its author) or a captured channel; repeatable"),
        ] = None,
        sort: PostSort | None = None,
        limit: Limit = 20,
        offset: Offset = 0,
        after: Annotated[
            str | None,
            Parameter(
                max_length=1000,
                description="Continue after a page: its `next` cursor (opaque; same filters and sort). "
                "Use it instead of `offset` for deep pages",
            ),
        ] = None,
    ) -> PostPage:
        filters = PostFilters(
            kind=kind.value if kind else None,
            status=[s.value for s in status] if status else None,
            tags=tag,
            author_id=author,
            visibility=visibility.value if visibility else None,
            language=[code.value for code in language] if language else None,
            q=q.strip() if q and q.strip() else None,
            channel=[c.value for c in channel] if channel else None,
        )
        return await posts.list(filters, sort, limit, offset, request.user, after)

    @post(guards=[requires_login], response_headers=[LOCATION], summary="Post an idea or a critique")
    async def create_post(
        self, request: Request[User, object, object], data: PostCreate, posts: PostService
    ) -> Response[PostOut]:
        if data.on_behalf is not None:
            post = await CaptureService(posts).create_post(request.user, data)
        else:
            post = await posts.create(request.user, data)
        return created(post, f"/api/posts/{post.id}")

    @get("/{post_id:uuid}", summary="One post")
    async def get_post(
        self, request: Request[User | None, object, object], post_id: UUID, posts: PostService
    ) -> PostOut:
        return await posts.get_out(post_id, request.user)

    @patch(
        "/{post_id:uuid}",
        guards=[requires_login],
        summary="Edit a post (author; tags and visibility: product team)",
    )
    async def update_post(
        self, request: Request[User, object, object], post_id: UUID, data: PostUpdate, posts: PostService
    ) -> PostOut:
        return await posts.update(post_id, request.user, data)

    @delete("/{post_id:uuid}", guards=[requires_login], summary="Soft-delete a post (author or admin)")
    async def delete_post(self, request: Request[User, object, object], post_id: UUID, posts: PostService) -> None:
        await posts.soft_delete(post_id, request.user)

    # Votes are the hot path of a launch day: the voter is a light ``SignedIn`` (one prepared statement),
    # and only a vote captured on a customer's behalf loads the employee's ORM ``User``.
    @put(
        "/{post_id:uuid}/vote",
        guards=[requires_login],
        opt={LIGHT_USER: True},
        summary="Vote for a post (idempotent); employees may vote on a customer's behalf (body: on_behalf)",
    )
    async def vote_post(
        self,
        request: Request[SignedIn, object, object],
        post_id: UUID,
        posts: PostService,
        data: OnBehalfVote | None = None,
    ) -> VoteState:
        if data is not None:
            actor = await orm_user(posts.session, request.user)
            return await CaptureService(posts).vote(post_id, actor, data.on_behalf)
        return await posts.vote(post_id, request.user)

    @delete(
        "/{post_id:uuid}/vote",
        guards=[requires_login],
        opt={LIGHT_USER: True},
        status_code=200,
        summary="Remove your vote",
    )
    async def unvote_post(
        self, request: Request[SignedIn, object, object], post_id: UUID, posts: PostService
    ) -> VoteState:
        return await posts.unvote(post_id, request.user)

    @post(
        "/{post_id:uuid}/status",
        guards=[requires_product_team],
        status_code=200,
        summary="Change status (product team)",
    )
    async def change_post_status(
        self,
        request: Request[User, object, object],
        post_id: UUID,
        data: StatusChangeRequest,
        posts: PostService,
    ) -> PostOut:
        return await posts.change_status(post_id, request.user, data.status, data.note)

    @get("/{post_id:uuid}/history", summary="Status history: who, when, from, to, note")
    async def list_post_history(
        self,
        request: Request[User | None, object, object],
        post_id: UUID,
        posts: PostService,
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> Page[StatusChangeOut]:
        return Page.of(await posts.history(post_id, request.user), limit, offset)

    @get("/{post_id:uuid}/comments", summary="Comments, oldest first (internal notes only for employees)")
    async def list_comments(
        self,
        request: Request[User | None, object, object],
        post_id: UUID,
        posts: PostService,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> Page[CommentOut]:
        return await posts.list_comments(post_id, request.user, limit, offset)

    @post(
        "/{post_id:uuid}/comments",
        guards=[requires_login],
        response_headers=[LOCATION],
        summary="Comment, or add an internal note",
    )
    async def create_comment(
        self, request: Request[User, object, object], post_id: UUID, data: CommentCreate, posts: PostService
    ) -> Response[CommentOut]:
        if data.on_behalf is not None:
            comment = await CaptureService(posts).comment(post_id, request.user, data)
        else:
            comment = await posts.add_comment(post_id, request.user, data)
        return created(comment, f"/api/posts/{post_id}/comments/{comment.id}")

    @delete("/{post_id:uuid}/comments/{comment_id:uuid}", guards=[requires_login], summary="Delete a comment")
    async def delete_comment(
        self, request: Request[User, object, object], post_id: UUID, comment_id: UUID, posts: PostService
    ) -> None:
        await posts.delete_comment(post_id, comment_id, request.user)

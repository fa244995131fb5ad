"""What each page shows, gathered from the same services as the API (so visibility has one home).

Page controllers call one function here, or one service method, and render the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from litestar import Request
from litestar.datastructures import State
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from forum.board.schemas import PostEditOut, RoadmapColumn, VoterOut
from forum.board.services import BoardService, RoadmapService
from forum.credits.reports import CreditReports
from forum.credits.schemas import Credit, UserCredits
from forum.credits.services import CreditPolicy
from forum.merges.schemas import MergedPost
from forum.merges.services import MergeService
from forum.models import PostStatus, User
from forum.notifications.schemas import NotificationOut
from forum.notifications.services import InboxService, is_subscribed, subscribe, unsubscribe
from forum.posts.schemas import CommentOut, PostOut, PostSort, StatusChangeOut
from forum.posts.services import PostFilters, PostService
from forum.schemas import Page
from forum.web.surveys import SurveyPanel, pending_panel

PAGE_SIZE = 20
COMMENTS_SHOWN = 100
VOTERS_SHOWN = 20
EDITS_SHOWN = 10
PROFILE_STATUSES = [s.value for s in PostStatus if s is not PostStatus.DUPLICATE]
"""A profile lists what its person wrote, shipped and declined too (the board, as the API, only live posts)."""


@dataclass
class Nav:
    """What the header needs on every page: who is reading and how many notifications are unread."""

    user: User | None
    unread: int = 0
    survey: SurveyPanel | None = None
    """The open survey to ask this reader, shown below the header (``_survey.html``)."""


async def provide_nav(request: Request[Any, Any, Any], db_session: AsyncSession) -> Nav:
    user = request.user
    unread = await InboxService(db_session).unread_count(user) if user else 0
    return Nav(user=user, unread=unread, survey=await pending_panel(db_session, user))


async def provide_posts(db_session: AsyncSession, state: State) -> PostService:
    return PostService(db_session, CreditPolicy.from_settings(state["forum_settings"]))


def page(template: str, nav: Nav, *, status_code: int = 200, **context: Any) -> Template:
    return Template(template_name=template, context={"nav": nav, **context}, status_code=status_code)


def fragment(template: str, **context: Any) -> Template:
    """A part of a page, re-rendered in place by htmx (the same partial the page includes)."""
    return Template(template_name=template, context=context)


# Post page -------------------------------------------------------------------------------------------


@dataclass
class PostPage:
    post: PostOut
    comments: Page[CommentOut]
    history: list[StatusChangeOut]
    merged_into: PostOut | None
    """The post this duplicate was merged into, when the reader may see it."""
    merged_here: list[MergedPost]
    credits: list[Credit]
    following: bool
    may_edit: bool
    """The author and the product team edit the title and body (``PATCH /api/posts/{id}``)."""
    voters: Page[VoterOut] | None = None
    """The product team's view: who voted (``GET /api/posts/{id}/voters``), a page of them."""
    edits: Page[PostEditOut] | None = None


async def post_page(
    posts: PostService, post_id: UUID, viewer: User | None, voters_page: int = 1, edits_page: int = 1
) -> PostPage:
    session = posts.session
    post = await posts.get_out(post_id, viewer)  # 404 first, exactly as the API
    target = None
    if post.merged_into is not None:
        target = (await posts.get_many_out([post.merged_into], viewer)).get(post.merged_into)
    shipped = post.status == PostStatus.SHIPPED
    staff = viewer is not None and viewer.is_product_team
    board = BoardService(posts)
    return PostPage(
        post=post,
        comments=await posts.list_comments(post_id, viewer, COMMENTS_SHOWN, 0),
        history=await posts.history(post_id, viewer),
        merged_into=target,
        merged_here=await MergeService(session).merged_into(post_id, viewer),
        credits=await CreditReports(session).post_credits(post_id, viewer) if shipped else [],
        following=bool(viewer) and await is_subscribed(session, viewer.id, post_id),
        may_edit=viewer is not None and (staff or post.author.id == viewer.id),
        voters=await board.voters(post_id, viewer, VOTERS_SHOWN, (voters_page - 1) * VOTERS_SHOWN) if staff else None,
        edits=await board.edits(post_id, viewer, EDITS_SHOWN, (edits_page - 1) * EDITS_SHOWN) if staff else None,
    )


async def follow(posts: PostService, user: User, post_id: UUID, following: bool) -> bool:
    """Follow a post or stop, as ``PUT``/``DELETE /api/posts/{id}/subscription`` do."""
    await posts.get_visible(post_id, user)  # 404 for a post the user may not see
    if following:
        await subscribe(posts.session, user.id, post_id, explicit=True)
    else:
        await unsubscribe(posts.session, user.id, post_id)
    return following


# Roadmap, profile, inbox ---------------------------------------------------------------------------


async def roadmap(posts: PostService, viewer: User | None) -> dict[str, Page[PostOut]]:
    """The columns of ``GET /api/roadmap``, from the same service."""
    board = RoadmapService(posts)
    return {column.value: await board.column(column, viewer, PAGE_SIZE, 0) for column in RoadmapColumn}


@dataclass
class ProfilePage:
    credits: UserCredits
    posts: Page[PostOut]


async def profile(posts: PostService, user_id: UUID, viewer: User | None) -> ProfilePage:
    credits = await CreditReports(posts.session).user_credits(user_id, viewer, 50, 0)  # 404 for no such user
    mine = await posts.list(PostFilters(author_id=user_id, status=PROFILE_STATUSES), PostSort.NEW, PAGE_SIZE, 0, viewer)
    return ProfilePage(credits=credits, posts=mine)


@dataclass
class InboxItem:
    notification: NotificationOut
    post: PostOut | None
    """The post it is about, as the reader may see it now (None when it is gone or no longer visible:
    the title stored in the notification is then not shown)."""


@dataclass
class InboxPage:
    items: list[InboxItem] = field(default_factory=list)
    total: int = 0
    unread: int = 0
    offset: int = 0


async def inbox(posts: PostService, user: User, offset: int) -> InboxPage:
    service = InboxService(posts.session)
    notifications = await service.list(user, unread_only=False, limit=PAGE_SIZE, offset=offset)
    ids = list({n.post_id for n in notifications.items if n.post_id is not None})
    visible = await posts.get_many_out(ids, user)
    return InboxPage(
        items=[InboxItem(n, visible.get(n.post_id) if n.post_id else None) for n in notifications.items],
        total=notifications.total,
        unread=await service.unread_count(user),
        offset=offset,
    )

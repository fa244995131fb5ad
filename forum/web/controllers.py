"""Page routes of the portal. Thin: read the request, make one call to the services the API uses, render.

Every action is a real ``<form method=post>`` (with the CSRF token) that works without JavaScript and
answers with a redirect (303); when htmx sends it (``HX-Request``), the same route answers with the
part of the page that changed instead.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, TypeVar
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.params import Parameter
from litestar.response import Redirect, Template

from forum.accounts.controllers import provide_users
from forum.accounts.services import UserService
from forum.auth import SESSION_COOKIE, issue_token, requires_login
from forum.credits.reports import CreditReports
from forum.credits.schemas import Segment
from forum.email.services import preference as email_preference
from forum.email.services import set_preference as set_email_preference
from forum.grouping.controllers import provide_grouping
from forum.grouping.schemas import SimilarRequest
from forum.grouping.services import GroupingService
from forum.grouping.similar import similar_posts
from forum.models import EmailFrequency, PostKind, PostStatus, User, Visibility
from forum.notifications.services import InboxService
from forum.posts.schemas import PostLanguage, PostSort
from forum.posts.services import PostFilters, PostService
from forum.web import forms, views
from forum.web.board import BOARD_CONTROLLERS
from forum.web.i18n import LANG_COOKIE, LOCALES
from forum.web.i18n import gettext as _
from forum.web.survey_reports import SurveyReportPages
from forum.web.surveys import SurveyActions
from forum.web.triage import TriageController
from forum.web.views import PAGE_SIZE, Nav, fragment, page

E = TypeVar("E", bound=enum.Enum)
AnyRequest = Request[Any, Any, Any]
LEADERBOARD_SIZE = 50
BOARD_SORTS = (PostSort.TRENDING, PostSort.TOP, PostSort.NEW, PostSort.DISCUSSED)
PageNumber = Annotated[int, Parameter(query="page", ge=1, le=100_000)]
"""``?page=``, from 1. (One ``Parameter``: a second one in a nested ``Annotated`` is ignored.)"""
Query = Annotated[str, Parameter(max_length=200)]
VotersPage = Annotated[int, Parameter(query="voters", ge=1, le=100_000)]
EditsPage = Annotated[int, Parameter(query="edits", ge=1, le=100_000)]


def _choice(enum_type: type[E], raw: str | None) -> E | None:
    """A filter from the query string; an empty or unknown value means "any" (the form's first option)."""
    try:
        return enum_type(raw) if raw else None
    except ValueError:
        return None


def _is_htmx(request: AnyRequest) -> bool:
    return request.headers.get("hx-request") == "true"


def _back(values: dict[str, str], default: str) -> Redirect:
    return Redirect(forms.safe_next(values.get("next"), default), status_code=303)


def _session_cookie(request: AnyRequest, user: User) -> Cookie:
    """The browser session: the same JWT the API hands out, in an HttpOnly cookie."""
    jwt_auth = request.app.state["forum_jwt_auth"]
    token = issue_token(jwt_auth, user)  # microsecond issue time: revocation (logout, password) is exact
    return Cookie(
        key=SESSION_COOKIE,
        value=token,
        max_age=int(jwt_auth.default_token_expiration.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


class BoardPages(Controller):
    """Reading: the board, a post, the roadmap, the changelog, profiles and the leaderboard."""

    include_in_schema = False
    dependencies = {"posts": Provide(views.provide_posts), "nav": Provide(views.provide_nav)}

    @get("/", name="board")
    async def board(
        self,
        request: AnyRequest,
        posts: PostService,
        nav: Nav,
        q: Query = "",
        sort: str = "",
        kind: str = "",
        status: str = "",
        tag: Annotated[str, Parameter(max_length=40)] = "",
        language: str = "",
        visibility: str = "",
        page_number: PageNumber = 1,
    ) -> Template:
        q = q.replace("\x00", "").strip()
        chosen_sort = _choice(PostSort, sort)
        filters = PostFilters(
            kind=getattr(_choice(PostKind, kind), "value", None),
            status=[s.value] if (s := _choice(PostStatus, status)) else None,
            tags=[tag.strip().lower()] if tag.strip() else None,
            language=[lang.value] if (lang := _choice(PostLanguage, language)) else None,
            visibility=getattr(_choice(Visibility, visibility), "value", None),
            q=q or None,
        )
        offset = (page_number - 1) * PAGE_SIZE
        result = await posts.list(filters, chosen_sort, PAGE_SIZE, offset, request.user)
        query = {"q": q, "sort": chosen_sort.value if chosen_sort else "", "kind": kind, "status": status}
        query |= {"tag": tag.strip(), "language": language, "visibility": visibility}
        return page(
            "board.html",
            nav,
            result=result,
            query=query,
            page_number=page_number,
            sorts=BOARD_SORTS,
            statuses=[s for s in PostStatus if s is not PostStatus.DUPLICATE],
            languages=list(PostLanguage),
        )

    @get("/posts/{post_id:uuid}", name="post")
    async def post_page(
        self,
        request: AnyRequest,
        posts: PostService,
        nav: Nav,
        post_id: UUID,
        voters_page: VotersPage = 1,
        edits_page: EditsPage = 1,
    ) -> Template:
        """``?voters=`` and ``?edits=`` page the product team's lists of voters and edits."""
        view = await views.post_page(posts, post_id, request.user, voters_page, edits_page)
        return page("post.html", nav, view=view, values={}, errors={})

    @get("/roadmap", name="roadmap")
    async def roadmap(self, request: AnyRequest, posts: PostService, nav: Nav) -> Template:
        return page("roadmap.html", nav, columns=await views.roadmap(posts, request.user))

    @get("/changelog", name="changelog")
    async def changelog(
        self,
        request: AnyRequest,
        posts: PostService,
        nav: Nav,
        page_number: PageNumber = 1,
    ) -> Template:
        entries = await CreditReports(posts.session).changelog(request.user, PAGE_SIZE, (page_number - 1) * PAGE_SIZE)
        return page("changelog.html", nav, entries=entries, page_number=page_number)

    @get("/leaderboard", name="leaderboard")
    async def leaderboard(
        self,
        request: AnyRequest,
        posts: PostService,
        nav: Nav,
        segment: str = "",
        page_number: PageNumber = 1,
    ) -> Template:
        chosen = _choice(Segment, segment) or Segment.ALL
        offset = (page_number - 1) * LEADERBOARD_SIZE
        leaders = await CreditReports(posts.session).leaderboard(chosen, None, request.user, LEADERBOARD_SIZE, offset)
        return page(
            "leaderboard.html",
            nav,
            leaders=leaders,
            page_number=page_number,
            segment=chosen.value,
            segments=list(Segment),
        )

    @get("/users/{user_id:uuid}", name="profile")
    async def profile(self, request: AnyRequest, posts: PostService, nav: Nav, user_id: UUID) -> Template:
        return page("profile.html", nav, view=await views.profile(posts, user_id, request.user))


class PostActions(Controller):
    """Writing: compose, vote, comment, follow. Each is a form post; htmx gets the changed part back."""

    include_in_schema = False
    guards = [requires_login]
    dependencies = {
        "posts": Provide(views.provide_posts),
        "nav": Provide(views.provide_nav),
        "grouping": Provide(provide_grouping),
    }

    @get("/new", name="compose")
    async def compose(self, nav: Nav, kind: str = "") -> Template:
        values = {"kind": (_choice(PostKind, kind) or PostKind.IDEA).value, "visibility": "public"}
        return page("compose.html", nav, values=values, errors={}, suggestions=None)

    @post("/new", name="create-post")
    async def create(
        self, request: AnyRequest, posts: PostService, nav: Nav, grouping: GroupingService
    ) -> Response[Any]:
        values = await forms.read_form(request)
        data, errors = forms.new_post(values, may_post_internal=request.user.sees_internal)
        if data is not None and values.get("action") != "check":
            created = await posts.create(request.user, data)
            return Redirect(f"/posts/{created.id}", status_code=303)
        suggestions = None
        if values.get("action") == "check" and len(values.get("title", "").strip()) >= 1:
            suggestions = await _suggest(grouping, values, request.user)  # the no-JavaScript way to see them
        status = 422 if errors and values.get("action") != "check" else 200
        return page("compose.html", nav, status_code=status, values=values, errors=errors, suggestions=suggestions)

    @post("/posts/{post_id:uuid}/vote", name="vote")
    async def vote(self, request: AnyRequest, posts: PostService, post_id: UUID) -> Response[Any]:
        values = await forms.read_form(request)
        if values.get("vote") == "remove":
            state = await posts.unvote(post_id, request.user)
        else:
            state = await posts.vote(post_id, request.user)
        if _is_htmx(request):
            return fragment(
                "_vote.html", post_id=post_id, votes=state.votes, has_voted=state.has_voted, next=values.get("next")
            )
        return _back(values, f"/posts/{post_id}")

    @post("/posts/{post_id:uuid}/follow", name="follow")
    async def follow(self, request: AnyRequest, posts: PostService, post_id: UUID) -> Response[Any]:
        values = await forms.read_form(request)
        following = await views.follow(posts, request.user, post_id, values.get("follow") != "stop")
        if _is_htmx(request):
            return fragment("_follow.html", post_id=post_id, following=following)
        return _back(values, f"/posts/{post_id}")

    @post("/posts/{post_id:uuid}/comments", name="comment")
    async def comment(self, request: AnyRequest, posts: PostService, nav: Nav, post_id: UUID) -> Response[Any]:
        values = await forms.read_form(request)
        data, errors = forms.comment(values, may_write_notes=request.user.sees_internal)
        if data is not None:
            created = await posts.add_comment(post_id, request.user, data)
            return Redirect(f"/posts/{post_id}#comment-{created.id}", status_code=303)
        view = await views.post_page(posts, post_id, request.user)
        return page("post.html", nav, status_code=422, view=view, values=values, errors=errors)

    @get("/new/similar", name="suggestions")
    async def suggestions(
        self,
        request: AnyRequest,
        grouping: GroupingService,
        title: Query = "",
        description: Annotated[str, Parameter(query="body", max_length=10_000)] = "",
        kind: str = "",
    ) -> Template:
        values = {"title": title, "body": description, "kind": kind}
        found = await _suggest(grouping, values, request.user) if len(title.strip()) >= 3 else []
        return fragment("_suggestions.html", suggestions=found)


async def _suggest(grouping: GroupingService, values: dict[str, str], viewer: User) -> list[Any]:
    title = values.get("title", "").replace("\x00", "").strip()[:160]
    body = values.get("body", "").replace("\x00", "").strip()[:10_000]
    if not title:
        return []
    kind = _choice(PostKind, values.get("kind"))
    return await similar_posts(grouping, SimilarRequest(title=title, body=body, kind=kind, limit=5), viewer)


class AccountPages(Controller):
    """Sign up, log in, log out, the language switch and the inbox."""

    include_in_schema = False
    dependencies = {"users": provide_users, "nav": Provide(views.provide_nav), "posts": Provide(views.provide_posts)}

    @get("/login", name="login")
    async def login_form(
        self, nav: Nav, next_path: Annotated[str, Parameter(query="next", max_length=500)] = "/"
    ) -> Template:
        return page("login.html", nav, values={"next": forms.safe_next(next_path)}, errors={})

    @post("/login", name="login-submit")
    async def login(self, request: AnyRequest, users: UserService, nav: Nav) -> Response[Any]:
        values = await forms.read_form(request)
        data, errors = forms.login(values)
        if data is not None:
            try:
                user = await users.authenticate(data.email, data.password)
            except NotAuthorizedException:
                errors["form"] = _("Wrong email or password.")
            else:
                return Redirect(
                    forms.safe_next(values.get("next")), status_code=303, cookies=[_session_cookie(request, user)]
                )
        values.pop("password", None)
        return page("login.html", nav, status_code=422, values=values, errors=errors)

    @get("/signup", name="signup")
    async def signup_form(self, nav: Nav) -> Template:
        return page("signup.html", nav, values={}, errors={})

    @post("/signup", name="signup-submit")
    async def signup(self, request: AnyRequest, users: UserService, nav: Nav) -> Response[Any]:
        values = await forms.read_form(request)
        data, errors = forms.signup(values)
        if data is not None:
            try:
                user = await users.register(email=data.email, password=data.password, display_name=data.display_name)
            except HTTPException as exc:
                if exc.status_code != 409:
                    raise
                errors["email"] = _("An account with this email already exists. Log in instead?")
            else:
                return Redirect("/", status_code=303, cookies=[_session_cookie(request, user)])
        values.pop("password", None)
        return page("signup.html", nav, status_code=422, values=values, errors=errors)

    @post("/logout", name="logout")
    async def logout(self, request: AnyRequest, users: UserService) -> Redirect:
        if request.user is not None:
            await users.log_out(request.user)  # as POST /api/auth/logout: every token issued until now is revoked
        return Redirect(
            "/",
            status_code=303,
            cookies=[Cookie(key=SESSION_COOKIE, value="", max_age=0, path="/", httponly=True, samesite="lax")],
        )

    @post("/language", name="language")
    async def language(self, request: AnyRequest) -> Redirect:
        values = await forms.read_form(request)
        chosen = values.get("lang") if values.get("lang") in LOCALES else None
        cookie = Cookie(
            key=LANG_COOKIE,
            value=chosen or "",
            max_age=365 * 24 * 3600 if chosen else 0,
            path="/",
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return Redirect(forms.safe_next(values.get("next")), status_code=303, cookies=[cookie])

    @get("/inbox", name="inbox", guards=[requires_login])
    async def inbox(
        self,
        request: AnyRequest,
        posts: PostService,
        nav: Nav,
        page_number: PageNumber = 1,
    ) -> Template:
        return page(
            "inbox.html",
            nav,
            view=await views.inbox(posts, request.user, (page_number - 1) * PAGE_SIZE),
            page_number=page_number,
            email=await email_preference(posts.session, request.user.id),
        )

    @post("/inbox/email", name="email-preferences", guards=[requires_login])
    async def email_preferences(self, request: AnyRequest, posts: PostService) -> Redirect:
        """The same preferences as ``PATCH /api/me/email-preferences``; an unknown value changes nothing."""
        values = await forms.read_form(request)
        frequency = _choice(EmailFrequency, values.get("frequency"))
        language = values.get("language") if values.get("language") in LOCALES else None
        await set_email_preference(
            posts.session, request.user.id, frequency=frequency.value if frequency else None, language=language
        )
        return Redirect("/inbox", status_code=303)

    @post("/inbox/read", name="mark-read", guards=[requires_login])
    async def mark_read(self, request: AnyRequest, posts: PostService) -> Redirect:
        """``notification`` = one id, or ``all``."""
        values = await forms.read_form(request)
        chosen = values.get("notification", "")
        if chosen == "all":
            await InboxService(posts.session).mark_read(request.user)
        else:
            try:
                await InboxService(posts.session).mark_read(request.user, UUID(chosen))
            except ValueError:
                pass  # not an id: nothing to mark
        return _back(values, "/inbox")


PAGE_CONTROLLERS = [
    BoardPages,
    PostActions,
    AccountPages,
    TriageController,
    SurveyActions,
    SurveyReportPages,
    *BOARD_CONTROLLERS,
]

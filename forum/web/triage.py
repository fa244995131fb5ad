"""The product team's triage desk: clusters by demand, a cluster's members, merges, status and critiques.

Plain HTML forms (CSRF-protected, no JavaScript needed): every action posts to a route here, which
calls the same service method as the API and answers with a redirect back to the page it came from
(``?done=…`` says what happened). A refusal from a service (409/422) re-renders the page with the
message next to the form, in the reader's language, and the status code of the refusal (the action's
savepoint is rolled back, then the request's transaction). Everybody but the product team gets the
site's 403 page (401 sends to the login form).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from litestar import Controller, MediaType, Request, get, post
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotFoundException
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from forum.auth import requires_product_team
from forum.critiques.services import CritiqueLinkService
from forum.grouping.controllers import provide_grouping, provide_reports
from forum.grouping.decisions import ClusterDecisions
from forum.grouping.reports import ClusterReports
from forum.grouping.schemas import ClusterDetail, ClusterMember, ClusterSort, ClusterSummary, SimilarPost
from forum.grouping.services import GroupingService
from forum.merges.services import MergeService
from forum.models import PostKind, PostStatus, SurveyAnswer, User
from forum.posts.schemas import PostOut, StatusChangeOut
from forum.posts.services import PostService
from forum.schemas import Page
from forum.surveys.controllers import provide_survey_reports, provide_surveys
from forum.surveys.reports import SurveyReports
from forum.surveys.schemas import Score, VoiceOut, VoicePostRequest
from forum.surveys.services import SurveyService
from forum.web.forms import read_form
from forum.web.i18n import current_locale
from forum.web.i18n import gettext as _
from forum.web.surveys import Localized, question_of
from forum.web.views import Nav, page, provide_nav, provide_posts

DESK_PAGE_SIZE = 25
MOVE_TARGETS = 100
MEMBERS_PAGE = 100  # members per cluster page (the API's largest page; its "next" link continues)
SUGGESTIONS = 5
VOICES = 20  # the newest survey comments voiced in a cluster, on its page
NOTE_MAX = 2_000  # forum.posts.schemas.Note
MIN_MEMBERS_CHOICES = (1, 2, 3, 5)
STATUS_CHOICES = [s for s in PostStatus if s is not PostStatus.DUPLICATE]
"""A post becomes a duplicate by being merged, never by a status change."""


def N_(message: str) -> str:
    """Mark a message for extraction; it is translated when shown."""
    return message


DONE = {
    "confirmed": N_("Membership confirmed."),
    "rejected": N_("The post was taken out of this cluster: it will not be grouped here again."),
    "moved": N_("The post was moved to the other cluster."),
    "split": N_("The selected posts are now a cluster of their own."),
    "merged": N_("The post was merged: its voters now count on the other post."),
    "unmerged": N_("The merge was undone: both posts are as they were."),
    "status": N_("Status changed. Everybody who follows the post was notified."),
    "linked": N_("The critique is linked to this idea."),
    "unlinked": N_("The link was removed."),
    "voice-posted": N_("The comment is now a critique by its respondent, who was notified and follows it."),
}
REFUSALS = {
    # The services' messages (English, for the API), said again in the reader's language.
    "The post is already in this cluster": N_("The post is already in this cluster."),
    "Every post to split off must be a member of this cluster": N_("Choose posts of this cluster to split off."),
    "Leave at least one post in the cluster": N_("Leave at least one post in the cluster."),
    "A post cannot be merged into itself": N_("A post cannot be merged into itself."),
    "This post is already merged; unmerge it first": N_("This post is already merged: unmerge it first."),
    "This post has shipped: move it out of shipped before merging it": N_(
        "This post has shipped: move it out of shipped before merging it."
    ),
    "A public post cannot be merged into an internal one": N_("A public post cannot be merged into an internal one."),
    "This post is not merged": N_("This post is not merged."),
    "The target has since been merged into another post: unmerge that first": N_(
        "The post it was merged into has since been merged into another one: unmerge that first."
    ),
    "This post is merged into another: unmerge it first": N_("This post is merged into another: unmerge it first."),
    "Only critiques are addressed; ideas ship": N_("Only critiques are addressed; ideas ship."),
    "This critique is already linked to this idea": N_("This critique is already linked to this idea."),
    "This voice is already a post": N_("This comment is already a post."),
    "This answer has no comment to turn into a post": N_("This answer has no comment to turn into a post."),
    "A public critique cannot be answered by an internal idea": N_(
        "A public critique cannot be answered by an internal idea."
    ),
    "Only a critique can be linked to an idea": N_("Only a critique can be linked to an idea."),
}


def refusal(exc: HTTPException) -> str:
    detail = str(exc.detail or "")
    if detail in REFUSALS:
        return _(REFUSALS[detail])
    if detail.startswith("The post is already "):
        return _("The post already has this status.")
    if exc.status_code == 404:
        return _("That post or cluster no longer exists.")
    return _("This change was refused. Reload the page and try again.")


def back(path: str, done: str) -> Redirect:
    return Redirect(f"{path}?{urlencode({'done': done})}", status_code=303)


def _uuid(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        return None


# What the pages show ---------------------------------------------------------------------------------


@dataclass
class DeskPage:
    clusters: Page[ClusterSummary]
    sort: str
    min_members: int


@dataclass
class ClusterPage:
    cluster: ClusterDetail
    move_targets: list[ClusterSummary]
    merge_targets: dict[UUID, list[ClusterMember]]
    """For each member that may be merged: the other live members it may be merged into."""
    titles: dict[UUID, str]
    """Titles of the posts members were merged into (members or not)."""
    scores: list[VoiceScore]
    voices: Page[VoiceOut]


@dataclass
class VoiceScore:
    """One survey's score among the answers voiced in a cluster (each respondent's latest answer)."""

    question: Localized
    kind: str
    score: Score


@dataclass
class PostTriagePage:
    post: PostOut
    history: list[StatusChangeOut]
    linked: list[PostOut] = field(default_factory=list)
    suggestions: list[SimilarPost] = field(default_factory=list)


async def cluster_page(
    reports: ClusterReports,
    posts: PostService,
    survey_reports: SurveyReports,
    cluster_id: UUID,
    viewer: User,
    after: str | None = None,
) -> ClusterPage:
    """A cluster's page: a page of its members (``after``: the API's members cursor); a member can be
    merged into the other live members of the same page."""
    cluster = await reports.detail(cluster_id, MEMBERS_PAGE, after)
    locale = current_locale()
    scores = [
        VoiceScore(question_of(s, locale), s.kind, score)
        for s, score in await survey_reports.cluster_scores(cluster_id)
    ]
    targets = await reports.list(ClusterSort.VOTERS, 1, MOVE_TARGETS, 0)
    live = [m for m in cluster.members if m.merged_into is None]
    merge_targets = {m.post_id: [t for t in live if t.post_id != m.post_id] for m in live}
    merged_into = [m.merged_into for m in cluster.members if m.merged_into is not None]
    titles = {pid: p.title for pid, p in (await posts.get_many_out(merged_into, viewer)).items()}
    return ClusterPage(
        cluster=cluster,
        move_targets=[t for t in targets.items if t.id != cluster_id],
        merge_targets=merge_targets,
        titles=titles,
        scores=scores,
        voices=await survey_reports.voices(cluster_id, VOICES, 0),
    )


async def post_triage_page(
    posts: PostService, grouping: GroupingService, post_id: UUID, viewer: User
) -> PostTriagePage:
    post = await posts.get_out(post_id, viewer)
    result = PostTriagePage(post=post, history=await posts.history(post_id, viewer))
    if post.kind == PostKind.IDEA:
        critiques = CritiqueLinkService(posts.session)
        result.linked = await critiques.linked(post_id, viewer)
        result.suggestions = await critiques.suggestions(post_id, viewer, grouping, SUGGESTIONS)
    return result


def render(template: str, nav: Nav, request: Request[Any, Any, Any], status_code: int = 200, **context: Any) -> Any:
    done = request.query_params.get("done")
    return page(
        template,
        nav,
        status_code=status_code,
        done=_(DONE[done]) if done in DONE else None,
        **context,
    )


@dataclass
class Desk:
    """One request at the desk: what every page and action needs, and the one way an action runs.

    An action runs in a savepoint: a refusal (404/409/422 from a service) rolls it back and re-renders the
    page with the message next to its form and the refusal's status; success commits (a redirect would
    otherwise roll back) and redirects to the page with ``?done=``."""

    request: Request[User, Any, Any]
    session: AsyncSession
    nav: Nav
    reports: ClusterReports
    posts: PostService
    survey_reports: SurveyReports

    @property
    def user(self) -> User:
        return self.request.user

    async def cluster_page(
        self,
        cluster_id: UUID,
        *,
        error: str | None = None,
        error_for: str | None = None,
        status_code: int = 200,
        after: str | None = None,
    ) -> Template:
        view = await cluster_page(self.reports, self.posts, self.survey_reports, cluster_id, self.user, after)
        return render(
            "triage/cluster.html",
            self.nav,
            self.request,
            status_code=status_code,
            view=view,
            error=error,
            error_for=error_for,
            members_after=after,
        )

    async def post_page(
        self,
        post_id: UUID,
        grouping: GroupingService,
        *,
        error: str | None = None,
        error_for: str | None = None,
        values: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> Template:
        view = await post_triage_page(self.posts, grouping, post_id, self.user)
        return render(
            "triage/post.html",
            self.nav,
            self.request,
            status_code=status_code,
            view=view,
            statuses=STATUS_CHOICES,
            note_max=NOTE_MAX,
            error=error,
            error_for=error_for,
            values=values or {},
        )

    async def _run(self, action: Callable[[], Awaitable[None]], refused: tuple[int, ...]) -> HTTPException | None:
        try:
            async with self.session.begin_nested():  # a refused action leaves nothing behind
                await action()
        except HTTPException as exc:
            if exc.status_code not in refused:
                raise
            return exc
        await self.session.commit()  # the request boundary: a redirect would otherwise roll back
        return None

    async def on_cluster(
        self, cluster_id: UUID, done: str, action: Callable[[], Awaitable[None]], error_for: str
    ) -> Any:
        exc = await self._run(action, (404, 409, 422))
        if exc is None:
            return back(f"/triage/clusters/{cluster_id}", done)
        try:
            return await self.cluster_page(
                cluster_id, error=refusal(exc), error_for=error_for, status_code=exc.status_code
            )
        except NotFoundException:  # the cluster itself is gone
            raise exc from None

    async def on_post(
        self,
        post_id: UUID,
        grouping: GroupingService,
        done: str,
        action: Callable[[], Awaitable[None]],
        error_for: str,
        values: dict[str, str] | None = None,
    ) -> Any:
        exc = await self._run(action, (409, 422))
        if exc is None:
            return back(f"/triage/posts/{post_id}", done)
        return await self.post_page(
            post_id, grouping, error=refusal(exc), error_for=error_for, values=values, status_code=exc.status_code
        )


async def provide_desk(
    request: Request[User, Any, Any],
    db_session: AsyncSession,
    nav: Nav,
    reports: ClusterReports,
    posts: PostService,
    survey_reports: SurveyReports,
) -> Desk:
    return Desk(
        request=request, session=db_session, nav=nav, reports=reports, posts=posts, survey_reports=survey_reports
    )


# Routes ----------------------------------------------------------------------------------------------


class TriageController(Controller):
    path = "/triage"
    guards = [requires_product_team]
    include_in_schema = False
    dependencies = {
        "nav": Provide(provide_nav),
        "posts": Provide(provide_posts),
        "reports": Provide(provide_reports),
        "grouping": Provide(provide_grouping),
        "survey_reports": Provide(provide_survey_reports),
        "surveys": Provide(provide_surveys),
        "desk": Provide(provide_desk),
    }

    @get("/", name="triage:desk")
    async def desk(
        self,
        request: Request[User, Any, Any],
        nav: Nav,
        reports: ClusterReports,
        sort: str = ClusterSort.VOTERS.value,
        min_members: int = 2,
        offset: int = 0,
    ) -> Template:
        sort = sort if sort in {s.value for s in ClusterSort} else ClusterSort.VOTERS.value
        min_members = min_members if min_members in MIN_MEMBERS_CHOICES else 2
        offset = max(0, min(offset, 10_000_000))
        clusters = await reports.list(ClusterSort(sort), min_members, DESK_PAGE_SIZE, offset)
        desk = DeskPage(clusters=clusters, sort=sort, min_members=min_members)
        return render(
            "triage/desk.html",
            nav,
            request,
            desk=desk,
            sorts=[
                ("voters", _("Unique voters")),
                ("growth", _("Growth (30 days)")),
                ("members", _("Members")),
                ("new", _("Newest")),
                ("detractors", _("Detractor voices")),
            ],
            min_members_choices=MIN_MEMBERS_CHOICES,
        )

    # A cluster ---------------------------------------------------------------------------------------

    @get("/clusters/{cluster_id:uuid}", name="triage:cluster")
    async def cluster(self, desk: Desk, cluster_id: UUID, after: str | None = None) -> Template:
        return await desk.cluster_page(cluster_id, after=after[:1000] if after else None)

    @post(
        "/clusters/{cluster_id:uuid}/members/{post_id:uuid}/confirm", name="triage:confirm", media_type=MediaType.HTML
    )
    async def confirm(self, desk: Desk, grouping: GroupingService, cluster_id: UUID, post_id: UUID) -> Any:
        async def action() -> None:
            await ClusterDecisions(grouping).confirm(cluster_id, post_id, desk.user)

        return await desk.on_cluster(cluster_id, "confirmed", action, f"member-{post_id}")

    @post("/clusters/{cluster_id:uuid}/members/{post_id:uuid}/reject", name="triage:reject", media_type=MediaType.HTML)
    async def reject(self, desk: Desk, grouping: GroupingService, cluster_id: UUID, post_id: UUID) -> Any:
        async def action() -> None:
            await ClusterDecisions(grouping).reject(cluster_id, post_id, desk.user)

        return await desk.on_cluster(cluster_id, "rejected", action, f"member-{post_id}")

    @post("/clusters/{cluster_id:uuid}/members/{post_id:uuid}/move", name="triage:move", media_type=MediaType.HTML)
    async def move(self, desk: Desk, grouping: GroupingService, cluster_id: UUID, post_id: UUID) -> Any:
        target = _uuid((await read_form(desk.request)).get("cluster_id"))

        async def action() -> None:
            if target is None:
                raise HTTPException(status_code=422, detail="no target")
            await ClusterDecisions(grouping).move(post_id, target, desk.user)

        return await desk.on_cluster(cluster_id, "moved", action, f"member-{post_id}")

    @post("/clusters/{cluster_id:uuid}/split", name="triage:split", media_type=MediaType.HTML)
    async def split(self, desk: Desk, grouping: GroupingService, cluster_id: UUID) -> Any:
        form = await desk.request.form()
        chosen = [pid for pid in (_uuid(str(v)) for v in form.getall("post_ids", [])) if pid is not None]
        new_cluster: list[UUID] = []

        async def action() -> None:
            if not chosen:
                raise HTTPException(status_code=422, detail="Every post to split off must be a member of this cluster")
            new_cluster.append(await ClusterDecisions(grouping).split(cluster_id, chosen, desk.user))

        response = await desk.on_cluster(cluster_id, "split", action, "split")
        if new_cluster:  # show the new cluster: what was split off, and a way back
            return back(f"/triage/clusters/{new_cluster[0]}", "split")
        return response

    @post("/clusters/{cluster_id:uuid}/members/{post_id:uuid}/merge", name="triage:merge", media_type=MediaType.HTML)
    async def merge(self, desk: Desk, cluster_id: UUID, post_id: UUID) -> Any:
        into = _uuid((await read_form(desk.request)).get("into"))

        async def action() -> None:
            if into is None:
                raise HTTPException(status_code=422, detail="no target")
            await MergeService(desk.session).merge(post_id, into, desk.user)

        return await desk.on_cluster(cluster_id, "merged", action, f"member-{post_id}")

    @post(
        "/clusters/{cluster_id:uuid}/members/{post_id:uuid}/unmerge", name="triage:unmerge", media_type=MediaType.HTML
    )
    async def unmerge(self, desk: Desk, cluster_id: UUID, post_id: UUID) -> Any:
        async def action() -> None:
            await MergeService(desk.session).unmerge(post_id, desk.user)

        return await desk.on_cluster(cluster_id, "unmerged", action, f"member-{post_id}")

    @post(
        "/clusters/{cluster_id:uuid}/voices/{answer_id:uuid}/post", name="triage:voice-post", media_type=MediaType.HTML
    )
    async def voice_to_post(
        self, desk: Desk, grouping: GroupingService, surveys: SurveyService, cluster_id: UUID, answer_id: UUID
    ) -> Any:
        """A survey comment voiced here becomes a critique by its respondent (the API's
        ``POST /api/survey-answers/{id}/post`` with its defaults), and the page shows it as a member."""

        async def action() -> None:
            answer = await desk.session.get(SurveyAnswer, answer_id)
            if answer is None or answer.cluster_id != cluster_id:
                raise NotFoundException("Answer not found")
            await surveys.voice_to_post(answer_id, desk.user, VoicePostRequest(), grouping)

        return await desk.on_cluster(cluster_id, "voice-posted", action, f"voice-{answer_id}")

    # A post: status and critiques ----------------------------------------------------------------------

    @get("/posts/{post_id:uuid}", name="triage:post")
    async def post_page(self, desk: Desk, grouping: GroupingService, post_id: UUID) -> Template:
        return await desk.post_page(post_id, grouping)

    @post("/posts/{post_id:uuid}/status", name="triage:status", media_type=MediaType.HTML)
    async def change_status(self, desk: Desk, grouping: GroupingService, post_id: UUID) -> Any:
        values = await read_form(desk.request)
        note = values.get("note", "").replace("\x00", "").strip()

        async def action() -> None:
            if values.get("status") not in {s.value for s in STATUS_CHOICES}:
                raise HTTPException(status_code=422, detail="bad status")
            if len(note) > NOTE_MAX:
                raise HTTPException(status_code=422, detail="note too long")
            await desk.posts.change_status(post_id, desk.user, PostStatus(values["status"]), note or None)

        return await desk.on_post(post_id, grouping, "status", action, "status", values)

    @post("/posts/{post_id:uuid}/critiques", name="triage:link", media_type=MediaType.HTML)
    async def link(self, desk: Desk, grouping: GroupingService, post_id: UUID) -> Any:
        critique = _uuid((await read_form(desk.request)).get("critique_id"))

        async def action() -> None:
            if critique is None:
                raise HTTPException(status_code=422, detail="Only a critique can be linked to an idea")
            await CritiqueLinkService(desk.session).link(post_id, critique, desk.user)

        return await desk.on_post(post_id, grouping, "linked", action, "critiques")

    @post("/posts/{post_id:uuid}/critiques/{critique_id:uuid}/unlink", name="triage:unlink", media_type=MediaType.HTML)
    async def unlink(self, desk: Desk, grouping: GroupingService, post_id: UUID, critique_id: UUID) -> Any:
        async def action() -> None:
            await CritiqueLinkService(desk.session).unlink(post_id, critique_id, desk.user)

        return await desk.on_post(post_id, grouping, "unlinked", action, "critiques")

"""The product team runs the board from the portal: who voted and what was edited (on the post page, see
``views.post_page``), editing a title and body, hiding spam, the managed tags and the CSV exports.

Every action is a real form (CSRF) calling the same ``forum.board`` / ``forum.posts`` service as the API,
in a savepoint: success commits and answers 303 with a flash message; a refusal (409/422) re-renders the
page with the message next to its form and the refusal's status. Hide and unhide also answer htmx with
the moderation panel alone. Everybody but the product team gets the site's 403 page (editing: the author
too, as the API allows).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotFoundException
from litestar.plugins.flash import flash
from litestar.response import Redirect, Stream, Template
from sqlalchemy.ext.asyncio import AsyncSession

from forum.auth import requires_login, requires_product_team
from forum.board.controllers import export_stream
from forum.board.exports import ExportKind
from forum.board.services import BoardService, TagService
from forum.models import User
from forum.posts.services import PostService
from forum.web import forms, views
from forum.web.i18n import gettext as _
from forum.web.i18n import ngettext
from forum.web.triage import N_
from forum.web.views import Nav, page

AnyRequest = Request[User, Any, Any]
TAGS_SHOWN = 200
FLASH_OK, FLASH_ERROR = "success", "error"
REFUSALS = {
    # The services' messages (English, for the API), said again in the reader's language.
    "The post is already hidden": N_("The post is already hidden."),
    "The post is not hidden": N_("The post is not hidden."),
    "This post has shipped and its contributors are credited: move it out of shipped first": N_(
        "This post has shipped and its contributors are credited: move it out of shipped before hiding it."
    ),
}


def refusal(exc: HTTPException) -> str:
    detail = str(exc.detail or "")
    if detail in REFUSALS:
        return _(REFUSALS[detail])
    if detail.startswith("There is already a tag named"):
        return _("There is already a tag with this name.")
    posts = (getattr(exc, "extra", None) or {}).get("posts")
    if isinstance(posts, int):
        return ngettext(
            "This tag is in use by %(num)s post: take it off that post first.",
            "This tag is in use by %(num)s posts: take it off them first.",
            posts,
        ) % {"num": posts}
    return _("This change was refused. Reload the page and try again.")


async def attempt(session: AsyncSession, action: Callable[[], Awaitable[Any]]) -> HTTPException | None:
    """Run one write in a savepoint; a 409/422 refusal leaves nothing behind and is returned, not raised."""
    try:
        async with session.begin_nested():
            await action()
    except HTTPException as exc:
        if exc.status_code not in (409, 422):
            raise
        return exc
    await session.commit()  # the request boundary: a redirect would otherwise roll back
    return None


async def provide_board(posts: PostService) -> BoardService:
    return BoardService(posts)


class ModerationActions(Controller):
    """``POST /posts/{id}/edit`` (author or product team), ``…/hide`` and ``…/unhide`` (product team)."""

    path = "/posts/{post_id:uuid}"
    include_in_schema = False
    guards = [requires_login]
    dependencies = {
        "posts": Provide(views.provide_posts),
        "nav": Provide(views.provide_nav),
        "board": Provide(provide_board),
    }

    @post("/edit", name="edit-post", media_type=MediaType.HTML)
    async def edit(
        self, request: AnyRequest, db_session: AsyncSession, posts: PostService, nav: Nav, post_id: UUID
    ) -> Response[Any]:
        values = await forms.read_form(request)
        data, errors = forms.edit_post(values)
        if data is not None:
            await posts.get_visible(post_id, request.user)  # 404 before anything else, as the API
            refused = await attempt(db_session, lambda: posts.update(post_id, request.user, data))
            if refused is None:
                flash(request, _("Saved. The change is in the post's edit history."), FLASH_OK)
                return Redirect(f"/posts/{post_id}", status_code=303)
            errors["form"] = refusal(refused)
        view = await views.post_page(posts, post_id, request.user)
        return page(
            "post.html", nav, status_code=422, view=view, values={}, errors={}, edit_values=values, edit_errors=errors
        )

    async def _moderate(
        self, request: AnyRequest, session: AsyncSession, posts: PostService, nav: Nav, post_id: UUID, hide: bool
    ) -> Response[Any]:
        board = BoardService(posts)
        change = board.hide if hide else board.unhide
        refused = await attempt(session, lambda: change(post_id, request.user))
        error = refusal(refused) if refused else None
        if request.headers.get("hx-request") == "true":
            post = await posts.get_out(post_id, request.user)
            done = None if error else _("Hidden: only the product team sees it now.") if hide else _("Shown again.")
            status = refused.status_code if refused else 200
            return Template(
                template_name="_moderation.html",
                context={"post": post, "moderation_error": error, "moderation_done": done},
                status_code=status,
            )
        if refused is None:
            flash(request, _("Hidden: only the product team sees it now.") if hide else _("Shown again."), FLASH_OK)
            return Redirect(f"/posts/{post_id}", status_code=303)
        view = await views.post_page(posts, post_id, request.user)
        return page(
            "post.html", nav, status_code=refused.status_code, view=view, values={}, errors={}, moderation_error=error
        )

    @post("/hide", name="hide-post", guards=[requires_product_team], media_type=MediaType.HTML)
    async def hide(
        self, request: AnyRequest, db_session: AsyncSession, posts: PostService, nav: Nav, post_id: UUID
    ) -> Response[Any]:
        return await self._moderate(request, db_session, posts, nav, post_id, hide=True)

    @post("/unhide", name="unhide-post", guards=[requires_product_team], media_type=MediaType.HTML)
    async def unhide(
        self, request: AnyRequest, db_session: AsyncSession, posts: PostService, nav: Nav, post_id: UUID
    ) -> Response[Any]:
        return await self._moderate(request, db_session, posts, nav, post_id, hide=False)


async def provide_tags(db_session: AsyncSession) -> TagService:
    return TagService(db_session)


class TagPages(Controller):
    """``/tags``: the managed tag list (product team): add, recolour, describe, delete."""

    path = "/tags"
    include_in_schema = False
    guards = [requires_product_team]
    dependencies = {"nav": Provide(views.provide_nav), "tags": Provide(provide_tags)}

    async def _page(self, nav: Nav, tags: TagService, status_code: int = 200, **context: Any) -> Template:
        listed = await tags.list(TAGS_SHOWN, 0)
        context = {"values": {}, "errors": {}, "editing": None, **context}
        return page("tags.html", nav, status_code=status_code, tags=listed, **context)

    @get("/", name="tags")
    async def list_tags(self, nav: Nav, tags: TagService) -> Template:
        return await self._page(nav, tags)

    @post("/", name="create-tag", media_type=MediaType.HTML)
    async def create(self, request: AnyRequest, db_session: AsyncSession, nav: Nav, tags: TagService) -> Any:
        values = await forms.read_form(request)
        data, errors = forms.new_tag(values)
        status = 422
        if data is not None:
            refused = await attempt(db_session, lambda: tags.create(data))
            if refused is None:
                flash(request, _("Tag “%(name)s” added.") % {"name": data.name}, FLASH_OK)
                return Redirect("/tags", status_code=303)
            errors["name"], status = refusal(refused), refused.status_code
        return await self._page(nav, tags, status, values=values, errors=errors)

    @post("/{tag_id:uuid}", name="update-tag", media_type=MediaType.HTML)
    async def update(
        self, request: AnyRequest, db_session: AsyncSession, nav: Nav, tags: TagService, tag_id: UUID
    ) -> Any:
        values = await forms.read_form(request)
        data, errors = forms.tag_update(values)
        if data is not None:
            tag = await tags.update(tag_id, data)  # 404 for a tag deleted meanwhile
            await db_session.commit()
            flash(request, _("Tag “%(name)s” saved.") % {"name": tag.name}, FLASH_OK)
            return Redirect("/tags", status_code=303)
        await tags.get(tag_id)
        editing = {"id": str(tag_id), "values": values, "errors": errors}
        return await self._page(nav, tags, 422, editing=editing)

    @post("/{tag_id:uuid}/delete", name="delete-tag", media_type=MediaType.HTML)
    async def delete(
        self, request: AnyRequest, db_session: AsyncSession, nav: Nav, tags: TagService, tag_id: UUID
    ) -> Any:
        tag = await tags.get(tag_id)  # 404 first
        refused = await attempt(db_session, lambda: tags.delete(tag_id))
        if refused is None:
            flash(request, _("Tag “%(name)s” deleted.") % {"name": tag.name}, FLASH_OK)
            return Redirect("/tags", status_code=303)
        editing = {"id": str(tag_id), "values": {}, "errors": {"delete": refusal(refused)}}
        return await self._page(nav, tags, refused.status_code, editing=editing)


class TagColours(Controller):
    """``/tag-colours.css``: a stylesheet painting each managed tag's chips (the page policy allows no
    inline styles), with black or white text, whichever reads better on the colour."""

    include_in_schema = False
    dependencies = {"tags": Provide(provide_tags)}

    @get("/tag-colours.css", name="tag-colours", media_type="text/css", cache_control=None)
    async def stylesheet(self, tags: TagService) -> Response[str]:
        rules = [
            f'.tags a[data-tag="{css_string(name)}"] {{ background: {colour}; border-color: {colour}; '
            f"color: {readable_text(colour)}; }}"
            for name, colour in (await tags.colours()).items()
        ]
        return Response("\n".join(rules) + "\n", media_type="text/css", headers={"cache-control": "no-cache"})


def css_string(text: str) -> str:
    """Text safe inside a double-quoted CSS string: everything but letters, digits and spaces escaped."""
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch == " ") else f"\\{ord(ch):x} " for ch in text)


def readable_text(colour: str) -> str:
    """Black or white text on a ``#rrggbb`` background: the one with more WCAG contrast."""

    def channel(hex_pair: str) -> float:
        c = int(hex_pair, 16) / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(colour[i : i + 2]) for i in (1, 3, 5))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#000000" if (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) else "#ffffff"


class ExportDownloads(Controller):
    """``/triage/export/{kind}.csv``: the API's CSV exports for the signed-in product team (the browser's
    session cookie never authenticates ``/api/``)."""

    path = "/triage/export"
    include_in_schema = False
    guards = [requires_product_team]

    @get("/{kind:str}", name="triage:export", media_type="text/csv")
    async def download(self, kind: str, db_session: AsyncSession, state: State) -> Stream:
        name, _, extension = kind.partition(".")
        if extension != "csv" or name not in {k.value for k in ExportKind}:
            raise NotFoundException()
        return await export_stream(ExportKind(name), db_session, state)


BOARD_CONTROLLERS = [ModerationActions, TagPages, TagColours, ExportDownloads]

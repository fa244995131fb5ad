"""HTML forms: read the posted fields, check them with messages in the reader's language (every field at
once, shown next to it), then build the same schema the API takes. Nothing here decides a domain rule:
the services still check everything and their refusals are shown the same way."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request

from forum.accounts.schemas import EMAIL_RE, LoginRequest, UserRegister
from forum.board.schemas import TagCreate, TagUpdate
from forum.models import PostKind, Visibility
from forum.posts.schemas import (
    BODY_MAX,
    TAG_MAX,
    TAGS_MAX,
    TITLE_MAX,
    TITLE_MIN,
    CommentCreate,
    PostCreate,
    PostUpdate,
)
from forum.surveys.schemas import AnswerCreate
from forum.web.i18n import gettext as _

Errors = dict[str, str]
PASSWORD_MIN, PASSWORD_MAX, NAME_MAX, COMMENT_MAX = 8, 128, 80, 5_000


async def read_form(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The posted fields as text (the last value of a repeated field), without the CSRF token."""
    form = await request.form()
    return {key: str(value) for key, value in form.items() if key != "_csrf_token" and isinstance(value, str)}


def _text(values: dict[str, str], name: str) -> str:
    return values.get(name, "").replace("\x00", "").strip()


def _build(schema: type[Any], fields: dict[str, Any], errors: Errors) -> Any:
    if errors:
        return None
    try:
        return msgspec.convert(fields, schema)
    except msgspec.ValidationError:  # the checks above mirror the schema; this is the safety net
        errors["form"] = _("Some fields are not valid. Check them and try again.")
        return None


def signup(values: dict[str, str]) -> tuple[UserRegister | None, Errors]:
    email, password, name = _text(values, "email").lower(), values.get("password", ""), _text(values, "display_name")
    errors: Errors = {}
    if not EMAIL_RE.match(email) or len(email) > 254:
        errors["email"] = _("Enter a valid email address, like ana@example.com.")
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        errors["password"] = _("Use between 8 and 128 characters.")
    if not 1 <= len(name) <= NAME_MAX:
        errors["display_name"] = _("Enter the name others will see (at most 80 characters).")
    data = _build(UserRegister, {"email": email, "password": password, "display_name": name}, errors)
    return data, errors


def login(values: dict[str, str]) -> tuple[LoginRequest | None, Errors]:
    email, password = _text(values, "email"), values.get("password", "")
    errors: Errors = {}
    if not email:
        errors["email"] = _("Enter your email address.")
    if not password:
        errors["password"] = _("Enter your password.")
    email, password = email[:254], password[:PASSWORD_MAX]
    return _build(LoginRequest, {"email": email, "password": password}, errors), errors


def tags_of(raw: str) -> list[str]:
    return [tag.strip() for tag in raw.split(",") if tag.strip()]


def new_post(values: dict[str, str], *, may_post_internal: bool) -> tuple[PostCreate | None, Errors]:
    kind, title, body = _text(values, "kind") or "idea", _text(values, "title"), _text(values, "body")
    tags = tags_of(values.get("tags", ""))
    visibility = _text(values, "visibility") or Visibility.PUBLIC.value
    errors: Errors = {}
    if kind not in {k.value for k in PostKind}:
        errors["kind"] = _("Choose an idea or a critique.")
    if not TITLE_MIN <= len(title) <= TITLE_MAX:
        errors["title"] = _("The title needs between 3 and 160 characters.")
    if len(body) > BODY_MAX:
        errors["body"] = _("The description can have at most 10,000 characters.")
    if len(tags) > TAGS_MAX or any(len(tag) > TAG_MAX for tag in tags):
        errors["tags"] = _("At most 10 tags, each at most 40 characters.")
    if visibility not in {v.value for v in Visibility} or (visibility == "internal" and not may_post_internal):
        errors["visibility"] = _("Choose who can see this post.")
    fields = {"kind": kind, "title": title, "body": body, "tags": tags, "visibility": visibility}
    return _build(PostCreate, fields, errors), errors


def edit_post(values: dict[str, str]) -> tuple[PostUpdate | None, Errors]:
    """A new title and body (the service records what changed and who changed it)."""
    title, body = _text(values, "title"), _text(values, "body")
    errors: Errors = {}
    if not TITLE_MIN <= len(title) <= TITLE_MAX:
        errors["title"] = _("The title needs between 3 and 160 characters.")
    if len(body) > BODY_MAX:
        errors["body"] = _("The description can have at most 10,000 characters.")
    return _build(PostUpdate, {"title": title, "body": body}, errors), errors


COLOUR_RE = re.compile(r"#[0-9a-fA-F]{6}")
TAG_DESCRIPTION_MAX = 500


def _tag_fields(values: dict[str, str], errors: Errors) -> dict[str, str]:
    colour, description = _text(values, "colour"), _text(values, "description")
    if not COLOUR_RE.fullmatch(colour):
        errors["colour"] = _("Choose a colour.")
    if len(description) > TAG_DESCRIPTION_MAX:
        errors["description"] = _("The description can have at most 500 characters.")
    return {"colour": colour, "description": description}


def new_tag(values: dict[str, str]) -> tuple[TagCreate | None, Errors]:
    name = " ".join(_text(values, "name").lower().split())
    errors: Errors = {}
    if not 1 <= len(name) <= TAG_MAX or "," in name:
        errors["name"] = _("Name the tag in at most 40 characters, without commas.")
    fields = {"name": name, **_tag_fields(values, errors)}
    return _build(TagCreate, fields, errors), errors


def tag_update(values: dict[str, str]) -> tuple[TagUpdate | None, Errors]:
    errors: Errors = {}
    return _build(TagUpdate, _tag_fields(values, errors), errors), errors


def comment(values: dict[str, str], *, may_write_notes: bool) -> tuple[CommentCreate | None, Errors]:
    body = _text(values, "body")
    internal = values.get("internal") in {"on", "true", "1"} and may_write_notes
    errors: Errors = {}
    if not 1 <= len(body) <= COMMENT_MAX:
        errors["body"] = _("Write a comment of at most 5,000 characters.")
    return _build(CommentCreate, {"body": body, "internal": internal}, errors), errors


def survey_answer(values: dict[str, str]) -> tuple[AnswerCreate | None, Errors]:
    """A score (a whole number; the service checks it is on the survey's scale) and an optional comment.
    ``errors["score"]`` is only a marker: the message names the survey's scale."""
    raw, comment = _text(values, "score"), _text(values, "comment")
    errors: Errors = {}
    if not re.fullmatch(r"-?[0-9]{1,3}", raw):
        errors["score"] = "score"
    if len(comment) > COMMENT_MAX:
        errors["comment"] = _("Write a comment of at most 5,000 characters.")
    fields = {"score": int(raw) if "score" not in errors else 0, "comment": comment or None}
    return _build(AnswerCreate, fields, errors), errors


def safe_next(target: str | None, default: str = "/") -> str:
    """Only a path on this site: never ``//evil.example`` or ``https://…`` (an open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default

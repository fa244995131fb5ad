"""What an email says, in the recipient's language: the same gettext catalogs as the pages
(``forum/web/locale``), a plain-text and an HTML part, a link to the post, and a one-click unsubscribe
link (RFC 8058) signed so that it needs no login."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Any
from uuid import UUID

from jinja2 import Environment, FileSystemLoader, select_autoescape

from forum.web import i18n
from forum.web.i18n import gettext as _
from forum.web.i18n import ngettext

TEMPLATES = i18n.LOCALE_DIR.parent / "templates"


# Unsubscribe tokens -----------------------------------------------------------------------------------


def _signature(key: bytes, user_id: UUID) -> str:
    digest = hmac.new(key, b"unsubscribe:" + user_id.bytes, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def unsubscribe_token(key: bytes, user_id: UUID) -> str:
    return f"{user_id.hex}.{_signature(key, user_id)}"


def user_of_token(key: bytes, token: str) -> UUID | None:
    """The user a token was made for, or None when it is not one of ours."""
    raw_id, _, signature = token.partition(".")
    try:
        user_id = UUID(hex=raw_id)
    except ValueError:
        return None
    return user_id if hmac.compare_digest(signature, _signature(key, user_id)) else None


# Texts --------------------------------------------------------------------------------------------------


@contextmanager
def in_language(locale: str) -> Iterator[None]:
    before = i18n.current_locale()
    i18n.activate(locale)
    try:
        yield
    finally:
        i18n.activate(before)


def status_name(status: str | None) -> str:
    names = {
        "open": _("Open"),
        "under_review": _("Under review"),
        "planned": _("Planned"),
        "in_progress": _("In progress"),
        "shipped": _("Shipped"),
        "declined": _("Declined"),
        "duplicate": _("Duplicate"),
        "addressed": _("Addressed"),
    }
    return names.get(status or "", status or "")


@dataclass
class Item:
    """One notification as its recipient reads it: a headline, an optional detail and its post."""

    headline: str
    detail: str | None
    post_id: str | None


def describe(kind: str, payload: dict[str, Any]) -> Item:
    """In the active language. ``payload`` is already cut to what the recipient may see."""
    title = payload.get("title") or ""
    detail = None
    if kind == "status_changed":
        headline = _("“%(title)s” is now %(status)s") % {
            "title": title,
            "status": status_name(payload.get("to")).lower(),
        }
        if payload.get("note"):
            detail = _("Note from the team: %(note)s") % {"note": payload["note"]}
    elif kind == "post_merged":
        if payload.get("into_title"):
            headline = _("“%(title)s” was merged into “%(into)s”") % {"title": title, "into": payload["into_title"]}
        else:
            headline = _("“%(title)s” was merged into another post") % {"title": title}
        detail = _("Your vote now counts there.")
    elif kind == "credit_awarded":
        headline = _("“%(title)s” has shipped: you earned %(points)s points") % {
            "title": title,
            "points": i18n.local_number(payload.get("points", 0)),
        }
        detail = _("Thank you for asking for it early.")
    elif kind == "credit_revoked":
        headline = _("“%(title)s” is no longer shipped: its credits were withdrawn") % {"title": title}
    elif kind == "critique_addressed":
        if payload.get("idea_title"):
            headline = _("Your critique “%(title)s” was addressed by “%(idea)s”") % {
                "title": title,
                "idea": payload["idea_title"],
            }
        else:
            headline = _("Your critique “%(title)s” was addressed") % {"title": title}
    elif kind == "survey_voice_shipped":
        headline = _("What you told us in a survey has shipped: “%(title)s”") % {"title": title}
    else:
        headline = _("News about “%(title)s”") % {"title": title}
    return Item(headline=headline, detail=detail, post_id=payload.get("post_id"))


# The message --------------------------------------------------------------------------------------------

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    extensions=["jinja2.ext.i18n"],
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.install_gettext_callables(gettext=i18n.gettext, ngettext=i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]


@dataclass
class Recipient:
    id: UUID
    email: str
    display_name: str
    language: str


def compose(
    *,
    recipient: Recipient,
    items: list[Item],
    digest: bool,
    sender: str,
    public_url: str,
    unsubscribe_url: str,
) -> EmailMessage:
    """One email (a single notification, or a day's digest) in the recipient's language."""
    with in_language(recipient.language):
        if digest:
            subject = ngettext(
                "Your day on the forum: %(num)s update", "Your day on the forum: %(num)s updates", len(items)
            ) % {"num": len(items)}
        else:
            subject = items[0].headline
        context = {
            "name": recipient.display_name,
            "items": items,
            "digest": digest,
            "public_url": public_url,
            "preferences_url": f"{public_url}/inbox",
            "unsubscribe_url": unsubscribe_url,
            "lang": recipient.language,
        }
        text = _env.get_template("email/message.txt").render(context)
        html = _env.get_template("email/message.html").render(context)
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = formataddr((recipient.display_name, recipient.email))
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    message["Content-Language"] = recipient.language  # after the parts: set_content() drops Content-* headers
    return message

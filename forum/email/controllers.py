from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, get, patch, post
from litestar.exceptions import NotFoundException
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from forum.auth import requires_login
from forum.email.messages import user_of_token
from forum.email.schemas import EmailLanguage, EmailPreferences, EmailPreferencesUpdate
from forum.email.services import language_of, preference, set_preference
from forum.models import EmailFrequency, User
from forum.web import i18n

UNSUBSCRIBE_PATH = "/email/unsubscribe"


async def _preferences_out(session: AsyncSession, user_id: UUID) -> EmailPreferences:
    stored = await preference(session, user_id)
    return EmailPreferences(
        frequency=EmailFrequency(stored.frequency),
        language=EmailLanguage(await language_of(session, user_id, stored.language)),
        language_chosen=stored.language is not None,
    )


class EmailPreferenceController(Controller):
    path = "/api/me/email-preferences"
    tags = ["notifications"]
    guards = [requires_login]

    @get(summary="How you hear by email: each notification, a daily digest, or none; and in which language")
    async def get_email_preferences(
        self, request: Request[User, Any, Any], db_session: AsyncSession
    ) -> EmailPreferences:
        return await _preferences_out(db_session, request.user.id)

    @patch(summary="Change how often and in which language you hear by email")
    async def update_email_preferences(
        self, request: Request[User, Any, Any], db_session: AsyncSession, data: EmailPreferencesUpdate
    ) -> EmailPreferences:
        await set_preference(
            db_session,
            request.user.id,
            frequency=None if data.frequency is msgspec.UNSET else data.frequency.value,
            language=None if data.language is msgspec.UNSET else data.language.value,
        )
        return await _preferences_out(db_session, request.user.id)


class UnsubscribeController(Controller):
    """The link in every email (RFC 8058): opening it asks to confirm (a link preview or a mail scanner
    that follows it unsubscribes nobody); a POST, from that page or the mail client's one-click button
    (``List-Unsubscribe=One-Click``), unsubscribes. The signed token stands for a login."""

    path = f"{UNSUBSCRIBE_PATH}/{{token:str}}"
    include_in_schema = False

    async def _user(self, request: Request[Any, Any, Any], db_session: AsyncSession, token: str) -> User:
        user_id = user_of_token(request.app.state["forum_unsubscribe_key"], token)
        user = await db_session.get(User, user_id) if user_id else None
        if user is None:
            raise NotFoundException("This unsubscribe link is not valid")
        return user

    async def _page(self, db_session: AsyncSession, user: User, *, done: bool) -> Template:
        stored = await preference(db_session, user.id)
        language = await language_of(db_session, user.id, stored.language)
        i18n.activate(language)  # the page speaks the recipient's language, whatever the browser says
        return Template(
            template_name="email/unsubscribe.html",
            context={"nav": None, "email": user.email, "done": done, "frequency": stored.frequency},
        )

    @get(name="unsubscribe")
    async def confirm_unsubscribe(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, token: str
    ) -> Template:
        user = await self._user(request, db_session, token)
        return await self._page(db_session, user, done=False)

    @post(status_code=200)
    async def unsubscribe(self, request: Request[Any, Any, Any], db_session: AsyncSession, token: str) -> Template:
        user = await self._user(request, db_session, token)
        await set_preference(db_session, user.id, frequency=EmailFrequency.NONE.value)
        return await self._page(db_session, user, done=True)

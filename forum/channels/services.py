"""Feedback captured on behalf of a customer: what support heard on the phone, sales in a meeting, the shop
at the counter, posted, voted or commented for the customer identified by email. Services never commit.

- Only employees and the product team capture (anybody else: 403, before anything is written).
- The customer is the author or voter: counts, credits and "who asked first" are theirs. An email the forum
  does not know gets an unclaimed external account (the same as a survey import), claimed by registering.
- ``said_at`` (default: now) is the post's, vote's or comment's own time; ``FeedbackCapture`` keeps the
  channel, the source link, who typed it and when, and only staff read it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from litestar.exceptions import PermissionDeniedException
from sqlalchemy import exists, select

from forum.accounts.services import accounts_for_emails
from forum.channels.captures import record
from forum.channels.schemas import OnBehalf
from forum.errors import UnprocessableError
from forum.models import CaptureSubject, Post, User, Visibility, Vote, visible_to
from forum.posts.schemas import CommentCreate, CommentOut, PostCreate, PostOut, VoteState
from forum.posts.services import PostService


class CaptureService:
    def __init__(self, posts: PostService) -> None:
        self.posts = posts
        self.session = posts.session

    async def customer(self, actor: User, on_behalf: OnBehalf) -> User:
        if not actor.sees_internal:
            raise PermissionDeniedException("Only employees and the product team can act on a customer's behalf")
        names = {on_behalf.email: on_behalf.display_name} if on_behalf.display_name else None
        accounts, _ = await accounts_for_emails(self.session, [on_behalf.email], names)
        customer = await self.session.get(User, accounts[on_behalf.email][0])
        assert customer is not None
        if not customer.is_active:
            raise UnprocessableError("This customer's account is deactivated", field="on_behalf.email")
        return customer

    async def _post_for(self, post_id: UUID, actor: User, customer: User) -> Post:
        post = await self.posts.get_visible(post_id, actor)  # 404 for what the employee may not see
        if not await self.session.scalar(select(exists().where(Post.id == post_id, visible_to(customer)))):
            raise UnprocessableError("This customer may not see an internal post", field="on_behalf.email")
        return post

    async def create_post(self, actor: User, data: PostCreate) -> PostOut:
        assert data.on_behalf is not None
        on_behalf = data.on_behalf
        customer = await self.customer(actor, on_behalf)
        if data.visibility is Visibility.INTERNAL and not customer.sees_internal:
            raise UnprocessableError("A customer's post cannot be internal", field="visibility")
        said_at = on_behalf.said_at or datetime.now(UTC)
        out = await self.posts.create(customer, data, channel=on_behalf.channel.value, said_at=said_at)
        out.capture = await record(
            self.session,
            CaptureSubject.POST,
            post_id=out.id,
            customer=customer,
            captured_by=actor,
            on_behalf=on_behalf,
            said_at=said_at,
        )
        return out

    async def vote(self, post_id: UUID, actor: User, on_behalf: OnBehalf) -> VoteState:
        """Idempotent like a vote: a customer who already voted keeps their first vote (and its channel)."""
        customer = await self.customer(actor, on_behalf)
        await self._post_for(post_id, actor, customer)
        voted = await self.session.scalar(select(exists().where(Vote.post_id == post_id, Vote.user_id == customer.id)))
        said_at = on_behalf.said_at or datetime.now(UTC)
        state = await self.posts.vote(post_id, customer, said_at=said_at)
        if not voted:
            await record(
                self.session,
                CaptureSubject.VOTE,
                post_id=post_id,
                customer=customer,
                captured_by=actor,
                on_behalf=on_behalf,
                said_at=said_at,
            )
        return state

    async def comment(self, post_id: UUID, actor: User, data: CommentCreate) -> CommentOut:
        assert data.on_behalf is not None
        on_behalf = data.on_behalf
        customer = await self.customer(actor, on_behalf)
        await self._post_for(post_id, actor, customer)
        if data.internal:
            raise UnprocessableError(
                "An internal note is the employee's own: write it without on_behalf", field="internal"
            )
        said_at = on_behalf.said_at or datetime.now(UTC)
        out = await self.posts.add_comment(post_id, customer, data, said_at=said_at)
        out.capture = await record(
            self.session,
            CaptureSubject.COMMENT,
            post_id=post_id,
            comment_id=out.id,
            customer=customer,
            captured_by=actor,
            on_behalf=on_behalf,
            said_at=said_at,
        )
        return out

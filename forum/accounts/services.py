"""Accounts: registration, login and the admin's changes to roles and kinds. Services never commit."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

import msgspec
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from litestar.exceptions import NotAuthorizedException
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from forum.auth import UNCLAIMED_PASSWORD_HASH, hash_password, revoke_tokens, verify_password
from forum.errors import ConflictError, UnprocessableError
from forum.models import Post, User, UserKind, UserRole, Vote
from forum.schemas import normalise_email


async def accounts_for_emails(
    session: AsyncSession, emails: Iterable[str], names: dict[str, str] | None = None
) -> tuple[dict[str, tuple[UUID, str]], int]:
    """Ids and kinds of these (normalised) emails' accounts, creating an unclaimed external account for
    each unknown one (no password matches it; registering with the email claims it). Returns them and how
    many were created. Used by survey imports and by feedback captured on a customer's behalf."""
    wanted = sorted(set(emails))
    names = names or {}
    created = await session.execute(
        insert(User)
        .values(
            [
                {
                    "email": email,
                    "display_name": names.get(email) or email.split("@")[0][:80],
                    "password_hash": UNCLAIMED_PASSWORD_HASH,
                    "kind": UserKind.EXTERNAL.value,
                }
                for email in wanted
            ]
        )
        .on_conflict_do_nothing(index_elements=[User.email])
        .returning(User.id)
    )
    n_created = len(created.all())
    rows = await session.execute(select(User.email, User.id, User.kind).where(User.email.in_(wanted)))
    return {r.email: (r.id, r.kind) for r in rows}, n_created


class UserRepository(SQLAlchemyAsyncRepository[User]):
    model_type = User


class UserService(SQLAlchemyAsyncRepositoryService[User, UserRepository]):
    repository_type = UserRepository

    async def get_by_email(self, email: str) -> User | None:
        return await self.repository.get_one_or_none(email=normalise_email(email))

    async def register(
        self,
        *,
        email: str,
        password: str,
        display_name: str,
        kind: UserKind = UserKind.EXTERNAL,
        role: UserRole = UserRole.MEMBER,
    ) -> User:
        email = normalise_email(email)
        existing = await self.get_by_email(email)
        if existing is not None and existing.password_hash == UNCLAIMED_PASSWORD_HASH:
            return await self._claim(existing, password, display_name)
        if existing is not None:
            raise ConflictError(detail="An account with this email already exists")
        user = User(
            email=email,
            password_hash=await hash_password(password),
            display_name=display_name,
            kind=kind.value,
            role=role.value,
        )
        # A concurrent registration of the same email still fails on the unique index (→ 409).
        return await self.repository.add(user, auto_refresh=True)

    async def _claim(self, user: User, password: str, display_name: str) -> User:
        """An account made for an imported survey answer is claimed by registering with its email."""
        claimed = await self.repository.session.scalar(
            update(User)
            .where(User.id == user.id, User.password_hash == UNCLAIMED_PASSWORD_HASH)
            .values(password_hash=await hash_password(password), display_name=display_name)
            .returning(User.id)
        )
        if claimed is None:  # claimed by a concurrent registration
            raise ConflictError(detail="An account with this email already exists")
        await self.repository.session.refresh(user)
        return user

    async def authenticate(self, email: str, password: str) -> User:
        user = await self.get_by_email(email)
        ok = await verify_password(user.password_hash if user else None, password)
        if user is None or not ok or not user.is_active:
            raise NotAuthorizedException("Wrong email or password")
        return user

    async def update_own_account(
        self,
        user: User,
        *,
        display_name: str | msgspec.UnsetType,
        password: str | msgspec.UnsetType,
        current_password: str | msgspec.UnsetType,
    ) -> User:
        if display_name is not msgspec.UNSET:
            user.display_name = display_name
        if password is not msgspec.UNSET:
            if current_password is msgspec.UNSET or not await verify_password(user.password_hash, current_password):
                raise UnprocessableError("current_password is wrong or missing", field="current_password")
            user.password_hash = await hash_password(password)
            revoke_tokens(user)  # every session, this one included: log in again with the new password
        return await self.repository.update(user, auto_refresh=True)

    async def log_out(self, user: User) -> None:
        revoke_tokens(user)
        await self.repository.update(user)

    async def update_by_admin(
        self,
        user_id: UUID,
        *,
        role: UserRole | msgspec.UnsetType,
        kind: UserKind | msgspec.UnsetType,
        is_active: bool | msgspec.UnsetType,
    ) -> User:
        user = await self.repository.get(user_id, with_for_update=True)
        losing_admin = user.is_admin and ((role is not msgspec.UNSET and role != UserRole.ADMIN) or is_active is False)
        if losing_admin:
            admins = await self.repository.session.scalar(
                select(func.count()).select_from(User).where(User.role == "admin", User.is_active.is_(True))
            )
            if (admins or 0) <= 1:
                raise ConflictError(detail="The last active admin cannot be demoted or deactivated")
        if role is not msgspec.UNSET:
            user.role = role.value
        if is_active is not msgspec.UNSET and is_active != user.is_active:
            user.is_active = is_active
            revoke_tokens(user)  # a reactivated user logs in again: tokens from before stay dead
        if kind is not msgspec.UNSET and kind.value != user.kind:
            await self._move_votes_to_kind(user.id, kind.value)
            user.kind = kind.value
        return await self.repository.update(user, auto_refresh=True)

    async def _move_votes_to_kind(self, user_id: UUID, new_kind: str) -> None:
        """Keep every post's internal/external split exact when a voter changes kind."""
        session = self.repository.session
        step = 1 if new_kind == UserKind.INTERNAL.value else -1
        voted = select(Vote.post_id).where(Vote.user_id == user_id, Vote.voter_kind != new_kind)
        await session.execute(
            update(Post)
            .where(Post.id.in_(voted))
            .values(vote_internal=Post.vote_internal + step, vote_external=Post.vote_external - step)
        )
        await session.execute(update(Vote).where(Vote.user_id == user_id).values(voter_kind=new_kind))

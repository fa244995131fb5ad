from __future__ import annotations

from uuid import UUID

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from litestar import Controller, Request, Response, get, patch, post
from litestar.di import Provide

from forum.accounts.schemas import (
    AccessToken,
    LoginRequest,
    MeUpdate,
    UserDetail,
    UserPublic,
    UserRegister,
    UserUpdate,
)
from forum.accounts.services import UserService
from forum.auth import issue_token, requires_admin, requires_login
from forum.http import LOCATION, created
from forum.models import User
from forum.schemas import Limit, Offset, Page

provide_users = Provide(create_service_provider(UserService))


def user_detail(user: User) -> UserDetail:
    return UserDetail(
        id=user.id,
        email=user.email,
        display_name=user.display_name,
        kind=user.kind,
        role=user.role,
        is_active=user.is_active,
        created_at=user.created_at,
    )


class AuthController(Controller):
    path = "/api/auth"
    tags = ["accounts"]
    dependencies = {"users": provide_users}

    @post("/register", response_headers=[LOCATION], summary="Create an account (as an external customer)")
    async def register(self, data: UserRegister, users: UserService) -> Response[UserDetail]:
        user = await users.register(email=data.email, password=data.password, display_name=data.display_name)
        return created(user_detail(user), f"/api/users/{user.id}")

    @post("/login", status_code=200, summary="Exchange email and password for a bearer token")
    async def login(self, request: Request, data: LoginRequest, users: UserService) -> AccessToken:
        user = await users.authenticate(data.email, data.password)
        jwt_auth = request.app.state["forum_jwt_auth"]
        token = issue_token(jwt_auth, user)
        return AccessToken(access_token=token, expires_in=int(jwt_auth.default_token_expiration.total_seconds()))

    @post(
        "/logout",
        status_code=204,
        guards=[requires_login],
        summary="Log out everywhere: every token of yours issued until now stops working",
    )
    async def logout(self, request: Request[User, object, object], users: UserService) -> None:
        await users.log_out(request.user)


class MeController(Controller):
    path = "/api/me"
    tags = ["accounts"]
    guards = [requires_login]
    dependencies = {"users": provide_users}

    @get(summary="The logged-in user")
    async def get_me(self, request: Request[User, object, object]) -> UserDetail:
        return user_detail(request.user)

    @patch(summary="Change your display name or password")
    async def update_me(self, request: Request[User, object, object], data: MeUpdate, users: UserService) -> UserDetail:
        user = await users.update_own_account(
            request.user,
            display_name=data.display_name,
            password=data.password,
            current_password=data.current_password,
        )
        return user_detail(user)


class UserController(Controller):
    path = "/api/users"
    tags = ["accounts"]
    dependencies = {"users": provide_users}

    @get(guards=[requires_admin], summary="All users (admin)")
    async def list_users(
        self,
        users: UserService,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> Page[UserDetail]:
        from advanced_alchemy.filters import LimitOffset, OrderBy

        items, total = await users.list_and_count(LimitOffset(limit, offset), OrderBy("created_at", "asc"))
        return Page(items=[user_detail(u) for u in items], total=total, limit=limit, offset=offset)

    @get("/{user_id:uuid}", summary="A user's public profile")
    async def get_user(self, user_id: UUID, users: UserService) -> UserPublic:
        user = await users.get(user_id)
        return UserPublic(id=user.id, display_name=user.display_name, kind=user.kind)

    @patch(
        "/{user_id:uuid}",
        guards=[requires_admin],
        summary="Change a user's role, kind or active flag (admin)",
    )
    async def update_user(self, user_id: UUID, data: UserUpdate, users: UserService) -> UserDetail:
        user = await users.update_by_admin(user_id, role=data.role, kind=data.kind, is_active=data.is_active)
        return user_detail(user)

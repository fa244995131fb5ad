"""Accounts: registration, login, tokens, and the admin's changes to roles and kinds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt

from forum.settings import Settings
from tests.conftest import PASSWORD, Api


def test_register_login_and_me(api: Api) -> None:
    r = api.client.post(
        "/api/auth/register",
        json={"email": "  Maria@Example.COM ", "password": PASSWORD, "display_name": "  María  "},
    )
    assert r.status_code == 201, r.text
    user = r.json()
    assert user["email"] == "maria@example.com"
    assert user["display_name"] == "María"
    assert (user["kind"], user["role"]) == ("external", "member")
    assert "password" not in r.text and "argon2" not in r.text

    r = api.client.post("/api/auth/login", json={"email": "MARIA@example.com", "password": PASSWORD})
    assert r.status_code == 200
    token = r.json()
    assert token["token_type"] == "bearer" and token["expires_in"] > 0
    me = api.client.get("/api/me", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert me.status_code == 200 and me.json()["id"] == user["id"]


def test_duplicate_email_is_409(api: Api) -> None:
    body = {"email": "dup@example.com", "password": PASSWORD, "display_name": "Dup"}
    assert api.client.post("/api/auth/register", json=body).status_code == 201
    r = api.client.post("/api/auth/register", json={**body, "email": "DUP@example.com"})
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")


def test_registration_validation_names_fields(api: Api) -> None:
    good = {"email": "ok@example.com", "password": PASSWORD, "display_name": "Ok"}
    for field, bad in [("email", "nope"), ("password", "short"), ("display_name", "   "), ("email", 42)]:
        r = api.client.post("/api/auth/register", json={**good, field: bad})
        assert r.status_code == 422, (field, r.text)
        assert [e["field"] for e in r.json()["errors"]] == [field]
    r = api.client.post(
        "/api/auth/register",
        json={"email": "a@example.com", "password": PASSWORD, "display_name": "x", "role": "admin"},
    )
    assert r.status_code == 422, "unknown fields (such as a self-granted role) are refused"


def test_wrong_password_and_unknown_email_look_the_same(api: Api) -> None:
    actor = api.register("sam")
    wrong = api.client.post("/api/auth/login", json={"email": actor.email, "password": "wrong password"})
    unknown = api.client.post("/api/auth/login", json={"email": "ghost@example.com", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]


def test_bad_and_expired_tokens_are_401(api: Api, settings: Settings) -> None:
    actor = api.register()
    for header in ("Bearer not-a-jwt", "Basic abc", f"Bearer {actor.token}x"):
        r = api.client.get("/api/me", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert r.headers["content-type"].startswith("application/problem+json")
    now = datetime.now(UTC)
    expired = jwt.encode(
        {"sub": actor.id, "iat": now - timedelta(hours=2), "exp": now - timedelta(minutes=1)},
        settings.jwt_secret(),
        algorithm="HS256",
    )
    assert api.client.get("/api/me", headers={"Authorization": f"Bearer {expired}"}).status_code == 401
    assert api.client.get("/api/me").status_code == 401


def test_admin_changes_role_and_kind_others_cannot(api: Api) -> None:
    admin = api.make_user("internal", "admin")
    member = api.register("employee")
    other = api.register()
    r = api.client.patch(f"/api/users/{member.id}", json={"kind": "internal"}, headers=other.headers)
    assert r.status_code == 403
    r = api.client.patch(f"/api/users/{member.id}", json={"kind": "internal"}, headers=member.headers)
    assert r.status_code == 403, "nobody promotes themselves"
    r = api.client.patch(f"/api/users/{member.id}", json={"kind": "internal", "role": "product"}, headers=admin.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["kind"], r.json()["role"]) == ("internal", "product")
    me = api.client.get("/api/me", headers=member.headers).json()
    assert (me["kind"], me["role"]) == ("internal", "product"), "changes apply to existing tokens at once"
    r = api.client.patch(f"/api/users/{member.id}", json={"role": "owner"}, headers=admin.headers)
    assert r.status_code == 422
    assert (
        api.client.patch(
            "/api/users/01a209e5-0000-7000-8000-000000000000", json={"role": "admin"}, headers=admin.headers
        ).status_code
        == 404
    )


def test_last_admin_cannot_be_demoted(api: Api) -> None:
    admin = api.make_user("internal", "admin")
    r = api.client.patch(f"/api/users/{admin.id}", json={"role": "member"}, headers=admin.headers)
    assert r.status_code == 409
    second = api.make_user("internal", "admin")
    r = api.client.patch(f"/api/users/{admin.id}", json={"role": "member"}, headers=second.headers)
    assert r.status_code == 200


def test_deactivated_user_loses_access(api: Api) -> None:
    admin = api.make_user("internal", "admin")
    user = api.register()
    assert (
        api.client.patch(f"/api/users/{user.id}", json={"is_active": False}, headers=admin.headers).status_code == 200
    )
    assert api.client.get("/api/me", headers=user.headers).status_code == 401
    r = api.client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
    assert r.status_code == 401


def test_kind_change_moves_existing_votes_between_internal_and_external(api: Api) -> None:
    admin = api.make_user("internal", "admin")
    author = api.register()
    voter = api.register()
    post = api.post(author, title="Export rides to CSV")
    api.client.put(f"/api/posts/{post['id']}/vote", headers=voter.headers)
    votes = api.client.get(f"/api/posts/{post['id']}").json()["votes"]
    assert votes == {"total": 1, "internal": 0, "external": 1}
    api.client.patch(f"/api/users/{voter.id}", json={"kind": "internal"}, headers=admin.headers)
    votes = api.client.get(f"/api/posts/{post['id']}").json()["votes"]
    assert votes == {"total": 1, "internal": 1, "external": 0}
    r = api.client.delete(f"/api/posts/{post['id']}/vote", headers=voter.headers)
    assert r.json()["votes"] == {"total": 0, "internal": 0, "external": 0}


def test_user_lists_and_profiles(api: Api) -> None:
    admin = api.make_user("internal", "admin")
    user = api.register("pat")
    assert api.client.get("/api/users", headers=user.headers).status_code == 403
    page = api.client.get("/api/users?limit=1", headers=admin.headers).json()
    assert page["total"] == 2 and len(page["items"]) == 1
    profile = api.client.get(f"/api/users/{user.id}").json()
    assert set(profile) == {"id", "display_name", "kind"}, "public profiles never show email or role"


def test_change_own_password(api: Api) -> None:
    user = api.register()
    r = api.client.patch("/api/me", json={"password": "a new password"}, headers=user.headers)
    assert r.status_code == 422
    r = api.client.patch(
        "/api/me", json={"password": "a new password", "current_password": PASSWORD}, headers=user.headers
    )
    assert r.status_code == 200
    assert (
        api.client.post("/api/auth/login", json={"email": user.email, "password": "a new password"}).status_code == 200
    )

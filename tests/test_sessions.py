"""Sessions end when they should: logout, a password change and (de)activation revoke every token issued
before; an expired token is told apart from an invalid or revoked one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from litestar.security.jwt import Token

from forum.auth import token_is_revoked
from forum.models import User
from forum.settings import Settings
from tests.conftest import PASSWORD, Actor, Api


def _me(api: Api, token: str) -> tuple[int, str]:
    r = api.client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    return r.status_code, r.json().get("detail", "") if r.status_code != 200 else ""


def _second_token(api: Api, actor: Actor) -> str:
    return api.login(actor.email, actor.id).token


def test_logout_revokes_every_token_of_the_user_and_only_theirs(api: Api) -> None:
    ana, bob = api.register("ana"), api.register("bob")
    laptop, phone = ana.token, _second_token(api, ana)
    assert _me(api, laptop)[0] == _me(api, phone)[0] == 200

    r = api.client.post("/api/auth/logout", headers=ana.headers)
    assert r.status_code == 204, r.text
    for token in (laptop, phone):
        status, detail = _me(api, token)
        assert (status, detail) == (401, "token revoked: log in again")
    assert api.client.post("/api/auth/logout", headers=ana.headers).status_code == 401, "a revoked token cannot"
    assert api.client.post("/api/auth/logout").status_code == 401, "anonymous has no session"
    assert _me(api, bob.token)[0] == 200, "other users keep their sessions"
    assert _me(api, _second_token(api, ana))[0] == 200, "logging in again right away works (same second)"


def test_password_change_revokes_old_tokens_and_the_next_login_works_in_the_same_second(api: Api) -> None:
    user = api.register()
    other_device = _second_token(api, user)
    r = api.client.patch(
        "/api/me", json={"password": "a brand new password", "current_password": PASSWORD}, headers=user.headers
    )
    assert r.status_code == 200, r.text
    for token in (user.token, other_device):
        assert _me(api, token) == (401, "token revoked: log in again")
    fresh = api.client.post("/api/auth/login", json={"email": user.email, "password": "a brand new password"})
    assert fresh.status_code == 200
    assert _me(api, fresh.json()["access_token"])[0] == 200
    # A display-name change alone keeps the session.
    headers = {"Authorization": f"Bearer {fresh.json()['access_token']}"}
    assert api.client.patch("/api/me", json={"display_name": "Renamed"}, headers=headers).status_code == 200
    assert api.client.get("/api/me", headers=headers).status_code == 200


def test_deactivation_revokes_tokens_for_good_even_after_reactivation(api: Api) -> None:
    admin = api.make_user("internal", "admin")
    member = api.register("leaving")
    before = member.token
    assert api.client.patch(f"/api/users/{member.id}", json={"is_active": False}, headers=admin.headers).is_success
    assert _me(api, before)[0] == 401
    assert api.client.patch(f"/api/users/{member.id}", json={"is_active": True}, headers=admin.headers).is_success
    assert _me(api, before) == (401, "token revoked: log in again"), "reactivation does not revive old tokens"
    assert _me(api, _second_token(api, member))[0] == 200
    # A change of role leaves sessions alone.
    again = _second_token(api, member)
    assert api.client.patch(f"/api/users/{member.id}", json={"role": "product"}, headers=admin.headers).is_success
    assert _me(api, again)[0] == 200


def test_expired_and_invalid_tokens_say_which(api: Api, settings: Settings) -> None:
    actor = api.register()
    now = datetime.now(UTC)
    expired = jwt.encode(
        {"sub": actor.id, "iat": now - timedelta(hours=2), "exp": now - timedelta(minutes=1)},
        settings.jwt_secret(),
        algorithm="HS256",
    )
    assert _me(api, expired) == (401, "token expired")
    foreign = jwt.encode({"sub": actor.id}, "another key, long enough for HS256 to accept", "HS256")
    for bad in ("not-a-jwt", actor.token[:-3] + "xyz", foreign):
        assert _me(api, bad) == (401, "invalid token"), bad
    unknown_user = jwt.encode(
        {"sub": "00000000-0000-0000-0000-000000000000", "iat": now, "exp": now + timedelta(minutes=5)},
        settings.jwt_secret(),
        algorithm="HS256",
    )
    assert _me(api, unknown_user) == (401, "invalid token")


def test_revocation_compares_below_the_second() -> None:
    """``iat`` has whole seconds; the microsecond ``iat_us`` decides tokens issued in the revoking second."""
    revoked_at = datetime(2026, 12, 1, 12, 0, 0, 500_000, tzinfo=UTC)
    user = User(email="a@example.com", display_name="A", password_hash="x", tokens_valid_after=revoked_at)
    second = int(revoked_at.timestamp())
    exp = datetime.now(UTC) + timedelta(hours=1)

    def token(**extras: int) -> Token:
        return Token(sub="x", exp=exp, iat=datetime.fromtimestamp(second, tz=UTC), extras=extras)

    assert token_is_revoked(token(iat_us=second * 1_000_000 + 499_999), user), "issued just before"
    assert not token_is_revoked(token(iat_us=second * 1_000_000 + 500_000), user), "issued at that instant"
    assert not token_is_revoked(token(iat_us=second * 1_000_000 + 600_000), user), "same second, after"
    assert token_is_revoked(token(), user), "a token without iat_us issued in that second may predate it"
    user.tokens_valid_after = None
    assert not token_is_revoked(token(), user)


def test_the_vote_routes_light_voter_is_checked_as_strictly(api: Api) -> None:
    """The vote routes read the voter as one row (``SignedIn``), not an ORM ``User``: revocation, deactivation
    and unknown users are refused exactly as on every other route."""
    admin = api.make_user("internal", "admin")
    author, voter = api.register(), api.register()
    url = f"/api/posts/{api.post(author)['id']}/vote"
    old = voter.token
    assert api.client.put(url, headers=voter.headers).status_code == 200
    assert api.client.post("/api/auth/logout", headers=voter.headers).status_code == 204
    for method in ("PUT", "DELETE"):
        r = api.client.request(method, url, headers={"Authorization": f"Bearer {old}"})
        assert (r.status_code, r.json()["detail"]) == (401, "token revoked: log in again")
    fresh = _second_token(api, voter)
    assert api.client.delete(url, headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    assert api.client.patch(f"/api/users/{voter.id}", json={"is_active": False}, headers=admin.headers).is_success
    r = api.client.put(url, headers={"Authorization": f"Bearer {fresh}"})
    assert (r.status_code, r.json()["detail"]) == (401, "invalid token"), "a deactivated voter"
    assert api.client.put(url).status_code == 401, "anonymous"


def test_a_remembered_token_still_expires(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A verified token is remembered (no second decode), but its expiry is checked on every use."""
    from forum import auth

    actor = api.register()
    assert _me(api, actor.token)[0] == 200
    assert _me(api, actor.token)[0] == 200, "remembered"
    exp = jwt.decode(actor.token, options={"verify_signature": False})["exp"]
    monkeypatch.setattr(auth, "_clock", lambda: exp + 1)
    assert _me(api, actor.token) == (401, "token expired")
    monkeypatch.setattr(auth, "_clock", lambda: exp - 1)
    assert _me(api, actor.token)[0] == 200, "forgotten once expired: decoded again (PyJWT's own clock)"
    forged = actor.token[:-3] + ("xyz" if not actor.token.endswith("xyz") else "abc")
    assert _me(api, forged) == (401, "invalid token"), "another text is decoded, and refused"

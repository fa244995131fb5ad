"""API keys: an admin creates a scoped key and sees it once; the key authenticates as its own service
account; scopes, revocation, last use and rate limits apply; bad input is a clear problem."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

from litestar.testing import TestClient

from forum.app import create_app
from forum.settings import Settings
from tests.conftest import Api, run_sql


def _key(api: Api, admin_headers: dict[str, str], *scopes: str, name: str = "Zendesk sync") -> dict:
    r = api.client.post("/api/keys", json={"name": name, "scopes": list(scopes)}, headers=admin_headers)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/api/keys/{r.json()['id']}"
    return r.json()


def _bearer(key: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {key['key']}"}


def _problem(r, status: int, detail_part: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert detail_part in r.json()["detail"], r.json()
    return r.json()


def test_a_key_is_shown_once_stored_hashed_and_acts_as_its_service_account(api: Api, database_url: str) -> None:
    admin = api.make_user("internal", "admin")
    key = _key(api, admin.headers, "write", "read", "write")
    assert key["key"].startswith("fk_") and len(key["key"]) >= 40
    assert key["prefix"] == key["key"][:11] and key["scopes"] == ["read", "write"]
    assert key["created_by"]["id"] == admin.id and key["last_used_at"] is None and key["revoked_at"] is None
    stored = run_sql(database_url, "SELECT key_hash, prefix FROM api_key WHERE id = :k", k=key["id"])
    assert stored == [(hashlib.sha256(key["key"].encode()).hexdigest(), key["prefix"])], "only the hash is kept"
    listed = api.client.get("/api/keys", headers=admin.headers).json()
    assert listed["total"] == 1 and "key" not in listed["items"][0], "the secret is shown only once"
    assert "key" not in api.client.get(f"/api/keys/{key['id']}", headers=admin.headers).json()

    # The key writes as its service account, which sees internal posts like an employee.
    me = api.client.get("/api/me", headers=_bearer(key)).json()
    assert me["id"] == key["service_account"]["id"] and me["display_name"] == "Zendesk sync"
    assert (me["kind"], me["role"]) == ("internal", "product")
    post = api.client.post("/api/posts", json={"kind": "idea", "title": "From the help desk"}, headers=_bearer(key))
    assert post.status_code == 201, post.text
    assert post.json()["author"] == {"id": me["id"], "display_name": "Zendesk sync", "kind": "internal"}
    assert api.client.put(f"/api/posts/{post.json()['id']}/vote", headers=_bearer(key)).json()["has_voted"]
    employee = api.make_user("internal", "member")
    hidden = api.post(employee, title="Internal only", visibility="internal")
    assert api.client.get(f"/api/posts/{hidden['id']}", headers=_bearer(key)).status_code == 200
    # Narrowed like any user, the key sees only what a customer sees.
    narrowed = {"kind": "external", "role": "member"}
    assert api.client.patch(f"/api/users/{me['id']}", json=narrowed, headers=admin.headers).status_code == 200
    assert api.client.get(f"/api/posts/{hidden['id']}", headers=_bearer(key)).status_code == 404
    # The account cannot log in: its password matches nothing.
    login = api.client.post("/api/auth/login", json={"email": me["email"], "password": "!service"})
    assert login.status_code == 401


def test_scopes_are_enforced(api: Api) -> None:
    admin = api.make_user("internal", "admin")
    author = api.register()
    post = api.post(author, title="Public idea")
    reader, writer, boss = (_key(api, admin.headers, s, name=s) for s in ("read", "write", "admin"))

    assert api.client.get("/api/posts", headers=_bearer(reader)).status_code == 200
    _problem(api.client.put(f"/api/posts/{post['id']}/vote", headers=_bearer(reader)), 403, "'write' scope")
    _problem(
        api.client.post("/api/posts", json={"kind": "idea", "title": "Nope"}, headers=_bearer(reader)),
        403,
        "'write' scope",
    )
    # A POST that only reads is open to a read key.
    similar = api.client.post("/api/posts/similar", json={"title": "Public idea"}, headers=_bearer(reader))
    assert similar.status_code == 200, similar.text

    assert api.client.put(f"/api/posts/{post['id']}/vote", headers=_bearer(writer)).status_code == 200
    for key in (reader, writer):
        _problem(api.client.get("/api/keys", headers=_bearer(key)), 403, "admin")
        _problem(api.client.get("/api/webhooks", headers=_bearer(key)), 403, "admin")
    assert api.client.get("/api/webhooks", headers=_bearer(boss)).status_code == 200
    assert api.client.get("/api/keys", headers=_bearer(boss)).json()["total"] == 3

    # Even promoted to admin by hand, a write key's account does not reach admin routes.
    r = api.client.patch(f"/api/users/{writer['service_account']['id']}", json={"role": "admin"}, headers=admin.headers)
    assert r.status_code == 200
    _problem(api.client.get("/api/keys", headers=_bearer(writer)), 403, "'admin' scope")


def test_revoked_and_unknown_keys_are_401_and_nothing_is_written(api: Api, database_url: str) -> None:
    admin = api.make_user("internal", "admin")
    key = _key(api, admin.headers, "write")
    assert api.client.get("/api/me", headers=_bearer(key)).status_code == 200
    assert api.client.delete(f"/api/keys/{key['id']}", headers=admin.headers).status_code == 204
    _problem(api.client.delete(f"/api/keys/{key['id']}", headers=admin.headers), 409, "already revoked")
    body = {"kind": "idea", "title": "After revocation"}
    _problem(api.client.post("/api/posts", json=body, headers=_bearer(key)), 401, "API key revoked")
    _problem(api.client.get("/api/me", headers=_bearer(key)), 401, "API key revoked")
    _problem(api.client.get("/api/posts", headers={"Authorization": "Bearer fk_nope"}), 401, "unknown API key")
    assert run_sql(database_url, "SELECT count(*) FROM post")[0][0] == 0
    listed = api.client.get("/api/keys", headers=admin.headers).json()["items"]
    assert listed[0]["revoked_at"] is not None, "a revoked key stays listed"
    # Deactivating the service account stops the key too.
    other = _key(api, admin.headers, "read")
    api.client.patch(f"/api/users/{other['service_account']['id']}", json={"is_active": False}, headers=admin.headers)
    _problem(api.client.get("/api/me", headers=_bearer(other)), 401, "deactivated")


def test_bad_input_is_422_or_404_and_writes_nothing(api: Api, database_url: str) -> None:
    admin = api.make_user("internal", "admin")
    for bad in (
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": ["superuser"]},
        {"name": "   ", "scopes": ["read"]},
        {"name": "x" * 81, "scopes": ["read"]},
        {"scopes": ["read"]},
        {"name": "x", "scopes": ["read"], "kind": "external"},
    ):
        r = api.client.post("/api/keys", json=bad, headers=admin.headers)
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert run_sql(database_url, "SELECT count(*) FROM api_key")[0][0] == 0
    assert run_sql(database_url, "SELECT count(*) FROM user_account WHERE email LIKE '%@keys.invalid'")[0][0] == 0
    unknown = "01a209e5-0000-7000-8000-000000000000"
    _problem(api.client.get(f"/api/keys/{unknown}", headers=admin.headers), 404, "not found")
    _problem(api.client.delete(f"/api/keys/{unknown}", headers=admin.headers), 404, "not found")
    member = api.register()
    r = api.client.post("/api/keys", json={"name": "x", "scopes": ["read"]}, headers=member.headers)
    assert r.status_code == 403


def test_last_use_is_written_at_most_once_a_minute(api: Api, database_url: str) -> None:
    admin = api.make_user("internal", "admin")
    key = _key(api, admin.headers, "read")

    def last_used() -> datetime | None:
        return run_sql(database_url, "SELECT last_used_at FROM api_key WHERE id = :k", k=key["id"])[0][0]

    api.client.get("/api/posts", headers=_bearer(key))
    first = last_used()
    assert first is not None and datetime.now(UTC) - first < timedelta(seconds=30)
    for _ in range(3):
        api.client.get("/api/posts", headers=_bearer(key))
    assert last_used() == first, "no write on every request"
    run_sql(database_url, "UPDATE api_key SET last_used_at = now() - interval '2 minutes' WHERE id = :k", k=key["id"])
    api.client.get("/api/me", headers=_bearer(key))
    assert last_used() > first
    listed = api.client.get("/api/keys", headers=admin.headers).json()["items"][0]
    assert listed["last_used_at"] is not None


def test_rate_limits_count_per_key(settings: Settings, api: Api) -> None:
    admin = api.make_user("internal", "admin")
    key = _key(api, admin.headers, "write")
    other = _key(api, admin.headers, "write", name="Other")
    limited = dataclasses.replace(settings, rate_limit_enabled=True, rate_limit_writes_per_minute=3)
    with TestClient(app=create_app(limited)) as client:
        body = {"kind": "idea", "title": "Rate limited"}
        codes = [client.post("/api/posts", json=body, headers=_bearer(key)).status_code for _ in range(4)]
        assert codes == [201, 201, 201, 429]
        # The same address with another key, or as a person, has its own budget.
        assert client.post("/api/posts", json=body, headers=_bearer(other)).status_code == 201
        assert client.post("/api/posts", json=body, headers=admin.headers).status_code == 201

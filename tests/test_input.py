"""Input that looks empty is empty; emails compare as people read them; NUL bytes in a URL are 422;
``OPTIONS`` answers on every path."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from forum import database
from tests.conftest import PASSWORD, Api

INVISIBLE = [
    "\u200b\u200b\u200b\u200b",  # zero-width spaces
    "\u200c\u200d\u200e\u200f",  # joiners and direction marks
    "\u2060\ufeff\u2060\ufeff",  # word joiner, BOM
    "\u3164\u3164\u3164\u3164",  # Hangul filler
    "\u115f\u1160\u115f\u1160",  # Hangul choseong/jungseong fillers
    "\u0301\u0308\u0301\u0308",  # combining marks alone
    " \u200b \u00a0 \u2800 ",  # spaces, NBSP, braille blank
]


def _field_errors(r) -> list[str | None]:
    return [e["field"] for e in r.json().get("errors", [])]


@pytest.mark.parametrize("blank", INVISIBLE)
def test_titles_comments_and_names_made_of_invisible_characters_are_422(api: Api, blank: str) -> None:
    author = api.register()
    r = api.client.post("/api/posts", json={"kind": "idea", "title": blank}, headers=author.headers)
    assert r.status_code == 422 and _field_errors(r) == ["title"], r.text
    post = api.post(author, title="A visible title")
    r = api.client.patch(f"/api/posts/{post['id']}", json={"title": blank}, headers=author.headers)
    assert r.status_code == 422 and _field_errors(r) == ["title"], r.text
    r = api.client.post(f"/api/posts/{post['id']}/comments", json={"body": blank}, headers=author.headers)
    assert r.status_code == 422 and _field_errors(r) == ["body"], r.text
    r = api.client.post("/api/posts", json={"kind": "idea", "title": "Tagged", "tags": [blank]}, headers=author.headers)
    assert r.status_code == 422, r.text
    r = api.client.patch("/api/me", json={"display_name": blank}, headers=author.headers)
    assert r.status_code == 422 and _field_errors(r) == ["display_name"], r.text
    r = api.client.post(
        "/api/auth/register", json={"email": "blank@example.com", "password": PASSWORD, "display_name": blank}
    )
    assert r.status_code == 422 and _field_errors(r) == ["display_name"], r.text
    r = api.client.post("/api/posts/similar", json={"title": blank})
    assert r.status_code == 422, r.text
    assert api.client.get(f"/api/posts/{post['id']}").json()["title"] == "A visible title"


def test_whitespace_inside_titles_collapses_and_visible_text_with_marks_stays(api: Api) -> None:
    author = api.register()
    post = api.post(author, title="  Dark \t\t mode\n\nfor   the\u00a0\u00a0app \u200b")
    assert post["title"] == "Dark mode for the app"
    # Accents written as combining marks and emoji joined by ZWJ are text, and stay as written.
    post = api.post(author, title="Cafe\u0301 menu \U0001f468\u200d\U0001f4bb")
    assert post["title"] == "Cafe\u0301 menu \U0001f468\u200d\U0001f4bb"
    # Too short once the invisible characters are not counted.
    r = api.client.post("/api/posts", json={"kind": "idea", "title": "a\u200bb\u200b"}, headers=author.headers)
    assert r.status_code == 422
    r = api.client.patch("/api/me", json={"display_name": "  Ana \t  María  "}, headers=author.headers)
    assert r.json()["display_name"] == "Ana María"


def test_emails_are_nfkc_normalised_and_case_folded_everywhere(api: Api) -> None:
    r = api.client.post(
        "/api/auth/register",
        json={"email": " \uff21na@Example.COM ", "password": PASSWORD, "display_name": "Ana"},  # fullwidth A
    )
    assert r.status_code == 201, r.text
    assert r.json()["email"] == "ana@example.com"
    for spelling in ("ana@example.com", "ANA@EXAMPLE.COM", "\uff41\uff4e\uff41@example.com"):
        login = api.client.post("/api/auth/login", json={"email": spelling, "password": PASSWORD})
        assert login.status_code == 200, spelling
    for duplicate in ("ANA@example.com", "ana@\uff45xample.com"):
        r = api.client.post("/api/auth/register", json={"email": duplicate, "password": PASSWORD, "display_name": "X"})
        assert r.status_code == 409, duplicate
    r = api.client.post(
        "/api/auth/register", json={"email": "Stra\u00dfe@example.com", "password": PASSWORD, "display_name": "S"}
    )
    assert r.json()["email"] == "strasse@example.com", "case folding, not just lower()"
    assert api.client.post("/api/auth/login", json={"email": "STRASSE@example.com", "password": PASSWORD}).is_success
    # The CLI and the demo loader go through the same service.
    employee = api.make_user("internal", "member", name="\uff22\uff2f\uff22")
    assert employee.email.startswith("\uff22\uff2f\uff22")
    assert api.client.get("/api/me", headers=employee.headers).json()["email"].startswith("bob")


def test_migration_0005_normalises_existing_emails(database_url: str) -> None:
    """Rows written before 0005 are normalised; one whose normal form another row has is left as is."""
    admin_url = database_url.replace("/forum_test?", "/postgres?", 1)
    scratch_url = database_url.replace("/forum_test?", "/forum_migration_0005?", 1)
    assert admin_url != database_url, "the test database is named forum_test"

    async def sql(url: str, *statements: str, autocommit: bool = False) -> list:
        engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT" if autocommit else None)
        try:
            async with engine.begin() as conn:
                rows: list = []
                for statement in statements:
                    result = await conn.execute(text(statement))
                    rows = list(result.all()) if result.returns_rows else []
                return rows
        finally:
            await engine.dispose()

    asyncio.run(sql(admin_url, "DROP DATABASE IF EXISTS forum_migration_0005", autocommit=True))
    asyncio.run(sql(admin_url, "CREATE DATABASE forum_migration_0005", autocommit=True))
    try:
        database.upgrade(scratch_url, "0004")
        columns = "id, email, display_name, password_hash, kind, role, created_at, updated_at"
        asyncio.run(
            sql(
                scratch_url,
                *(
                    f"INSERT INTO user_account ({columns}) VALUES (gen_random_uuid(), '{email}', 'x', 'x', "
                    f"'external', 'member', now() + interval '{i} seconds', now())"
                    for i, email in enumerate(
                        ["\uff23arl@example.com", "DORA@Example.com", "eve@example.com", "EVE@example.com"]
                    )
                ),
            )
        )
        database.upgrade(scratch_url)
        emails = asyncio.run(sql(scratch_url, "SELECT email FROM user_account ORDER BY created_at"))
        assert [e for (e,) in emails] == ["carl@example.com", "dora@example.com", "eve@example.com", "EVE@example.com"]
        database.downgrade(scratch_url, "0004")  # and back: the revision is reversible
    finally:
        asyncio.run(sql(admin_url, "DROP DATABASE IF EXISTS forum_migration_0005", autocommit=True))


@pytest.mark.parametrize(
    "url",
    [
        "/api/posts?tag=a%00b",
        "/api/posts?q=%00",
        "/api/posts?status=open&author=%00",
        "/api/posts?%00=x",
        "/api/leaderboard?since=%00",
        "/api/changelog?limit=1%00",
        "/api/users?limit=%00",
    ],
)
def test_a_nul_byte_in_any_query_parameter_is_422(api: Api, url: str) -> None:
    admin = api.make_user("internal", "admin")
    r = api.client.get(url, headers=admin.headers)
    assert r.status_code == 422, (url, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    assert all(e["source"] == "query" and "NUL" in e["message"] for e in r.json()["errors"]), r.text


def test_nul_bytes_in_a_path_are_never_a_500(api: Api) -> None:
    for url in ("/api/posts/%00", "/api/users/%00/credits", "/api/posts/00000000-0000-0000-0000-000000000000%00"):
        assert api.client.get(url).status_code in (404, 422), url


def test_options_answers_with_every_method_of_the_path(api: Api) -> None:
    spec = api.client.get("/schema/openapi.json").json()
    zero = "00000000-0000-0000-0000-000000000000"
    paths = [
        "/api/me",
        "/api/users",
        "/api/users/{user_id}",
        "/api/posts",
        "/api/posts/{post_id}",
        "/api/posts/{post_id}/vote",
        "/api/posts/{post_id}/comments",
        "/api/posts/{post_id}/subscription",
        "/api/clusters",
        "/api/webhooks",
        "/api/webhooks/{webhook_id}",
        "/api/me/notifications",
    ]
    member = api.register()
    for path in paths:
        expected = {m.upper() for m in spec["paths"][path] if m in ("get", "post", "put", "patch", "delete")}
        url = path.replace("{user_id}", zero).replace("{post_id}", zero).replace("{webhook_id}", zero)
        for headers in ({}, member.headers):
            r = api.client.options(url, headers=headers)
            assert r.status_code in (200, 204), (path, r.status_code, r.text)
            allowed = {m.strip() for m in r.headers["allow"].split(",")}
            assert expected <= allowed and allowed <= expected | {"OPTIONS", "HEAD"}, (path, allowed, expected)

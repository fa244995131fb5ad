"""CSV exports for the product team: the API and ``forum export``, streamed, internal and hidden posts
included with their visibility, and safe to open in a spreadsheet."""

from __future__ import annotations

import asyncio
import csv
import io
import tracemalloc
from pathlib import Path

from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from forum.board.exports import ExportKind, columns, csv_chunks
from tests.conftest import Api, run_sql
from tests.e2e import forum_cli

KINDS = ("posts", "votes", "clusters", "credits")


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_only_the_product_team_exports(api: Api) -> None:
    product, admin = api.make_user("internal", "product"), api.make_user("internal", "admin")
    employee, customer = api.make_user("internal", "member"), api.register()
    for kind in KINDS:
        url = f"/api/export/{kind}.csv"
        assert api.client.get(url).status_code == 401
        for outsider in (customer, employee):
            r = api.client.get(url, headers=outsider.headers)
            assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
        for staff in (product, admin):
            r = api.client.get(url, headers=staff.headers)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("text/csv")
            assert r.headers["content-disposition"] == f'attachment; filename="{kind}.csv"'
            assert r.text.splitlines()[0].split(",") == columns(ExportKind(kind))
    assert api.client.get("/api/export/users.csv", headers=product.headers).status_code == 404


def test_exports_hold_every_post_with_its_visibility_and_no_formula(api: Api, drain) -> None:
    product = api.make_user("internal", "product")
    employee, customer, voter = api.make_user("internal", "member"), api.register(), api.register()
    renamed = api.client.patch("/api/me", json={"display_name": "=cmd|' /C calc'!A0"}, headers=customer.headers)
    assert renamed.status_code == 200, renamed.text
    public = api.post(customer, title='=HYPERLINK("http://evil.example","click")', body="+1 from me", tags=["@ops"])
    internal = api.post(employee, title="Internal refund tool", visibility="internal")
    spam = api.post(customer, title="-Spam for sale")
    gone = api.post(customer, title="Deleted post")
    assert api.client.delete(f"/api/posts/{gone['id']}", headers=customer.headers).status_code == 204
    assert api.client.post(f"/api/posts/{spam['id']}/hide", headers=product.headers).status_code == 200
    assert api.client.put(f"/api/posts/{public['id']}/vote", headers=voter.headers).status_code == 200
    assert api.client.put(f"/api/posts/{internal['id']}/vote", headers=employee.headers).status_code == 200
    drain()
    h = product.headers
    for status in ("shipped", "planned"):  # shipping credits, un-shipping revokes: negative points
        r = api.client.post(f"/api/posts/{public['id']}/status", json={"status": status}, headers=h)
        assert r.status_code == 200, r.text

    posts = {row["id"]: row for row in _rows(api.client.get("/api/export/posts.csv", headers=h).text)}
    assert set(posts) == {public["id"], internal["id"], spam["id"]}, "deleted posts are left out"
    row = posts[public["id"]]
    assert row["title"] == '\'=HYPERLINK("http://evil.example","click")' and row["body"] == "'+1 from me"
    assert row["tags"] == "'@ops" and row["author_name"].startswith("'=cmd")
    assert (row["visibility"], row["hidden"], row["votes_total"], row["status"]) == ("public", "false", "1", "planned")
    assert row["created_at"].endswith("Z") and row["cluster_id"]
    assert (posts[internal["id"]]["visibility"], posts[spam["id"]]["hidden"]) == ("internal", "true")
    assert posts[spam["id"]]["title"] == "'-Spam for sale"

    votes = _rows(api.client.get("/api/export/votes.csv", headers=h).text)
    assert {(v["post_id"], v["user_id"], v["post_visibility"]) for v in votes} == {
        (public["id"], voter.id, "public"),
        (internal["id"], employee.id, "internal"),
    }
    clusters = _rows(api.client.get("/api/export/clusters.csv", headers=h).text)
    assert {c["post_id"] for c in clusters} >= {public["id"], internal["id"]}
    assert gone["id"] not in {c["post_id"] for c in clusters}
    credits = _rows(api.client.get("/api/export/credits.csv", headers=h).text)
    points = sorted(int(c["points"]) for c in credits if c["user_id"] == customer.id)
    assert points == [-100, 100], "revocations are negative numbers, not text"
    assert {c["post_visibility"] for c in credits} == {"public"}


def _many_posts(database_url: str, author_id: str, n: int) -> None:
    run_sql(
        database_url,
        "INSERT INTO post (id, kind, title, body, tags, visibility, status, author_id, created_at, updated_at) "
        "SELECT gen_random_uuid(), 'idea', 'Bulk idea ' || i, repeat('Some words about it. ', 15), '{}', "
        "CASE WHEN i % 10 = 0 THEN 'internal' ELSE 'public' END, 'open', CAST(:author AS uuid), now(), now() "
        "FROM generate_series(1, :n) AS i",
        author=author_id,
        n=n,
    )


def test_many_rows_stream_in_batches_with_flat_memory(api: Api) -> None:
    product, author = api.make_user("internal", "product"), api.register()
    n = 30_000
    _many_posts(api.database_url, author.id, n)

    r = api.client.get("/api/export/posts.csv", headers=product.headers)
    assert r.status_code == 200
    rows = _rows(r.text)
    assert len(rows) == n and len({row["id"] for row in rows}) == n
    assert sum(row["visibility"] == "internal" for row in rows) == n // 10

    async def stream() -> tuple[int, int, int, int]:
        engine = create_async_engine(api.database_url, poolclass=NullPool)
        chunks = total = early_peak = 0
        tracemalloc.start()
        try:
            async for chunk in csv_chunks(engine, ExportKind.POSTS, batch_rows=1_000):
                chunks += 1
                total += len(chunk)
                if chunks == 3:
                    early_peak = tracemalloc.get_traced_memory()[1]
            return chunks, total, early_peak, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            await engine.dispose()

    chunks, total, early_peak, peak = asyncio.run(stream())
    assert chunks == 1 + n // 1_000, "a header, then one chunk per batch of rows"
    # Memory after 2 of 30 batches is about what it is at the end: rows are never all held at once.
    assert total > 12_000_000 and peak < total / 3 and peak < early_peak * 1.5, (early_peak, peak, total)


def test_forum_export_writes_the_same_csv_whole_or_not_at_all(api: Api, env, tmp_path: Path) -> None:
    product, author = api.make_user("internal", "product"), api.register()
    api.post(author, title="@SUM(A1:A9) in a title")
    env = {**env, "FORUM_DATABASE_URL": api.database_url}
    out = tmp_path / "posts.csv"
    r = forum_cli("export", "posts", "--output", str(out), env=env)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == api.client.get("/api/export/posts.csv", headers=product.headers).content
    assert _rows(out.read_text())[0]["title"] == "'@SUM(A1:A9) in a title"
    stdout = forum_cli("export", "credits", env=env)
    assert stdout.returncode == 0 and stdout.stdout.splitlines() == [",".join(columns(ExportKind.CREDITS))]

    bad = forum_cli("export", "users", "--output", str(tmp_path / "users.csv"), env=env)
    assert bad.returncode == 2 and "users" in bad.stderr and not (tmp_path / "users.csv").exists()
    down = forum_cli(
        "export", "votes", "--output", str(tmp_path / "votes.csv"),
        env={**env, "FORUM_DATABASE_URL": "postgresql://nobody:nothing@127.0.0.1:9/none"},
    )  # fmt: skip
    assert down.returncode != 0 and list(tmp_path.glob("votes.csv*")) == [] and list(tmp_path.glob(".votes*")) == []

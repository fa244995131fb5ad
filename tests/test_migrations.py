"""Migration 0006 turns the titles baked into existing history notes into references, and back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from forum import database
from tests.conftest import run_sql


@pytest.fixture
def scratch_url(database_url: str) -> Iterator[str]:
    """A database of its own on the test server, so that migrating it down touches nothing else."""
    url = make_url(database_url)
    admin = url.set(database="postgres").render_as_string(hide_password=False)
    name = "forum_migration_test"
    _autocommit(admin, f"DROP DATABASE IF EXISTS {name}")
    _autocommit(admin, f"CREATE DATABASE {name}")
    yield url.set(database=name).render_as_string(hide_password=False)
    _autocommit(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _autocommit(url: str, statement: str) -> None:
    """CREATE/DROP DATABASE, which cannot run inside a transaction."""

    async def run() -> None:
        engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run())


U = "01a20000-0000-7000-8000-000000000001"
TARGET, SOURCE, IDEA, CRITIQUE = (f"01a20000-0000-7000-8000-00000000001{i}" for i in range(4))


def test_history_notes_become_references_and_come_back(scratch_url: str) -> None:
    database.upgrade(scratch_url, "0004")
    sql = lambda statement, **params: run_sql(scratch_url, statement, **params)  # noqa: E731
    sql(
        "INSERT INTO user_account (id, email, display_name, password_hash, kind, role, is_active, created_at, "
        "updated_at) VALUES (:u, 'a@example.com', 'A', 'x', 'internal', 'admin', true, now(), now())",
        u=U,
    )
    for post_id, title, kind in (
        (TARGET, "Internal target", "idea"),
        (SOURCE, "Public dup", "idea"),
        (IDEA, "Internal idea", "idea"),
        (CRITIQUE, "Public critique", "critique"),
    ):
        sql(
            "INSERT INTO post (id, kind, title, body, visibility, status, author_id, created_at, updated_at) "
            "VALUES (:id, :kind, :title, '', 'public', 'open', :u, now(), now())",
            id=post_id,
            kind=kind,
            title=title,
            u=U,
        )
    sql(
        "INSERT INTO post_merge (id, source_id, target_id, merged_by_id, source_status_before, created_at, "
        "updated_at) VALUES (gen_random_uuid(), :s, :t, :u, 'open', now(), now())",
        s=SOURCE,
        t=TARGET,
        u=U,
    )
    sql(
        "INSERT INTO ship_event (id, post_id, shipped_by_id, addressed, created_at, updated_at) "
        "VALUES (gen_random_uuid(), :i, :u, jsonb_build_object(CAST(:c AS text), 'open'), now(), now())",
        i=IDEA,
        c=CRITIQUE,
        u=U,
    )
    for post_id, before, after, note in (
        (SOURCE, "open", "duplicate", "Merged into “Internal target”"),
        (CRITIQUE, "open", "addressed", "Addressed by “Internal idea”, now shipped"),
        (CRITIQUE, "open", "planned", "Hand-written, kept as it is"),
    ):
        sql(
            "INSERT INTO status_change (id, post_id, actor_id, from_status, to_status, note, created_at, updated_at) "
            "VALUES (gen_random_uuid(), :p, :u, :f, :t, :n, now(), now())",
            p=post_id,
            u=U,
            f=before,
            t=after,
            n=note,
        )

    database.upgrade(scratch_url, "0006")
    rows = sql("SELECT post_id::text, event, related_post_id::text, note FROM status_change ORDER BY to_status")
    assert [tuple(r) for r in rows] == [
        (CRITIQUE, "addressed", IDEA, None),
        (SOURCE, "merged", TARGET, None),
        (CRITIQUE, None, None, "Hand-written, kept as it is"),
    ]
    assert sql("SELECT count(*) FROM post WHERE search @@ to_tsquery('simple', 'crit:*')")[0][0] == 1

    database.downgrade(scratch_url, "0004")
    notes = sorted(r[0] for r in sql("SELECT note FROM status_change"))
    assert notes == [
        "Addressed by “Internal idea”, now shipped",
        "Hand-written, kept as it is",
        "Merged into “Internal target”",
    ]


def test_keys_and_webhook_failures_migrate_down_and_up(scratch_url: str) -> None:
    database.upgrade(scratch_url)
    sql = lambda statement, **params: run_sql(scratch_url, statement, **params)  # noqa: E731
    columns = "SELECT column_name FROM information_schema.columns WHERE table_name = :t"
    assert {"consecutive_failures", "disabled_at"} <= {r[0] for r in sql(columns, t="webhook")}
    assert "redelivery_of_id" in {r[0] for r in sql(columns, t="webhook_delivery")}
    database.downgrade(scratch_url, "0011")
    assert sql("SELECT to_regclass('api_key')") == [(None,)]
    assert "consecutive_failures" not in {r[0] for r in sql(columns, t="webhook")}
    database.upgrade(scratch_url)
    assert sql("SELECT to_regclass('api_key')")[0][0] is not None


def test_cluster_descriptions_migrate_down_and_up(scratch_url: str) -> None:
    database.upgrade(scratch_url)
    sql = lambda statement, **params: run_sql(scratch_url, statement, **params)  # noqa: E731
    sql("INSERT INTO cluster (id, created_at, updated_at) VALUES (:c, now(), now())", c=TARGET)
    sql(
        "INSERT INTO cluster_description (cluster_id, sees_internal, revision, key_phrases, languages)"
        " VALUES (:c, true, 0, '[]', '{}')",
        c=TARGET,
    )
    database.downgrade(scratch_url, "0015")
    assert sql("SELECT to_regclass('cluster_description')") == [(None,)]
    assert sql("SELECT count(*) FROM cluster") == [(1,)], "nothing but the stored descriptions goes"
    database.upgrade(scratch_url)
    assert sql("SELECT count(*) FROM cluster_description") == [(0,)], "recomputed on demand, never restored"


def test_tally_voices_and_channels_migrate_down_and_up(scratch_url: str) -> None:
    """0019 recounts the stored voices and the members per channel from what is there when it comes (again)."""
    database.upgrade(scratch_url, "0018")
    sql = lambda statement, **params: run_sql(scratch_url, statement, **params)  # noqa: E731
    sql(
        "INSERT INTO user_account (id, email, display_name, password_hash, kind, role, is_active, created_at, "
        "updated_at) VALUES (:u, 'a@example.com', 'A', 'x', 'internal', 'admin', true, now(), now())",
        u=U,
    )
    sql("INSERT INTO cluster (id, created_at, updated_at) VALUES (:c, now(), now())", c=TARGET)
    for post_id, channel in ((IDEA, "support"), (CRITIQUE, "web")):
        sql(
            "INSERT INTO post (id, kind, title, body, visibility, status, author_id, channel, created_at, updated_at)"
            " VALUES (:id, 'idea', 'T', '', 'public', 'open', :u, :ch, now(), now())",
            id=post_id,
            u=U,
            ch=channel,
        )
        sql(
            "INSERT INTO cluster_membership (post_id, cluster_id, similarity, state) VALUES (:p, :c, 1, 'suggested')",
            p=post_id,
            c=TARGET,
        )
    sql(
        "INSERT INTO survey (id, kind, question_en, audience, is_open, throttle_days, created_by_id, created_at,"
        " updated_at) VALUES (:s, 'nps', 'Q?', 'everyone', true, 0, :u, now(), now())",
        s=SOURCE,
        u=U,
    )
    sql(
        "INSERT INTO survey_tally (survey_id, dimension, value, n, total, high, low) VALUES (:s, 'cluster', :c, 3,"
        " 12, 1, 2)",
        s=SOURCE,
        c=TARGET,
    )
    stored = "SELECT voices, detractor_voices FROM cluster_tally"
    channels = "SELECT channel, members FROM cluster_channel ORDER BY 1"
    for _ in range(2):
        database.upgrade(scratch_url)
        assert sql(stored) == [(3, 2)]
        assert sql(channels) == [("support", 1), ("web", 1)]
        database.downgrade(scratch_url, "0018")
        assert sql("SELECT to_regclass('cluster_channel')") == [(None,)]
        assert sql("SELECT count(*) FROM cluster_tally") == [(1,)]

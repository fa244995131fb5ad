"""Alembic environment: runs migrations over asyncpg.

The URL comes from ``config.attributes["database_url"]`` (set by ``forum db ...`` and the tests), or else
from the forum settings (so a bare ``alembic`` call also works).
"""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from forum import models

config = context.config
target_metadata = models.metadata


def _database_url() -> str:
    url = config.attributes.get("database_url")
    if url:
        return url
    from forum.database import resolve_database_url
    from forum.settings import Settings

    return resolve_database_url(Settings.from_env())


def _include_object(obj, name, type_, reflected, compare_to) -> bool:
    # pgqueuer's own tables are installed by a migration but not modelled here.
    if type_ == "table" and name and name.startswith("pgqueuer"):
        return False
    # HNSW indexes on a cast expression, one per vector size, are written by hand in migrations.
    if type_ == "index" and name and name.startswith("ix_post_embedding_hnsw"):
        return False
    return True


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        include_object=_include_object,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(_database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_async_migrations())

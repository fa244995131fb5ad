"""The ``forum`` command.

On the embedded default every command first applies pending migrations, so a fresh data dir just
works. With ``FORUM_DATABASE_URL`` set, the schema changes only through ``forum db upgrade``.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from forum import database
from forum.settings import Settings


def _prepared_database(settings: Settings, *, migrate: bool = True) -> str:
    url = database.resolve_database_url(settings)
    if settings.uses_embedded_database:
        settings.jwt_secret()  # generated on the first run and kept in the data dir
        if migrate:
            database.upgrade(url)
    return url


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="forum")
def main() -> None:
    """forum: customers and employees co-create a company's services."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def serve(host: str, port: int, workers: int, log_level: str) -> None:
    """Serve the HTTP API (starts the embedded PostgreSQL unless FORUM_DATABASE_URL is set)."""
    import uvicorn

    settings = Settings.from_env()
    url = _prepared_database(settings)
    if not settings.uses_embedded_database and not database.schema_is_current(url):
        raise click.ClickException("The database schema is not at the latest revision: run `forum db upgrade` first.")
    settings.jwt_secret()  # create it once here, before worker processes race for it
    click.echo(f"forum serving on http://{host}:{port} (API docs at /schema)", err=True)
    uvicorn.run(
        "forum.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        proxy_headers=False,
    )


@main.group()
def db() -> None:
    """Database schema migrations."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""
    url = _prepared_database(Settings.from_env(), migrate=False)
    database.upgrade(url, revision)
    click.echo(f"database at {database.fetch_current_revision(url)}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (``base`` empties the schema)."""
    url = _prepared_database(Settings.from_env(), migrate=False)
    database.downgrade(url, revision)
    click.echo(f"database at {database.fetch_current_revision(url)}")


@db.command("current")
def db_current() -> None:
    """Show the applied revision and the latest one."""
    url = _prepared_database(Settings.from_env(), migrate=False)
    click.echo(f"current: {database.fetch_current_revision(url)}\nhead:    {database.head_revision()}")


@main.group()
def users() -> None:
    """Manage accounts from the command line."""


@users.command("create")
@click.option("--email", required=True)
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="At least 8 characters (prompted when omitted).",
)
@click.option("--display-name", default=None, help="Defaults to the part of the email before @.")
@click.option("--role", type=click.Choice(["member", "product", "admin"]), default="member", show_default=True)
@click.option("--kind", type=click.Choice(["external", "internal"]), default="external", show_default=True)
def users_create(email: str, password: str, display_name: str | None, role: str, kind: str) -> None:
    """Create a user, e.g. the first admin: --role admin --kind internal."""
    import msgspec

    from forum.accounts.schemas import UserRegister
    from forum.models import UserKind, UserRole

    try:
        data = msgspec.convert(
            {"email": email, "password": password, "display_name": display_name or email.split("@")[0]},
            UserRegister,
        )
    except msgspec.ValidationError as exc:
        raise click.BadParameter(str(exc)) from exc
    url = _prepared_database(Settings.from_env())
    user = asyncio.run(_create_user(url, data, UserRole(role), UserKind(kind)))
    click.echo(f"created {user['email']} ({user['role']}, {user['kind']}) id={user['id']}")


async def _create_user(url: str, data, role, kind) -> dict[str, str]:
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from forum.accounts.services import UserService

    engine = create_async_engine(url)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            service = UserService(session=session)
            try:
                user = await service.register(
                    email=data.email,
                    password=data.password,
                    display_name=data.display_name,
                    kind=kind,
                    role=role,
                )
            except Exception as exc:  # the same rules as the API: a duplicate email is refused
                detail = getattr(exc, "detail", None) or str(exc)
                raise click.ClickException(detail) from exc
            await session.commit()
            return {"email": user.email, "role": user.role, "kind": user.kind, "id": str(user.id)}
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(main())

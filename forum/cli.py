"""The ``forum`` command.

On the embedded default every command first applies pending migrations, so a fresh data dir just
works. With ``FORUM_DATABASE_URL`` set, the schema changes only through ``forum db upgrade``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import click

from forum import database
from forum.grouping.commands import grouping
from forum.settings import Settings

_prepared_database = database.prepare


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
    # uvicorn re-raises SIGTERM after a graceful shutdown; with Python's default handler the process would
    # die before atexit runs and leave the embedded PostgreSQL running. Exit normally instead.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    click.echo(
        f"forum starting on http://{host}:{port} (API docs at /schema): ready once the models are loaded "
        "(it logs 'forum is ready'; /health answers 503 until then)",
        err=True,
    )
    try:
        uvicorn.run(
            "forum.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            proxy_headers=False,
        )
    finally:
        database.release_embedded_postgres()  # the last one out stops it, whatever became of the workers


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


@main.command()
@click.option(
    "--batch-size",
    default=32,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Jobs taken from the queue at a time (encoded together).",
)
def worker(batch_size: int) -> None:
    """Run an embedding worker (any number, on any machine sharing the database)."""
    from forum.email.smtp import Mailer
    from forum.encoding import PostEmbedder
    from forum.grouping.thresholds import Thresholds
    from forum.worker import BackgroundWorker

    settings = Settings.from_env()
    url = _prepared_database(settings)
    embedder = PostEmbedder.from_spec(settings.embedding_model)
    embedding_worker = BackgroundWorker(
        url,
        embedder,
        Thresholds.from_settings(settings),
        batch_size=batch_size,
        consolidate_seconds=settings.consolidate_seconds,
        webhook_allowed_hosts=settings.webhook_allowed_hosts,
        webhook_max_failures=settings.webhook_max_failures,
        mailer=Mailer.from_settings(settings, settings.jwt_secret()),
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, embedding_worker.stop)
        await embedding_worker.run()

    click.echo(f"embedding worker started ({embedder.name})", err=True)
    asyncio.run(run())
    click.echo(f"embedding worker stopped: {embedding_worker.processed}", err=True)


@main.group()
def jobs() -> None:
    """Background jobs: list and retry failures."""


@jobs.command("failed")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
def jobs_failed(limit: int) -> None:
    """List jobs that failed every retry and are held."""
    from forum.queue import failed_jobs

    url = _prepared_database(Settings.from_env())
    held = asyncio.run(failed_jobs(url, limit))
    if not held:
        click.echo("no failed jobs")
    for job in held:
        last_error = _last_error(job["traceback"])
        click.echo(
            f"{job['id']}\t{job['entrypoint']}\tpost={job['payload']}\tattempts={job['attempts']}"
            f"\t{job['updated']:%Y-%m-%d %H:%M:%S}\t{last_error}"
        )


def _last_error(traceback: object) -> str:
    import json

    if traceback is None:
        return ""
    data = json.loads(traceback) if isinstance(traceback, str) else traceback
    if isinstance(data, dict):
        return f"{data.get('exception_type', '')}: {data.get('exception_message', '')}".strip(": ")
    return str(data)[:200]


@jobs.command("retry")
@click.argument("job_ids", nargs=-1, type=int)
@click.option("--all", "retry_all", is_flag=True, help="Retry every failed job.")
def jobs_retry(job_ids: tuple[int, ...], retry_all: bool) -> None:
    """Put failed jobs back in the queue (JOB_IDS, or --all)."""
    from forum.queue import retry_failed

    if not job_ids and not retry_all:
        raise click.UsageError("name job ids or pass --all")
    url = _prepared_database(Settings.from_env())
    count = asyncio.run(retry_failed(url, None if retry_all else list(job_ids)))
    click.echo(f"re-queued {count} job(s)")


@main.group()
def embeddings() -> None:
    """Post vectors."""


@embeddings.command("rebuild")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, 1024))
def embeddings_rebuild(batch_size: int) -> None:
    """Embed every post that has no vector from the configured model, or a stale one, and group it."""
    from forum.encoding import PostEmbedder
    from forum.grouping.thresholds import Thresholds
    from forum.jobs import embed_stale_now

    settings = Settings.from_env()
    url = _prepared_database(settings)
    embedder = PostEmbedder.from_spec(settings.embedding_model)
    with click.progressbar(length=0, label=f"embedding with {embedder.name}", show_pos=True) as bar:
        count = asyncio.run(
            embed_stale_now(url, embedder, Thresholds.from_settings(settings), batch_size=batch_size, progress=bar)
        )
    click.echo(f"embedded {count} post(s) with {embedder.name}")


@main.group("eval")
def evaluate() -> None:
    """Measure quality."""


@evaluate.command("duplicates")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--board",
    is_flag=True,
    help="Also score this board's own decisions (the labelled pairs `forum grouping calibrate` uses).",
)
@click.option(
    "--model",
    default=None,
    help="Encoder configuration to score (default: FORUM_EMBEDDING_MODEL), e.g. multilingual.",
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["json", "table"]),
    default="json",
    show_default=True,
    help="One JSON line per file and design, or a Markdown table.",
)
def eval_duplicates(files: tuple[str, ...], board: bool, model: str | None, output: str) -> None:
    """Score the encoder configuration on labelled duplicate data (JSONL files).

    Pair files (a, b, duplicate[, score]): roc_auc, average_precision, best_f1, threshold, precision,
    recall, spearman. Corpus files (id, text, group, source): recall_at_1/5/10 within each source.
    With the multilingual configuration every file is scored three ways from one encoding pass: the
    English encoder alone, the multilingual encoder alone and the combined design the app uses; on a
    corpus the combined design also scores the clusters the app makes of each source, pairwise
    (clusters_precision/recall/f1 after the consolidation pass, online_clusters_* before it).
    """
    from embeddings.evaluation import compare_file, format_json_line
    from forum.encoding import get_encoder

    if not files and not board:
        raise click.UsageError("name labelled files, or pass --board")
    encoder = get_encoder(model if model is not None else Settings.from_env().embedding_model)
    rows = []
    if board:
        from forum.grouping.commands import board_evaluation

        result = board_evaluation(model)
        if output == "json":
            click.echo(format_json_line(result))
        rows.append(result)
    for path in files:
        try:
            results = compare_file(path, encoder)
        except (ValueError, KeyError) as exc:
            raise click.ClickException(f"{path}: {exc}") from exc
        for result in results:
            if output == "json":
                click.echo(format_json_line(result))
            rows.append(result)
    if output == "table":
        click.echo(_evaluation_table(rows))


def _evaluation_table(results: list[dict]) -> str:
    """Markdown table of evaluation results: one row per file and design."""
    from pathlib import Path

    columns = [
        ("roc_auc", "ROC-AUC"),
        ("average_precision", "AP"),
        ("spearman", "Spearman"),
        ("best_f1", "best F1"),
        ("threshold", "@ threshold"),
        ("recall_at_1", "R@1"),
        ("recall_at_5", "R@5"),
        ("recall_at_10", "R@10"),
        ("clusters_precision", "clusters P"),
        ("clusters_recall", "clusters R"),
        ("clusters_f1", "clusters F1"),
        ("texts_per_second", "texts/s"),
    ]
    lines = [
        "| file | design | " + " | ".join(title for _, title in columns) + " |",
        "|---|---|" + "---:|" * len(columns),
    ]
    for result in results:
        cells = []
        for key, _ in columns:
            value = result.get(key)
            if value is None:
                cells.append("")
            elif key == "texts_per_second":
                cells.append(f"{value:.0f}")
            else:
                cells.append(f"{value:.3f}" if isinstance(value, float) else str(value))
        design = result.get("design", result.get("encoder", ""))
        name = result.get("encoder", "")
        label = f"{design} ({name})" if design != name else str(name)
        lines.append(f"| {Path(result['file']).name} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@main.group()
def demo() -> None:
    """A realistic sample forum to see it working."""


@demo.command("load")
@click.option("--password", default="demo-password", show_default=True, help="Password of every demo user.")
@click.option(
    "--embed/--no-embed",
    default=True,
    show_default=True,
    help="Embed and group the posts now, so clusters appear at once.",
)
def demo_load(password: str, embed: bool) -> None:
    """Fill the forum with customers, employees, ideas and critiques in English and Spanish."""
    from forum.demo import load_demo

    settings = Settings.from_env()
    url = _prepared_database(settings)

    async def load():
        from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

        engine = create_async_engine(url)
        try:
            async with async_sessionmaker(engine, expire_on_commit=False)() as session, session.begin():
                return await load_demo(session, password=password)
        finally:
            await engine.dispose()

    try:
        summary = asyncio.run(load())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if summary.created:
        click.echo(
            f"loaded {summary.users} users, {summary.posts} posts, {summary.votes} votes, "
            f"{summary.comments} comments ({summary.groups} groups of duplicates)"
        )
        click.echo(f"every demo user's password: {password}  (product team: see `forum demo users`)")
    else:
        click.echo("the demo is already loaded")
    if embed:
        from forum.encoding import PostEmbedder
        from forum.grouping.thresholds import Thresholds
        from forum.jobs import embed_stale_now

        embedder = PostEmbedder.from_spec(settings.embedding_model)
        with click.progressbar(length=0, label=f"grouping with {embedder.name}", show_pos=True) as bar:
            count = asyncio.run(embed_stale_now(url, embedder, Thresholds.from_settings(settings), progress=bar))
        click.echo(f"embedded and grouped {count} post(s)")
        shared, in_them = asyncio.run(_shared_clusters(url))
        click.echo(f"{shared} cluster(s) of two or more posts, {in_them} post(s) in them (see /triage)")
        from forum.surveys.voices import place_voices_now

        with click.progressbar(length=0, label="placing survey comments in clusters", show_pos=True) as bar:
            voices = asyncio.run(place_voices_now(url, embedder, settings.duplicate_threshold, progress=bar))
        click.echo(f"survey comments: {voices.get('placed', 0)} voiced in a cluster, {voices.get('unplaced', 0)} alone")


async def _shared_clusters(url: str) -> tuple[int, int]:
    """How many clusters hold two or more live posts, and how many posts they hold."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM cluster_membership m"
                        " JOIN post p ON p.id = m.post_id AND p.deleted_at IS NULL AND p.hidden_at IS NULL"
                        " WHERE m.state <> 'rejected' GROUP BY m.cluster_id HAVING count(*) > 1) shared"
                    )
                )
            ).one()
        return int(row[0]), int(row[1])
    finally:
        await engine.dispose()


@demo.command("users")
def demo_users() -> None:
    """The demo accounts, to log in as each kind of user."""
    from forum.demo.loader import read_sample

    for user in read_sample().users:
        click.echo(f"{user.email:40} {user.kind:9} {user.role}")


@main.group()
def surveys() -> None:
    """NPS and CSAT surveys: list them, import answers collected elsewhere, place comments in clusters."""


@surveys.command("list")
def surveys_list() -> None:
    """Every survey with its id (to import into), kind, audience, state and number of answers."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    url = _prepared_database(Settings.from_env())

    async def rows():
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                result = await conn.execute(
                    text(
                        "SELECT s.id, s.kind, s.audience, s.is_open, coalesce(s.question_en, s.question_es) AS q, "
                        "(SELECT count(*) FROM survey_answer a WHERE a.survey_id = s.id) AS answers "
                        "FROM survey s ORDER BY s.created_at"
                    )
                )
                return result.all()
        finally:
            await engine.dispose()

    for r in asyncio.run(rows()):
        state = "open" if r.is_open else "closed"
        click.echo(f"{r.id}  {r.kind:4}  {r.audience:8}  {state:6}  {r.answers:>8} answers  {r.q}")


@surveys.command("import")
@click.argument("survey_id", metavar="SURVEY", type=click.UUID)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def surveys_import(survey_id, file: Path) -> None:
    """Import answers from a CSV export (Delighted, Qualtrics…): email, score, comment, date; other columns
    become properties. Re-running it imports nothing twice; bad rows are listed with their line number."""
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from forum.surveys.imports import CsvImportError, import_answers

    url = _prepared_database(Settings.from_env())

    try:
        content = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{file} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None

    async def run(bar):
        engine = create_async_engine(url)
        try:
            return await import_answers(
                async_sessionmaker(engine, expire_on_commit=False), survey_id, content, progress=bar
            )
        finally:
            await engine.dispose()

    try:
        with click.progressbar(length=0, label=f"importing {file.name}", show_pos=True, file=sys.stderr) as bar:
            report = asyncio.run(run(bar))
    except CsvImportError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{report.rows} rows: {report.imported} imported, {report.already_imported} already imported, "
        f"{len(report.rejected)} rejected; {report.accounts_created} new account(s) to claim"
    )
    for rejected in report.rejected:
        click.echo(f"  line {rejected.line}: {rejected.reason}")


@surveys.command("place-voices")
@click.option("--all", "everything", is_flag=True, help="Place every comment again, not only new ones.")
def surveys_place_voices(everything: bool) -> None:
    """Embed survey comments now and attach each to its nearest cluster (e.g. after regrouping)."""
    from forum.encoding import PostEmbedder
    from forum.surveys.voices import place_voices_now

    settings = Settings.from_env()
    url = _prepared_database(settings)
    embedder = PostEmbedder.from_spec(settings.embedding_model)
    with click.progressbar(length=0, label=f"placing comments with {embedder.name}", show_pos=True) as bar:
        outcomes = asyncio.run(
            place_voices_now(url, embedder, settings.duplicate_threshold, everything=everything, progress=bar)
        )
    click.echo(", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items())) or "no comments to place")


@main.command("export")
@click.argument("kind", type=click.Choice(["posts", "votes", "clusters", "credits"]))
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write (default: standard output). Written whole or not at all.",
)
def export(kind: str, output: Path | None) -> None:
    """Export posts, votes, cluster memberships or credits as CSV (internal and hidden posts included),
    streamed from the database."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from forum.board.exports import ExportKind, csv_chunks

    url = _prepared_database(Settings.from_env())
    partial = output.with_name(f".{output.name}.partial") if output else None

    async def run(out) -> None:
        engine = create_async_engine(url)
        try:
            async for chunk in csv_chunks(engine, ExportKind(kind)):
                out.write(chunk)
        finally:
            await engine.dispose()

    if partial is None:
        asyncio.run(run(sys.stdout.buffer))
        return
    try:
        with partial.open("wb") as out:
            asyncio.run(run(out))
        partial.replace(output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    click.echo(f"wrote {output}", err=True)


main.add_command(grouping)

if __name__ == "__main__":
    sys.exit(main())

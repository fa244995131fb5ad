"""``forum grouping calibrate|consolidate|describe`` and the board's own evaluation (``forum eval duplicates
--board``)."""

from __future__ import annotations

import asyncio

import click

from forum import database
from forum.settings import Settings


@click.group()
def grouping() -> None:
    """Duplicate grouping: calibrate on this board's decisions, consolidate clusters."""


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


async def _with_session(url: str, work):
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    engine = create_async_engine(url, pool_size=1)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session, session.begin():
            return await work(session)
    finally:
        await engine.dispose()


@grouping.command("calibrate")
@click.option("--apply", "apply_", is_flag=True, help="Store the proposed thresholds for every process of this board.")
@click.option(
    "--precision",
    "target_precision",
    default=0.9,
    show_default=True,
    type=click.FloatRange(0.5, 1.0),
    help="Wanted precision of automatic grouping (the sure threshold).",
)
@click.option(
    "--queue-recall",
    default=0.95,
    show_default=True,
    type=click.FloatRange(0.5, 1.0),
    help="Share of true duplicates that must reach at least the review queue (the maybe threshold).",
)
def grouping_calibrate(apply_: bool, target_precision: float, queue_recall: float) -> None:
    """Propose thresholds from this board's decisions (confirmations, rejections, moves, splits, merges,
    accepted and dismissed suggestions), with precision and recall before and after."""
    from datetime import UTC, datetime

    from forum.encoding import PostEmbedder
    from forum.grouping.calibration import MIN_PAIRS, MIN_PER_CLASS, board_labels, propose, quality
    from forum.grouping.thresholds import Thresholds, effective_thresholds, store_thresholds

    settings = Settings.from_env()
    url = database.prepare(settings)
    embedder = PostEmbedder.from_spec(settings.embedding_model)
    embedder.load()

    async def work(session):
        current = await effective_thresholds(session, embedder.name, Thresholds.from_settings(settings))
        labels = await board_labels(session, embedder)
        if not labels.enough():
            return current, labels, None
        sure, maybe = propose(labels, target_precision=target_precision, queue_recall=queue_recall)
        proposed = Thresholds(sure=sure, maybe=maybe, mode=current.mode)
        if apply_:
            value = {
                "sure": sure,
                "maybe": maybe,
                "pairs": len(labels.labels),
                "applied_at": datetime.now(UTC).isoformat(),
                **{f"proposed_{k}": v for k, v in quality(labels, proposed).items() if k not in ("sure", "maybe")},
            }
            await store_thresholds(session, embedder.name, value)
        return current, labels, proposed

    current, labels, proposed = asyncio.run(_with_session(url, work))
    sources = ", ".join(f"{name} {count}" for name, count in sorted(labels.sources.items())) or "none"
    click.echo(
        f"labelled pairs: {len(labels.labels)} ({labels.positives} duplicates, {labels.negatives} not) "
        f"from {sources}; encoder {embedder.name}"
    )
    if labels.unscored:
        click.echo(f"left out: {labels.unscored} pair(s) with a deleted post or no current vector")
    if proposed is None:
        raise click.ClickException(
            f"not enough decisions yet: need {MIN_PAIRS} labelled pairs with at least {MIN_PER_CLASS} of each kind"
        )
    click.echo("            sure   maybe  precision  recall  queue precision  queue recall")
    for name, thresholds in (("current", current), ("proposed", proposed)):
        q = quality(labels, thresholds)
        click.echo(
            f"{name:9} {q['sure']:6.3f}  {q['maybe']:6.3f}      {_fmt(q['precision'])}   {_fmt(q['recall'])}"
            f"            {_fmt(q['queue_precision'])}         {_fmt(q['queue_recall'])}"
        )
    if apply_:
        click.echo(f"applied: sure {proposed.sure:.4f}, maybe {proposed.maybe:.4f} for {embedder.name} (every process)")
    else:
        click.echo("run with --apply to use the proposed thresholds")


@grouping.command("consolidate")
@click.option(
    "--all", "everything", is_flag=True, help="Look at every post, not only those embedded since the last pass."
)
def grouping_consolidate(everything: bool) -> None:
    """Run the consolidation pass now (the worker runs it every FORUM_CONSOLIDATE_SECONDS)."""
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from forum.encoding import PostEmbedder
    from forum.grouping.thresholds import Thresholds
    from forum.jobs import consolidate_now

    settings = Settings.from_env()
    url = database.prepare(settings)
    embedder = PostEmbedder.from_spec(settings.embedding_model)

    async def run():
        engine = create_async_engine(url, pool_size=1)
        try:
            maker = async_sessionmaker(engine, expire_on_commit=False)
            return await consolidate_now(maker, embedder, Thresholds.from_settings(settings), everything=everything)
        finally:
            await engine.dispose()

    report = asyncio.run(run())
    click.echo(f"looked at {report.posts} post(s): {report.rehomed} moved, {report.merged} cluster(s) merged")


@grouping.command("describe")
def grouping_describe() -> None:
    """Compute every cluster description that is missing or stale now (the worker sweeps them every minute;
    useful after a bulk import, before the first triage list)."""
    import time

    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from forum.encoding import PostEmbedder
    from forum.grouping.descriptions import refresh_stale

    settings = Settings.from_env()
    url = database.prepare(settings)
    embedder = PostEmbedder.from_spec(settings.embedding_model)

    async def run() -> int:
        engine = create_async_engine(url, pool_size=1)
        try:
            await embedder.ready()
            return await refresh_stale(async_sessionmaker(engine, expire_on_commit=False), embedder)
        finally:
            await engine.dispose()

    started = time.perf_counter()
    described = asyncio.run(run())
    click.echo(f"described {described} cluster(s) in {time.perf_counter() - started:.1f} s")


def board_evaluation(model: str | None) -> dict:
    """This board's labelled pairs, scored from the stored vectors, at its current thresholds."""
    from forum.encoding import PostEmbedder
    from forum.grouping.calibration import board_labels, quality, ranking_metrics
    from forum.grouping.thresholds import Thresholds, effective_thresholds

    settings = Settings.from_env()
    url = database.prepare(settings)
    embedder = PostEmbedder.from_spec(model if model is not None else settings.embedding_model)
    embedder.load()

    async def work(session):
        thresholds = await effective_thresholds(session, embedder.name, Thresholds.from_settings(settings))
        return thresholds, await board_labels(session, embedder)

    thresholds, labels = asyncio.run(_with_session(url, work))
    return {
        "file": "board",
        "design": "board",
        "encoder": embedder.name,
        "pairs": len(labels.labels),
        "positives": labels.positives,
        **ranking_metrics(labels),
        **{f"at_{k}" if k in ("precision", "recall") else k: v for k, v in quality(labels, thresholds).items()},
        "applied": thresholds.applied,
    }

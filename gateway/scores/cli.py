"""``gateway scores``: build every customer's traits and scores, and evaluate the
propensity model against RFM-logistic and BG/NBD offline."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from gateway.cli_settings import fail, settings_or_exit
from gateway.settings import Settings

# CDNOW's classic split: 39 weeks to learn from, the next 39 weeks to judge by.
CDNOW_CUTOFF = "1997-09-30"
CDNOW_HORIZON = 273


@click.group(name="scores")
def scores() -> None:
    """Computed traits, purchase propensity and churn risk per customer."""


def _model_key_or_exit(settings: Settings, insecure_demo: bool) -> bytes:
    """The key that seals score models, or exit 2 while it would be a public one (a
    cron job without the secret must not trust a model anyone could have sealed)."""
    from gateway.scores.model_seal import PublicModelKey, deployment_model_key

    try:
        return deployment_model_key(settings, insecure_demo=insecure_demo)
    except PublicModelKey as exc:
        fail(str(exc), 2)


# Both commands that seal or load a model take it.
_insecure_demo = click.option(
    "--insecure-demo",
    is_flag=True,
    help="Accept the built-in erasure key, public in this repository, to seal and load "
    "score models (a local demo's database only; never in production).",
)


@scores.command()
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL.")
@click.option(
    "--horizon",
    type=click.IntRange(min=1, max=730),
    default=30,
    show_default=True,
    help="Purchase propensity is the probability of an order in this many days.",
)
@click.option(
    "--retrain",
    is_flag=True,
    help="Train a new model; it replaces the one serving only if it does at least as well "
    "on the same holdout (the last HORIZON days).",
)
@_insecure_demo
def build(database_url: str | None, horizon: int, retrain: bool, insecure_demo: bool) -> None:
    """Compute recency, frequency, monetary value, RFM scores and segment, engagement,
    order value and rhythm, purchase propensity and churn risk for every customer.
    A stored model that is unsigned or altered is not loaded: a new one is trained."""
    from gateway.db.engine import create_engine, create_sessionmaker
    from gateway.scores.build import BuildSummary, ScoresBusy
    from gateway.scores.build import build as run_build
    from gateway.scores.features import LeakageError
    from gateway.scores.model_seal import UntrustedModel
    from gateway.scores.store import ScoreStore

    settings = settings_or_exit(database_url=database_url)
    key = _model_key_or_exit(settings, insecure_demo)

    async def run() -> BuildSummary:
        engine = create_engine(settings.database_url)
        try:
            store = ScoreStore(create_sessionmaker(engine), key)
            return await run_build(
                store, horizon=horizon, retrain=retrain, threads=settings.scores_threads
            )
        finally:
            await engine.dispose()

    try:
        click.echo(asyncio.run(run()).line())
    except (LeakageError, ScoresBusy, UntrustedModel) as exc:
        click.echo(f"gateway: {exc}", err=True)
        sys.exit(1)


@scores.command()
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL.")
@click.option(
    "--batch",
    type=click.IntRange(min=1, max=10_000),
    default=2_000,
    show_default=True,
    help="Customers read and written per transaction.",
)
@_insecure_demo
def refresh(database_url: str | None, batch: int, insecure_demo: bool) -> None:
    """Rescore only the customers whose orders or events changed since their scores
    were computed, and customers not scored yet, with the last build's RFM boundaries,
    BG/NBD fit and model (no retraining). Cheap enough for cron every few minutes."""
    from gateway.db.engine import create_engine, create_sessionmaker
    from gateway.scores.build import ScoresBusy
    from gateway.scores.model_seal import UntrustedModel
    from gateway.scores.refresh import NoBuildError, RefreshSummary
    from gateway.scores.refresh import refresh as run_refresh
    from gateway.scores.store import ScoreStore

    settings = settings_or_exit(database_url=database_url)
    key = _model_key_or_exit(settings, insecure_demo)

    async def run() -> RefreshSummary:
        engine = create_engine(settings.database_url)
        try:
            store = ScoreStore(create_sessionmaker(engine), key)
            return await run_refresh(store, batch=batch, threads=settings.scores_threads)
        finally:
            await engine.dispose()

    try:
        click.echo(asyncio.run(run()).line())
    except (NoBuildError, ScoresBusy, UntrustedModel) as exc:
        click.echo(f"gateway: {exc}", err=True)
        sys.exit(1)


@scores.command(name="eval")
@click.option("--cdnow/--no-cdnow", default=True, show_default=True, help="CDNOW (lifetimes).")
@click.option(
    "--cdnow-file",
    type=click.Choice(["master", "sample"]),
    default="master",
    show_default=True,
    help="All 23,570 CDNOW customers, or the 2,357 of the sample.",
)
@click.option(
    "--cutoff",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help=f"Last day learnt from (CDNOW: {CDNOW_CUTOFF}; the store: HORIZON days ago).",
)
@click.option(
    "--horizon",
    type=click.IntRange(min=1, max=730),
    help=f"Days after the cut-off judged by (CDNOW: {CDNOW_HORIZON}; the store: 30).",
)
@click.option("--store", is_flag=True, help="Also the stored orders (the demo's, once seeded).")
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL (with --store).")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where downloads are kept (GATEWAY_RECS_DATA_DIR).",
)
def eval_(
    cdnow: bool,
    cdnow_file: str,
    cutoff: datetime | None,
    horizon: int | None,
    store: bool,
    database_url: str | None,
    seed: int,
    data_dir: Path | None,
) -> None:
    """ROC AUC, average precision, top-decile lift and calibration (ECE, Brier) of the
    propensity model, an RFM-only logistic regression and BG/NBD on one time split,
    and each one's AUC per RFM segment. Settings are chosen before the cut-off."""
    from gateway.scores.datasets import DatasetError
    from gateway.scores.datasets import cdnow as read_cdnow
    from gateway.scores.evaluation import evaluate
    from gateway.scores.features import LeakageError
    from gateway.scores.ledger import Ledger, day_of

    settings = settings_or_exit(database_url=database_url)
    try:
        if cdnow:
            ledger = read_cdnow(data_dir or settings.recs_data_dir, which=cdnow_file)
            when = cutoff.date() if cutoff else datetime.fromisoformat(CDNOW_CUTOFF).date()
            report = evaluate(
                ledger,
                day_of(when),
                horizon or CDNOW_HORIZON,
                seed=seed,
                threads=settings.scores_threads,
            )
            click.echo("\n".join(report.lines(f"CDNOW ({cdnow_file}, lifetimes wheel)")))
        if store:
            from gateway.db.engine import create_engine, create_sessionmaker
            from gateway.scores.store import ScoreStore

            days = horizon or 30

            async def read() -> Ledger:
                engine = create_engine(settings.database_url)
                try:
                    since = datetime.now(UTC) - timedelta(days=400)
                    # Orders and events only: no model is sealed or loaded.
                    store = ScoreStore(create_sessionmaker(engine), None)
                    return await store.ledger(since)
                finally:
                    await engine.dispose()

            stored = asyncio.run(read())
            end = day_of(cutoff.date()) if cutoff else day_of(datetime.now(UTC)) - days
            report = evaluate(
                stored,
                end,
                days,
                seed=seed,
                threads=settings.scores_threads,
                data_end=day_of(datetime.now(UTC)),  # read up to now: no day missing
            )
            click.echo("\n".join(report.lines("the stored orders")))
    except (DatasetError, LeakageError, ValueError) as exc:
        click.echo(f"gateway: {exc}", err=True)
        sys.exit(1)

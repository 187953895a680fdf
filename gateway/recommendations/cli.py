"""``gateway recs``: build the stored model, and evaluate the model offline."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from gateway.cli_settings import settings_or_exit, upstreams_or_exit
from gateway.recommendations.interactions import Interaction

if TYPE_CHECKING:  # numpy stays out of `gateway --help`
    from gateway.recommendations.training.evaluation import Report

DEFAULT_SEED = 42


@click.group(name="recs")
def recs() -> None:
    """Product recommendations: build the stored model, evaluate it offline."""


@recs.command()
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL.")
@click.option(
    "--interactions",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Also learn from this history export: user,item[,rating[,timestamp]], the format "
    "`recs eval` reads, optionally with an event column (repeatable).",
)
@click.option(
    "--user-key",
    default="id",
    show_default=True,
    metavar="id|email|SOURCE",
    help="What the files' user column holds: the gateway's customer id, an email, or the "
    "id a source system (shopify, hubspot, ...) knows the customer by.",
)
@click.option(
    "--kind",
    type=click.Choice(["purchase", "cart", "view"]),
    default="purchase",
    show_default=True,
    help="What a file's row is when it has no event column (an order export: purchase).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1, max=64),
    help="BLAS/OpenMP threads for fitting (GATEWAY_RECS_THREADS, default 1).",
)
def build(
    database_url: str | None,
    files: tuple[Path, ...],
    user_key: str,
    kind: str,
    threads: int | None,
) -> None:
    """Choose the model that validates best on the stored events and orders (and any
    --interactions files), fit it, and store each customer's candidates, product
    popularity and neighbours, and the choice with its reasons. Categories come from
    the shop's catalogue when an upstreams file names one, else from the events."""
    from adapters.protocols import CommerceAdapter
    from adapters.registry import aclose_adapters, build_adapters
    from gateway.db.engine import create_engine, create_sessionmaker
    from gateway.recommendations.store import RecommendationStore
    from gateway.recommendations.training.builder import BuildSummary
    from gateway.recommendations.training.builder import build as run_build
    from gateway.recommendations.training.datasets import DatasetError, read_interactions
    from gateway.recommendations.training.history_file import resolve_users

    settings = settings_or_exit(database_url=database_url)
    upstreams = upstreams_or_exit(settings)
    exported: list[Interaction] = []
    try:
        for path in files:
            # Rows without a time count as of the file's writing.
            exported += read_interactions(path, kind=kind, undated=path.stat().st_mtime)
    except DatasetError as exc:
        click.echo(f"gateway: {exc}", err=True)
        sys.exit(1)

    async def run() -> BuildSummary:
        engine = create_engine(settings.database_url)
        adapters = build_adapters(upstreams)
        try:
            sessions = create_sessionmaker(engine)
            extra: list[Interaction] = []
            if exported:
                resolved = await resolve_users(sessions, exported, user_key)
                click.echo(
                    f"read {len(exported)} interactions of {resolved.users} users from "
                    f"{len(files)} file(s); {resolved.matched} users are stored customers "
                    f"(by {user_key}); the others inform the model but get no list"
                )
                extra = resolved.interactions
            categories: dict[str, str] = {}
            shop = next((a for a in adapters.values() if isinstance(a, CommerceAdapter)), None)
            if shop is not None:
                categories = {
                    p.external_id: p.category for p in await shop.fetch_products() if p.category
                }
            return await run_build(
                RecommendationStore(sessions),
                categories=categories,
                extra=extra,
                threads=threads or settings.recs_threads,
            )
        finally:
            await aclose_adapters(adapters)
            await engine.dispose()

    click.echo(asyncio.run(run()).line())


@recs.command()
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL.")
@click.option("--trials", is_flag=True, help="Also list every validation trial.")
def show(database_url: str | None, trials: bool) -> None:
    """Which model the last build chose, when, and why."""
    from gateway.db.engine import create_engine, create_sessionmaker
    from gateway.recommendations.store import RecommendationStore, StoredModel

    settings = settings_or_exit(database_url=database_url)

    async def run() -> StoredModel | None:
        engine = create_engine(settings.database_url)
        try:
            return await RecommendationStore(create_sessionmaker(engine)).model()
        finally:
            await engine.dispose()

    found = asyncio.run(run())
    if found is None:
        click.echo("no model stored yet: run `gateway recs build`")
        sys.exit(1)
    click.echo(f"model: {found.label}\nbuilt: {found.built_at.isoformat()}\nwhy: {found.reason}")
    for note in found.selection.get("notes", []):
        click.echo(f"note: {note}")
    if trials:
        for trial in found.selection.get("trials", []):
            click.echo(f"  {trial['precision']:.4f} {trial['ndcg']:.4f}  {trial['setting']}")


@recs.command(name="eval")
@click.option(
    "--interactions",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Also evaluate on this file of user,item[,rating[,timestamp]] (repeatable).",
)
@click.option(
    "--split",
    "how",
    type=click.Choice(["random", "recent"]),
    default="random",
    show_default=True,
    help="How MovieLens and --interactions files are split: a random 25 % of each user's "
    "items, or the items of their most recent 25 % of interactions.",
)
@click.option(
    "--min-rating",
    type=float,
    help="Keep only ratings at or above this (MovieLens and files).",
)
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True)
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--movielens/--no-movielens", default=True, show_default=True, help="MovieLens 100k.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where downloads are kept (GATEWAY_RECS_DATA_DIR).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1, max=64),
    help="BLAS/OpenMP threads for fitting (GATEWAY_RECS_THREADS, default 1).",
)
@click.option("--trials", is_flag=True, help="Also list every validation trial.")
def eval_(
    files: tuple[Path, ...],
    how: Literal["random", "recent"],
    min_rating: float | None,
    seed: int,
    k: int,
    movielens: bool,
    data_dir: Path | None,
    threads: int | None,
    trials: bool,
) -> None:
    """Precision, recall, NDCG at k, coverage and fit time of popularity, EASE, ALS,
    item-kNN, the item-to-item model and the selected model, side by side on held-out
    data. Every model's settings are chosen on the training data only."""
    from gateway.recommendations.model import ModelParams
    from gateway.recommendations.training.builder import peak_rss_mb
    from gateway.recommendations.training.datasets import (
        DatasetError,
        movielens_100k,
        read_interactions,
    )
    from gateway.recommendations.training.evaluation import evaluate

    settings = settings_or_exit()
    cache_dir = data_dir or settings.recs_data_dir
    threads = threads or settings.recs_threads
    files_params = ModelParams()  # ratings: no event types, no decay, no categories
    try:
        sources: list[tuple[str, Callable[[], list[Interaction]]]] = []
        if movielens:
            sources.append(
                (
                    "MovieLens 100k (ml-100k.inter from the recbole wheel)",
                    lambda: movielens_100k(cache_dir, min_rating=min_rating),
                )
            )
        for path in files:

            def read_file(path: Path = path) -> list[Interaction]:
                return read_interactions(path, min_rating=min_rating)

            sources.append((str(path), read_file))
        for title, read in sources:
            if min_rating is not None:
                title = f"{title}, ratings >= {min_rating:g}"
            started = time.process_time()
            report = evaluate(read(), files_params, how=how, seed=seed, k=k, threads=threads)
            print_report(title, report, trials)
            click.echo(
                f"  CPU {time.process_time() - started:.1f} s; peak memory (RSS) of the "
                f"process so far {peak_rss_mb():,.0f} MB"
            )
    except DatasetError as exc:
        click.echo(f"gateway: {exc}", err=True)
        sys.exit(1)


def print_report(title: str, report: Report, trials: bool) -> None:
    """One evaluation's table, as `recs eval` prints it (the demo's data set too)."""
    share = (
        "random 25 % of each user's items"
        if report.split == "random"
        else ("each user's most recent 25 % of interactions")
    )
    k = report.k
    selection = report.selection
    click.echo(
        f"\n{title}: {report.interactions:,} interactions, {report.users:,} users, "
        f"{report.items:,} items\n  held out: {share}; seed {report.seed}; "
        f"{report.model.users:,} users evaluated; k = {k}; items seen in training excluded\n"
        f"  settings chosen on training data only: {selection.protocol} held out again, "
        f"{selection.users:,} users, {len(selection.trials)} trials, "
        f"{report.selection_seconds:.1f} s"
    )
    click.echo(
        f"  {'':<14}{'precision@' + str(k):>13}{'recall@' + str(k):>11}{'ndcg@' + str(k):>9}"
        f"{'coverage':>10}{'fit s':>8}  settings"
    )
    for row in report.rows:
        m = row.metrics
        click.echo(
            f"  {row.name:<14}{m.precision:>13.4f}{m.recall:>11.4f}{m.ndcg:>9.4f}"
            f"{m.coverage:>10.3f}{m.fit_seconds:>8.2f}  {row.setting}"
        )
    for note in selection.notes:
        click.echo(f"  {note}")
    click.echo(f"  why: {selection.reason()}")
    if trials:
        click.echo("  validation trials (precision, ndcg, seconds):")
        for trial in sorted(selection.trials, key=lambda t: t.key, reverse=True):
            click.echo(
                f"    {trial.precision:.4f} {trial.ndcg:.4f} {trial.seconds:6.2f}  "
                f"{trial.setting.label()}"
            )

"""``gateway recs``: build the stored model, and evaluate the model offline."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from gateway.settings import SettingsError, load_settings

if TYPE_CHECKING:  # numpy stays out of `gateway --help`
    from gateway.recommendations.evaluation import Report

DEFAULT_SEED = 42


@click.group(name="recs")
def recs() -> None:
    """Product recommendations: build the stored model, evaluate it offline."""


@recs.command()
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL.")
@click.option(
    "--demo-history",
    type=click.IntRange(min=1, max=100_000),
    metavar="N",
    help="First store the history of the first N demo people as events (demo databases).",
)
def build(database_url: str | None, demo_history: int | None) -> None:
    """Learn from the stored events and orders; store each customer's candidates,
    product popularity and neighbours. Categories come from the shop's catalogue when
    an upstreams file names one, else from the events."""
    from adapters.protocols import CommerceAdapter
    from adapters.registry import aclose_adapters, build_adapters
    from gateway.db.engine import create_engine, create_sessionmaker
    from gateway.recommendations.builder import BuildSummary
    from gateway.recommendations.builder import build as run_build
    from gateway.recommendations.store import RecommendationStore

    try:
        settings = load_settings(database_url=database_url)
        upstreams = settings.load_upstreams()
    except SettingsError as exc:
        click.echo(f"gateway: {exc}", err=True)
        sys.exit(2)

    async def run() -> BuildSummary:
        engine = create_engine(settings.database_url)
        adapters = build_adapters(upstreams)
        try:
            sessions = create_sessionmaker(engine)
            if demo_history:
                from adapters.samples.population import population
                from gateway.recommendations.demo_history import store_demo_history

                added = await store_demo_history(sessions, population(demo_history))
                click.echo(f"stored {added} demo events")
            categories: dict[str, str] = {}
            shop = next((a for a in adapters.values() if isinstance(a, CommerceAdapter)), None)
            if shop is not None:
                categories = {
                    p.external_id: p.category for p in await shop.fetch_products() if p.category
                }
            return await run_build(RecommendationStore(sessions), categories=categories)
        finally:
            await aclose_adapters(adapters)
            await engine.dispose()

    click.echo(asyncio.run(run()).line())


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
    help="How --interactions files are split: random 25 % of each user's items, or "
    "their most recent 25 % of interactions.",
)
@click.option("--min-rating", type=float, help="Keep only ratings at or above this in files.")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True)
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--demo/--no-demo", default=True, show_default=True, help="The demo data.")
@click.option("--movielens/--no-movielens", default=True, show_default=True, help="MovieLens 100k.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where downloads are kept (GATEWAY_RECS_DATA_DIR).",
)
def eval_(
    files: tuple[Path, ...],
    how: Literal["random", "recent"],
    min_rating: float | None,
    seed: int,
    k: int,
    demo: bool,
    movielens: bool,
    data_dir: Path | None,
) -> None:
    """Precision, recall and NDCG at k of the model and of popularity, on held-out data."""
    from gateway.recommendations.builder import GATEWAY_PARAMS
    from gateway.recommendations.datasets import (
        DatasetError,
        movielens_100k,
        read_interactions,
    )
    from gateway.recommendations.evaluation import evaluate
    from gateway.recommendations.model import ModelParams

    try:
        cache_dir = data_dir or load_settings().recs_data_dir
    except SettingsError as exc:
        click.echo(f"gateway: {exc}", err=True)
        sys.exit(2)
    files_params = ModelParams()  # ratings: no event types, no decay, no categories
    try:
        if demo:
            from adapters.samples.population import population
            from gateway.recommendations.demo_history import demo_history

            history = demo_history(population())
            report = evaluate(
                history.interactions,
                GATEWAY_PARAMS,
                how="recent",
                seed=seed,
                k=k,
                categories=history.categories,
            )
            _print("demo data (1,000 customers, events and orders)", report)
        if movielens:
            report = evaluate(movielens_100k(cache_dir), files_params, how="random", seed=seed, k=k)
            _print("MovieLens 100k (ml-100k.inter from the recbole wheel)", report)
        for path in files:
            interactions = read_interactions(path, min_rating=min_rating)
            report = evaluate(interactions, files_params, how=how, seed=seed, k=k)
            _print(str(path), report)
    except DatasetError as exc:
        click.echo(f"gateway: {exc}", err=True)
        sys.exit(1)


def _print(title: str, report: Report) -> None:
    share = (
        "random 25 % of each user's items"
        if report.split == "random"
        else ("each user's most recent 25 % of interactions")
    )
    k = report.k
    click.echo(
        f"\n{title}: {report.interactions:,} interactions, {report.users:,} users, "
        f"{report.items:,} items\n  held out: {share}; seed {report.seed}; "
        f"{report.model.users:,} users evaluated; k = {k}; items seen in training excluded"
    )
    click.echo(
        f"  {'':<12}{'precision@' + str(k):>14}{'recall@' + str(k):>12}{'ndcg@' + str(k):>10}"
    )
    for name, metrics in (("model", report.model), ("popularity", report.popularity)):
        click.echo(
            f"  {name:<12}{metrics.precision:>14.4f}{metrics.recall:>12.4f}{metrics.ndcg:>10.4f}"
        )

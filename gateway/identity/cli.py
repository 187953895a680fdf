"""``gateway identity``: train the linkage model on a file of records, show or change it."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gateway.cli_settings import fail, settings_or_exit
from gateway.settings import Settings

if TYPE_CHECKING:  # Splink and DuckDB stay out of `gateway --help`
    from gateway.identity.scoring.model import LinkageModel
    from gateway.identity.scoring.model_store import ModelStore

_PROBABILITY = click.FloatRange(min=0, max=1, min_open=True, max_open=True)


async def _with_store(settings: Settings, action: Any) -> Any:
    from gateway.db.engine import create_engine, create_sessionmaker
    from gateway.identity.scoring.model_store import ModelStore

    engine = create_engine(settings.database_url)
    try:
        return await action(ModelStore(create_sessionmaker(engine)))
    finally:
        await engine.dispose()


@click.group(name="identity")
def identity() -> None:
    """Identity resolution: the linkage model the importer, syncs and webhooks score with."""


@identity.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", required=True, help="The source system of the records, as for import.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    help="File format (default: from the file name; .jsonl/.ndjson are JSON Lines).",
)
@click.option("--match-probability", type=_PROBABILITY, help="Merge from this probability on.")
@click.option("--review-probability", type=_PROBABILITY, help="Review band's lower bound.")
@click.option(
    "--activate/--no-activate",
    default=True,
    show_default=True,
    help="Link with the new version from the next batch on.",
)
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL.")
def train(
    file: Path,
    source: str,
    fmt: str | None,
    match_probability: float | None,
    review_probability: float | None,
    activate: bool,
    database_url: str | None,
) -> None:
    """Estimate the linkage model from FILE's records and store it as a new version.

    u from random pairs, m by expectation maximisation over several blocking rules, the
    prior match rate from rules that allow one typo (Splink on DuckDB); comparisons EM
    gets wrong fall back to the built-in priors, and the output says which and why.
    Thresholds are kept from the active version unless given.
    """
    from gateway.identity.config import DEFAULT_CONFIG
    from gateway.identity.records import RecordError, prepare
    from gateway.identity.scoring.training import train as estimate
    from gateway.ingest.importer import detect_format, read_rows

    settings = settings_or_exit(database_url=database_url)
    records, rejected = [], 0
    with file.open(newline="", encoding="utf-8-sig") as handle:
        for _, row in read_rows(handle, fmt or detect_format(file)):  # type: ignore[arg-type]
            if isinstance(row, str):
                rejected += 1
                continue
            try:
                records.append(prepare(row, source, DEFAULT_CONFIG).comparable())
            except RecordError:
                rejected += 1

    async def current(store: ModelStore) -> LinkageModel:
        return await store.get()

    from gateway.identity.scoring.model import LinkageModel

    base = asyncio.run(_with_store(settings, current))
    if base.version is None:
        base = LinkageModel()  # the thresholds chosen for trained models, not the priors'

    if match_probability is not None or review_probability is not None:
        try:
            base = base.model_validate(
                {
                    **base.model_dump(),
                    "match_probability": match_probability or base.match_probability,
                    "review_probability": review_probability or base.review_probability,
                }
            )
        except ValueError:
            fail("the review probability must not exceed the match probability", 2)
    try:
        report = estimate(records, base=base, extra={"source": source, "file": file.name})
    except ValueError as exc:
        fail(str(exc))

    async def save(store: ModelStore) -> LinkageModel:
        return await store.save(report.model, activate=activate)

    saved = asyncio.run(_with_store(settings, save))
    click.echo(
        f"trained on {report.records} records ({rejected} rejected) in {report.seconds:.1f} s; "
        f"stored as version {saved.version}{' (active)' if activate else ''}"
    )
    _print(saved, active=activate)


@identity.command()
@click.option("--version", "version", type=int, help="Show this version (default: the active one).")
@click.option("--activate", "activate", type=int, metavar="VERSION", help="Link with VERSION.")
@click.option(
    "--match-probability", type=_PROBABILITY, help="New version: merge from this probability."
)
@click.option(
    "--review-probability", type=_PROBABILITY, help="New version: the review band's lower bound."
)
@click.option("--list", "listing", is_flag=True, help="List the stored versions.")
@click.option("--json", "as_json", is_flag=True, help="Print the model as Splink settings JSON.")
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL.")
def model(
    version: int | None,
    activate: int | None,
    match_probability: float | None,
    review_probability: float | None,
    listing: bool,
    as_json: bool,
    database_url: str | None,
) -> None:
    """Show the linkage model (m, u and weight of every level, λ, thresholds); list,
    activate a stored version, or store the active one with other thresholds."""
    from gateway.errors import InvalidInput

    settings = settings_or_exit(database_url=database_url)

    async def run(store: ModelStore) -> tuple[LinkageModel, list[Any]]:
        if activate is not None:
            await store.activate(activate)
        if match_probability is not None or review_probability is not None:
            changed = await store.with_thresholds(match_probability, review_probability)
            click.echo(f"stored as version {changed.version} (active)")
        shown = await store.get(activate if activate is not None else version)
        return shown, await store.versions()

    try:
        shown, versions = asyncio.run(_with_store(settings, run))
    except InvalidInput as exc:
        fail(str(exc), 2)
    if listing:
        for summary in versions:
            click.echo(
                f"{'*' if summary.active else ' '} version {summary.version}  "
                f"{summary.created_at:%Y-%m-%d %H:%M}  match {summary.match_probability:g}  "
                f"review {summary.review_probability:g}  "
                f"records {summary.trained.get('records', '-')}  "
                f"source {summary.trained.get('source', '-')}"
            )
        return
    if as_json:
        click.echo(json.dumps(shown.to_splink(), indent=2))
        return
    active = next((s.version for s in versions if s.active), None)
    _print(shown, active=shown.version is not None and shown.version == active)


def _print(model: LinkageModel, *, active: bool) -> None:
    from gateway.identity.scoring.levels import COMPARISONS

    if model.version is None:
        click.echo("no model stored: linking with the built-in priors (gateway identity train)")
    else:
        click.echo(f"version {model.version}{' (active)' if active else ''}")
    trained = model.trained
    if trained:
        click.echo(
            f"trained on {trained.get('records')} records from {trained.get('source', '-')}"
            f" in {trained.get('seconds')} s; fields: {', '.join(trained.get('fields', []))}"
        )
        for note in trained.get("notes", []):
            click.echo(f"  note: {note}")
    rate = model.probability_two_random_records_match
    click.echo(
        f"λ (two random records match) {rate:.3g}; merge from probability "
        f"{model.match_probability:g}, review from {model.review_probability:g}"
    )
    for current in COMPARISONS:
        comparison = model.ladder(current.field)
        params = model.comparisons.get(comparison.field)
        if params is None:
            continue
        tf = " (term frequencies)" if comparison.field in model.term_frequencies else ""
        click.echo(f"{comparison.field}{tf}")
        for param in params:
            weight = math.log2(param.m / param.u)
            click.echo(
                f"  {param.label:<26} m {param.m:<9.4g} u {param.u:<9.3g} weight {weight:+6.2f}"
            )

"""``gateway export``: write the warehouse export (pseudonymised unless told otherwise),
``gateway export verify DIR``: reconcile it, ``--to duckdb FILE``: load it for analysts."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
from prometheus_client import REGISTRY, write_to_textfile

from gateway.cli_settings import fail, settings_or_exit
from gateway.settings import Settings


def write_metrics(settings: Settings) -> None:
    """The last run's metrics, where a textfile collector picks them up."""
    if settings.export_metrics_file is not None:
        write_to_textfile(str(settings.export_metrics_file), REGISTRY)


@click.group(name="export", invoke_without_command=True)
@click.option("--dir", "target", help="Folder or URL to export into (GATEWAY_EXPORT_DIR).")
@click.option(
    "--raw",
    is_flag=True,
    help="Export e-mails, phones, source ids and names as they are (default: pseudonymised).",
)
@click.option("--full", is_flag=True, help="Export everything again, not only what changed.")
@click.option(
    "--to",
    "to",
    nargs=2,
    metavar="duckdb FILE",
    help="Also load the exported state into a DuckDB file with analyst views.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL.")
@click.pass_context
def export(
    ctx: click.Context,
    target: str | None,
    raw: bool,
    full: bool,
    to: tuple[str, str] | None,
    progress: bool,
    database_url: str | None,
) -> None:
    """Export customers, identities with link evidence, consents, events (of customers with
    analytics consent) and attributes as Parquet, incrementally since the last run.

    Pseudonymised by default: e-mails, phones and source ids become keyed hashes
    (GATEWAY_EXPORT_KEY), names are left out. A run that died is resumed by the next.
    """
    if ctx.invoked_subcommand is not None:
        return
    if to is not None and to[0].lower() != "duckdb":
        fail(f"--to: unknown warehouse {to[0]!r}; only 'duckdb FILE' is built in", 2)
    settings = settings_or_exit(database_url=database_url)
    folder = target or settings.export_dir
    if not raw and settings.export_key is None and settings.erasure_key_is_builtin:
        # Derived from a public key, a pseudonym can be reversed by hashing guesses.
        click.echo(
            "gateway: warning: pseudonyms are keyed from the built-in erasure key, which is "
            "public; set GATEWAY_EXPORT_KEY (or GATEWAY_ERASURE_KEY) before sharing exports",
            err=True,
        )
    from gateway.db.engine import create_engine
    from gateway.export.pseudonymise import Pseudonymiser
    from gateway.export.service import Exporter, ExportError, ExportReport

    async def run() -> ExportReport:
        engine = create_engine(settings.database_url)
        try:
            pseudonymiser = None if raw else Pseudonymiser.from_settings(settings)
            exporter = Exporter(engine, folder, pseudonymiser, progress=progress)
            return await exporter.run(full=full)
        finally:
            await engine.dispose()

    try:
        report = asyncio.run(run())
    except ExportError as exc:
        fail(str(exc), 2)
    for line in report.lines():
        click.echo(line)
    write_metrics(settings)
    if to is not None:
        from gateway.export.warehouse import load

        counts = load(folder, Path(to[1]))
        click.echo(f"loaded into {to[1]}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))


@export.command()
@click.argument("target", metavar="DIR")
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL.")
def verify(target: str, database_url: str | None) -> None:
    """Re-read the files of DIR against their manifests and the database: one line per
    table; exits 1 on any mismatch."""
    settings = settings_or_exit(database_url=database_url)
    from gateway.db.engine import create_engine
    from gateway.export.store import ExportStore
    from gateway.export.verify import Reconciliation, reconcile

    async def run() -> list[Reconciliation]:
        engine = create_engine(settings.database_url)
        try:
            return await reconcile(target, ExportStore(engine))
        finally:
            await engine.dispose()

    try:
        found = asyncio.run(run())
    except ValueError as exc:
        fail(str(exc), 2)
    for reconciliation in found:
        click.echo(reconciliation.line())
    if not all(r.ok for r in found):
        sys.exit(1)

"""The ``gateway`` command: serve, migrate, import, sync, keys, recs, scores, identity, export,
retention (and the commands installed packages plug in, such as ``demo``)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Callable
from functools import wraps
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

import click
import uvicorn

from adapters.config import UpstreamsConfig
from gateway.access.cli import keys
from gateway.cli_settings import fail, settings_or_exit, upstreams_or_exit
from gateway.db import migrate as migrations
from gateway.export.cli import export
from gateway.identity.cli import identity
from gateway.ingest.streams.cli import consume
from gateway.observability.logs import configure_logging
from gateway.privacy.cli import retention
from gateway.recommendations.cli import recs
from gateway.scores.cli import scores
from gateway.settings import Settings, SettingsError

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OSError as exc:
            click.echo(f"gateway: {exc.strerror or exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


class _CommandGroup(click.Group):
    """The ``gateway`` group, with the commands other installed packages plug in through
    the ``gateway.commands`` entry point group (the demo's, for one): each entry point is
    a function that receives this group. Loaded on first use, so ``gateway serve`` does
    not import them."""

    _plugged_in = False

    def _plug_in(self) -> None:
        if self._plugged_in:
            return
        self._plugged_in = True
        for entry_point in entry_points(group="gateway.commands"):
            try:
                register = entry_point.load()
            except ImportError:
                continue  # a plugin whose package is gone (its checkout removed)
            register(self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._plug_in()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._plug_in()
        return super().get_command(ctx, cmd_name)


@click.group(cls=_CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="personalization-gateway")
def main() -> None:
    """The personalization gateway: one GraphQL Customer over CRM, commerce and analytics.

    Settings come from GATEWAY_* environment variables (see README); options here override them.
    """


@main.command()
@click.option("--host", help="Interface to bind (GATEWAY_HOST).")
@click.option("--port", type=int, help="Port to bind (GATEWAY_PORT).")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes; use a shared cache (Redis) with more than one.",
)
@click.option(
    "--insecure-demo",
    is_flag=True,
    help="Start even with the demo's public API key active and the built-in erasure key "
    "(a local demo only; never in production).",
)
@friendly_errors
def serve(host: str | None, port: int | None, workers: int, insecure_demo: bool) -> None:
    """Serve the GraphQL API (and GraphiQL) with uvicorn."""
    from gateway.access.public_secrets import public_secrets_in_use

    settings = settings_or_exit(host=host, port=port)
    upstreams_or_exit(settings)  # fail here, in one line, not inside each worker
    configure_logging(settings.log_level, repeat_interval_s=settings.log_repeat_interval_s)
    problems = asyncio.run(public_secrets_in_use(settings))
    if problems and not insecure_demo:
        click.echo(
            "gateway: refusing to start: "
            + "; ".join(problems)
            + "; for a local demo only, start with --insecure-demo",
            err=True,
        )
        sys.exit(2)
    if insecure_demo:
        click.echo(
            "gateway: --insecure-demo: the demo's public API key and the built-in erasure "
            "key are accepted; never expose this server",
            err=True,
        )
    # Read by each worker's settings: only the flag makes them accept the demo key.
    os.environ["GATEWAY_INSECURE_DEMO"] = "true" if insecure_demo else "false"
    if workers > 1 and not settings.metrics_multiprocess_dir:
        # Workers are separate processes: prometheus-client merges their metrics
        # through files in one directory, which it finds through this variable.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")
    uvicorn.run(
        "resolvers.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_keep_alive=int(settings.keep_alive_timeout_s),
        # A WebSocket frame past the body limit is refused as it arrives (the app
        # refuses a message past it too: resolvers/http/body_limit.py).
        ws_max_size=settings.max_body_bytes,
    )


@main.command()
@click.option("--revision", default="head", show_default=True, help="Upgrade to this revision.")
@click.option(
    "--downgrade",
    "downgrade_to",
    metavar="REVISION",
    help="Downgrade to this revision instead (e.g. 'base' or '-1').",
)
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL.")
def migrate(revision: str, downgrade_to: str | None, database_url: str | None) -> None:
    """Upgrade the database schema to the latest migration (or downgrade)."""
    settings = settings_or_exit(database_url=database_url)
    if downgrade_to:
        migrations.downgrade(settings.database_url, downgrade_to)
        click.echo(f"database downgraded to {downgrade_to}")
    else:
        migrations.upgrade(settings.database_url, revision)
        click.echo(f"database upgraded to {revision}")


@main.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--source", required=True, help="The source system these records come from, e.g. 'hubspot'."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    help="File format (default: from the file name; .jsonl/.ndjson are JSON Lines).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="Records per transaction.",
)
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL.")
def import_(
    file: Path, source: str, fmt: str | None, batch_size: int, database_url: str | None
) -> None:
    """Import customer records from one source (CSV or JSON Lines), linking identities."""
    from gateway.db.engine import create_engine, create_sessionmaker
    from gateway.db.retries import RetryPolicy
    from gateway.identity.source_ids import SourceIds
    from gateway.ingest.committed import CommittedBatches
    from gateway.ingest.importer import ImportSummary, import_file
    from gateway.ingest.streams.running import ConsumerParts
    from gateway.privacy.tombstones import Tombstones

    settings = settings_or_exit(database_url=database_url)
    try:
        # What ids of ``source`` look like, when it is a configured upstream.
        source_ids = SourceIds.from_file(settings.upstreams_file)
    except (OSError, ValueError) as exc:
        fail(f"GATEWAY_UPSTREAMS_FILE: {exc}", 2)
    upstreams = _upstreams_to_invalidate(settings)

    def progress(summary: ImportSummary) -> None:
        click.echo(f"  {summary.read} read, {summary.records_per_second:,.0f} records/s", err=True)

    async def run() -> ImportSummary:
        engine = create_engine(settings.database_url)
        parts = ConsumerParts.open(settings, upstreams, batch=True)
        try:
            return await import_file(
                create_sessionmaker(engine),
                file,
                source,
                fmt=fmt,  # type: ignore[arg-type]
                batch_size=batch_size,
                progress=progress,
                tombstones=Tombstones.from_settings(settings),
                source_ids=source_ids,
                retry=RetryPolicy.of(settings),
                after_commit=CommittedBatches(parts.federation, parts.customers),
            )
        finally:
            await parts.aclose()
            await engine.dispose()

    summary = asyncio.run(run())
    for row in summary.rejected:
        click.echo(f"{file}:{row.line}: rejected ({row.reason})", err=True)
    click.echo(
        f"read {summary.read}, created {summary.created}, linked {summary.linked}, "
        f"updated {summary.updated}, review {summary.review}, erased {summary.erased}, "
        f"rejected {len(summary.rejected)} in {summary.seconds:.1f} s"
    )
    if summary.rejected:
        sys.exit(1)


def _upstreams_to_invalidate(settings: Settings) -> UpstreamsConfig:
    """The upstreams whose cached answers an import drops (it calls none of them): none
    when their file cannot be read with its secrets (its stored profiles and the whole
    answers holding them are dropped all the same)."""
    try:
        return settings.load_upstreams()
    except SettingsError as exc:
        click.echo(f"gateway: cached upstream answers are left to expire ({exc})", err=True)
        return UpstreamsConfig()


@main.command()
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="NAME",
    help="Sync only this upstream (repeatable; default: every enabled one).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Records per transaction.",
)
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL.")
@friendly_errors
def sync(sources: tuple[str, ...], batch_size: int, database_url: str | None) -> None:
    """Pull what each upstream changed since the last sync, link it, and reconcile.

    Prints one line per source: records read, created, updated, linked, review,
    rejected, and a checksum of the ids read against the upstream's own count.
    Exits 1 when any source failed (its cursor is left where it was).
    """
    from adapters.registry import aclose_adapters, build_adapters
    from gateway.db.engine import create_engine, create_sessionmaker
    from gateway.errors import InvalidInput
    from gateway.identity.source_ids import SourceIds
    from gateway.ingest.committed import CommittedBatches
    from gateway.ingest.streams.running import ConsumerParts
    from gateway.ingest.sync import SyncReport
    from gateway.ingest.sync import sync as run_sync
    from gateway.observability.upstream_telemetry import UpstreamTelemetry
    from gateway.privacy.tombstones import Tombstones

    settings = settings_or_exit(database_url=database_url)
    upstreams = upstreams_or_exit(settings)
    configure_logging(settings.log_level)

    def progress(report: SyncReport) -> None:
        click.echo(report.line())

    async def run() -> list[SyncReport]:
        engine = create_engine(settings.database_url)
        adapters = build_adapters(upstreams, telemetry=UpstreamTelemetry())
        # The caches the running gateways read, as ``gateway consume`` opens them.
        parts = ConsumerParts.open(settings, upstreams, batch=True)
        try:
            return await run_sync(
                create_sessionmaker(engine),
                adapters,
                list(sources),
                progress,
                batch_size=batch_size,
                tombstones=Tombstones.from_settings(settings),
                source_ids=SourceIds.from_upstreams(upstreams),
                after_commit=CommittedBatches(parts.federation, parts.customers),
            )
        finally:
            await parts.aclose()
            await aclose_adapters(adapters)
            await engine.dispose()

    try:
        reports = asyncio.run(run())
    except InvalidInput as exc:
        click.echo(f"gateway: {exc}", err=True)
        sys.exit(2)
    if settings.sync_metrics_file is not None:
        # A run is a process of its own: a textfile collector publishes what it measured.
        from prometheus_client import REGISTRY, write_to_textfile

        write_to_textfile(str(settings.sync_metrics_file), REGISTRY)
    if not reports:
        click.echo("no upstreams enabled (set GATEWAY_UPSTREAMS_FILE)", err=True)
    if any(report.status == "failed" for report in reports):
        sys.exit(1)


main.add_command(recs)
main.add_command(scores)
main.add_command(identity)
main.add_command(keys)
main.add_command(consume)
main.add_command(export)
main.add_command(retention)

"""``gateway retention run``: apply the retention rules (a dry run unless --apply)."""

from __future__ import annotations

import asyncio
import sys

import click

from gateway.cli_settings import settings_or_exit


@click.group(name="retention")
def retention() -> None:
    """Retention: erase customers whose consent was withdrawn long ago, remove old events
    (GATEWAY_RETENTION_* settings)."""


@retention.command()
@click.option("--apply", is_flag=True, help="Do it (default: a dry run that changes nothing).")
@click.option(
    "--every",
    type=click.FloatRange(min=1),
    help="Run again every this many seconds until stopped (default: "
    "GATEWAY_RETENTION_INTERVAL_S with --schedule).",
)
@click.option("--schedule", is_flag=True, help="Repeat every GATEWAY_RETENTION_INTERVAL_S.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL.")
def run(
    apply: bool, every: float | None, schedule: bool, progress: bool, database_url: str | None
) -> None:
    """Print what the rules remove; with --apply, remove it."""
    from gateway.db.engine import create_engine, create_sessionmaker
    from gateway.export.cli import write_metrics
    from gateway.privacy.audit import AuditLog
    from gateway.privacy.erasure import Erasure, Tombstones
    from gateway.privacy.retention import Retention, RetentionReport, RetentionRules

    settings = settings_or_exit(database_url=database_url)
    interval = every or (settings.retention_interval_s if schedule else None)
    if schedule and interval is None:
        click.echo("gateway: --schedule needs GATEWAY_RETENTION_INTERVAL_S", err=True)
        sys.exit(2)
    rules = RetentionRules(
        settings.retention_consent_withdrawn_days,
        settings.retention_events_days,
        settings.retention_events_action,
    )
    if rules.consent_withdrawn_days is None and rules.events_days is None:
        click.echo(
            "no retention rules set (GATEWAY_RETENTION_CONSENT_WITHDRAWN_DAYS, "
            "GATEWAY_RETENTION_EVENTS_DAYS): nothing to do"
        )
        return

    async def once() -> RetentionReport:
        engine = create_engine(settings.database_url)
        try:
            sessions = create_sessionmaker(engine)
            erasure = Erasure(sessions, Tombstones.from_settings(settings))
            audit = AuditLog(sessions)
            try:
                retention = Retention(sessions, erasure, rules, audit=audit, progress=progress)
                return await retention.run(dry_run=not apply)
            finally:
                await audit.aclose()
        finally:
            await engine.dispose()

    async def loop() -> None:
        while True:
            for line in (await once()).lines():
                click.echo(line)
            write_metrics(settings)
            if interval is None:
                return
            await asyncio.sleep(interval)

    asyncio.run(loop())

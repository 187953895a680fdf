"""``gateway retention run``: apply the retention rules (a dry run unless --apply)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import click

from gateway.cli_settings import fail, settings_or_exit, upstreams_or_exit
from gateway.settings import Settings

if TYPE_CHECKING:
    from adapters.config import UpstreamsConfig
    from gateway.privacy.retention import RetentionReport, RetentionRules

_MEMORY_CACHE_NOTE = (
    "with GATEWAY_CACHE_URL=memory:// a running gateway keeps its cached copies of the "
    "erased customers until they expire (GATEWAY_PROFILE_CACHE_TTL_S, the upstreams' "
    "cache ttl_s); a shared Redis cache drops them on every instance at once"
)


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
    """Print what the rules remove; with --apply, remove it.

    Erased customers' cached copies are dropped from the cache GATEWAY_CACHE_URL names:
    with Redis, on every running instance; with the memory cache a running gateway
    keeps its copies until they expire (GATEWAY_PROFILE_CACHE_TTL_S).
    """
    from gateway.export.cli import write_metrics
    from gateway.privacy.retention import RetentionRules

    settings = settings_or_exit(database_url=database_url)
    upstreams = upstreams_or_exit(settings)  # whose cached answers an erasure drops
    interval = every or (settings.retention_interval_s if schedule else None)
    if schedule and interval is None:
        fail("--schedule needs GATEWAY_RETENTION_INTERVAL_S", 2)
    rules = RetentionRules(
        settings.retention_consent_withdrawn_days,
        settings.retention_events_days,
        settings.retention_events_action,
        settings.retention_impressions_days,
    )
    if not (rules.consent_withdrawn_days or rules.events_days or rules.impressions_days):
        click.echo(
            "no retention rules set (GATEWAY_RETENTION_CONSENT_WITHDRAWN_DAYS, "
            "GATEWAY_RETENTION_EVENTS_DAYS, GATEWAY_RETENTION_IMPRESSIONS_DAYS): nothing to do"
        )
        return

    async def loop() -> None:
        from gateway.errors import Conflict

        while True:
            try:
                report = await run_retention(
                    settings, rules, upstreams, dry_run=not apply, progress=progress
                )
            except Conflict as exc:
                if interval is None:
                    fail(str(exc), 1)
                click.echo(f"gateway: {exc}; trying again in {interval:g} s", err=True)
                await asyncio.sleep(interval)
                continue
            for line in report.lines():
                click.echo(line)
            if report.customers and not report.dry_run and settings.cache_url.startswith("memory"):
                click.echo(f"gateway: {_MEMORY_CACHE_NOTE}", err=True)
            write_metrics(settings)
            if interval is None:
                return
            await asyncio.sleep(interval)

    asyncio.run(loop())


async def run_retention(
    settings: Settings,
    rules: RetentionRules,
    upstreams: UpstreamsConfig,
    *,
    dry_run: bool = True,
    progress: bool = False,
) -> RetentionReport:
    """One run of the rules, customers forgotten through ``Forgetting`` on the caches the
    running gateways read: the parts ``gateway consume`` opens of ``Services`` (the same
    Redis client and guard, cache backend and upstream namespaces), so an erased
    customer is not served from any instance's shared cache afterwards."""
    from gateway.db.engine import create_sessionmaker
    from gateway.db.retries import RetryPolicy
    from gateway.ingest.streams.running import ConsumerParts
    from gateway.privacy.audit import AuditLog
    from gateway.privacy.erasure import Erasure
    from gateway.privacy.forgetting import Forgetting
    from gateway.privacy.retention import Retention
    from gateway.privacy.tombstones import Tombstones

    parts = ConsumerParts.open(settings, upstreams, batch=True)
    try:
        sessions = create_sessionmaker(parts.engine)
        retry = RetryPolicy.of(settings)
        erasure = Erasure(sessions, Tombstones.from_settings(settings), retry=retry)
        forgetting = Forgetting(erasure, parts.customers, parts.federation)
        audit = AuditLog(sessions)
        try:
            retention = Retention(sessions, forgetting, rules, audit=audit, progress=progress)
            return await retention.run(dry_run=dry_run)
        finally:
            await audit.aclose()
    finally:
        await parts.aclose()

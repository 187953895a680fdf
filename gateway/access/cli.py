"""``gateway keys``: create, list and revoke the API keys clients authenticate with.

A key's secret is printed once, at creation; only its hash is stored, so a lost key
is revoked and replaced, never recovered.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from gateway.access.api_keys import ApiKeys, parse_scopes
from gateway.cli_settings import settings_or_exit
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.errors import GatewayError

T = TypeVar("T")


def _run(database_url: str | None, action: Callable[[ApiKeys], Awaitable[T]]) -> T:
    settings = settings_or_exit(database_url=database_url)

    async def run() -> T:
        engine = create_engine(settings.database_url)
        try:
            return await action(ApiKeys(create_sessionmaker(engine), cache_ttl_s=0))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except GatewayError as exc:
        click.echo(f"gateway: {exc}", err=True)
        sys.exit(2)


@click.group()
def keys() -> None:
    """Manage API keys (stored hashed; scopes: profiles:read, profiles:write, admin)."""


@keys.command()
@click.option("--name", required=True, help="Who holds the key, e.g. 'esp-production'.")
@click.option(
    "--scopes",
    required=True,
    help="Comma-separated: profiles:read, profiles:write, admin (admin implies the others).",
)
@click.option(
    "--rate-limit",
    type=click.IntRange(min=1),
    help="Requests a minute for this key (default: GATEWAY_RATE_LIMIT_PER_MINUTE).",
)
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL.")
def create(name: str, scopes: str, rate_limit: int | None, database_url: str | None) -> None:
    """Create a key and print its secret: the only time it is shown."""
    try:
        wanted = parse_scopes(scopes.split(","))
    except GatewayError as exc:
        click.echo(f"gateway: {exc}", err=True)
        sys.exit(2)
    secret, info = _run(database_url, lambda store: store.create(name, wanted, rate_limit))
    click.echo(secret)
    click.echo(
        f"created key {info.name!r} (id {info.id}, scopes {', '.join(info.scopes)}); "
        "store it now: it cannot be shown again",
        err=True,
    )


@keys.command(name="list")
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL.")
def list_keys(database_url: str | None) -> None:
    """Every key, with its scopes and state; never a secret."""
    found = _run(database_url, lambda store: store.list())
    click.echo(f"{'ID':<17} {'NAME':<24} {'SCOPES':<38} {'LIMIT/MIN':<10} CREATED / REVOKED")
    for key in found:
        limit = str(key.rate_limit_per_minute or "default")
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        click.echo(
            f"{key.id:<17} {key.name:<24} {','.join(key.scopes):<38} {limit:<10} "
            f"{key.created_at:%Y-%m-%d %H:%M} / {state}"
        )


@keys.command()
@click.argument("key")
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL.")
def revoke(key: str, database_url: str | None) -> None:
    """Revoke KEY (its name or id): requests with it are refused from now on (within
    GATEWAY_API_KEY_CACHE_TTL_S on running instances)."""
    found = _run(database_url, lambda store: store.revoke(key))
    if found is None:
        click.echo(f"gateway: no key named or with id {key!r}", err=True)
        sys.exit(1)
    click.echo(f"revoked key {found.name!r} (id {found.id})")

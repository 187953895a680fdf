"""The demo: a seeded embedded database and the sample upstreams, wired together."""

from __future__ import annotations

import asyncio
import tomllib
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import make_url, select
from sqlalchemy.exc import DBAPIError

from adapters.config import UpstreamsConfig, load_upstreams
from demo.console_data import prepare_console_data
from demo.people.population import Person, population
from demo.recommendation_history import prepare_demo_recommendations
from demo.seed import customer_id_for, seed, seed_evidence
from demo.upstreams.credentials import (
    DEMO_HUBSPOT_CLIENT_ID,
    DEMO_HUBSPOT_CLIENT_SECRET,
    DEMO_HUBSPOT_TOKEN,
    DEMO_SEGMENT_TOKEN,
    DEMO_SHOPIFY_TOKEN,
    DEMO_SOAP_PASSWORD,
    DEMO_SOAP_USER,
)
from gateway.access.api_keys import DEMO_API_KEY as DEMO_API_KEY  # lives with the keys: refused
from gateway.access.api_keys import DEMO_KEY_NAME as DEMO_KEY_NAME  # by every non-demo server
from gateway.access.api_keys import ApiKeys
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import Customer
from gateway.privacy.tombstones import Tombstones
from gateway.settings import Settings

# The values the example upstreams file's *_env names resolve to against the samples.
# Handed to the loader as a mapping: the demo never writes the process environment.
DEMO_SECRETS = {
    "HUBSPOT_TOKEN": DEMO_HUBSPOT_TOKEN,
    "HUBSPOT_CLIENT_ID": DEMO_HUBSPOT_CLIENT_ID,
    "HUBSPOT_CLIENT_SECRET": DEMO_HUBSPOT_CLIENT_SECRET,
    "SHOPIFY_TOKEN": DEMO_SHOPIFY_TOKEN,
    "SEGMENT_TOKEN": DEMO_SEGMENT_TOKEN,
    "SOAP_CRM_USER": DEMO_SOAP_USER,
    "SOAP_CRM_PASSWORD": DEMO_SOAP_PASSWORD,
}


def example_upstreams() -> dict[str, Any]:
    """The shipped example upstreams file, parsed."""
    text = resources.files("adapters").joinpath("upstreams.example.toml").read_text()
    return tomllib.loads(text)


def sample_upstreams_config(
    base_urls: Mapping[str, str], overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> UpstreamsConfig:
    """The example upstreams pointed at running samples, with per-upstream overrides
    (e.g. ``{"shopify": {"timeout_s": 0.3}}`` or ``{"soap_crm": {"enabled": True}}``)."""
    raw = example_upstreams()
    for name, table in raw["upstreams"].items():
        table["base_url"] = base_urls[name]
        table.update((overrides or {}).get(name, {}))
    return load_upstreams(raw, DEMO_SECRETS)


async def prepare(settings: Settings, people: Sequence[Person]) -> int:
    """Seed the demo population and the demo key into an already migrated database;
    returns the customers added."""
    engine = create_engine(settings.database_url)
    sessions = create_sessionmaker(engine)
    try:
        added = await seed(sessions, people, Tombstones.from_settings(settings))
        await seed_evidence(sessions, people)
        await prepare_demo_recommendations(sessions, people)
        await prepare_console_data(sessions)
        await ApiKeys(sessions).enable_demo_key()
        return added
    finally:
        await engine.dispose()


# Any fixed anchor: only the people's emails and their ages at the anchor are read.
_PROBE_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def seeded_epoch(database_url: str) -> datetime | None:
    """The anchor a database's demo people were seeded with (None: none seeded yet, or no
    schema). A later demo on it generates them from that one again, so that the samples
    serve the histories the database holds (their events' ids do not change with the
    anchor: a new anchor's would be skipped as already stored). Read back from the
    first person still stored's ``created_at``, which lies a fixed time before it."""
    parsed = make_url(database_url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        return None  # not opened: that would create the file, and a demo that stops leaves none
    probe = population(20, epoch=_PROBE_EPOCH)
    ages = {p.email: p.epoch - p.created_at for p in probe}
    rows = {
        email: created_at for email, created_at, _ in asyncio.run(_probe(database_url, list(ages)))
    }
    for person in probe:
        if (created_at := rows.get(person.email)) is not None:
            at = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
            return at.astimezone(UTC) + ages[person.email]
    return None


def ids_from_before(database_url: str) -> bool:
    """Whether the database's demo people hold the ids an earlier demo gave them (a
    ``uuid5`` of their e-mail, which a pseudonymised export gave away to anyone guessing
    addresses) rather than ``customer_id_for``'s. They keep them, as every row naming
    them would have to change: ``gateway demo`` says to start a new database."""
    probe = population(20, epoch=_PROBE_EPOCH)
    stored = {
        email: id_ for email, _, id_ in asyncio.run(_probe(database_url, [p.email for p in probe]))
    }
    return any(stored.get(p.email, customer_id_for(p)) != customer_id_for(p) for p in probe)


async def _probe(database_url: str, emails: list[str]) -> list[tuple[str, datetime, uuid.UUID]]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            query = select(Customer.email, Customer.created_at, Customer.id).where(
                Customer.email.in_(emails)
            )
            return [(r.email, r.created_at, r.id) for r in await connection.execute(query)]
    except DBAPIError:  # a new database: no customers table before its migration
        return []
    finally:
        await engine.dispose()

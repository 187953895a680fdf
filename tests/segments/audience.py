"""A synthetic audience written in bulk (COPY on Postgres, executemany on SQLite):
customers with scores, consent statements and bounces, varied enough that every
filter field and the suppression rule select someone and leave someone out."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import numpy as np
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db.bulk import insert_tuples
from gateway.db.models import Attribute, Consent, Customer
from gateway.db.score_models import CustomerScore
from gateway.ingest.engagement import EMAIL_STATUS, UNDELIVERABLE
from gateway.scores.rfm import SEGMENTS

NOW = datetime(2026, 12, 1, tzinfo=UTC)
LOCALES = ("en-GB", "en-US", "fr-FR", "de-DE", None)
NAMES = ("Ada", "Grace", "Alan", "Edsger", None)
PURPOSES = ("email_marketing", "personalisation", "analytics")


def _table(model: object) -> Table:
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


def _optional(value: float, missing: bool) -> float | None:
    return None if missing else float(value)


async def _write(
    connection: AsyncConnection, model: object, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    for start in range(0, len(rows), 20_000):
        await insert_tuples(connection, _table(model), columns, rows[start : start + 20_000])


async def write_audience(
    engine: AsyncEngine, size: int, *, seed: int = 1, tag: str = "a"
) -> list[uuid.UUID]:
    """``size`` customers (emails ``{tag}{i}@example.com``) and their rows; their ids."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (size, 16), dtype=np.uint8)
    ids = [uuid.UUID(bytes=row.tobytes(), version=4) for row in raw]
    created = [NOW - timedelta(days=int(d)) for d in rng.integers(0, 900, size)]
    customers = [
        (
            i,
            f"{tag}{n}@example.com",
            NAMES[n % len(NAMES)],
            LOCALES[int(rng.integers(0, len(LOCALES)))],
            created[n],
            created[n],
        )
        for n, i in enumerate(ids)
    ]
    frequency = rng.poisson(2.0, size)
    scored = rng.random(size) < 0.9
    propensity = rng.beta(1.5, 3.0, size).round(3)
    churn = rng.random(size).round(3)
    no_model = rng.random(size) < 0.05
    scores = []
    for n, i in enumerate(ids):
        if not scored[n]:
            continue
        f = int(frequency[n])
        known = f > 0
        r, fs, m = (int(x) for x in rng.integers(1, 6, 3)) if known else (0, 0, 0)
        scores.append(
            (
                i,
                int(rng.integers(0, 400)) if known else None,
                f,
                float(f * 37.5),
                37.5 if known else None,
                _optional(float(rng.integers(5, 90)), f < 2),
                r,
                fs,
                m,
                SEGMENTS[int(rng.integers(0, len(SEGMENTS)))] if known else None,
                int(rng.integers(0, 12)),
                int(rng.integers(0, 30)),
                _optional(propensity[n], bool(no_model[n])),
                _optional(churn[n], not known),
                "hgb-test",
                NOW,
            )
        )
    consents = []
    for i in ids:
        for p, purpose in enumerate(PURPOSES):
            said = rng.random()
            if said < 0.15 + 0.1 * p:
                continue  # no statement: not granted
            consents.append((i, purpose, bool(said < 0.85), "seed", NOW))
    # Every write path keeps each email as an observation: the table a bounce lives in
    # is mostly other fields, as in a real store.
    observations = [(i, "email", customers[n][1], "seed", created[n]) for n, i in enumerate(ids)]
    bounces = []
    for i in ids:
        roll = rng.random()
        if roll < 0.04:
            at = NOW - timedelta(days=int(rng.integers(1, 100)))
            bounces.append((i, EMAIL_STATUS, UNDELIVERABLE, "sendgrid", at))
            if roll < 0.01:  # a later word that the address works again
                bounces.append((i, EMAIL_STATUS, "deliverable", "crm", at + timedelta(days=1)))
    async with engine.begin() as connection:
        await _write(
            connection,
            Customer,
            ("id", "email", "first_name", "locale", "created_at", "updated_at"),
            customers,
        )
        await _write(connection, CustomerScore, [c.name for c in _table(CustomerScore).c], scores)
        await _write(
            connection,
            Consent,
            ("customer_id", "purpose", "granted", "source", "recorded_at"),
            consents,
        )
        await _write(
            connection,
            Attribute,
            ("customer_id", "name", "value", "source", "observed_at"),
            observations + bounces,
        )
    return ids

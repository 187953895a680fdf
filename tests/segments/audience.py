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
from gateway.ingest.engagement import BOUNCED_EMAIL, EMAIL_STATUS, UNDELIVERABLE
from gateway.scores.rfm import SEGMENTS

NOW = datetime(2026, 12, 1, tzinfo=UTC)
LOCALES = ("en-GB", "en-US", "fr-FR", "de-DE", None)
NAMES = ("Ada", "Grace", "Alan", "Edsger", None)
PURPOSES = ("email_marketing", "personalisation", "analytics")


def _table(model: object) -> Table:
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


async def _write(
    connection: AsyncConnection, model: object, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    for start in range(0, len(rows), 20_000):
        await insert_tuples(connection, _table(model), columns, rows[start : start + 20_000])


def _days(base: datetime, offsets: np.ndarray, sign: int = -1) -> list[datetime]:
    return [base + timedelta(days=sign * d) for d in offsets.tolist()]


async def write_audience(
    engine: AsyncEngine, size: int, *, seed: int = 1, tag: str = "a"
) -> list[uuid.UUID]:
    """``size`` customers (emails ``{tag}{i}@example.com``) and their rows; their ids.
    Every draw is one array (a 100,000-customer audience is written in seconds)."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (size, 16), dtype=np.uint8)
    ids = [uuid.UUID(bytes=row.tobytes(), version=4) for row in raw]
    emails = [f"{tag}{n}@example.com" for n in range(size)]
    created = _days(NOW, rng.integers(0, 900, size))
    names = [NAMES[n % len(NAMES)] for n in range(size)]
    locales = [LOCALES[k] for k in rng.integers(0, len(LOCALES), size).tolist()]
    customers = list(zip(ids, emails, names, locales, created, created, strict=True))

    frequency = rng.poisson(2.0, size).tolist()
    scored = (rng.random(size) < 0.9).tolist()
    rfm = rng.integers(1, 6, (size, 3)).tolist()
    recency = rng.integers(0, 400, size).tolist()
    gap = rng.integers(5, 90, size).tolist()
    segment = rng.integers(0, len(SEGMENTS), size).tolist()
    e30, e90 = rng.integers(0, 12, size).tolist(), rng.integers(0, 30, size).tolist()
    propensity = rng.beta(1.5, 3.0, size).round(3).tolist()
    churn = rng.random(size).round(3).tolist()
    no_model = (rng.random(size) < 0.05).tolist()
    scores = []
    for n, i in enumerate(ids):
        if not scored[n]:
            continue
        f = frequency[n]
        known = f > 0
        r, fs, m = rfm[n] if known else (0, 0, 0)
        scores.append(
            (
                i,
                recency[n] if known else None,
                f,
                f * 37.5,
                37.5 if known else None,
                None if f < 2 else float(gap[n]),
                r,
                fs,
                m,
                SEGMENTS[segment[n]] if known else None,
                e30[n],
                e90[n],
                None if no_model[n] else propensity[n],
                churn[n] if known else None,
                "hgb-test",
                NOW,
            )
        )
    said = rng.random((size, len(PURPOSES))).tolist()
    consents = [
        (i, purpose, said[n][p] < 0.85, "seed", NOW)
        for n, i in enumerate(ids)
        for p, purpose in enumerate(PURPOSES)
        if said[n][p] >= 0.15 + 0.1 * p  # below: no statement, so not granted
    ]
    # Every write path keeps each email as an observation: the table a bounce lives in
    # is mostly other fields, as in a real store.
    observations = [(i, "email", emails[n], "seed", created[n]) for n, i in enumerate(ids)]
    roll = rng.random(size).tolist()
    bounced_at = _days(NOW, rng.integers(1, 100, size))
    for n, i in enumerate(ids):
        if roll[n] < 0.06:
            # A hard bounce, as an ESP's is stored: the status and the address it was for,
            # theirs, or (a third of them) one they left, now another customer's: neither
            # of the two is undeliverable for it.
            address = emails[n] if roll[n] < 0.04 else emails[(n + 1) % size]
            observations.append((i, EMAIL_STATUS, UNDELIVERABLE, "sendgrid", bounced_at[n]))
            observations.append((i, BOUNCED_EMAIL, address, "sendgrid", bounced_at[n]))
            if roll[n] < 0.01:  # a later word that the address works again
                later = bounced_at[n] + timedelta(days=1)
                observations.append((i, EMAIL_STATUS, "deliverable", "crm", later))
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
            observations,
        )
    return ids

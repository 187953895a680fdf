"""A database of the export tests' own on each backend (an export reads whole tables, and
retention changes whole tables: other tests' rows stay out of it), and people in it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import Consent, Event
from gateway.identity import Resolver


@pytest.fixture
async def engine(own_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(own_database_url)
    yield engine
    await engine.dispose()


@dataclass(frozen=True, slots=True)
class Person:
    id: uuid.UUID
    email: str
    phone: str
    first_name: str
    last_name: str
    source: str
    external_id: str


def _name() -> str:
    return "Zq" + "".join("bcdfghjklmnpqrstv"[int(c, 16)] for c in uuid.uuid4().hex[:8])


async def add_person(engine: AsyncEngine, *, analytics: bool | None = True) -> Person:
    """A person linked as a source record would be, with three events (one naming them in
    its properties) and, unless None, an analytics consent."""
    sessions = create_sessionmaker(engine)
    tag = uuid.uuid4().hex[:10]
    data = {
        "external_id": f"ext-{tag}",
        "email": f"mail.{tag}@example.org",
        "phone": f"+4420794{int(tag[:5], 16) % 100000:05d}",
        "first_name": _name(),
        "last_name": _name(),
    }
    decision = await Resolver(sessions).link_one(data, "crm")
    person = Person(
        decision.customer_id,
        data["email"],
        data["phone"],
        data["first_name"],
        data["last_name"],
        "crm",
        data["external_id"],
    )
    now = datetime.now(UTC)
    events: list[dict[str, Any]] = [
        {
            "customer_id": person.id,
            "source": "shop",
            "event_id": f"{tag}-{n}",
            "type": "orders/create" if n == 0 else "page",
            "occurred_at": now - timedelta(days=n),
            "properties": (
                {"order_id": str(n), "traits": {"email": person.email, "name": person.last_name}}
                if n == 0
                else {"path": f"/p/{n}", "note": f"contact {person.email}"}
            ),
            "received_at": now,
        }
        for n in range(3)
    ]
    async with engine.begin() as connection:
        await connection.execute(insert(Event), events)
        if analytics is not None:
            await connection.execute(
                insert(Consent),
                [
                    {
                        "customer_id": person.id,
                        "purpose": "analytics",
                        "granted": analytics,
                        "source": "crm",
                        "recorded_at": now,
                    }
                ],
            )
    return person

"""0026: each hard bounce stored before names the address its customer has, on Postgres
and SQLite, so nobody who bounced becomes mailable at the address that bounced; a
customer without an address gets none; the partial index on those rows is there
exactly above 0025; a source's own ``bounced_email`` attribute (no bounce beside it) is
left alone down; up again works."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from gateway.db.engine import create_engine
from gateway.db.migrate import downgrade, upgrade
from tests.db.test_migrations import (
    _indexes,
    empty_database,  # noqa: F401 (the fixture)
)

SEEN = datetime(2026, 1, 1, tzinfo=UTC)
_ADDRESSES = (
    "SELECT customer_id, value, source FROM attributes WHERE name = 'bounced_email' ORDER BY value"
)


async def _run(url: str, statement: str, rows: list[dict[str, Any]] | None = None) -> list[Any]:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            result = await connection.execute(text(statement), rows or {})
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()


async def _people(url: str) -> dict[str, str]:
    """A bounced customer with an address, a bounced one without, one with only a CRM's
    word, and a CRM's own ``bounced_email`` attribute: their ids by role."""
    ids = {role: uuid.uuid4().hex for role in ("bounced", "addressless", "fine")}
    emails = {"bounced": "ada@example.com", "addressless": None, "fine": "bob@example.com"}
    await _run(
        url,
        "INSERT INTO customers (id, email, created_at, updated_at, changed_at) "
        "VALUES (:id, :email, :at, :at, :at)",
        [
            {"id": _uuid(url, ids[r]), "email": emails[r], "at": _time(url)}
            for r in ("bounced", "addressless", "fine")
        ],
    )
    attribute = (
        "INSERT INTO attributes (customer_id, name, value, source, observed_at) "
        "VALUES (:id, :name, :value, :source, :at)"
    )
    await _run(
        url,
        attribute,
        [
            {"id": _uuid(url, ids[role]), "name": name, "value": value, "source": source,
             "at": _time(url)}
            for role, name, value, source in (
                ("bounced", "email_status", "undeliverable", "sendgrid"),
                ("addressless", "email_status", "undeliverable", "mandrill"),
                ("fine", "email_status", "deliverable", "crm"),
                ("fine", "bounced_email", "crm@example.com", "crm"),
            )
        ],
    )  # fmt: skip
    return ids


def _uuid(url: str, hex_id: str) -> Any:
    # As each backend stores a Uuid column: native on Postgres, 32 hex digits on SQLite.
    return uuid.UUID(hex_id) if url.startswith("postgresql") else hex_id


def _time(url: str) -> Any:
    return SEEN if url.startswith("postgresql") else SEEN.strftime("%Y-%m-%d %H:%M:%S.%f")


def _ids(rows: list[Any]) -> list[tuple[str, str, str]]:
    return [(uuid.UUID(str(c)).hex, value, source) for c, value, source in rows]


def test_0026_gives_each_stored_bounce_its_customers_address(
    empty_database: str,  # noqa: F811 (the fixture)
) -> None:
    upgrade(empty_database, "0025")
    ids = asyncio.run(_people(empty_database))
    crm = (ids["fine"], "crm@example.com", "crm")
    upgrade(empty_database)
    assert "ix_attributes_bounced_email" in _indexes(empty_database)
    tagged = _ids(asyncio.run(_run(empty_database, _ADDRESSES)))
    assert tagged == [(ids["bounced"], "ada@example.com", "sendgrid"), crm]
    paired = (
        "SELECT COUNT(*) FROM attributes address JOIN attributes bounce "
        "ON bounce.customer_id = address.customer_id AND bounce.source = address.source "
        "AND bounce.observed_at = address.observed_at AND bounce.name = 'email_status' "
        "WHERE address.name = 'bounced_email' AND address.value = 'ada@example.com'"
    )
    assert asyncio.run(_run(empty_database, paired)) == [(1,)]  # at the bounce's own time

    downgrade(empty_database, "0025")
    assert "ix_attributes_bounced_email" not in _indexes(empty_database)
    assert _ids(asyncio.run(_run(empty_database, _ADDRESSES))) == [crm]
    upgrade(empty_database)
    assert _ids(asyncio.run(_run(empty_database, _ADDRESSES))) == tagged

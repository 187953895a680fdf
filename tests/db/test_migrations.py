"""Migrations: up, down to base and up again, on Postgres and SQLite; no drift from the models."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Table, delete, func, inspect, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SAWarning

from gateway.db.access_models import EventSubject
from gateway.db.engine import create_engine
from gateway.db.foreign_keys import comparison_options
from gateway.db.identity_models import IdentityBlockKey, IdentityLink, IdentityRecord
from gateway.db.migrate import downgrade, upgrade
from gateway.db.models import Attribute, Base, Customer, Event, Identity, utcnow
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.own_database import database_of_its_own

TABLES = {
    "customers",
    "identities",
    "attributes",
    "consent_history",
    "consents",
    "email_suppressions",
    "console_sign_outs",
    "events",
    "templates",
    "audit_log",
    "sync_cursors",
    "sync_runs",
    "identity_records",
    "identity_block_keys",
    "identity_links",
    "identity_reviews",
    "identity_never_links",
    "identity_models",
    "api_keys",
    "tombstones",
    "event_subjects",
    "webhook_receipts",
    "recommendation_lists",
    "recommendation_items",
    "recommendation_neighbours",
    "recommendation_models",
    "export_cursors",
    "export_deletions",
    "customer_scores",
    "score_models",
    "score_builds",
    "segments",
    "experiments",
    "recommendation_impressions",
    "recommendation_clicks",
}


@pytest.fixture(params=["postgres", "sqlite"])
def empty_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with database_of_its_own(
        request.param, "gateway_migrations", tmp_path_factory, migrated=False
    ) as url:
        yield url


def _inspect(url: str, probe: object) -> object:
    async def run() -> object:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(probe)  # type: ignore[arg-type]
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


def _drift(connection: Connection) -> list[object]:
    # Postgres enforces some keys with triggers (migration 0006), not constraints.
    context = MigrationContext.configure(
        connection, opts=comparison_options(connection.dialect.name)
    )
    return list(compare_metadata(context, Base.metadata))


def test_upgrade_downgrade_upgrade(empty_database: str) -> None:
    upgrade(empty_database)
    assert _inspect(empty_database, _tables) == TABLES
    downgrade(empty_database, "base")
    assert _inspect(empty_database, _tables) == set()
    upgrade(empty_database)
    assert _inspect(empty_database, _tables) == TABLES


def test_models_and_migrations_agree(empty_database: str) -> None:
    upgrade(empty_database)
    assert _inspect(empty_database, _drift) == []


def _table(model: object) -> Table:
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


async def _foreign_keys_hold(url: str) -> None:
    engine = create_engine(url)
    now, owner = utcnow(), uuid.uuid4()
    children = [IdentityRecord, IdentityBlockKey, IdentityLink, Attribute, Identity]
    children += [EventSubject, Event]
    try:
        async with engine.begin() as connection:
            await connection.execute(
                _table(Customer).insert(), [{"id": owner, "created_at": now, "updated_at": now}]
            )
            identity_id = (
                await connection.execute(
                    _table(Identity).insert().returning(Identity.id),
                    [{"customer_id": owner, "source": "s", "external_id": "1", "created_at": now}],
                )
            ).scalar_one()
            await connection.execute(
                _table(IdentityRecord).insert(), [{"identity_id": identity_id, "observed_at": now}]
            )
            await connection.execute(
                _table(IdentityBlockKey).insert(),
                [{"identity_id": identity_id, "key_hash": k} for k in (1, 2, 3)],
            )
            link = {"customer_id": owner, "identity_id": identity_id, "rule": "new"}
            await connection.execute(_table(IdentityLink).insert(), [{**link, "created_at": now}])
            attribute = {"name": "city", "value": "x", "source": "crm", "observed_at": now}
            await connection.execute(
                _table(Attribute).insert(), [{"customer_id": owner, **attribute}]
            )
            event_ids = (
                await connection.execute(
                    _table(Event).insert().returning(Event.id),
                    [_event(owner, "e1", now), _event(None, "e2", now)],
                )
            ).scalars()
            await connection.execute(
                _table(EventSubject).insert(), [{"event_id": i, "digest": "d"} for i in event_ids]
            )
        # A good row beside each orphan: the whole statement is checked, not its first row.
        orphans: list[tuple[type[Base], list[dict[str, Any]]]] = [
            (
                Attribute,
                [{"customer_id": owner, **attribute}, {"customer_id": uuid.uuid4(), **attribute}],
            ),
            (
                IdentityBlockKey,
                [
                    {"identity_id": identity_id, "key_hash": 4},
                    {"identity_id": identity_id + 1000, "key_hash": 1},
                ],
            ),
            (Event, [_event(owner, "e3", now), _event(uuid.uuid4(), "e4", now)]),
            (EventSubject, [{"event_id": 1_000_000, "digest": "d"}]),
        ]
        for model, rows in orphans:
            with pytest.raises(IntegrityError):
                async with engine.begin() as connection:
                    await connection.execute(_table(model).insert(), rows)
        with pytest.raises(IntegrityError):
            async with engine.begin() as connection:
                await connection.execute(
                    update(_table(Customer)).where(Customer.id == owner).values(id=uuid.uuid4())
                )
        # Moving a child is checked only for the new parent (what merges do).
        with pytest.raises(IntegrityError):
            async with engine.begin() as connection:
                await connection.execute(update(_table(Attribute)).values(customer_id=uuid.uuid4()))
        other = uuid.uuid4()
        async with engine.begin() as connection:
            await connection.execute(
                _table(Customer).insert(), [{"id": other, "created_at": now, "updated_at": now}]
            )
            await connection.execute(update(_table(Attribute)).values(customer_id=other))
            await connection.execute(update(_table(Attribute)).values(customer_id=owner))
            await connection.execute(delete(_table(Customer)).where(Customer.id == other))
            # An event may belong to nobody (anonymous, or anonymised by retention).
            await connection.execute(
                update(_table(Event)).where(Event.event_id == "e1").values(customer_id=None)
            )
            await connection.execute(
                update(_table(Event)).where(Event.event_id == "e1").values(customer_id=owner)
            )
        with pytest.raises(IntegrityError):
            async with engine.begin() as connection:
                await connection.execute(update(_table(Event)).values(customer_id=uuid.uuid4()))
        async with engine.begin() as connection:
            # The anonymous event goes with its own delete, its subject with it.
            await connection.execute(delete(_table(Event)).where(Event.customer_id.is_(None)))
        async with engine.begin() as connection:
            await connection.execute(delete(_table(Customer)).where(Customer.id == owner))
            for model in children:
                count = await connection.scalar(select(func.count()).select_from(_table(model)))
                assert count == 0, model
    finally:
        await engine.dispose()


def _event(owner: uuid.UUID | None, event_id: str, now: datetime) -> dict[str, Any]:
    return {
        "customer_id": owner,
        "source": "segment",
        "event_id": event_id,
        "type": "page",
        "occurred_at": now,
        "properties": {},
        "received_at": now,
    }


def test_foreign_keys_reject_orphans_and_cascade_deletes(empty_database: str) -> None:
    """Constraints on SQLite, statement-level triggers on Postgres (0006, 0021): the same
    rules."""
    upgrade(empty_database)
    asyncio.run(_foreign_keys_hold(empty_database))


_CUSTOMER = "INSERT INTO customers (id, created_at, updated_at) VALUES ($1, now(), now())"
_ATTRIBUTE = (
    "INSERT INTO attributes (customer_id, name, value, source, observed_at) "
    "VALUES ($1, 'city', 'x', 's', $2)"
)


async def _waits_on_a_lock(observer: asyncpg.Connection, pid: int) -> None:
    """Until the server says session ``pid`` waits on a lock another session holds: seen
    blocked, not merely not finished yet. Fails if it never blocks."""
    blocked = "SELECT cardinality(pg_blocking_pids($1)) > 0"
    async with asyncio.timeout(5):
        while not await observer.fetchval(blocked, pid):  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # polls the lock table; nothing to await on


async def _races(url: str) -> None:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    first, second = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    now = datetime.now(UTC)
    try:
        # A child inserted first: the parent's delete waits for it, then takes it along.
        owner = uuid.uuid4()
        await first.execute(_CUSTOMER, owner)
        adding = first.transaction()
        await adding.start()
        await first.execute(_ATTRIBUTE, owner, now)
        deleting = asyncio.create_task(second.execute("DELETE FROM customers WHERE id = $1", owner))
        await _waits_on_a_lock(first, second.get_server_pid())  # the check's key-share lock
        assert not deleting.done()
        await adding.commit()
        await deleting
        left = await first.fetchval("SELECT count(*) FROM attributes WHERE customer_id = $1", owner)
        assert left == 0
        # The parent deleted first: the child's check waits, then finds it gone.
        owner = uuid.uuid4()
        await first.execute(_CUSTOMER, owner)
        removing = second.transaction()
        await removing.start()
        await second.execute("DELETE FROM customers WHERE id = $1", owner)
        inserting = asyncio.create_task(first.execute(_ATTRIBUTE, owner, now))
        await _waits_on_a_lock(second, first.get_server_pid())
        assert not inserting.done()
        await removing.commit()
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await inserting
    finally:
        await first.close()
        await second.close()


def test_trigger_enforced_keys_under_concurrent_writers() -> None:
    """The statement-level checks (0006) lock parents as a foreign key does (Postgres)."""
    url = create_postgres_database("gateway_migrations")
    try:
        upgrade(url)
        asyncio.run(_races(url))
    finally:
        drop_postgres_database(url)


async def _observations(url: str, rows: int | None = None) -> int:
    """Insert ``rows`` copies of one observation (and one other), or just count."""
    engine = create_engine(url)
    seen = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        async with engine.begin() as connection:
            if rows is not None:
                owner = uuid.uuid4()
                await connection.execute(
                    _table(Customer).insert(),
                    [{"id": owner, "created_at": seen, "updated_at": seen}],
                )
                same = {"customer_id": owner, "name": "city", "source": "crm", "observed_at": seen}
                await connection.execute(
                    _table(Attribute).insert(),
                    [{**same, "value": "Lyon"}] * rows
                    + [
                        {**same, "value": "Paris"},
                        {**same, "value": None},
                        {**same, "value": None},
                    ],
                )
            return int(
                await connection.scalar(select(func.count()).select_from(_table(Attribute))) or 0
            )
    finally:
        await engine.dispose()


def test_0010_removes_duplicate_observations_and_then_refuses_them(empty_database: str) -> None:
    """Up from 0009 with duplicates stored (as an import rerun left them), down, up again."""
    upgrade(empty_database, "0009")
    assert asyncio.run(_observations(empty_database, rows=3)) == 6
    upgrade(empty_database)
    assert asyncio.run(_observations(empty_database)) == 3  # Lyon, Paris, no value: once each
    with pytest.raises(IntegrityError):
        asyncio.run(_observations(empty_database, rows=2))
    downgrade(empty_database, "0009")
    assert asyncio.run(_observations(empty_database, rows=2)) == 3 + 5
    upgrade(empty_database)
    assert asyncio.run(_observations(empty_database)) == 3 + 3


def _indexes(url: str) -> set[str]:
    found: set[str] = _inspect(url, _attribute_indexes)  # type: ignore[assignment]
    return found


def _attribute_indexes(connection: Connection) -> set[str]:
    with warnings.catch_warnings():
        # uq_attributes_observation is on an expression, which reflection skips (and says).
        warnings.simplefilter("ignore", SAWarning)
        return {str(index["name"]) for index in inspect(connection).get_indexes("attributes")}


async def _bounces(url: str, add: bool = False) -> int:
    """Add a customer with a hard bounce and a later word, or just count e-mail statuses."""
    engine = create_engine(url)
    seen = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        async with engine.begin() as connection:
            if add:
                owner = uuid.uuid4()
                await connection.execute(
                    _table(Customer).insert(),
                    [{"id": owner, "created_at": seen, "updated_at": seen}],
                )
                status = {"customer_id": owner, "name": "email_status", "source": "sendgrid"}
                await connection.execute(
                    _table(Attribute).insert(),
                    [
                        {**status, "value": "undeliverable", "observed_at": seen},
                        {**status, "value": "deliverable", "observed_at": seen + timedelta(1)},
                    ],
                )
            count = select(func.count()).where(Attribute.name == "email_status")
            return int(await connection.scalar(count) or 0)
    finally:
        await engine.dispose()


def test_0015_adds_the_bounce_index_and_takes_it_away(empty_database: str) -> None:
    """Up from 0014 with statuses stored, down, up again: the rows stay, and the index is
    there exactly above 0014."""
    upgrade(empty_database, "0014")
    assert "ix_attributes_email_status" not in _indexes(empty_database)
    assert asyncio.run(_bounces(empty_database, add=True)) == 2
    upgrade(empty_database)
    assert "ix_attributes_email_status" in _indexes(empty_database)
    assert asyncio.run(_bounces(empty_database, add=True)) == 4
    downgrade(empty_database, "0014")
    assert "ix_attributes_email_status" not in _indexes(empty_database)
    upgrade(empty_database)
    assert "ix_attributes_email_status" in _indexes(empty_database)
    assert asyncio.run(_bounces(empty_database)) == 4

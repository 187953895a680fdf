"""What leaves the database leaves the warehouse: customers erased before a ``--full``
run, events anonymised by retention or moved onto a customer without analytics consent.
Read back as an analyst would, from the DuckDB warehouse the export loads."""

from __future__ import annotations

import uuid
from pathlib import Path

import duckdb
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_sessionmaker
from gateway.db.models import Consent, Event
from gateway.export.service import Exporter
from gateway.export.store import ExportStore
from gateway.export.verify import reconcile
from gateway.export.warehouse import load
from gateway.identity.merges import merge_customers
from gateway.identity.unmerges import unmerge_customer
from gateway.privacy.consent import ConsentStore, Purpose
from gateway.privacy.erasure import Erasure
from gateway.privacy.forgetting import Forgetting
from gateway.privacy.retention import Retention, RetentionRules
from gateway.privacy.tombstones import Tombstones
from gateway.profiles.customers import CustomerStore
from gateway.profiles.profile_cache import CachedCustomers
from gateway.upstreams.cache import UpstreamCache, build_cache
from gateway.upstreams.federation import Federation
from gateway.warehouse_settings import EventRetention
from tests.export.people import add_person

TOMBSTONES = Tombstones(b"export-deletions-erasure-key")


async def _warehouse(engine: AsyncEngine, out: Path, tmp_path: Path) -> duckdb.DuckDBPyConnection:
    """The warehouse loaded from ``out``, after checking the export against the database."""
    found = await reconcile(str(out), ExportStore(engine))
    assert [r.line() for r in found if not r.ok] == []
    database = tmp_path / f"{uuid.uuid4().hex}.duckdb"
    load(str(out), database)
    return duckdb.connect(str(database), read_only=True)


async def test_a_full_run_deletes_customers_erased_since_the_last_run(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    kept, erased = await add_person(engine), await add_person(engine)
    out = tmp_path / "out"
    exporter = Exporter(engine, str(out), None)
    await exporter.run()
    assert await Erasure(create_sessionmaker(engine), TOMBSTONES).forget(erased.id) is not None

    await exporter.run(full=True)
    await exporter.run()  # and the deletions the full run passed are not needed again
    with await _warehouse(engine, out, tmp_path) as db:
        customers = {row[0] for row in db.execute("SELECT id FROM customers").fetchall()}
        owners = {row[0] for row in db.execute("SELECT customer_id FROM events").fetchall()}
        text = str(db.execute("SELECT * FROM identities").fetchall())
    assert customers == {str(kept.id)}
    assert owners == {str(kept.id)}
    assert erased.external_id not in text


def _forgetting(engine: AsyncEngine) -> Forgetting:
    sessions = create_sessionmaker(engine)
    cache = UpstreamCache(build_cache("memory://"))
    customers = CachedCustomers(CustomerStore(sessions, TOMBSTONES), cache.backend, 60)
    return Forgetting(Erasure(sessions, TOMBSTONES), customers, Federation({}, cache))


async def test_events_anonymised_by_retention_leave_the_export(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    person = await add_person(engine)
    out = tmp_path / "out"
    exporter = Exporter(engine, str(out), None)  # raw: the old properties would show
    await exporter.run()
    rules = RetentionRules(events_days=1, events_action=EventRetention.ANONYMISE)
    retention = Retention(create_sessionmaker(engine), _forgetting(engine), rules)
    assert (await retention.run(dry_run=False)).events == 2

    await exporter.run()
    with await _warehouse(engine, out, tmp_path) as db:
        events = db.execute("SELECT customer_id, properties FROM events").fetchall()
    # The recent order alone (its customer consents); the old pages named the person.
    assert [(owner, '"order_id"' in properties) for owner, properties in events] == [
        (str(person.id), True)
    ]


async def test_events_moved_onto_a_customer_without_analytics_consent_leave_the_export(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    consenting = await add_person(engine)
    silent = await add_person(engine, analytics=False)
    out = tmp_path / "out"
    exporter = Exporter(engine, str(out), None)
    await exporter.run()
    async with engine.begin() as connection:
        await connection.execute(
            update(Event).where(Event.customer_id == consenting.id).values(customer_id=silent.id)
        )

    await exporter.run()
    with await _warehouse(engine, out, tmp_path) as db:
        events = db.execute("SELECT customer_id FROM events").fetchall()
    assert events == []


async def test_events_changed_as_their_customer_withdrew_consent_are_deleted_once(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # Each is both an event of a customer who withdrew and one changed in the window
    # without consent: two reasons to leave, one deletion.
    kept, withdrawing = await add_person(engine), await add_person(engine)
    out = tmp_path / "out"
    exporter = Exporter(engine, str(out), None)
    await exporter.run()
    async with engine.begin() as connection:
        await connection.execute(
            update(Consent)
            .where(Consent.customer_id == withdrawing.id, Consent.purpose == "analytics")
            .values(granted=False)
        )
        await connection.execute(
            update(Event).where(Event.customer_id == withdrawing.id).values(type="page_view")
        )

    report = await exporter.run()
    events = next(t for t in report.tables if t.table == "events").as_json()
    assert (events["upserts"], events["deletes"]) == (0, 3)
    with await _warehouse(engine, out, tmp_path) as db:
        owners = {row[0] for row in db.execute("SELECT customer_id FROM events").fetchall()}
    assert owners == {str(kept.id)}


async def test_a_new_target_gets_no_deletions_of_rows_it_never_had(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    kept, erased = await add_person(engine), await add_person(engine)
    await add_person(engine, analytics=False)  # whose events no export holds
    assert await Erasure(create_sessionmaker(engine), TOMBSTONES).forget(erased.id) is not None
    out = tmp_path / "new"
    report = await Exporter(engine, str(out), None).run()
    assert {t.table: t.as_json()["deletes"] for t in report.tables} == dict.fromkeys(
        (t.table for t in report.tables), 0
    )
    with await _warehouse(engine, out, tmp_path) as db:
        owners = {row[0] for row in db.execute("SELECT customer_id FROM events").fetchall()}
    assert owners == {str(kept.id)}


async def test_events_of_a_customer_whose_grant_an_unmerge_took_away_leave_the_export(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # An outside check: a grant made while two people were merged counts for neither
    # once they are split, so the unmerge deleted the statement; the export withdrew
    # events only for a stored "no", and the warehouse kept them (verify: MISMATCH).
    sessions = create_sessionmaker(engine)
    kept, split = await add_person(engine, analytics=None), await add_person(engine, analytics=None)
    await merge_customers(sessions, kept.id, split.id, "same person")
    await ConsentStore(sessions).record(kept.id, Purpose.ANALYTICS, True, "preference-centre")
    out = tmp_path / "out"
    exporter = Exporter(engine, str(out), None)
    first = next(t for t in (await exporter.run()).tables if t.table == "events").as_json()
    assert first["upserts"] == 6

    await unmerge_customer(sessions, split.source, split.external_id)
    await exporter.run()
    with await _warehouse(engine, out, tmp_path) as db:
        assert db.execute("SELECT customer_id FROM events").fetchall() == []

"""Erasure against concurrent linking, on Postgres: the tombstone check of a batch and its
write are one step as far as an erasure is concerned, whichever commits first.

SQLite has a single writer: there the transactions alone serialise, and the ordinary
erased-record tests (test_import, test_privacy) cover it.  Each test holds one side at
a known point (an event, or a transaction holding the key locks); where the other side
must wait, Postgres is asked whether it waits on an advisory lock: no sleeps stand in
for order.  Against the code before the fix, the waiting tests find no advisory wait
(the erasure took no key locks; the import even deadlocked with it), and the others
find the erased customer re-created.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from adapters.protocols import CrmAdapter
from adapters.records import CrmContact
from adapters.transport.breaker import CircuitBreaker
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.db.models import Customer, Identity
from gateway.errors import Erased as ErasedError
from gateway.identity import DEFAULT_CONFIG, Resolver, prepare
from gateway.identity.linkage import resolution
from gateway.identity.linkage.resolution import _lock_keys
from gateway.ingest.importer import import_file
from gateway.ingest.sync import SyncReport, _SourceSync
from gateway.ingest.webhook_payloads import InboundEvent
from gateway.ingest.webhooks import WebhookIngest
from gateway.privacy.erasure import Erasure
from gateway.privacy.tombstones import Tombstones
from gateway.profiles.customers import CustomerDraft, CustomerStore, IdentityDraft
from gateway.profiles.profile_cache import CachedCustomers
from gateway.upstreams.cache import build_cache
from tests.conftest import recorded_statements

_WAITING = text(
    "SELECT wait_event FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
)


@pytest.fixture(scope="module")
def migrated(postgres_url: str) -> str:
    upgrade(postgres_url)
    return postgres_url


@pytest.fixture
async def engine(migrated: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


async def _blocked_on(engine: AsyncEngine, task: asyncio.Task[Any]) -> str | None:
    """What the task's backend waits for once it blocks on a lock; None if it finished
    without blocking.  Polls Postgres for the wait (bounded), never guesses a delay."""
    async with engine.connect() as watcher:
        for _ in range(500):
            if task.done():
                return None
            waits = list(await watcher.scalars(_WAITING))
            # pg_stat_activity is a snapshot kept until the transaction ends: end it, so
            # the next look sees the backends as they are then.
            await watcher.rollback()
            if waits:
                return str(waits[0])
            await asyncio.sleep(0.02)
    raise AssertionError("neither blocked nor finished within 10 s")


async def _customer_of(sessions: async_sessionmaker[AsyncSession], source: str) -> uuid.UUID:
    async with sessions() as session:
        found = await session.scalar(
            select(Identity.customer_id).where(
                Identity.source == source, Identity.external_id == "1"
            )
        )
    assert found is not None
    return found


async def _count(
    sessions: async_sessionmaker[AsyncSession], tag: str, source: str
) -> tuple[int, int]:
    """(customers with the erased address, identities of the erased source id)."""
    async with sessions() as session:
        customers = await session.scalar(
            select(func.count())
            .select_from(Customer)
            .where(Customer.email == f"gone.{tag}@corp.com")
        )
        identities = await session.scalar(
            select(func.count())
            .select_from(Identity)
            .where(Identity.source == source, Identity.external_id == "1")
        )
    return int(customers or 0), int(identities or 0)


def _held(release: asyncio.Event, reached: asyncio.Event, step: Any) -> Any:
    """``step`` that first signals ``reached`` and waits for ``release``."""

    async def held(*args: Any, **kwargs: Any) -> Any:
        reached.set()
        await release.wait()
        return await step(*args, **kwargs)

    return held


@dataclass(frozen=True)
class Known:
    """A customer imported from ``source`` (record "1", ``gone.{tag}@corp.com``)."""

    tag: str
    source: str
    key: bytes
    path: Path
    customer_id: uuid.UUID


async def _known(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, **imported: Any
) -> Known:
    """One customer from a one-row file (``imported`` goes to ``import_file``)."""
    tag = uuid.uuid4().hex[:8]
    source = f"race{tag}"
    path = tmp_path / "people.csv"
    path.write_text(f"external_id,email\n1,gone.{tag}@corp.com\n")
    await import_file(sessions, path, source, **imported)
    customer_id = await _customer_of(sessions, source)
    return Known(tag, source, f"key-{tag}".encode(), path, customer_id)


async def _erasure_paused(
    sessions: async_sessionmaker[AsyncSession],
    key: bytes,
    customer_id: uuid.UUID,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[asyncio.Task[Any], asyncio.Event]:
    """An erasure, once paused inside its transaction just before it writes the
    tombstones (past every lock it takes, nothing of its work visible to others yet),
    with the event it waits for (release)."""
    erasing = Tombstones(key)
    reached, release = asyncio.Event(), asyncio.Event()
    monkeypatch.setattr(erasing, "blocked", _held(release, reached, erasing.blocked))
    erasure = asyncio.create_task(Erasure(sessions, erasing).forget(customer_id))
    await reached.wait()
    return erasure, release


async def test_an_import_waits_for_an_erasure_in_flight_and_skips_its_record(
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tag = uuid.uuid4().hex[:8]
    source = f"race{tag}"
    key = f"key-{tag}".encode()
    path = tmp_path / "people.csv"
    path.write_text(
        "external_id,email,first_name,last_name\n"
        f"1,gone.{tag}@corp.com,Gus,Gone\n"
        f"2,kept.{tag}@corp.com,Ida,Kept\n"
    )
    first = await import_file(sessions, path, source, batch_size=2, tombstones=Tombstones(key))
    assert first.created == 2
    customer_id = await _customer_of(sessions, source)

    forget, release = await _erasure_paused(sessions, key, customer_id, monkeypatch)

    # The same file again, as a re-run of the import would: record 1 is the erased one.
    again = asyncio.create_task(
        import_file(sessions, path, source, batch_size=2, tombstones=Tombstones(key))
    )
    try:
        waited_on = await _blocked_on(engine, again)
    finally:
        release.set()
        erased = await forget
    summary = await again

    assert erased is not None
    assert erased.tombstones == 2
    assert await _count(sessions, tag, source) == (0, 0)  # not re-created
    assert (summary.read, summary.erased, summary.updated, summary.created) == (2, 1, 1, 0)
    assert waited_on == "advisory"  # on the erasure's key locks, not by luck of timing


async def test_an_erasure_committed_after_a_batch_was_read_still_blocks_its_record(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = await _known(sessions, tmp_path)
    tag, source, key, path = known.tag, known.source, known.key, known.path

    # The re-import stops after reading and hashing its batch, at its link transaction's
    # first step: the window in which the erasure now runs to its commit.
    reached, release = asyncio.Event(), asyncio.Event()
    monkeypatch.setattr(resolution, "_lock_keys", _held(release, reached, resolution._lock_keys))
    again = asyncio.create_task(import_file(sessions, path, source, tombstones=Tombstones(key)))
    try:
        await reached.wait()
        erased = await Erasure(sessions, Tombstones(key)).forget(known.customer_id)
    finally:
        release.set()
    summary = await again

    assert erased is not None
    assert await _count(sessions, tag, source) == (0, 0)  # not re-created
    assert (summary.read, summary.erased, summary.created) == (1, 1, 0)


async def test_an_upsert_waits_for_an_erasure_in_flight_and_is_refused(
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    known = await _known(sessions, tmp_path)
    tag, source, key = known.tag, known.source, known.key
    forget, release = await _erasure_paused(sessions, key, known.customer_id, monkeypatch)

    # A new address, but the erased customer's source id: no row to update by email.
    draft = CustomerDraft(
        email=f"new.{tag}@corp.com",
        identities=(IdentityDraft(source=source, external_id="1"),),
    )
    upsert = asyncio.create_task(CustomerStore(sessions, Tombstones(key)).upsert(draft))
    try:
        waited_on = await _blocked_on(engine, upsert)
    finally:
        release.set()
        await forget
    with pytest.raises(ErasedError):
        await upsert

    assert await _count(sessions, tag, source) == (0, 0)  # not re-created
    assert waited_on == "advisory"


async def test_a_webhook_waits_for_an_erasure_in_flight_and_answers_erased(
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    known = await _known(sessions, tmp_path)
    tag, source, key = known.tag, known.source, known.key
    forget, release = await _erasure_paused(sessions, key, known.customer_id, monkeypatch)

    # Federation, cache and notifications are only used after a commit, which an
    # erased event never reaches (and a failure there is logged, not raised).
    ingest = WebhookIngest(engine, None, None, None, Tombstones(key))  # type: ignore[arg-type]
    event = InboundEvent(
        source=source,
        event_id=f"e{tag}",
        type="contact.propertyChange",
        occurred_at=datetime.now(UTC),
        record={"external_id": "1", "email": f"gone.{tag}@corp.com"},
    )
    (item,) = ingest.prepare([event])
    delivery = asyncio.create_task(ingest.ingest(item))
    try:
        waited_on = await _blocked_on(engine, delivery)
    finally:
        release.set()
        await forget

    assert (await delivery).status == "erased"
    assert await _count(sessions, tag, source) == (0, 0)  # not re-created
    assert waited_on == "advisory"


class _Feed:
    """A CRM of fixed contacts: the sync reads only its change feed, whose batch the
    test must hold at a chosen step (a real upstream cannot be paused there)."""

    name = "crm"
    kind: Literal["crm"] = "crm"

    def __init__(self, *contacts: CrmContact) -> None:
        self._contacts = contacts
        self.breaker = CircuitBreaker(self.name, failure_threshold=3, reset_timeout_s=1)

    async def aclose(self) -> None:
        return None

    async def fetch_contact(self, external_id: str) -> CrmContact | None:
        return (await self.fetch_contacts([external_id])).get(external_id)

    async def fetch_contact_by_email(self, email: str) -> CrmContact | None:
        return (await self.fetch_contacts_by_email([email])).get(email)

    async def fetch_contacts(self, external_ids: Sequence[str]) -> Mapping[str, CrmContact]:
        return {c.external_id: c for c in self._contacts if c.external_id in external_ids}

    async def fetch_contacts_by_email(self, emails: Sequence[str]) -> Mapping[str, CrmContact]:
        return {c.email: c for c in self._contacts if c.email is not None and c.email in emails}

    async def count_changed_since(self, since: datetime) -> int:
        return len(self._contacts)

    async def changed_since(self, since: datetime) -> AsyncIterator[CrmContact]:
        for contact in self._contacts:
            yield contact


async def test_a_sync_batch_read_before_an_erasure_committed_is_reported_erased(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = await _known(sessions, tmp_path)
    tag, source, key = known.tag, known.source, known.key
    feed: CrmAdapter = _Feed(
        CrmContact(
            source=source,
            external_id="1",
            email=f"gone.{tag}@corp.com",
            updated_at=datetime.now(UTC),
        )
    )

    # As for the import: the sync's batch stops at its link transaction's first step.
    reached, release = asyncio.Event(), asyncio.Event()
    monkeypatch.setattr(resolution, "_lock_keys", _held(release, reached, resolution._lock_keys))
    report = SyncReport(source=source)
    syncing = _SourceSync(sessions, Resolver(sessions), feed, 500, Tombstones(key))
    running = asyncio.create_task(syncing.run(report))
    try:
        await reached.wait()
        assert await Erasure(sessions, Tombstones(key)).forget(known.customer_id) is not None
    finally:
        release.set()
    await running

    assert await _count(sessions, tag, source) == (0, 0)  # not re-created
    assert (report.read, report.erased, report.created, report.updated) == (1, 1, 0, 0)
    assert "erased 1;" in report.line()


async def test_an_erasure_waits_for_a_batch_holding_the_customers_keys(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, tmp_path: Path
) -> None:
    known = await _known(sessions, tmp_path)
    tag, source = known.tag, known.source
    # A batch bringing a new source id for the same address, stopped after its lock step.
    record = prepare(
        {"external_id": "other", "email": f"GONE.{tag}@corp.com"}, source, DEFAULT_CONFIG
    )

    async with engine.connect() as batch, batch.begin():
        await _lock_keys(batch, [record])
        forget: asyncio.Task[Any] = asyncio.create_task(
            Erasure(sessions, Tombstones(b"k")).forget(known.customer_id)
        )
        assert await _blocked_on(engine, forget) == "advisory"
    assert await asyncio.wait_for(forget, 10) is not None
    assert await _count(sessions, tag, source) == (0, 0)


async def test_a_profile_read_overtaken_by_an_erasure_is_not_cached(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    known = await _known(sessions, tmp_path)
    email = f"gone.{known.tag}@corp.com"
    profiles = CachedCustomers(CustomerStore(sessions), build_cache("memory://"), ttl_s=60)
    profile = await profiles.store.get_by_email(email)
    assert profile is not None
    async with engine.connect() as locker:
        await locker.execute(text("BEGIN"))
        await locker.execute(text("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE"))
        reading = asyncio.create_task(profiles.get_by_email(email))
        assert await _blocked_on(engine, reading) is not None
        # The profile is dropped while that read waits (as an erasure drops it).
        await profiles.forget(profile)
        await locker.rollback()
    assert (await reading) == profile  # it began first: it may answer with what it read
    with recorded_statements(engine.sync_engine) as reads:
        await profiles.get_by_email(email)
    # ...but not leave it cached: the next read goes to the database.
    assert any("FROM customers" in s for s in reads), reads

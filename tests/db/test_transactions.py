"""Retried transactions: what counts as transient, deadlocks provoked on purpose on a real
Postgres (retried, then stored once), a webhook answered 503 only when it was not
stored, and concurrent merges in opposite orders."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.db.models import Attribute, Customer, Event, utcnow
from gateway.db.retries import NO_RETRY, RetryPolicy, retry_transaction, transient_reason
from gateway.errors import InvalidInput
from gateway.identity.linkage.resolution import _LOCK_NAMESPACE, key_stripe
from gateway.identity.merges import merge_customers
from gateway.settings import load_settings
from tests.conftest import unique_email
from tests.in_process import asgi, lifespan
from tests.ingest.webhook_requests import BASE, realtime_app, shopify_request

# --- what is transient -------------------------------------------------------------------


def test_a_locked_sqlite_database_is_transient_and_other_errors_are_not(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder, other = sqlite3.connect(path, timeout=0), sqlite3.connect(path, timeout=0)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as locked:
        other.execute("BEGIN IMMEDIATE")
    holder.rollback()
    with pytest.raises(sqlite3.OperationalError) as missing:
        other.execute("SELECT * FROM nowhere")
    holder.close()
    other.close()
    assert transient_reason(locked.value) == "database_locked"
    wrapped = OperationalError("BEGIN", {}, locked.value)  # as SQLAlchemy raises it
    assert transient_reason(wrapped) == "database_locked"
    assert transient_reason(missing.value) is None
    assert transient_reason(ValueError("deadlock")) is None


def test_waits_grow_exponentially_with_full_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=8, base_s=0.1, cap_s=1.0)
    highest: Callable[[float, float], float] = lambda low, high: high  # noqa: E731
    assert [policy.delay(n, highest) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert {policy.delay(3, lambda low, high: low)} == {0.0}


# --- deadlocks on a real Postgres ----------------------------------------------------------


@pytest.fixture
def postgres(postgres_url: str) -> str:
    upgrade(postgres_url)  # its own event loop: a sync fixture, outside the test's
    return postgres_url


@pytest.fixture
async def engine(postgres: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres)
    yield engine
    await engine.dispose()


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def test_two_transactions_locking_in_opposite_orders_both_finish(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """A deadlock made certain (each holds its first lock before asking for the second):
    Postgres aborts one, which runs again once the other has committed."""
    first_locks = asyncio.Barrier(2)
    attempts: list[str] = []

    async def work(name: str, order: tuple[int, int]) -> str:
        attempts.append(name)
        async with engine.begin() as connection:
            await connection.execute(text("SELECT pg_advisory_xact_lock(7, :k)"), {"k": order[0]})
            if attempts.count(name) == 1:
                await first_locks.wait()
            await connection.execute(text("SELECT pg_advisory_xact_lock(7, :k)"), {"k": order[1]})
        return name

    policy = RetryPolicy(attempts=3, base_s=0.01, cap_s=0.05)
    with caplog.at_level(logging.WARNING, "gateway.db.retries"):
        done = await asyncio.gather(
            retry_transaction(lambda: work("a", (1, 2)), "test_pair", policy),
            retry_transaction(lambda: work("b", (2, 1)), "test_pair", policy),
        )
    assert list(done) == ["a", "b"]  # gather answers a list (typeshed says tuple)
    assert len(attempts) == 3  # exactly one of the two ran twice
    (retried,) = [r for r in caplog.records if r.getMessage() == "transaction retried"]
    fields = [getattr(retried, name) for name in ("operation", "reason", "attempt")]
    assert fields == ["test_pair", "deadlock", 1]


async def test_without_retries_the_same_deadlock_reaches_the_caller(engine: AsyncEngine) -> None:
    first_locks = asyncio.Barrier(2)

    async def work(order: tuple[int, int]) -> None:
        async with engine.begin() as connection:
            await connection.execute(text("SELECT pg_advisory_xact_lock(8, :k)"), {"k": order[0]})
            await first_locks.wait()
            await connection.execute(text("SELECT pg_advisory_xact_lock(8, :k)"), {"k": order[1]})

    outcomes = await asyncio.gather(
        retry_transaction(lambda: work((1, 2)), "test_pair", NO_RETRY),
        retry_transaction(lambda: work((2, 1)), "test_pair", NO_RETRY),
        return_exceptions=True,
    )
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failures) == 1
    assert transient_reason(failures[0]) == "deadlock"


def _customer_record() -> tuple[dict[str, Any], list[int]]:
    """A Shopify customer whose key locks span at least two stripes, and those stripes."""
    while True:
        shop_id = uuid.uuid4().int % 10**12 + 1
        email = unique_email("deadlock")
        keys = {f"id:shopify:{shop_id}", f"email:{email}"}
        stripes = sorted({key_stripe(key) for key in keys})
        if len(stripes) > 1:
            payload = {"id": shop_id, "email": email, "first_name": "Ada"}
            return payload, stripes


async def _waiting_on(admin: asyncpg.Connection, stripe: int) -> None:
    """Until some backend waits for advisory lock (namespace, stripe): an event, polled."""
    query = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND classid = $1 AND objid = $2"
        # This database's: another test run on the server may wait for the same stripe.
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    for _ in range(3000):  # Postgres has no notification for a lock wait
        if await admin.fetchval(query, _LOCK_NAMESPACE, stripe):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("nobody waited for the lock")


async def _deadlocked_webhook(postgres: str, attempts: int) -> tuple[httpx.Response, str]:
    """Send one webhook while another transaction takes the record's key locks in the
    opposite order: the webhook holds the lower stripe and waits for the higher one,
    which the other holds before it asks for the lower.  The other waits 30 s before it
    checks for a deadlock, so the webhook's transaction (1 s) is the one aborted."""
    payload, stripes = _customer_record()
    settings = load_settings(database_url=postgres, cache_url="memory://")
    app = realtime_app(settings.model_copy(update={"db_retry_attempts": attempts}))
    request = shopify_request(payload, topic="customers/update")
    other = await asyncpg.connect(_dsn(postgres))
    watcher = await asyncpg.connect(_dsn(postgres))
    try:
        async with (
            lifespan(app),
            httpx.AsyncClient(transport=asgi(app), base_url=BASE) as client,
        ):
            transaction = other.transaction()
            await transaction.start()
            await other.execute("SET LOCAL deadlock_timeout = '30s'")
            await other.execute(
                "SELECT pg_advisory_xact_lock($1, $2)", _LOCK_NAMESPACE, stripes[-1]
            )
            sending = asyncio.create_task(client.post(**request))
            await _waiting_on(watcher, stripes[-1])
            # Granted once the webhook's transaction is aborted and lets it go.
            await other.execute("SELECT pg_advisory_xact_lock($1, $2)", _LOCK_NAMESPACE, stripes[0])
            await transaction.commit()
            response = await sending
    finally:
        await other.close()
        await watcher.close()
    return response, request["headers"]["X-Shopify-Webhook-Id"]


async def _stored(engine: AsyncEngine, event_id: str) -> int:
    async with engine.connect() as connection:
        return int(
            await connection.scalar(
                select(func.count()).select_from(Event).where(Event.event_id == event_id)
            )
            or 0
        )


async def test_a_deadlocked_webhook_is_retried_and_stored_once(
    postgres: str, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "gateway.db.retries"):
        response, event_id = await _deadlocked_webhook(postgres, attempts=3)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "processed"
    retried = [r for r in caplog.records if r.getMessage() == "transaction retried"]
    assert [(r.__dict__["operation"], r.__dict__["reason"]) for r in retried] == [
        ("webhook_ingest", "deadlock")
    ]
    assert "@" not in caplog.text  # no e-mail address (no data at all) in the warning
    assert await _stored(engine, event_id) == 1


async def test_a_webhook_that_could_not_be_stored_is_503_with_retry_after(
    postgres: str, engine: AsyncEngine
) -> None:
    response, event_id = await _deadlocked_webhook(postgres, attempts=1)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"] == "busy"
    assert await _stored(engine, event_id) == 0  # 5xx: nothing was kept


# --- merges ----------------------------------------------------------------------------------


async def _customers(sessions: async_sessionmaker[AsyncSession], count: int) -> list[uuid.UUID]:
    """Customers that each hold the same observation (one source, value and time)."""
    ids = [uuid.uuid4() for _ in range(count)]
    seen = datetime(2026, 1, 1, tzinfo=UTC)
    async with sessions.begin() as session:
        session.add_all(Customer(id=i, created_at=utcnow(), updated_at=utcnow()) for i in ids)
        await session.flush()
        session.add_all(
            Attribute(customer_id=i, name="first_name", value="Ada", source="crm", observed_at=seen)
            for i in ids
        )
    return ids


async def test_merges_in_opposite_orders_at_once_finish_without_error(
    engine: AsyncEngine,
) -> None:
    sessions = create_sessionmaker(engine)
    ids = await _customers(sessions, 24)
    pairs = list(zip(ids[::2], ids[1::2], strict=True))
    merges = [merge_customers(sessions, a, b, "storm") for a, b in pairs] + [
        merge_customers(sessions, b, a, "storm") for a, b in pairs
    ]
    outcomes = await asyncio.gather(*merges, return_exceptions=True)
    survivors = [o for o in outcomes if isinstance(o, uuid.UUID)]
    losers = [o for o in outcomes if not isinstance(o, uuid.UUID)]
    # Each pair merged once; the other order found its customer already gone.
    assert len(survivors) == len(pairs)
    assert all(isinstance(o, InvalidInput) for o in losers), losers
    assert all(str(o) == "Unknown customer id" for o in losers)
    async with sessions() as session:
        left = set(await session.scalars(select(Customer.id).where(Customer.id.in_(ids))))
        observations = await session.scalar(
            select(func.count()).select_from(Attribute).where(Attribute.customer_id.in_(ids))
        )
    assert left == set(survivors)
    assert observations == len(pairs)  # the shared observation kept once per merged pair

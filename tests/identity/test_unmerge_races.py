"""Unmerges while the linker writes: a split identity's own updates end with it.

A customer with many merged-in identities is split apart, identity by identity, while
import batches update some of those identities with new addresses. Whichever commits
first, each split-off customer ends with its identity's newest address, and the
survivor holds none of them (an unsubscribe for it would otherwise withdraw the wrong
person). On SQLite each of them now reads one snapshot and cannot write on it once
someone else committed (gateway/identity/linkage/resolution.lock_keys): before, each read
outside any transaction, and an unmerge that read before a batch committed and wrote
after it left the batch's new address with the survivor."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Attribute, Customer, Identity
from gateway.db.retries import RetryPolicy, retry_transaction
from gateway.identity import Resolver, merge_customers, prepare, unmerge_customer
from gateway.identity.linkage import repository
from gateway.identity.linkage.resolution import lock_keys
from tests.identity.test_identity_db import person, sessions  # noqa: F401

_MERGED = 40  # identities merged into the survivor, then split off one by one
_BATCHES = 3
_BATCH = 1000  # records a batch: new people, and _UPDATED of the merged identities
_UPDATED = 5


def _someone(tag: str) -> dict[str, Any]:
    """A person no other record resembles (their own names, date, street and town)."""
    t = uuid.uuid4().hex
    year, month, day = (
        1940 + int(t[12:14], 16) % 60,
        1 + int(t[14], 16) % 9,
        10 + int(t[15], 16) % 10,
    )
    return person(
        first_name=f"F{t[:6]}",
        last_name=f"L{t[6:12]}",
        date_of_birth=f"{year}-0{month}-{day}",
        address=f"{int(t[16:19], 16)} {t[19:24]} Street",
        city=f"C{t[24:28]}",
        postcode=str(1000 + int(t[28:31], 16) % 9000),
        email=f"{tag}.{t[:10]}@corp.example.com",
    )


async def test_updates_of_identities_being_split_off_end_with_them(
    sessions: async_sessionmaker[AsyncSession],  # noqa: F811
) -> None:
    resolver = Resolver(sessions)
    ann = await resolver.link_one(_someone("ann"), "crm")
    merged = []
    for n in range(_MERGED):
        record = _someone(f"p{n}")
        decision = await resolver.link_one(record, "crm")
        await merge_customers(sessions, ann.customer_id, decision.customer_id, "looked alike")
        merged.append(record)
    newest: dict[str, str] = {}
    batches = []
    for b in range(_BATCHES):
        rows = [
            prepare(_someone(f"new{b}"), "imp", resolver.config) for _ in range(_BATCH - _UPDATED)
        ]
        for n in range(_UPDATED):
            record = merged[(b * _UPDATED + n) % _MERGED]
            address = f"upd{b}.{uuid.uuid4().hex[:10]}@corp.example.com"
            newest[record["external_id"]] = address
            rows.append(prepare({**record, "email": address}, "crm", resolver.config))
        batches.append(rows)
    importing = True

    split: list[uuid.UUID] = []

    async def split_all() -> None:
        for record in merged:
            if not importing:
                break
            split.append(await unmerge_customer(sessions, "crm", record["external_id"]))

    splitting = asyncio.create_task(split_all())
    for rows in batches[:-1]:
        await resolver.link(rows)
    assert split, "no unmerge committed between the batches"
    await resolver.link(batches[-1])
    importing = False
    await asyncio.wait_for(splitting, 120)
    wrong = []
    async with sessions() as session:
        for external_id, address in newest.items():
            owner = await session.scalar(
                select(Identity.customer_id).where(
                    Identity.source == "crm", Identity.external_id == external_id
                )
            )
            holders = set(
                await session.scalars(
                    select(Attribute.customer_id).where(
                        Attribute.name == "email", Attribute.value == address
                    )
                )
            )
            email = await session.scalar(select(Customer.email).where(Customer.id == owner))
            if owner != ann.customer_id and (email != address or holders != {owner}):
                wrong.append((external_id, email == address, ann.customer_id in holders))
    assert not wrong, wrong


def _sqlite_file(database_url: str) -> str:
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's own transaction handling")
    return database_url.split(":///", 1)[1]


async def test_on_sqlite_work_not_retried_holds_the_write_lock_from_its_keys(
    sessions: async_sessionmaker[AsyncSession],  # noqa: F811
    database_url: str,
) -> None:
    """Outside a retried transaction (``GATEWAY_DB_RETRY_ATTEMPTS=1``) ``lock_keys``
    takes SQLite's write lock at once: another writer cannot begin until it commits."""
    other = _other_writer(database_url)
    try:
        async with sessions.begin() as session:
            await lock_keys(await session.connection(), ["email:someone@example.com"])
            _refused(other)
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_on_sqlite_a_first_attempt_fails_on_a_commit_since_and_a_retry_takes_the_lock(
    sessions: async_sessionmaker[AsyncSession],  # noqa: F811
    database_url: str,
) -> None:
    """The first attempt of a retried transaction only begins one: others still write
    while it reads, and its write fails at once when someone committed since (it is not
    made on what it read before); the retry reads and writes under the write lock."""
    other = _other_writer(database_url)
    attempts: list[bool] = []

    async def work() -> int:
        async with sessions.begin() as session:
            connection = await session.connection()
            await lock_keys(connection, ["email:someone@example.com"])
            first = await connection.scalar(select(func.count()).select_from(Customer))
            if not attempts:
                # Another writer commits between this attempt's read and its write.
                other.execute("UPDATE alembic_version SET version_num = version_num")
            else:
                _refused(other)
            attempts.append(True)
            await connection.execute(text("UPDATE customers SET id = id WHERE 0"))
            return int(first or 0)

    try:
        await retry_transaction(work, "test", RetryPolicy(attempts=2, base_s=0.0))
    finally:
        other.close()
    assert len(attempts) == 2


async def test_a_batch_matching_customers_being_split_one_by_one_goes_through(
    sessions: async_sessionmaker[AsyncSession],  # noqa: F811
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch of records each like one of 30 Bobs merged into their Anns (matched by
    name, birth date and place alone), while the Bobs are split off one after another and
    each attempt of the batch takes a while between its reads and its locks: an attempt
    that finds a Bob moved holds every record it relied on from the next attempt's start,
    so the splits still to come wait for the batch; it does not run out of retries."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: an unmerge cannot commit inside the batch")
    resolver = Resolver(sessions)
    bobs = []
    for _ in range(30):
        tag = uuid.uuid4().hex[:6]
        postcode = f"{1000 + int(tag, 16) % 9000}"
        place = {"address": f"{tag} Rd", "city": f"C{tag}", "postcode": postcode}
        ann = await resolver.link_one(
            person(first_name="Annabel", date_of_birth="1961-07-02", **place), "crm"
        )
        bob = person(first_name="Bartholomew", date_of_birth="1983-11-23", **place)
        decision = await resolver.link_one(bob, "crm")
        await merge_customers(sessions, ann.customer_id, decision.customer_id, "looked alike")
        bobs.append(bob)
    typos = [{**b, "external_id": uuid.uuid4().hex, "first_name": "Bartholomeu"} for b in bobs]
    batch = [prepare(typo, "shop", resolver.config) for typo in typos]
    linking = True

    async def split_all() -> int:
        done = 0
        for bob in bobs:
            if not linking:
                break
            await unmerge_customer(sessions, "crm", bob["external_id"])
            done += 1
        return done

    real = repository.lock_customers  # type: ignore[attr-defined]  # patched where it is used

    async def slow(connection: Any, ids: Any, **options: Any) -> Any:
        await asyncio.sleep(0.05)  # a large batch's scoring, between its reads and locks
        return await real(connection, ids, **options)

    monkeypatch.setattr(repository, "lock_customers", slow)
    splitting = asyncio.create_task(split_all())
    await asyncio.sleep(0.02)
    try:
        decisions = await asyncio.wait_for(resolver.link(batch), 120)
    finally:
        linking = False
        split = await splitting
    assert split, "no Bob was split off during the batch"
    assert {d.rule for d in decisions} == {"probabilistic"}


def _other_writer(database_url: str) -> sqlite3.Connection:
    """Another writer of the test database, patient (the session's app may be writing
    its audit log): only ``_refused`` does not wait."""
    return sqlite3.connect(_sqlite_file(database_url), timeout=5, isolation_level=None)


def _refused(other: sqlite3.Connection) -> None:
    """``other`` cannot begin writing now: someone holds the write lock."""
    other.execute("PRAGMA busy_timeout = 0")
    try:
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            other.execute("BEGIN IMMEDIATE")
    finally:
        other.execute("PRAGMA busy_timeout = 5000")

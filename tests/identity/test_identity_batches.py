"""Linking across import batches: a record sees what earlier batches of the same import
wrote (its block keys, stored records, owners and observations), on SQLite and Postgres."""

from __future__ import annotations

import csv
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.bulk import insert_rows, rows_where_in
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.identity_models import IdentityLink, IdentityReview
from gateway.db.models import Attribute, Customer, Identity, utcnow
from gateway.identity.config import IdentityConfig
from gateway.identity.observations import ObservationRow, insert_split_observations
from gateway.ingest.importer import import_file
from tests.identity.test_identity_db import person, surname


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


async def test_a_duplicate_in_a_later_batch_links_to_the_earlier_batchs_customer(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """Batches of two: Harriet in the first, strangers around her, her typo'd duplicate in
    the last batch.  Nothing but the probabilistic match (no e-mail, no phone) joins them,
    so the later batch must have found the first batch's block keys and records."""
    harriet = person()
    strangers = [
        person(
            first_name=name,
            last_name=surname(),
            date_of_birth=dob,
            address=f"{i + 7} Other Street",
            city="Elsewhere",
            postcode=f"{i + 2}800",
        )
        for i, (name, dob) in enumerate(
            [("Oswald", "1931-07-02"), ("Prudence", "1944-11-23"), ("Quentin", "1959-01-30")]
        )
    ]
    typo = {**harriet, "external_id": "dup-" + uuid.uuid4().hex, "first_name": "Hariet"}
    typo["address"] = "42 Salkauskas Cres"
    rows = [harriet, *strangers, typo]
    path = tmp_path / "people.csv"
    _write(path, rows)
    source = "batches-" + uuid.uuid4().hex[:8]

    summary = await import_file(sessions, path, source, batch_size=2)

    assert (summary.read, summary.created, summary.linked) == (5, 4, 1)
    async with sessions() as session:
        owners = dict(
            (
                await session.execute(
                    select(Identity.external_id, Identity.customer_id).where(
                        Identity.source == source
                    )
                )
            ).all()
        )
        rule = await session.scalar(
            select(IdentityLink.rule).where(
                IdentityLink.customer_id == owners[typo["external_id"]],
                IdentityLink.identity_id
                == select(Identity.id)
                .where(Identity.source == source, Identity.external_id == typo["external_id"])
                .scalar_subquery(),
            )
        )
        first_names = set(
            (
                await session.scalars(
                    select(Attribute.value).where(
                        Attribute.customer_id == owners[harriet["external_id"]],
                        Attribute.name == "first_name",
                    )
                )
            ).all()
        )
    assert owners[typo["external_id"]] == owners[harriet["external_id"]]
    assert rule == "probabilistic"
    people = {owners[s["external_id"]] for s in strangers} | {owners[harriet["external_id"]]}
    assert len(people) == 4
    # Both spellings are observations of the one customer (the later batch's written to
    # a customer the earlier batch created).
    assert first_names == {"Harriet", "Hariet"}


async def test_rows_where_in_reads_every_row_asked_for_in_id_order_per_key(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """More values than one IN list takes (SQLite chunks them), a second condition, and
    the order asked for within each key, as the linker's reads rely on."""
    now = utcnow()
    customers = [uuid.uuid4() for _ in range(2100)]
    async with sessions.begin() as session:
        connection = await session.connection()
        await insert_rows(
            connection,
            Customer.__table__,  # type: ignore[arg-type]
            [{"id": c, "created_at": now, "updated_at": now} for c in customers],
        )
        await insert_rows(
            connection,
            Attribute.__table__,  # type: ignore[arg-type]
            [
                {
                    "customer_id": c,
                    "name": name,
                    "value": f"{name}-{i}",
                    "source": "t",
                    "observed_at": now,
                }
                for c in customers
                for i, name in enumerate(("last_name", "city", "first_name"))
            ],
        )
    wanted = customers[:2050]
    async with sessions.begin() as session:
        connection = await session.connection()
        rows = await rows_where_in(
            connection,
            (Attribute.customer_id, Attribute.name, Attribute.value),
            Attribute.customer_id,
            [*wanted, *wanted[:10]],  # repeats are asked for once
            also=(Attribute.name, ("first_name", "last_name")),
            order_by=Attribute.id,
        )
    by_customer: dict[uuid.UUID, list[str]] = {}
    for customer_id, name, _ in rows:
        by_customer.setdefault(customer_id, []).append(name)
    assert set(by_customer) == set(wanted)
    # Written last_name first: read back in that (id) order, the city left out.
    assert all(names == ["last_name", "first_name"] for names in by_customer.values())


async def _customer_with_observations(
    sessions: async_sessionmaker[AsyncSession], count: int
) -> list[ObservationRow]:
    """One stored customer and ``count`` observations of it, none stored yet."""
    now = utcnow()
    customer = uuid.uuid4()
    async with sessions.begin() as session:
        await session.execute(insert(Customer).values(id=customer, created_at=now, updated_at=now))
    return [(customer, "city", f"Town {i}", "t", now, None) for i in range(count)]


async def test_observations_believed_new_but_stored_meanwhile_are_stored_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The import copies a stored customer's observations it did not find as they are; if
    one was written after it looked, the copy gives way to the conflict-skipping insert,
    in the same transaction, and every observation is stored once."""
    rows = await _customer_with_observations(sessions, 600)  # enough for the copy path
    async with sessions.begin() as session:
        connection = await session.connection()
        await insert_split_observations(connection, [], rows[:1])  # "meanwhile"
    async with sessions.begin() as session:
        connection = await session.connection()
        await insert_split_observations(connection, [], rows, checked=True)
        # The transaction is still usable after the copy gave way.
        await connection.execute(select(func.count()).select_from(Attribute))
    async with sessions() as session:
        stored = (
            await session.scalars(
                select(Attribute.value).where(Attribute.customer_id == rows[0][0])
            )
        ).all()
    assert sorted(map(str, stored)) == sorted(str(row[2]) for row in rows)


async def test_a_second_source_for_many_stored_customers_stores_each_observation_once(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """A batch whose records join hundreds of stored customers (the copy path for their
    observations), then the same file again: nothing stored twice, nothing lost."""
    tag = uuid.uuid4().hex[:8]
    people = [
        {"external_id": f"p{i}", "email": f"p{i}.{tag}@corp.com", "first_name": "Ann"}
        for i in range(300)
    ]
    first, second = tmp_path / "crm.csv", tmp_path / "shop.csv"
    _write(first, people)
    _write(
        second,
        [{**p, "first_name": "Anne", "city": f"Town {i}"} for i, p in enumerate(people)],
    )
    await import_file(sessions, first, f"crm{tag}")
    linked = await import_file(sessions, second, f"shop{tag}")
    again = await import_file(sessions, second, f"shop{tag}")
    assert (linked.linked, again.updated) == (300, 300)
    async with sessions() as session:
        counts = (
            await session.execute(
                select(Attribute.name, Attribute.source, func.count())
                .join(Identity, Identity.customer_id == Attribute.customer_id)
                .where(Identity.source == f"crm{tag}")
                .group_by(Attribute.name, Attribute.source)
            )
        ).all()
    assert sorted(counts) == sorted(
        [
            ("email", f"crm{tag}", 300),
            ("first_name", f"crm{tag}", 300),
            ("email", f"shop{tag}", 300),
            ("first_name", f"shop{tag}", 300),
            ("city", f"shop{tag}", 300),
        ]
    )


async def test_a_record_whose_names_both_changed_meets_its_birth_date_and_postcode_or_town(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """The birth date's block is too big to compare (more than ``max_block_candidates``):
    only the birth date with the postcode, or with the town, brings a record whose names
    both changed to the stored one it may be.  Those narrower blocks are not stored but
    found among the birth date's members; each newcomer must still be put to a person
    against Beatrix, the one stored record it shares them with."""
    config = IdentityConfig(max_block_candidates=3)
    rng = random.Random()
    dob = f"19{rng.randint(0, 19):02d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    codes = iter(rng.sample(range(1000, 9999), 6))
    town = "Zyxbridge" + uuid.uuid4().hex[:6]
    beatrix = person(
        first_name="Beatrix",
        last_name="Whitcombe",
        date_of_birth=dob,
        address="17 Larkspur Avenue",
        city=town,
        postcode=str(next(codes)),
    )
    others = [
        person(
            first_name=first,
            last_name=last,
            date_of_birth=dob,
            address=f"{n} Elsewhere Road",
            city=f"Other{uuid.uuid4().hex[:6]}",
            postcode=str(next(codes)),
        )
        for n, (first, last) in enumerate(
            [("Delia", "Fontaine"), ("Gustav", "Merriweather"), ("Ines", "Tolliver")]
        )
    ]
    stored_path, later_path = tmp_path / "stored.csv", tmp_path / "later.csv"
    _write(stored_path, [beatrix, *others])
    same_postcode = {
        **beatrix,
        "external_id": uuid.uuid4().hex,
        "first_name": "Osvaldo",
        "last_name": "Kranich",
        "city": f"Other{uuid.uuid4().hex[:6]}",
    }
    same_town = {
        **beatrix,
        "external_id": uuid.uuid4().hex,
        "first_name": "Ulrike",
        "last_name": "Pangborn",
        "postcode": str(next(codes)),
    }
    _write(later_path, [same_postcode, same_town])
    source = "narrow-" + uuid.uuid4().hex[:8]
    await import_file(sessions, stored_path, source, config=config)

    await import_file(sessions, later_path, source, config=config)

    async with sessions() as session:
        owners = dict(
            (
                await session.execute(
                    select(Identity.external_id, Identity.customer_id).where(
                        Identity.source == source
                    )
                )
            ).all()
        )
        for newcomer in (same_postcode, same_town):
            candidates = (
                await session.scalars(
                    select(IdentityReview.candidate_customer_id)
                    .join(Identity, Identity.id == IdentityReview.identity_id)
                    .where(
                        Identity.source == source, Identity.external_id == newcomer["external_id"]
                    )
                )
            ).all()
            assert candidates == [owners[beatrix["external_id"]]], newcomer["first_name"]

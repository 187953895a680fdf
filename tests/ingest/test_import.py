"""Bulk import: CSV and JSON Lines, bad rows reported by line, batches all-or-nothing."""

from __future__ import annotations

import gc
import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import gateway.identity.linkage.repository as repository
from gateway.db.access_models import Tombstone
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.identity_models import IdentityBlockKey, IdentityRecord
from gateway.db.models import Attribute, Customer, Identity
from gateway.ingest.importer import ImportSummary, import_file
from gateway.privacy.tombstones import Tombstones


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def _identities(sessions: async_sessionmaker[AsyncSession], source: str) -> int:
    async with sessions() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(Identity).where(Identity.source == source)
            )
            or 0
        )


async def test_csv_import_reports_bad_rows_by_line(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    path = tmp_path / "people.csv"
    path.write_text(
        "external_id,email,first_name,last_name,phone,date_of_birth\n"  # line 1
        f"1,ann.{tag}@corp.com,Ann,Ash,,1980-01-02\n"  # 2 created
        f"2,not-an-email,Bob,Birch,,\n"  # 3 bad email
        f"3,ANN.{tag}@corp.com,Ann,Ash,,\n"  # 4 linked by email
        f",cy.{tag}@corp.com,Cy,Cole,,\n"  # 5 no id
        f"4,dee.{tag}@corp.com,Dee\n"  # 6 short row
        f"5,eve.{tag}@corp.com,Eve,Elm,12345,\n"  # 7 bad phone
        f"6,fay.{tag}@corp.com,Fay,Fir,,31/31/31\n"
    )  # 8 bad date
    seen: list[int] = []
    summary = await import_file(
        sessions, path, f"csv{tag}", batch_size=2, progress=lambda s: seen.append(s.read)
    )
    assert [(r.line, r.reason.split(":")[0]) for r in summary.rejected] == [
        (3, "email"),
        (5, "external_id"),
        (6, "wrong number of columns"),
        (7, "phone"),
        (8, "date_of_birth"),
    ]
    assert all(tag not in r.reason for r in summary.rejected)  # reasons carry no values
    assert (summary.read, summary.created, summary.linked) == (7, 1, 1)
    assert seen
    assert seen[-1] == 7
    assert await _identities(sessions, f"csv{tag}") == 2


async def test_an_import_logged_at_info_finishes_with_its_counts(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As `gateway import` and the demo log: the summary line once raised KeyError (its
    extra named "created", a LogRecord attribute) after every record was stored."""
    tag = uuid.uuid4().hex[:8]
    path = tmp_path / "one.csv"
    path.write_text(f"external_id,email\n1,info.{tag}@corp.com\n")
    with caplog.at_level(logging.INFO, logger="gateway.ingest.importer"):
        summary = await import_file(sessions, path, f"info{tag}")
    assert summary.created == 1
    (record,) = [r for r in caplog.records if r.getMessage() == "import finished"]
    assert (record.customers_created, record.records_read) == (1, 1)  # type: ignore[attr-defined]


async def test_jsonl_import_with_provenance(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    rows: list[Any] = [
        {
            "external_id": "a",
            "email": f"gil.{tag}@corp.com",
            "first_name": "Gil",
            "observed_at": "2026-01-01T00:00:00+00:00",
        },
        "not json",
        [1, 2],
        {
            "external_id": "b",
            "email": f"gil.{tag}@corp.com",
            "first_name": "Gilbert",
            "observed_at": "2026-06-01T00:00:00+00:00",
        },
    ]
    path = tmp_path / "people.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    summary = await import_file(sessions, path, f"jl{tag}")
    assert [(r.line, r.reason) for r in summary.rejected] == [
        (2, "not valid JSON"),
        (3, "not a JSON object"),
    ]
    assert (summary.created, summary.linked) == (1, 1)
    async with sessions() as session:
        customer = await session.scalar(
            select(Customer).where(Customer.email == f"gil.{tag}@corp.com")
        )
        assert customer is not None
        assert customer.first_name == "Gilbert"
        names = (
            await session.execute(
                select(Attribute.value, Attribute.source).where(
                    Attribute.customer_id == customer.id, Attribute.name == "first_name"
                )
            )
        ).all()
    assert sorted(names) == [("Gil", f"jl{tag}"), ("Gilbert", f"jl{tag}")]


async def test_records_of_erased_customers_are_skipped_and_counted(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    source = f"ts{tag}"
    tombstones = Tombstones(f"key-{tag}".encode())
    async with sessions.begin() as session:
        session.add_all(
            Tombstone(digest=digest)
            for digest in tombstones.digests([f"Gone.{tag}@corp.com"], [(source, "2")])
        )
    path = tmp_path / "people.csv"
    path.write_text(
        "external_id,email,first_name,last_name\n"
        f"1,gone.{tag}@corp.com,Gus,Gone\n"  # erased by email (compared normalised)
        f"2,new.{tag}@corp.com,Hal,Here\n"  # erased by source id
        f"3,kept.{tag}@corp.com,Ida,Kept\n"
        f"4,kept2.{tag}@corp.com,Jo,Kept\n"
    )
    summary = await import_file(sessions, path, source, batch_size=2, tombstones=tombstones)
    assert (summary.read, summary.erased, summary.created, summary.rejected) == (4, 2, 2, [])
    async with sessions() as session:
        ids = set(
            await session.scalars(select(Identity.external_id).where(Identity.source == source))
        )
        emails = set(
            await session.scalars(select(Customer.email).where(Customer.email.like(f"%{tag}%")))
        )
    assert ids == {"3", "4"}
    assert emails == {f"kept.{tag}@corp.com", f"kept2.{tag}@corp.com"}
    # Without tombstones (the library default) nothing is checked.
    again = await import_file(sessions, path, f"other{tag}")
    assert again.erased == 0


async def test_a_crash_mid_import_leaves_whole_batches_only(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    path = tmp_path / "people.csv"
    path.write_text(
        "external_id,email\n" + "".join(f"{i},p{i}.{tag}@corp.com\n" for i in range(1, 7))
    )
    calls = 0
    original = repository._write_reviews

    async def failing(*args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # after batch 2's customers, identities, attributes and links
            raise RuntimeError("simulated crash")
        await original(*args)

    monkeypatch.setattr(repository, "_write_reviews", failing)
    with pytest.raises(RuntimeError):
        await import_file(sessions, path, f"crash{tag}", batch_size=2)
    assert await _identities(sessions, f"crash{tag}") == 2
    async with sessions() as session:
        emails = set(
            await session.scalars(
                select(Customer.email).where(Customer.email.like(f"%.{tag}@corp.com"))
            )
        )
    assert emails == {f"p1.{tag}@corp.com", f"p2.{tag}@corp.com"}
    assert gc.isenabled()  # the import paused the collector; a crash still restores it


async def test_a_big_batch_of_new_identities_stores_each_ones_latest_record(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """From 500 records a batch of new identities has its records and block keys copied
    while it is decided (Postgres): a repeated id still stores its latest record once,
    and every row names an identity the batch wrote."""
    tag = uuid.uuid4().hex[:8]
    path = tmp_path / "people.csv"
    rows = [f"{i},Ann{i},Lee{tag},1980010{i % 9 + 1},Early" for i in range(1, 601)]
    rows += [f"{i},Ann{i},Lee{tag},1980010{i % 9 + 1},Later" for i in range(1, 601, 12)]
    path.write_text("external_id,first_name,last_name,date_of_birth,city\n" + "\n".join(rows))
    summary = await import_file(sessions, path, f"big{tag}", batch_size=1000)
    assert summary.read == 650
    assert summary.updated == 50  # the repeated ids
    async with sessions() as session:
        ids = set(await session.scalars(select(Identity.id).where(Identity.source == f"big{tag}")))
        cities = dict(
            (
                await session.execute(
                    select(IdentityRecord.identity_id, IdentityRecord.city).where(
                        IdentityRecord.identity_id.in_(ids)
                    )
                )
            ).all()
        )
        keyed = set(
            await session.scalars(
                select(IdentityBlockKey.identity_id).where(IdentityBlockKey.identity_id.in_(ids))
            )
        )
    assert len(ids) == 600
    assert set(cities) == ids
    assert keyed == ids
    assert [(city or "").lower() for city in cities.values()].count("later") == 50


async def test_import_pauses_the_collector_and_restores_it(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    path = tmp_path / "people.csv"
    path.write_text(
        "external_id,email\n" + "".join(f"{i},q{i}.{tag}@corp.com\n" for i in range(1, 6))
    )
    during: list[bool] = []
    original = repository.write_batch

    async def watching(*args: Any, **kwargs: Any) -> Any:
        during.append(gc.isenabled())
        return await original(*args, **kwargs)

    monkeypatch.setattr(repository, "write_batch", watching)
    monkeypatch.setattr("gateway.identity.linkage.resolution.write_batch", watching)
    assert gc.isenabled()
    summary = await import_file(sessions, path, f"gc{tag}", batch_size=2)
    assert (summary.created, during) == (5, [False, False, False])
    assert gc.isenabled()
    gc.disable()  # a caller that turned it off keeps it off
    try:
        await import_file(sessions, path, f"gc{tag}", batch_size=2)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_summary_rate() -> None:
    assert ImportSummary(read=10, seconds=2.0).records_per_second == 5.0

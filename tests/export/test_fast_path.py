"""Postgres's fast path (ADBC, a binary COPY) and the driver path read the same rows into
the same Arrow tables, which the writer turns into byte-identical files; SQLite's driver
path gives the same values for the same rows.  Random rows: any unicode, NULLs wherever
a column takes them, big and nested JSON."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_engine
from gateway.db.identity_models import IdentityLink
from gateway.db.migrate import upgrade
from gateway.db.models import Attribute, Consent, Customer, Event, Identity
from gateway.export.postgres import libpq_uri
from gateway.export.service import Exporter
from gateway.export.store import EPOCH, ExportStore
from gateway.export.tables import TABLES
from gateway.export.writer import TableWriter
from tests.conftest import create_postgres_database, drop_postgres_database

# Postgres text holds any character but NUL (and no lone surrogate travels as UTF-8).
_TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))
_SHORT = _TEXT.map(lambda t: t[:30])
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_SHORT, inner, max_size=4),
    max_leaves=12,
)
# A big document now and then: an order with thousands of lines.
_BIG = st.builds(lambda t, n: {"lines": [t] * n}, _SHORT, st.integers(2_000, 6_000))
_MOMENT = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)
_PERSON = st.fixed_dictionaries(
    {
        "email": st.none() | _SHORT,
        "phone": st.none() | _SHORT,
        "first_name": st.none() | _SHORT,
        "last_name": st.none() | _SHORT,
        "locale": st.none() | st.sampled_from(["en", "de-AT", "ü"]),
        "created_at": _MOMENT,
        "events": st.lists(
            st.fixed_dictionaries(
                {
                    "type": _SHORT,
                    "occurred_at": _MOMENT,
                    "properties": st.dictionaries(_SHORT, _JSON, max_size=5) | _BIG,
                }
            ),
            max_size=4,
        ),
        "attributes": st.lists(st.tuples(_SHORT, st.none() | _TEXT), max_size=3, unique=True),
        "score": st.none() | st.floats(0, 1),
        "granted": st.booleans(),
    }
)


_PLAIN: dict[str, Any] = {
    "email": "p@example.org",
    "phone": "+442079460958",
    "first_name": "Zo\u00eb",
    "last_name": None,
    "locale": "en",
    "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    "events": [],
    "attributes": [],
    "score": None,
    "granted": True,
}


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    postgres = create_postgres_database("gateway_fast_path")
    sqlite = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('fast') / 'f.db'}"
    upgrade(postgres)
    upgrade(sqlite)
    yield postgres, sqlite
    drop_postgres_database(postgres)


async def _add(engine: AsyncEngine, people: list[dict[str, Any]], tag: str) -> None:
    """The same people, with the same ids, on either backend."""
    async with engine.begin() as connection:
        for n, person in enumerate(people):
            customer_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}/{n}")
            email = None if person["email"] is None else f"{tag}.{n}.{person['email']}"
            moment = person["created_at"]
            await connection.execute(
                insert(Customer),
                [
                    {
                        "id": customer_id,
                        "email": email,
                        **{k: person[k] for k in ("phone", "first_name", "last_name", "locale")},
                        "created_at": moment,
                        "updated_at": moment,
                    }
                ],
            )
            identity = await connection.scalar(
                insert(Identity)
                .values(
                    customer_id=customer_id,
                    source="crm",
                    external_id=f"{tag}-{n}",
                    created_at=moment,
                )
                .returning(Identity.id)
            )
            links = {"customer_id": customer_id, "identity_id": identity, "created_at": moment}
            await connection.execute(
                insert(IdentityLink),
                [{**links, "rule": "new", "score": person["score"], "reason": email}],
            )
            consent = {"purpose": "analytics", "granted": person["granted"], "recorded_at": moment}
            await connection.execute(
                insert(Consent), [{"customer_id": customer_id, "source": "crm", **consent}]
            )
            rows = [
                {
                    "customer_id": customer_id,
                    "source": "shop",
                    "event_id": f"{tag}-{n}-{e}",
                    **event,
                    "received_at": moment + timedelta(seconds=e),
                }
                for e, event in enumerate(person["events"])
            ]
            if rows:
                await connection.execute(insert(Event), rows)
            values = [
                {"customer_id": customer_id, "name": name, "value": value, "observed_at": moment}
                for name, value in person["attributes"]
            ]
            if values:
                await connection.execute(
                    insert(Attribute), [{**v, "source": "crm"} for v in values]
                )


async def _tables(store: ExportStore, lo: datetime, hi: datetime) -> dict[str, pa.Table]:
    tables = {}
    for spec in TABLES:
        batches: list[pa.RecordBatch] = []
        await store.changed(spec, lo, hi, batches.append)
        schema = spec.schema(False)
        schema = pa.schema([schema.field(c.name) for c in spec.columns])
        tables[spec.name] = pa.Table.from_batches(batches, schema=schema).sort_by("id")
    store.close()
    return tables


def _files(table: pa.Table, name: str) -> list[tuple[str, str]]:
    """The files the writer makes of the table (one run id): paths and SHA-256s."""
    with tempfile.TemporaryDirectory() as folder:
        spec = next(s for s in TABLES if s.name == name)
        rows = table.num_rows
        stamped = table.append_column("_op", pa.array(["upsert"] * rows, pa.string()))
        stamped = stamped.append_column("_run", pa.array(["r1"] * rows, pa.string()))
        writer = TableWriter(pafs.LocalFileSystem(), folder, name, "r1", spec.schema(False))
        writer.write(stamped)
        written = writer.close()
        return [
            (f.path, hashlib.sha256(Path(folder, f.path).read_bytes()).hexdigest()) for f in written
        ]


# What each database stamps itself (its own sequence and clock) rather than takes as given.
_OWN = {"id", "changed_at", "identity_id"}


async def _compare(postgres_url: str, sqlite_url: str, people: list[dict[str, Any]]) -> None:
    tag = uuid.uuid4().hex[:8]
    found: dict[str, dict[str, pa.Table]] = {}
    for url in (postgres_url, sqlite_url):
        engine = create_engine(url)
        try:
            probe = ExportStore(engine)
            lo = await probe.window_end()
            await _add(engine, people, tag)
            # SQLite stamps milliseconds: a row of this one is in the next window.
            hi = await probe.window_end() + timedelta(milliseconds=1)
            found[url] = await _tables(ExportStore(engine, fast_from=None), lo, hi)
            if url == postgres_url:
                found["fast"] = await _tables(ExportStore(engine, fast_from=0), lo, hi)
        finally:
            await engine.dispose()
    for spec in TABLES:
        fast, driver = found["fast"][spec.name], found[postgres_url][spec.name]
        assert fast.equals(driver), spec.name
        assert _files(fast, spec.name) == _files(driver, spec.name)
        assert fast.schema == found[sqlite_url][spec.name].schema
        given_columns = [c.name for c in spec.columns if c.name not in _OWN]
        lite = found[sqlite_url][spec.name].select(given_columns)
        assert fast.select(given_columns).to_pylist() == lite.to_pylist(), spec.name


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(_PERSON, min_size=0, max_size=4))
# SQLite rounded a time's fraction to milliseconds, .9995 s and up into the next second.
@example(
    [
        {
            "email": None,
            "phone": None,
            "first_name": None,
            "last_name": None,
            "locale": None,
            "created_at": datetime(2000, 1, 1, 0, 0, 59, 999_999, tzinfo=UTC),
            "events": [
                {
                    "type": "",
                    "occurred_at": datetime(2000, 1, 1, 23, 59, 59, 999_500, tzinfo=UTC),
                    "properties": {},
                }
            ],
            "attributes": [],
            "score": None,
            "granted": True,
        }
    ]
)
def test_fast_path_and_driver_path_read_the_same_rows(
    databases: tuple[str, str], people: list[dict[str, Any]]
) -> None:
    asyncio.run(_compare(*databases, people))


@pytest.fixture
def run_database() -> Iterator[str]:
    url = create_postgres_database("gateway_fast_run")
    upgrade(url)
    yield url
    drop_postgres_database(url)


async def test_a_run_through_the_fast_path_writes_the_files_the_driver_path_writes(
    run_database: str, tmp_path: Path
) -> None:
    url = run_database
    engine = create_engine(url)
    try:
        people = [
            {
                "email": f"p{n}@example.org",
                "phone": None if n % 2 else "+442079460958",
                "first_name": "Zoë",
                "last_name": None,
                "locale": "en",
                "created_at": datetime(2026, 1, 1, tzinfo=UTC),
                "events": [
                    {
                        "type": "page",
                        "occurred_at": datetime(2026, 1, 2, tzinfo=UTC),
                        "properties": {"path": "/p/ü", "n": n, "email": f"p{n}@example.org"},
                    }
                ],
                "attributes": [("email", f"p{n}@example.org"), ("locale", None)],
                "score": 0.5,
                "granted": True,
            }
            for n in range(30)
        ]
        await _add(engine, people, "run")
        fast = await Exporter(engine, str(tmp_path / "fast"), None, fast_from=0).run()
        driver = await Exporter(engine, str(tmp_path / "driver"), None, fast_from=None).run()
    finally:
        await engine.dispose()
    assert fast.rows == driver.rows > 0
    for a, b in zip(fast.tables, driver.tables, strict=True):
        assert [(f.rows, f.upserts) for f in a.files] == [(f.rows, f.upserts) for f in b.files]
        for left, right in zip(a.files, b.files, strict=True):
            one = pq.read_table(tmp_path / "fast" / left.path).drop_columns(["_run"])
            two = pq.read_table(tmp_path / "driver" / right.path).drop_columns(["_run"])
            assert one.equals(two), left.path


def test_the_fast_path_connects_where_the_engine_does() -> None:
    url = make_url(
        "postgresql+asyncpg://app:p%40ss%2Fw%3Ard@db.internal:6432/gateway"
        "?ssl=require&prepared_statement_cache_size=0&application_name=gw"
    )
    uri = libpq_uri(url)
    parsed = make_url(uri)
    assert (parsed.drivername, parsed.username, parsed.password) == (
        "postgresql",
        "app",
        "p@ss/w:rd",
    )
    assert (parsed.host, parsed.port, parsed.database) == ("db.internal", 6432, "gateway")
    # asyncpg's ssl in libpq's words; what libpq does not know is left out.
    assert dict(parsed.query) == {
        "sslmode": "require",
        "application_name": "gw",
        "connect_timeout": "10",
    }


async def test_a_fast_path_that_cannot_connect_reads_through_the_driver(
    run_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(run_database)
    try:
        await _add(engine, [_PLAIN], "nowhere")
        nowhere = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
        store = ExportStore(engine, fast_from=0, fast_uri=nowhere)
        batches: list[pa.RecordBatch] = []
        with caplog.at_level(logging.WARNING, logger="gateway.export"):
            end = await store.window_end() + timedelta(milliseconds=1)
            customers = next(s for s in TABLES if s.name == "customers")
            rows = await store.changed(customers, EPOCH, end, batches.append)
        store.close()
    finally:
        await engine.dispose()
    assert rows == 1
    assert "reading through the driver" in caplog.text
    assert "nobody" not in caplog.text

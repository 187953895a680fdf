"""Warehouse-export benchmark: a full export to Parquet and an incremental one after 1 %
of the rows changed, against a yardstick measured in the same run.

    python -m bench.export [--customers 100000] [--raw] [--keep] [--repeat N]

Seeds a Postgres database of its own (127.0.0.1:5432) with N customers, one identity,
one link, an analytics consent and two attributes each, and 10·N events, all in SQL.
Then ``Exporter.run`` (pseudonymised unless --raw) into a temporary folder: rows/s.
The yardstick is a plain ``COPY (SELECT …) TO STDOUT`` of the same rows (the export's
own queries, over the same window) into nothing, run before and after the export and
averaged: the rate at which Postgres hands the rows out at all, and the export's ratio
to it.  The load average is printed with each figure.  Then, ``--incremental`` times,
1 % of the rows of every table but consents are updated and an incremental run's time
is printed as a share of the last full run's, with this process's CPU and that of the
database's backends (read from /proc: Postgres runs on this machine), and the median
share.  Before every timed run the garbage collector collects: a full collection that
falls into a run scans the whole heap, which the bench's own earlier runs have grown
(it took 0.3 s of a 0.6 s incremental run at load 17); the collector's time during
each run is printed.
Run it ``nice``'d on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
import uuid
from datetime import datetime

# Imported before the clock starts, as the gateway's own modules are: the export imports
# it on its first read through ADBC (with pyarrow.dataset and pandas, a second of CPU).
import adbc_driver_postgresql.dbapi  # noqa: F401
import asyncpg

from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from gateway.export.pseudonymise import Pseudonymiser
from gateway.export.service import Exporter
from gateway.export.store import EPOCH, ExportStore
from gateway.export.tables import TABLES

ADMIN_URL = os.environ.get(
    "GATEWAY_TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

SEED = [
    """INSERT INTO customers (id, email, phone, first_name, last_name, locale, created_at,
       updated_at)
       SELECT md5('c' || i)::uuid, 'person' || i || '@example.com', '+4420' || (7000000 + i),
              'First' || i, 'Last' || i, 'en', now(), now()
       FROM generate_series(1, {n}) AS i""",
    """INSERT INTO identities (customer_id, source, external_id, created_at)
       SELECT md5('c' || i)::uuid, 'crm', 'crm-' || i, now() FROM generate_series(1, {n}) AS i""",
    """INSERT INTO identity_links (customer_id, identity_id, rule, reason, created_at)
       SELECT customer_id, id, 'new', 'first record', now() FROM identities""",
    """INSERT INTO consents (customer_id, purpose, granted, source, recorded_at)
       SELECT md5('c' || i)::uuid, 'analytics', true, 'crm', now()
       FROM generate_series(1, {n}) AS i""",
    """INSERT INTO attributes (customer_id, name, value, source, observed_at)
       SELECT md5('c' || i)::uuid, a.name, a.name || '-' || i, 'crm', now()
       FROM generate_series(1, {n}) AS i, (VALUES ('email'), ('locale')) AS a(name)""",
    """INSERT INTO events (customer_id, source, event_id, type, occurred_at, properties,
       received_at)
       SELECT md5('c' || (i % {n} + 1))::uuid, 'shop', 'e' || i,
              CASE WHEN i % 10 = 0 THEN 'orders/create' ELSE 'page' END,
              now() - (i % 90) * interval '1 day',
              json_build_object('path', '/p/' || (i % 5000), 'order_id', i, 'total', i % 300),
              now()
       FROM generate_series(1, {n} * 10) AS i""",
]
CHANGE = [
    "UPDATE customers SET locale = 'de' "
    "WHERE ('x' || substr(id::text, 1, 8))::bit(32)::int % 100 = 0",
    "UPDATE events SET type = 'page_view' WHERE id % 100 = 0",
    "UPDATE identities SET source = 'crm2' WHERE id % 100 = 0",
    "UPDATE identity_links SET reason = 'checked' WHERE id % 100 = 0",
    "UPDATE attributes SET source = 'crm2' WHERE id % 100 = 0",
]


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(ADMIN_URL)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _seed(dsn: str, n: int) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        for statement in SEED if n else ():
            await connection.execute(statement.format(n=n))
        await connection.execute("ANALYZE")
        total = 0
        for spec in TABLES:
            total += await connection.fetchval(f"SELECT count(*) FROM {spec.name}")
        return int(total)
    finally:
        await connection.close()


async def _copy_yardstick(dsn: str, store: ExportStore, end: datetime) -> tuple[float, int]:
    """Seconds for COPY of the export's own queries into nothing, and the bytes."""
    connection = await asyncpg.connect(dsn)
    size = 0

    async def sink(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)

    try:
        started = time.perf_counter()
        for spec in TABLES:
            query = store.changed_query(spec, EPOCH, end)
            await connection.copy_from_query(query, output=sink, format="csv")
        return time.perf_counter() - started, size
    finally:
        await connection.close()


async def _changes(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        changed = 0
        for statement in CHANGE:
            changed += int((await connection.execute(statement)).split()[-1])
        return changed
    finally:
        await connection.close()


class _Collector:
    """Seconds the garbage collector ran since ``reset``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started

    def reset(self) -> None:
        gc.collect()
        self.seconds = 0.0


async def _backend_cpu(database: str) -> float | None:
    """CPU seconds of the live backends of ``database`` (None where /proc does not
    show them: a server on another machine)."""
    connection = await asyncpg.connect(ADMIN_URL)
    try:
        pids = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1", database
        )
    finally:
        await connection.close()
    return _cpu_of([int(row["pid"]) for row in pids])


def _cpu_of(pids: list[int]) -> float | None:
    ticks, seen = 0, False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended since, or not on this machine
        seen = True
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK") if seen else None


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


async def run(args: argparse.Namespace) -> None:
    name = args.database or f"gateway_bench_export_{uuid.uuid4().hex[:8]}"
    if not args.database:
        await _admin(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0]
    dsn = f"{base}/{name}"
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        await asyncio.to_thread(upgrade, url)
        started = time.perf_counter()
        rows = await _seed(dsn, 0 if args.database else args.customers)
        print(
            f"seeded {rows:,} rows ({args.customers:,} customers) in "
            f"{time.perf_counter() - started:.1f} s"
        )
        engine = create_engine(url)
        pseudonymiser = None if args.raw else Pseudonymiser(b"bench-export-key-0123456789")
        store = ExportStore(engine)
        mode = "raw" if args.raw else "pseudonymised"
        collector = _Collector()
        with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
            ratios: list[float] = []
            for attempt in range(args.repeat):
                # A new target each time: a full run.  The yardstick before and after it,
                # averaged: on a shared machine the load moves while it runs.
                exporter = Exporter(engine, f"{folder}/{attempt}", pseudonymiser)
                before, copy_bytes = await _copy_yardstick(dsn, store, await store.window_end())
                collector.reset()
                cpu = time.process_time()
                full = await exporter.run()
                cpu = time.process_time() - cpu
                end = datetime.fromisoformat(full.tables[0].cursor_to)
                after, _ = await _copy_yardstick(dsn, store, end)
                copy_s = (before + after) / 2
                rate = full.rows / full.seconds
                copy_rate = full.rows / copy_s
                ratios.append(rate / copy_rate)
                print(
                    f"full export ({mode}): {full.rows:,} rows in {full.seconds:.2f} s = "
                    f"{rate:,.0f} rows/s (target >= 200,000); this process's CPU {cpu:.2f} s, "
                    f"garbage collector {collector.seconds:.2f} s"
                )
                print(
                    f"yardstick COPY (SELECT ...) TO STDOUT of the same rows: {copy_s:.2f} s = "
                    f"{copy_rate:,.0f} rows/s ({copy_bytes / 1e6:,.0f} MB of CSV; "
                    f"{before:.2f} s before, {after:.2f} s after)"
                )
                print(f"ratio export / COPY: {rate / copy_rate:.2f}; {_load()}")
            if len(ratios) > 1:
                print(f"median ratio of {len(ratios)} runs: {statistics.median(ratios):.2f}")
            shares: list[float] = []
            for _ in range(args.incremental):
                changed = await _changes(dsn)
                collector.reset()
                backends = await _backend_cpu(name)
                cpu = time.process_time()
                incremental = await exporter.run()
                cpu = time.process_time() - cpu
                after_cpu = await _backend_cpu(name)
                share = incremental.seconds / full.seconds
                shares.append(share)
                server = (
                    f"{(after_cpu - backends) * 1000:.0f} ms"
                    if backends is not None and after_cpu is not None
                    else "not seen"
                )
                print(
                    f"incremental after {changed:,} rows changed ({changed / rows:.1%}): "
                    f"{incremental.rows:,} rows in {incremental.seconds:.3f} s = {share:.1%} "
                    f"of the full run (target < 5 %); this process's CPU {cpu * 1000:.0f} ms "
                    f"(garbage collector {collector.seconds * 1000:.0f} ms), the database's "
                    f"backends {server}; {_load()}"
                )
            if len(shares) > 1:
                print(
                    f"median incremental share of {len(shares)} runs: "
                    f"{statistics.median(shares):.1%} (target < 5 %)"
                )
        await engine.dispose()
    finally:
        if not args.keep and not args.database:
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            print(f"kept database {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--raw", action="store_true", help="export without pseudonymising")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--repeat", type=int, default=1, help="full runs (each a new target)")
    parser.add_argument(
        "--incremental", type=int, default=3, help="incremental runs after the last full one"
    )
    parser.add_argument(
        "--database", help="reuse this database (one a --keep run seeded) instead of seeding"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

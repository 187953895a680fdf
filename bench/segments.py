"""Segments benchmark: a send's walk through segments of 100,000 customers, a page of
``segment(name) { customers(first: 1000) }`` at a time, on Postgres.

    python -m bench.segments [--customers 100000] [--database-url URL]

Writes a synthetic audience (tests/segments/audience.py: scores, consent, bounces; COPY)
into a Postgres database of its own (or the one given), saves three segments (the
issue's at-risk audience, a broad one and everyone mailable) and walks each through
GraphQL in-process (ASGI: no socket), selecting ``nodes { id email firstName }`` and
``pageInfo``. Per page: p50 and p95 over every page of every walk.

Also printed: this process's CPU time per page (the gateway's own work, and the client's
JSON decoding, in-process), which a busy machine stretches less than wall-clock time.

Yardstick, in the same run: the keyset SELECT of each page's ids run raw through
asyncpg (the statement the gateway sends, its binds inlined), followed by the same
page's id, email and first name read by id: what a hand-written service would do,
without GraphQL, the profile read or the audit. Printed: both p50s and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import httpx
from sqlalchemy import text
from sqlalchemy.engine import Dialect

from bench.support.harness import database
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.segments.store import SavedSegment, SegmentStore, page_query
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.conftest import api_client
from tests.gql_client import gql
from tests.in_process import lifespan
from tests.segments.audience import write_audience

SEGMENTS: dict[str, dict[str, Any]] = {
    "at risk and likely to buy": {
        "all": [
            {"field": "rfmSegment", "in": ["at_risk", "about_to_sleep", "need_attention"]},
            {"field": "purchasePropensity", "gte": 0.4},
        ]
    },
    "broad": {"all": [{"field": "purchasePropensity", "gte": 0.1}]},
    "everyone mailable": {"all": []},
}
PAGE = """query($name: String!, $after: String) {
  segment(name: $name) {
    customers(first: 1000, after: $after) {
      nodes { id email firstName }
      pageInfo { endCursor hasNextPage }
    }
  }
}"""
_PROFILES = "SELECT id, email, first_name FROM customers WHERE id = ANY($1::uuid[])"


@contextmanager
def _database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with database(prefix="gateway_bench_segments") as made:
        yield made


def _raw(segment: SavedSegment, after: uuid.UUID | None, dialect: Dialect) -> str:
    """The page's statement as the gateway sends it, its values inlined."""
    query, binds = page_query(segment, 1000, after)
    bound = query.params(binds)
    return str(bound.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


async def _walk(client: httpx.AsyncClient, name: str, cpu: list[float]) -> list[float]:
    """Each page's wall-clock time; the process's CPU seconds of the walk into ``cpu``."""
    timings: list[float] = []
    cpu_start = time.process_time()
    after = None
    while True:
        started = time.perf_counter()
        body = await gql(client, PAGE, name=name, after=after)
        timings.append(time.perf_counter() - started)
        page = body["data"]["segment"]["customers"]
        if not page["pageInfo"]["hasNextPage"]:
            cpu.append(time.process_time() - cpu_start)
            return timings
        after = page["pageInfo"]["endCursor"]


async def _yardstick(url: str, segment: SavedSegment, dialect: Dialect) -> list[float]:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    timings: list[float] = []
    try:
        after: uuid.UUID | None = None
        while True:
            statement = _raw(segment, after, dialect)
            started = time.perf_counter()
            ids = [row[0] for row in await connection.fetch(statement)]
            await connection.fetch(_PROFILES, ids[:1000])
            timings.append(time.perf_counter() - started)
            if len(ids) <= 1000:
                return timings
            after = ids[999]
    finally:
        await connection.close()


async def run(url: str, customers: int) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            stored = (await connection.execute(text("SELECT count(*) FROM customers"))).scalar()
        if stored:  # a database given, written by an earlier run: walk what is there
            print(f"{stored:,} customers already stored")
        else:
            started = time.perf_counter()
            await write_audience(engine, customers)
            async with engine.begin() as connection:
                await connection.execute(text("ANALYZE"))
            print(f"{customers:,} customers written in {time.perf_counter() - started:.1f} s")
        store = SegmentStore(create_sessionmaker(engine))
        app = create_app(load_settings(database_url=url, cache_url="memory://"))
        gateway: list[float] = []
        yardstick: list[float] = []
        cpu: list[float] = []
        async with lifespan(app), api_client(app) as client:
            for name, definition in SEGMENTS.items():
                segment = await store.save(name, definition)
                size = await store.size(segment)
                await _walk(client, name, [])  # warm: plans, caches of statements
                timings = await _walk(client, name, cpu)
                raw = await _yardstick(url, segment, engine.dialect)
                gateway += timings
                yardstick += raw
                print(
                    f"{name!r}: {size:,} members, {len(timings)} pages; per page p50 "
                    f"{statistics.median(timings) * 1000:.1f} ms (yardstick "
                    f"{statistics.median(raw) * 1000:.1f} ms)"
                )
        p50, p95 = statistics.median(gateway), statistics.quantiles(gateway, n=20)[18]
        raw50 = statistics.median(yardstick)
        print(
            f"all pages ({len(gateway)}): p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms; "
            f"yardstick (raw keyset SELECT + the page's profiles through asyncpg) p50 "
            f"{raw50 * 1000:.1f} ms; ratio {p50 / raw50:.1f}; load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        # CPU time is what the gateway's process spent (GraphQL, SQLAlchemy, the profile
        # read, the client's JSON), whatever else ran on the machine meanwhile.
        print(f"this process's CPU per page: {sum(cpu) / len(gateway) * 1000:.1f} ms")
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument(
        "--database-url",
        help="A migrated Postgres database: empty (the audience is written), or holding "
        "the audience an earlier run wrote",
    )
    args = parser.parse_args()
    with _database(args.database_url) as url:
        asyncio.run(run(url, args.customers))


if __name__ == "__main__":
    main()

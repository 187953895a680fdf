"""Scores benchmark: ``scores build`` over N customers on Postgres, against a yardstick
measured in the same run.

    python -m bench.scores [--customers 100000]

Seeds a Postgres database of its own with N customers and, in SQL, ~3 orders each
(Shopify ``orders/create`` rows with an order id and a total, spread over 540 days,
each customer with their own rhythm), 5 page calls each in the last 90 days and a
personalisation consent (yes for four in five: only their page calls are read). Then
``build`` (training included, as on a first run, one fitting thread as
``GATEWAY_SCORES_THREADS`` defaults to): seconds, and this process's CPU seconds. Then
1% of the customers order again and ``refresh`` rescores them: seconds, and its ratio
to the build's.

The yardstick, in the same run: a raw asyncpg read of every row the build starts from
(the customers' ids, every order event with its JSON and moment, the behavioural events
of the last 400 days), fetched and nothing done with them: work that does not change
with the build's code. Printed: the build's ratio to it, and the load average. Segment
page timings are ``bench/segments``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import time

import asyncpg
from sqlalchemy import text

from bench.support.harness import database
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.scores.build import build
from gateway.scores.model_seal import model_key
from gateway.scores.refresh import refresh
from gateway.scores.store import ScoreStore

SEED = [
    """INSERT INTO customers (id, email, created_at, updated_at)
       SELECT md5('c' || i)::uuid, 'person' || i || '@example.com', now(), now()
       FROM generate_series(1, {n}) AS i""",
    # Customer i buys every (7 + i % 60) days from a start of its own, k-th order k.
    """INSERT INTO events (customer_id, source, event_id, type, occurred_at, properties,
       received_at)
       SELECT md5('c' || i)::uuid, 'shopify', 'o' || i || '-' || k, 'orders/create',
              now() - ((i * 7919) % 540 - k * (7 + i % 60)) * interval '1 day',
              json_build_object('order_id', i || '-' || k, 'total_price', (i * k) % 300 + 5),
              now()
       FROM generate_series(1, {n}) AS i, generate_series(0, (i % 5)) AS k
       WHERE (i * 7919) % 540 - k * (7 + i % 60) >= 0""",
    """INSERT INTO events (customer_id, source, event_id, type, occurred_at, properties,
       received_at)
       SELECT md5('c' || i)::uuid, 'segment', 'p' || i || '-' || k, 'page',
              now() - ((i + k * 13) % 90) * interval '1 day', '{{}}'::json, now()
       FROM generate_series(1, {n}) AS i, generate_series(1, 5) AS k""",
    # Four in five said yes to personalisation (the build reads only their behaviour),
    # the fifth no.
    """INSERT INTO consents (customer_id, purpose, granted, source, recorded_at, changed_at)
       SELECT md5('c' || i)::uuid, 'personalisation', i % 5 <> 0, 'bench', now(), now()
       FROM generate_series(1, {n}) AS i""",
    "ANALYZE",
]


YARDSTICK = [
    "SELECT id FROM customers",
    """SELECT customer_id, occurred_at, properties FROM events
       WHERE customer_id IS NOT NULL AND type IN
       ('orders/create', 'orders/paid', 'orders/updated', 'track:Order Completed')""",
    """SELECT customer_id, occurred_at FROM events
       WHERE customer_id IS NOT NULL AND (type LIKE 'track:%' OR type = 'page')
       AND occurred_at >= now() - interval '400 days'""",
]

CHANGE = """INSERT INTO events (customer_id, source, event_id, type, occurred_at, properties,
   received_at)
   SELECT md5('c' || i)::uuid, 'shopify', 'again' || i, 'orders/create', now(),
          json_build_object('order_id', 'again' || i, 'total_price', 25), now()
   FROM generate_series(100, {n}, 100) AS i"""


async def yardstick(url: str) -> float:
    """Seconds to fetch the rows the build reads, raw."""
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        started = time.perf_counter()
        for statement in YARDSTICK:
            await connection.fetch(statement)
        return time.perf_counter() - started
    finally:
        await connection.close()


async def run(url: str, customers: int, threads: int = 1) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            for statement in SEED:
                await connection.execute(text(statement.format(n=customers)))
            orders = (
                await connection.execute(
                    text("SELECT count(*) FROM events WHERE type = 'orders/create'")
                )
            ).scalar_one()
        print(f"{customers:,} customers, {orders:,} orders, {customers * 5:,} page calls")
        # A key of this run's own: the bench's database is dropped after it.
        store = ScoreStore(create_sessionmaker(engine), model_key(secrets.token_hex(16)))
        read = await yardstick(url)
        cpu = time.process_time()
        summary = await build(store, horizon=30, threads=threads)
        cpu = time.process_time() - cpu
        print(summary.line())
        print(
            f"build {summary.seconds:.1f} s ({cpu:.1f} s CPU, {threads} thread(s)); yardstick "
            f"(a raw read of its rows) {read:.2f} s; ratio {summary.seconds / read:.1f}; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        # 1% of the customers order again; ``refresh`` rescores them alone.
        async with engine.begin() as connection:
            await connection.execute(text(CHANGE.format(n=customers)))
        refreshed = await refresh(store)
        print(refreshed.line())
        print(
            f"refresh of {refreshed.refreshed:,} changed customers {refreshed.seconds:.2f} s; "
            f"ratio to the build {refreshed.seconds / summary.seconds:.3f}; to the yardstick "
            f"{refreshed.seconds / read:.2f}; load average {os.getloadavg()[0]:.1f}"
        )
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=1, help="GATEWAY_SCORES_THREADS")
    args = parser.parse_args()
    with database(prefix="gateway_bench_scores") as url:
        asyncio.run(run(url, args.customers, args.threads))


if __name__ == "__main__":
    main()

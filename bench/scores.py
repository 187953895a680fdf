"""Scores benchmark: ``scores build`` over N customers on Postgres, against a yardstick
measured in the same run.

    python -m bench.scores [--customers 100000]

Seeds a Postgres database of its own with N customers and, in SQL, ~3 orders each
(Shopify ``orders/create`` rows with an order id and a total, spread over 540 days,
each customer with their own rhythm) and 5 page calls each in the last 90 days. Then
``build`` (training included, as on a first run): seconds. The yardstick is a plain
read of the rows the build reads (the same two queries, fetched into Python and
nothing done with them): the build's ratio to it.  Segment page timings are not here
yet (segments are not built).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from bench.support.harness import database
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.scores.build import build
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
    "ANALYZE",
]


async def run(url: str, customers: int) -> None:
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
        store = ScoreStore(create_sessionmaker(engine))
        started = time.perf_counter()
        await store.ledger(datetime.now(UTC) - timedelta(days=400))
        yardstick = time.perf_counter() - started
        summary = await build(store, horizon=30)
        print(summary.line())
        print(
            f"build {summary.seconds:.1f} s; yardstick (reading and shaping its rows) "
            f"{yardstick:.1f} s; ratio {summary.seconds / yardstick:.1f}"
        )
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    args = parser.parse_args()
    with database(prefix="gateway_bench_scores") as url:
        asyncio.run(run(url, args.customers))


if __name__ == "__main__":
    main()

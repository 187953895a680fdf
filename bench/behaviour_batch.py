"""Behaviour batch benchmark: a 1,000-customer send reading behaviour from the store.

    ./dev bench behaviour_batch [--customers 1000] [--events 20] [--runs 30]

Seeds a Postgres database of its own (on the server at
GATEWAY_TEST_POSTGRES_ADMIN_URL, default the local trust-auth one; dropped at the end)
with the sample population, ``--events`` Segment calls per customer over the last 60
days (stored as the webhook and the event stream store them) and personalisation
consent for everyone, so every customer's behaviour is served. The gateway runs
in-process (ASGI) with ``recentEvents``, ``engagement`` and ``cart`` configured
``store``, beside the sample upstreams on loopback.

Timed, alternately, ``--runs`` times each: ``customers(ids: [all])`` with
``recentEvents(first: 5)`` and ``engagement`` (served from the store), and the
yardstick, the same query asking only ``email`` (the profile read and the GraphQL
work every send pays anyway). Printed: p50 and p99 of each, their ratio, each half
of the query alone, the SQL statements that read the events table per query, the
analytics upstream calls (must be 0), for scale the two store reads alone (the same
reads the query makes: no properties, the two at once as its two loaders run them; no
GraphQL), and what the store replaces: the same query served by the analytics
upstream (``--upstream-runs``, one Profiles API call per customer, cache empty).
Target (issue #21): p50 under 100 ms on the 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from sqlalchemy import insert, update
from starlette.applications import Starlette

from adapters.config import load_upstreams
from bench.support.access import AUTH, create_bench_key
from demo.seed import customer_id_for, seed
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import DEMO_SECRETS, example_upstreams
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.db.models import Consent, Event
from gateway.settings import load_settings
from gateway.upstreams.behaviour import ENGAGEMENT_WINDOW
from gateway.upstreams.event_store import EventStore
from resolvers.app import create_app
from tests.conftest import recorded_statements
from tests.in_process import asgi, lifespan, services_of

ADMIN_URL = os.environ.get(
    "GATEWAY_TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BEHAVIOUR = """query($ids: [ID!]) { customers(ids: $ids) { id
  recentEvents(first: 5) { id name occurredAt }
  engagement { sessions30d pageViews30d lastSeenAt } } }"""
YARDSTICK = "query($ids: [ID!]) { customers(ids: $ids) { id email } }"
# The two halves alone, to show where the time goes.
PARTS = {
    "recentEvents(first: 5) alone": BEHAVIOUR.replace(
        "engagement { sessions30d pageViews30d lastSeenAt }", ""
    ),
    "engagement alone": BEHAVIOUR.replace("recentEvents(first: 5) { id name occurredAt }", ""),
}
STORE = {"recent_events": "store", "engagement": "store", "cart": "store"}
PATIENT = {"timeout_s": 30.0, "deadline_s": 120.0, "breaker": {"failure_threshold": 1000}}
_CALLS = ("Page Viewed", "Product Viewed", "Product Viewed", "Product Added", "Product Removed")


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def _events(customer_id: uuid.UUID, count: int, rng: random.Random) -> list[dict[str, Any]]:
    """``count`` Segment calls over the last 60 days, in sessions of five."""
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        name = _CALLS[i % len(_CALLS)]
        session = f"sess_{customer_id.hex[:8]}_{i // 5}"
        properties = {"session_id": session, "product_id": str(rng.randrange(1, 500))}
        rows.append(
            {
                "customer_id": customer_id,
                "source": "segment",
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "type": "page" if name == "Page Viewed" else f"track:{name}",
                "occurred_at": now - timedelta(minutes=rng.randrange(1, 60 * 24 * 60)),
                "properties": (
                    {"name": "Home", "properties": properties}
                    if name == "Page Viewed"
                    else {"event": name, "properties": properties}
                ),
            }
        )
    return rows


async def _fill(url: str, samples: SampleUpstreams, events: int) -> list[str]:
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    await seed(sessions, samples.people)
    await create_bench_key(sessions)
    rng = random.Random(21)
    ids = [customer_id_for(p) for p in samples.people]
    async with engine.begin() as connection:
        for start in range(0, len(ids), 100):
            rows = [row for i in ids[start : start + 100] for row in _events(i, events, rng)]
            await connection.execute(insert(Event), rows)
        await connection.execute(
            update(Consent).where(Consent.purpose == "personalisation").values(granted=True)
        )
    async with engine.begin() as connection:  # committed: the planner's statistics stay
        await connection.exec_driver_sql("ANALYZE")
    await engine.dispose()
    return [str(i) for i in ids]


def _app(
    url: str,
    samples: SampleUpstreams,
    fields: dict[str, str],
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Starlette:
    raw = example_upstreams()
    for upstream, table in raw["upstreams"].items():
        table.update((overrides or {}).get(upstream, {}), base_url=samples.base_urls[upstream])
    raw["fields"] = fields
    return create_app(load_settings(database_url=url), upstreams=load_upstreams(raw, DEMO_SECRETS))


def _client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=asgi(app), base_url="http://gw", headers=AUTH, timeout=300)


async def _time(client: httpx.AsyncClient, query: str, ids: list[str]) -> float:
    started = time.perf_counter()
    response = await client.post("/graphql", json={"query": query, "variables": {"ids": ids}})
    elapsed = (time.perf_counter() - started) * 1000
    body = response.json()
    if "errors" in body:
        raise SystemExit(f"query failed: {body['errors'][0]['message']}")
    return elapsed


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(customers: int, events: int, runs: int, upstream_runs: int = 1) -> None:
    name = f"bench_behaviour_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{base}/{name}"
    try:
        with SampleUpstreams(size=customers) as samples:
            await asyncio.to_thread(upgrade, url)
            ids = await _fill(url, samples, events)
            app = _app(url, samples, STORE)
            timings: dict[str, list[float]] = {
                "behaviour": [],
                "yardstick": [],
                **{p: [] for p in PARTS},
            }
            async with lifespan(app):
                engine = services_of(app).engine
                async with _client(app) as client:
                    for _ in range(3):  # warm pools, caches and the plan
                        await _time(client, BEHAVIOUR, ids)
                        await _time(client, YARDSTICK, ids)
                    samples.reset()
                    with recorded_statements(engine.sync_engine) as statements:
                        await _time(client, BEHAVIOUR, ids)
                    reads = sum(1 for s in statements if "FROM events" in s)
                    cpu = yardstick_cpu = 0.0
                    for _ in range(runs):
                        before = time.process_time()
                        timings["behaviour"].append(await _time(client, BEHAVIOUR, ids))
                        cpu += time.process_time() - before
                        before = time.process_time()
                        timings["yardstick"].append(await _time(client, YARDSTICK, ids))
                        yardstick_cpu += time.process_time() - before
                        for part, query in PARTS.items():
                            timings[part].append(await _time(client, query, ids))
                    analytics_calls = samples.segment.calls.total
                    other_calls = samples.hubspot.calls.total + samples.shopify.calls.total
                store = EventStore(engine)
                keys = [uuid.UUID(i) for i in ids]
                bare = []
                bare_cpu = 0.0
                for _ in range(runs):
                    started, before = time.perf_counter(), time.process_time()
                    # Concurrently, on two connections, as the query's two loaders run them.
                    await asyncio.gather(
                        store.recent(keys, 5, detailed=False),
                        store.engagement(keys, datetime.now(UTC) - ENGAGEMENT_WINDOW),
                    )
                    bare.append((time.perf_counter() - started) * 1000)
                    bare_cpu += time.process_time() - before
            # What the store replaces: the same query through the analytics upstream, one
            # Profiles API call per customer (its cache emptied: a new app each run).
            upstream = []
            for _ in range(upstream_runs):
                samples.reset()
                app = _app(url, samples, {}, {"segment": PATIENT})
                async with lifespan(app), _client(app) as client:
                    upstream.append(await _time(client, BEHAVIOUR, ids))
            upstream_calls = samples.segment.calls.total
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    behaviour, yardstick = timings["behaviour"], timings["yardstick"]
    print(
        f"behaviour batch benchmark: customers(ids: {len(ids)}) on Postgres, {events} stored "
        f"Segment calls each, {runs} runs"
    )
    print(
        f"  recentEvents(first: 5) + engagement, from the store: p50 {_p(behaviour, 0.5):6.1f} ms"
        f"   p99 {_p(behaviour, 0.99):6.1f} ms  (target p50 < 100 ms)"
    )
    print(
        f"  gateway CPU per query (this process): behaviour {cpu / runs * 1000:6.1f} ms,"
        f" yardstick {yardstick_cpu / runs * 1000:6.1f} ms"
    )
    print(
        f"  yardstick, the same ids asking only email:          p50 {_p(yardstick, 0.5):6.1f} ms"
        f"   p99 {_p(yardstick, 0.99):6.1f} ms"
    )
    print(
        f"  the two store reads alone, concurrently (no GraphQL): p50 {_p(bare, 0.5):6.1f} ms"
        f"  p99 {_p(bare, 0.99):6.1f} ms"
    )
    print(f"  gateway CPU per pair of store reads alone: {bare_cpu / runs * 1000:6.1f} ms")
    for part in PARTS:
        print(
            f"  {part + ', from the store:':<52} p50 {_p(timings[part], 0.5):6.1f} ms"
            f"   p99 {_p(timings[part], 0.99):6.1f} ms"
        )
    if upstream:
        print(
            f"  the same query from the analytics upstream:         p50 "
            f"{statistics.median(upstream):6.1f} ms  ({len(upstream)} runs, "
            f"{upstream_calls // len(upstream)} Profiles API calls each)"
        )
    print(f"  SQL statements reading the events table per query: {reads}")
    print(
        f"  analytics upstream calls over {runs + 1} queries: {analytics_calls}"
        f"  (other upstreams: {other_calls})"
    )
    ratio = statistics.median(behaviour) / statistics.median(yardstick)
    print(f"ratio behaviour / email-only (p50): {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--upstream-runs", type=int, default=1, help="runs of the upstream path, for comparison"
    )
    args = parser.parse_args()
    asyncio.run(run(args.customers, args.events, args.runs, args.upstream_runs))


if __name__ == "__main__":
    main()

"""Stream ingestion benchmark: Segment events through Redis Streams (or NATS JetStream)
into Postgres with one consumer.

    ./dev bench stream [--events 50000] [--customers 1000] [--transport redis|nats]
                       [--batch-size 5000] [--rate 5000] [--rate-seconds 10]

On a fresh Postgres database: identifies ``--customers`` people through the stream
(the setup), then

1. throughput: ``--events`` track/page events for them produced into a fresh stream,
   then one consumer (this process) drains it: events/s from its start to the last
   commit, every event counted back from the events table the read path reads;
2. the yardstick: a bare consumer of the same stream in another group that reads and
   acknowledges without processing; events/s, and the ratio;
3. latency: a producer process sends ``--rate`` events/s for ``--rate-seconds`` while
   the consumer runs; p50/p99 from the produce time carried in each event to the
   commit that made it visible;
4. the consumer's peak memory (RSS).

Targets (issue 21): >= 10,000 events/s stored with one consumer, p99 < 1 s at 5,000/s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from sqlalchemy import func, select, text

from adapters.transport.breaker import BreakerState, CircuitBreaker
from demo.wiring import example_upstreams, sample_upstreams_config
from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from gateway.db.models import Event
from gateway.ingest.streams.consumer import StreamConsumer, freeze_startup_heap
from gateway.ingest.streams.customer_updates import CustomerUpdates
from gateway.ingest.streams.event_batches import CustomerTouch, EventBatches
from gateway.ingest.streams.jetstream import JetStream
from gateway.ingest.streams.redis_streams import RedisStreams
from gateway.ingest.streams.running import ConsumerParts
from gateway.ingest.streams.transport import Delivery, Transport
from gateway.privacy.tombstones import Tombstones
from gateway.settings import load_settings
from gateway.upstreams.redis_client import RedisGuard

ADMIN_URL = os.environ.get(
    "GATEWAY_TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379")
NATS_URL = os.environ.get("GATEWAY_TEST_NATS_URL", "nats://127.0.0.1:4222")
TOMBSTONES = Tombstones(b"bench-stream-erasure-key")
EVENTS = ("Product Viewed", "Product Added", "Order Completed", "Products Searched")


def transport(kind: str, tag: str, group: str) -> Transport:
    if kind == "nats":
        return JetStream(NATS_URL, stream=f"BENCH_{tag}", subject=f"bench.{tag}", durable=group)
    return RedisStreams.from_url(REDIS_URL, f"bench-{tag}", group, f"{group}-1")


def events(users: Sequence[str], count: int, start: int = 0) -> list[bytes]:
    out = []
    for n in range(start, start + count):
        user = users[n % len(users)]
        sent = time.time()
        if n % 5 == 4:
            message: dict[str, Any] = {"type": "page", "name": "Home"}
        else:
            message = {"type": "track", "event": EVENTS[n % len(EVENTS)]}
        message.update(
            messageId=f"b-{n}-{uuid.uuid4().hex[:8]}",
            userId=user,
            anonymousId=f"anon-{user}",
            timestamp="2026-12-01T10:00:00Z",
            properties={"product_id": f"sku-{n % 500}", "price": 19.5, "sent_at": sent},
            context={"ip": "192.0.2.1", "userAgent": "bench"},
        )
        out.append(orjson.dumps(message))
    return out


class Timed:
    """The transport, noting when each message's commit was acknowledged (its commit
    made it visible just before). The messages' send times are read after the run: read
    at each acknowledgement, they cost the consumer's loop a JSON parse per message."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.name = inner.name
        self.acked: list[tuple[float, Sequence[Delivery]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self.inner.ack(deliveries)
        self.acked.append((time.time(), deliveries))

    def latencies(self) -> list[float]:
        found = []
        for now, deliveries in self.acked:
            for delivery in deliveries:
                sent = orjson.loads(delivery.payload).get("properties", {}).get("sent_at")
                if sent:
                    found.append(now - sent)
        return found


class CacheWatch:
    """The after-commit work (cache drops, notifications) timed per batch, and how often
    the consumer's Redis circuit opened: under load it did, in some runs, and an open
    circuit costs notifications and every stored answer."""

    def __init__(self, updates: CustomerUpdates, guard: RedisGuard | None) -> None:
        self.updates = updates
        self.guard = guard
        self.slowest = 0.0
        self.batches = 0
        self.opened = 0
        if guard is not None:
            guard.breaker.subscribe(self._changed)

    def _changed(self, breaker: CircuitBreaker) -> None:
        self.opened += breaker.state is BreakerState.OPEN

    async def __call__(self, touched: Mapping[uuid.UUID, CustomerTouch]) -> None:
        started = time.perf_counter()
        await self.updates(touched)
        self.slowest = max(self.slowest, time.perf_counter() - started)
        self.batches += 1

    def report(self) -> str:
        failed = self.guard.failures if self.guard is not None else 0
        return (
            f"after-commit work: slowest {self.slowest * 1000:.0f} ms of {self.batches} "
            f"batches; Redis calls failed {failed}, its circuit opened {self.opened} times"
        )


async def stored_count(engine: Any) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(Event)) or 0)


async def postgres_cpu(engine: Any) -> float | None:
    """CPU seconds used so far by the server processes of this database (a local
    Postgres: read from /proc), or None when they cannot be read. With the consumer's own
    CPU time, a figure that a busy shared machine moves less than wall-clock time."""
    async with engine.connect() as connection:
        pids = (
            await connection.scalars(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            )
        ).all()
    return _cpu_seconds(pids)


def _cpu_seconds(pids: Sequence[int]) -> float | None:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    except (OSError, IndexError, ValueError):
        return None
    return total


async def run_until(consumer: StreamConsumer, target: int, idle_s: float = 5.0) -> float:
    """Run the consumer as ``gateway consume`` does (its ``run`` loop: the next batch
    read and parsed while the last commits) until ``target`` events are stored; seconds
    taken. Gives up after ``idle_s`` without progress (a producer process starts within
    it)."""
    started = time.perf_counter()
    running = asyncio.create_task(consumer.run())
    try:
        while consumer.status.stored < target:
            before = consumer.status.stored
            try:
                await asyncio.wait_for(consumer.wait_stored(target), idle_s)
            except TimeoutError:
                if consumer.status.stored == before:
                    raise SystemExit(f"stalled at {before}/{target}") from None
        return time.perf_counter() - started
    finally:
        consumer.stop()
        await running


async def bare_drain(kind: str, tag: str, total: int, batch: int) -> float:
    bare = transport(kind, tag, "bare")
    await bare.open()
    started = time.perf_counter()
    seen = 0
    while seen < total:
        got = await bare.read(batch, 1.0)
        if not got:
            raise SystemExit(f"bare drain stalled at {seen}/{total}")
        await bare.ack(got)
        seen += len(got)
    elapsed = time.perf_counter() - started
    await bare.aclose()
    return elapsed


def produce_at_rate(kind: str, tag: str, users: list[str], rate: int, seconds: float) -> None:
    """A producer process: ``rate`` events a second in 100 ms ticks."""

    async def go() -> None:
        producer = transport(kind, tag, "producer")
        await producer.open()
        per_tick = max(1, rate // 10)
        started = time.monotonic()
        for tick in range(int(seconds * 10)):
            await producer.publish(events(users, per_tick, tick * per_tick))
            delay = started + (tick + 1) / 10 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await producer.aclose()

    asyncio.run(go())


def after_commit(url: str) -> tuple[ConsumerParts, CustomerUpdates]:
    """The after-commit work of ``gateway consume``: the demo's upstreams (never called:
    only their cache entries are dropped) on a shared Redis cache, and notifications."""
    upstreams = sample_upstreams_config(
        dict.fromkeys(example_upstreams()["upstreams"], "http://127.0.0.1:9")
    )
    settings = load_settings(database_url=url, cache_url=f"{REDIS_URL.rstrip('/')}/3")
    parts = ConsumerParts.open(settings, upstreams)
    return parts, CustomerUpdates(parts.federation, parts.customers, parts.notifications)


async def bench(args: argparse.Namespace, url: str) -> None:
    engine = create_engine(url)
    batches = EventBatches(engine, TOMBSTONES)
    services, plain_updates = after_commit(url)
    updates = CacheWatch(plain_updates, services.redis)
    users = [f"bench-user-{n}" for n in range(args.customers)]
    tag = uuid.uuid4().hex[:8]
    setup = transport(args.transport, f"{tag}-setup", "gateway")
    await setup.open()
    await setup.publish(
        [
            orjson.dumps(
                {
                    "type": "identify",
                    "messageId": f"id-{user}",
                    "userId": user,
                    "anonymousId": f"anon-{user}",
                    "traits": {"email": f"{user}@example.com", "firstName": "Bench"},
                }
            )
            for user in users
        ]
    )
    seeding = StreamConsumer(setup, batches, batch_size=args.batch_size, wait_s=1.0)
    seconds = await run_until(seeding, args.customers)
    print(f"setup: {args.customers} customers identified through the stream in {seconds:.1f} s")
    await _delete(setup)

    main = transport(args.transport, tag, "gateway")
    await main.open()
    for start in range(0, args.events, 5000):
        await main.publish(events(users, min(5000, args.events - start), start))
    before = await stored_count(engine)
    freeze_startup_heap()  # as ``gateway consume`` does before consuming
    # No lag reads during the timing (a metric, refreshed every few seconds in service).
    consumer = StreamConsumer(
        main, batches, updates, batch_size=args.batch_size, wait_s=1.0, lag_interval_s=3600
    )
    cpu_before, server_before = time.process_time(), await postgres_cpu(engine)
    seconds = await run_until(consumer, args.events)
    cpu = time.process_time() - cpu_before
    server_after = await postgres_cpu(engine)
    visible = await stored_count(engine) - before
    stored_rate = args.events / seconds
    print(
        f"stored end to end: {args.events} events in {seconds:.2f} s = {stored_rate:,.0f} "
        f"events/s (batch {args.batch_size}; {visible} visible in the events table; "
        "cache entries dropped and one notification per customer per batch)"
    )
    per_thousand = 1000 / args.events
    server = (
        f"{(server_after - server_before) * per_thousand * 1000:.0f} ms"
        if server_after is not None and server_before is not None
        else "not readable"
    )
    print(
        f"CPU per 1,000 events: consumer {cpu * per_thousand * 1000:.0f} ms, "
        f"Postgres {server} (of this database's server processes)"
    )
    bare_cpu = time.process_time()
    bare_seconds = await bare_drain(args.transport, tag, args.events, args.batch_size)
    bare_cpu = time.process_time() - bare_cpu
    bare_rate = args.events / bare_seconds
    print(
        f"yardstick, bare drain (read + ack only): {bare_rate:,.0f} events/s, "
        f"CPU {bare_cpu * per_thousand * 1000:.1f} ms per 1,000 events"
    )
    print(f"ratio stored / bare: {stored_rate / bare_rate:.2f} in events/s")
    # The machine may be shared: wall-clock rates move with its load, CPU time less.
    print(f"ratio bare / consumer in CPU per event: {bare_cpu / cpu:.2f}")
    await _delete(main)

    rate_tag = f"{tag}-rate"
    timed = Timed(transport(args.transport, rate_tag, "gateway"))
    await timed.open()
    live = StreamConsumer(timed, batches, updates, batch_size=args.batch_size, wait_s=0.05)
    producer = multiprocessing.get_context("spawn").Process(
        target=produce_at_rate,
        args=(args.transport, rate_tag, users, args.rate, args.rate_seconds),
    )
    producer.start()
    total = int(args.rate_seconds * 10) * max(1, args.rate // 10)
    await run_until(live, total, idle_s=15.0)
    producer.join()
    latencies = sorted(timed.latencies())
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"latency at {args.rate:,}/s for {args.rate_seconds:.0f} s ({len(latencies)} events): "
        f"produce->visible p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )
    await _delete(timed.inner)
    print(updates.report())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"consumer peak RSS: {peak:.0f} MiB")
    await services.aclose()
    await engine.dispose()


async def _delete(done: Transport) -> None:
    await done.delete()
    await done.aclose()


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--transport", choices=("redis", "nats"), default="redis")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--rate-seconds", type=float, default=10.0)
    args = parser.parse_args()
    name = f"gateway_bench_stream_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{url}/{name}"
    try:
        upgrade(url)
        asyncio.run(bench(args, url))
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

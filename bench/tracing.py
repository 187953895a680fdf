"""Tracing's cost: a cached three-upstream query with tracing off, and on.

    ./dev bench tracing [--requests 2000] [--rounds 3]

The gateway runs in-process (ASGI) on the sample upstreams with every answer cached,
so what is timed is the gateway's own work per request, where tracing's cost would
show. Rounds alternate off / on (the in-memory exporter behind the same redaction as
OTLP's, so the spans are made, redacted and kept, but not sent). The yardstick is the
null span ``gateway.observability.tracing.span`` answers when tracing is off, timed
alone: what tracing-off adds to a request is a handful of those and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bench.support.access import AUTH, create_bench_key
from demo.seed import seed
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.observability.tracing import span
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.in_process import asgi, lifespan

QUERY = (
    "query($e: String!) { customer(email: $e) { email lifecycleStage "
    "lifetimeValue { amount } engagement { sessions30d } } }"
)
_CUSTOMERS = 50


async def _round(url: str, samples: SampleUpstreams, requests: int, traced: bool) -> float:
    """Microseconds per request, median of the per-request times, caches warm."""
    exporter = InMemorySpanExporter() if traced else None
    config = sample_upstreams_config(samples.base_urls)
    app = create_app(load_settings(database_url=url), upstreams=config, span_exporter=exporter)
    emails = [p.email for p in samples.people[:_CUSTOMERS]]
    times: list[float] = []
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=asgi(app), base_url="http://gw", headers=AUTH) as client,
    ):
        for email in emails:  # fill the caches
            await client.post("/graphql", json={"query": QUERY, "variables": {"e": email}})
        for index in range(requests):
            body = {"query": QUERY, "variables": {"e": emails[index % _CUSTOMERS]}}
            started = time.perf_counter()
            response = await client.post("/graphql", json=body)
            times.append(time.perf_counter() - started)
            if response.status_code != 200 or "errors" in response.json():
                raise SystemExit(f"query failed: {response.text[:200]}")
            if exporter is not None and index % 200 == 0:
                exporter.clear()  # kept spans would grow the heap the run measures
    return statistics.median(times) * 1e6


def _null_span_us(calls: int = 200_000) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        with span("loader crm", None):
            pass
    return (time.perf_counter() - started) / calls * 1e6


async def run(requests: int, rounds: int) -> None:
    with SampleUpstreams(size=_CUSTOMERS) as samples, tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        await asyncio.to_thread(upgrade, url)
        engine = create_engine(url)
        await seed(create_sessionmaker(engine), samples.people)
        await create_bench_key(create_sessionmaker(engine))
        await engine.dispose()
        off: list[float] = []
        on: list[float] = []
        for _ in range(rounds):
            off.append(await _round(url, samples, requests, traced=False))
            on.append(await _round(url, samples, requests, traced=True))
    null_us = _null_span_us()
    print(f"tracing benchmark: {requests} cached three-upstream queries per round, {rounds} rounds")
    print(f"  tracing off   per request (median) {', '.join(f'{v:.0f}' for v in off)} us")
    print(f"  tracing on    per request (median) {', '.join(f'{v:.0f}' for v in on)} us")
    print(f"  yardstick: one null span (tracing off) {null_us:.3f} us")
    best_off, best_on = min(off), min(on)
    print(f"ratio tracing on / off: {best_on / best_off:.2f}")
    print(f"ratio null spans of one request (6) / request off: {6 * null_us / best_off:.5f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.rounds))


if __name__ == "__main__":
    main()

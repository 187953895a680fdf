"""Fan-out benchmark: a three-upstream customer query against its slowest upstream alone.

    ./dev bench fanout [--runs 30] [--latency-ms 100]

Every sample upstream answers after the same added latency. The gateway runs
in-process (ASGI) against the samples on loopback. For each customer it times the
query that needs CRM, commerce and analytics together, and the three queries that
each need one upstream; the ratio is median(all three) / median(slowest single).
Concurrent fan-out keeps it near 1.0; calling upstreams one after another would
make it about the number of upstreams.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.support.access import AUTH, create_bench_key
from demo.seed import seed
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.in_process import asgi, lifespan

QUERIES = {
    "crm": "lifecycleStage company",
    "commerce": "lifetimeValue { amount } lastOrderAt",
    "analytics": "engagement { sessions30d }",
}
QUERIES["all"] = " ".join(QUERIES.values())


async def _time(client: httpx.AsyncClient, fields: str, email: str) -> float:
    query = f"query($e: String!) {{ customer(email: $e) {{ {fields} }} }}"
    started = time.perf_counter()
    response = await client.post("/graphql", json={"query": query, "variables": {"e": email}})
    elapsed = time.perf_counter() - started
    body = response.json()
    if "errors" in body:
        raise SystemExit(f"query failed: {body['errors'][0]['message']}")
    return elapsed * 1000


async def run(runs: int, latency_ms: int) -> None:
    with SampleUpstreams(size=max(runs, 50)) as samples, tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        await asyncio.to_thread(upgrade, url)
        engine = create_engine(url)
        await seed(create_sessionmaker(engine), samples.people)
        await create_bench_key(create_sessionmaker(engine))
        await engine.dispose()
        for service in (samples.hubspot, samples.shopify, samples.segment):
            service.faults.update(latency_ms=latency_ms)
        # Nothing cached: each query must go to its upstreams (the single-upstream
        # queries would otherwise fill the cache that the three-upstream one then reads).
        uncached = {"cache": {"ttl_s": 0}}
        upstreams = sample_upstreams_config(
            samples.base_urls, dict.fromkeys(samples.base_urls, uncached)
        )
        app = create_app(load_settings(database_url=url), upstreams=upstreams)
        timings: dict[str, list[float]] = {name: [] for name in QUERIES}
        async with lifespan(app):
            transport = asgi(app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://gw", headers=AUTH
            ) as client:
                await _time(client, QUERIES["all"], samples.people[0].email)  # warm pools
                for person in samples.people[1 : runs + 1]:
                    for name, fields in QUERIES.items():
                        timings[name].append(await _time(client, fields, person.email))
    medians = {name: statistics.median(values) for name, values in timings.items()}
    slowest = max(("crm", "commerce", "analytics"), key=medians.__getitem__)
    print(f"fan-out benchmark: {runs} customers, {latency_ms} ms added latency per upstream call")
    for name in ("crm", "commerce", "analytics", "all"):
        values = sorted(timings[name])
        p90 = values[int(0.9 * (len(values) - 1))]
        print(f"  {name:<10} median {medians[name]:7.1f} ms   p90 {p90:7.1f} ms")
    ratio = medians["all"] / medians[slowest]
    print(f"ratio all-three / slowest single ({slowest}): {ratio:.2f}  (target <= 1.3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--latency-ms", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(run(args.runs, args.latency_ms))


if __name__ == "__main__":
    main()

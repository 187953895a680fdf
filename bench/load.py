"""Load benchmark: the gateway with 2 uvicorn workers, the sample upstreams, and wrk.

    ./dev bench load [--cache memory|redis] [--duration 10] [--connections 32]

Starts (in separate processes) the sample upstreams, the gateway (`gateway serve
--workers 2`, seeded SQLite, memory or Redis cache) and a bare Starlette endpoint
returning the same JSON; drives each with wrk (Debian's `wrk`, installed if missing)
and prints throughput, p50 and p99 for cached and uncached single-customer queries
and for batches of 100, the cache hit ratio, the two ratios asked for, and the
number of upstream calls 100 concurrent identical misses cause. Recommendations are
measured with impressions recorded and not, switched every half second under one
h2load run (Debian's `nghttp2-client`, installed if missing), on one gateway served in
this process (`impressions_ab`; `bench.impressions` runs that step alone, longer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from hashlib import sha256
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from bench.impressions import impressions_ab, verdict
from bench.support import harness
from bench.support.access import AUTH
from bench.support.bare import PAYLOAD_FILE
from bench.support.harness import (
    bench_key,
    gateway_env,
    process,
    sample_upstreams,
    serve,
    upstreams_file,
    wait,
)
from bench.support.wrk import lua_gets, lua_posts, run_wrk
from demo.people.population import population
from tests.served import free_port

SIZE = 1000
PERSISTED_CUSTOMERS = 200
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"
SINGLE = (
    "query($e: String!) { customer(email: $e) { id email firstName lastName "
    "lifecycleStage company lifetimeValue { amount currency } orderCount } }"
)
BATCH = (
    "query($ids: [ID!]) { customers(ids: $ids) { id email firstName lastName "
    "lifecycleStage company lifetimeValue { amount currency } orderCount } }"
)


def _persisted_paths(url: str, people: tuple[Any, ...]) -> list[str]:
    """GET paths naming SINGLE by its hash, one per person; the document registered on
    every worker first (each keeps its own without Redis)."""
    extensions = {
        "persistedQuery": {"version": 1, "sha256Hash": sha256(SINGLE.encode()).hexdigest()}
    }
    for _ in range(20):  # the workers take connections in turn: each sees a registration
        with httpx.Client(headers=AUTH) as client:
            client.post(
                url,
                json={
                    "query": SINGLE,
                    "extensions": extensions,
                    "variables": {"e": people[0].email},
                },
            )
    return [
        "/graphql?"
        + urlencode({"extensions": json.dumps(extensions), "variables": json.dumps({"e": p.email})})
        for p in people
    ]


async def _warm_persisted(base: str, paths: list[str], passes: int = 10) -> float:
    """Request every path, on fresh connections (so both workers get each), until a
    whole pass is served from the response cache; the share of hits in the last pass."""
    headers = {**AUTH, "accept": "application/json"}
    limits = httpx.Limits(max_keepalive_connections=0)
    ratio = 0.0
    async with httpx.AsyncClient(
        base_url=base, headers=headers, limits=limits, timeout=120
    ) as client:
        gate = asyncio.Semaphore(16)

        async def hit(path: str) -> bool:
            async with gate:
                response = await client.get(path)
            return bool(response.headers.get("x-response-cache") == "hit")

        started = time.monotonic()
        for number in range(passes):
            hits = await asyncio.gather(*(hit(path) for path in paths))
            ratio = sum(hits) / len(hits)
            print(
                f"warming persisted GETs: pass {number + 1}, hit ratio {ratio:.3f}, "
                f"{time.monotonic() - started:.1f} s",
                file=sys.stderr,
            )
            if ratio >= 0.995:
                break
    return ratio


def _calls(samples_base: str) -> int:
    total = 0
    for port_offset in (0, 2):  # hubspot, shopify: the upstreams the queries use
        url = _bump_port(samples_base, port_offset) + "/_sample/calls"
        total += httpx.get(url).json()["total"]
    return total


def _bump_port(base: str, offset: int) -> str:
    host, port = base.rsplit(":", 1)
    return f"{host}:{int(port) + offset}"


async def _identical_misses(url: str, email: str, customer_id: str) -> None:
    async with httpx.AsyncClient(timeout=30, headers=AUTH) as client:
        await client.post(
            url,
            json={
                "query": "mutation($id: ID!) { invalidateCustomer(id: $id) }",
                "variables": {"id": customer_id},
            },
        )
        await asyncio.gather(
            *(
                client.post(url, json={"query": SINGLE, "variables": {"e": email}})
                for _ in range(100)
            )
        )


def run(cache: str, duration: int, connections: int, redis_url: str = DEFAULT_REDIS) -> None:
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            print(f"installing {tool} (Debian package {package})…", file=sys.stderr)
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", package], check=True, stdout=subprocess.DEVNULL
            )
    people = population(SIZE)
    results: dict[str, dict[str, float]] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        harness.database("sqlite", workdir=Path(tmp)) as database,
    ):
        workdir = Path(tmp)
        from demo.wiring import prepare
        from gateway.settings import load_settings

        asyncio.run(prepare(load_settings(database_url=database), people))
        asyncio.run(bench_key(database))

        cache_url = redis_url if cache == "redis" else "memory://"
        if cache == "redis":
            subprocess.run(
                ["redis-cli", "-u", redis_url, "flushdb"], check=True, stdout=subprocess.DEVNULL
            )
        with sample_upstreams(SIZE) as samples_port:
            samples = f"http://127.0.0.1:{samples_port}"
            for label, ttl in (("cached", 300.0), ("uncached", 0.0)):
                upstreams = upstreams_file(workdir, samples_port, ttl)
                env = gateway_env(database, cache_url, upstreams, log_level="WARNING")
                with serve(env, workers=2) as base:
                    url = f"{base}/graphql"
                    singles = [{"query": SINGLE, "variables": {"e": p.email}} for p in people]
                    if label == "cached":
                        emails = [p.email for p in people]
                        found = httpx.post(
                            url,
                            json={
                                "query": "query($e: [String!]) { customers(emails: $e) { id } }",
                                "variables": {"e": emails},
                            },
                            timeout=120,
                            headers=AUTH,
                        ).json()
                        ids = [c["id"] for c in found["data"]["customers"]]
                        batches = [
                            {"query": BATCH, "variables": {"ids": ids[i : i + 100]}}
                            for i in range(0, SIZE, 100)
                        ]
                        # Warm every worker's cache (memory caches are per worker) with the
                        # same traffic, then measure.
                        run_wrk(url, lua_posts(singles), connections, 4, workdir)
                        run_wrk(url, lua_posts(batches), 4, 2, workdir)
                        PAYLOAD_FILE.write_bytes(
                            httpx.post(url, json=singles[0], headers=AUTH).content
                        )
                        before = _calls(samples)
                        results["cached single"] = run_wrk(
                            url, lua_posts(singles), connections, duration, workdir
                        )
                        upstream_calls = _calls(samples) - before
                        lookups = results["cached single"]["rps"] * duration * 2
                        results["cached single"]["hit_ratio"] = 1 - upstream_calls / max(lookups, 1)
                        # Fewer customers than the POSTs: each worker runs every URL
                        # once before it serves it, and an answer lives no longer than
                        # the profile cache (60 s), so on a slow shared machine 2,000
                        # first runs outlived what they warmed.
                        paths = _persisted_paths(url, people[:PERSISTED_CUSTOMERS])
                        # Each worker runs and stores every answer once, then serves it.
                        warm = asyncio.run(_warm_persisted(base, paths))
                        results["persisted GET"] = run_wrk(
                            url, lua_gets(paths), connections, duration, workdir
                        )
                        results["persisted GET"]["hit_ratio"] = warm
                        # The yardsticks right after it, so that the ratios compare
                        # figures of the same minute on a shared machine.
                        results.update(_yardsticks(singles, connections, duration, workdir))
                        results["cached batch of 100"] = run_wrk(
                            url, lua_posts(batches), 4, duration, workdir
                        )
                        # Recording switched every half second under one load, six
                        # runs of twice the duration (bench/support/interleaved.py).
                        results.update(
                            impressions_ab(env, people, ids, connections, 2 * duration, workdir)
                        )
                        # Let requests wrk left in flight finish (a stock refresh among
                        # them would be counted as one of the misses' calls).
                        time.sleep(1)
                        calls = _calls(samples)
                        asyncio.run(_identical_misses(url, people[1].email, ids[1]))
                        results["identical misses"] = {"upstream_calls": _calls(samples) - calls}
                    else:
                        results["uncached single"] = run_wrk(
                            url, lua_posts(singles), connections, duration, workdir
                        )
    _report(results, cache, duration, connections)


def _yardsticks(
    singles: list[dict[str, Any]], connections: int, duration: int, workdir: Path
) -> dict[str, dict[str, float]]:
    """Bare Starlette returning the gateway's answer (PAYLOAD_FILE, written first), and a
    minimal Strawberry app answering the same single-customer query from a dict."""
    figures = {}
    for name, app, lua in (
        ("bare starlette", "bench.support.bare:app", lua_posts([{"query": "{}"}])),
        ("minimal strawberry", "bench.support.minimal:app", lua_posts(singles)),
    ):
        port = free_port()
        with process(_uvicorn(app, port)):
            url = f"http://127.0.0.1:{port}/graphql"
            wait(url)
            run_wrk(url, lua, connections, 2, workdir)  # warm: imports, caches
            figures[name] = run_wrk(url, lua, connections, duration, workdir)
    return figures


def _uvicorn(app: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--workers",
        "2",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]


def _report(
    results: dict[str, dict[str, float]], cache: str, duration: int, connections: int
) -> None:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(
        f"load benchmark: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"cache={cache}, {duration}s per run, wrk -t2"
    )
    for name in (
        "cached single",
        "persisted GET",
        "uncached single",
        "cached batch of 100",
        "bare starlette",
        "minimal strawberry",
    ):
        r = results[name]
        extra = f"  hit ratio {r['hit_ratio']:.3f}" if "hit_ratio" in r else ""
        conns = 4 if "batch" in name else connections
        print(
            f"  {name:<20} c={conns:<3} {r['rps']:8.0f} req/s  p50 {r['p50']:7.2f} ms  "
            f"p99 {r['p99']:7.2f} ms  non-2xx {int(r['non2xx'])}{extra}"
        )
    single, bare, batch = (
        results["cached single"],
        results["bare starlette"],
        results["cached batch of 100"],
    )
    for name in ("recommendations", "recommendations untracked"):
        r = results[name]
        print(
            f"  {name:<20} c={connections:<3} {r['rps']:8.0f} req/s  p50 {r['p50']:7.2f} ms  "
            f"p99 {r['p99']:7.2f} ms  server CPU {r['cpu_ms']:.3f} ms/request  non-2xx "
            f"{int(r['non2xx'])}  (one customer, warm caches, recording switched every 0.5 s)"
        )
    ratio = results["recommendations ratio"]
    print(
        f"ratio recommendations with / without impressions: p99 "
        f"{ratio['p99']:.3f} (target < 1.05; {verdict(ratio)}), CPU per request "
        f"{ratio['cpu_ms']:.3f}; "
        f"recommendations p99 target < 20 ms"
    )
    minimal, persisted = results["minimal strawberry"], results["persisted GET"]
    print(f"ratio cached gateway / bare starlette throughput: {single['rps'] / bare['rps']:.2f}")
    print(
        f"ratio cached gateway / minimal strawberry throughput: "
        f"{single['rps'] / minimal['rps']:.2f}"
    )
    print(
        f"ratio persisted GET (response cache) / bare starlette throughput: "
        f"{persisted['rps'] / bare['rps']:.2f}  ({PERSISTED_CUSTOMERS} customers; "
        f"target >= 0.5; p99 {persisted['p99']:.1f} ms, target < 20 ms)"
    )
    print(
        f"ratio persisted GET (response cache) / minimal strawberry throughput: "
        f"{persisted['rps'] / minimal['rps']:.2f}"
    )
    print(f"ratio batch-of-100 p50 / single p50: {batch['p50'] / single['p50']:.2f}")
    print(
        f"100 concurrent identical misses -> {int(results['identical misses']['upstream_calls'])} "
        "upstream calls (HubSpot + Shopify; one each is ideal: 2)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", choices=["memory", "redis"], default="memory")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    # A Redis of one's own (its database is flushed): the default is the shared one's 12.
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    args = parser.parse_args()
    run(args.cache, args.duration, args.connections, args.redis_url)


if __name__ == "__main__":
    main()

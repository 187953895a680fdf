"""What recording impressions costs the recommendation endpoint: bench/load's
recommendations step alone, with more turns.

    .venv/bin/python -m bench.impressions [--turns 4] [--duration 10] [--connections 32]

Two gateways (`gateway serve --workers 2`, seeded SQLite, memory cache, the sample
upstreams) on one database: one records every served list as an impression (the
default), the other runs with GATEWAY_RECS_IMPRESSIONS=false, the yardstick. wrk drives
POST /api/recommendations for one consenting customer on each in turns (on, off, off,
on, on, off…), so both are measured in the same minutes of a shared machine; printed:
each side's mean req/s, p50, p99 and the servers' CPU per request (read from /proc: what
other load on the machine inflates least; the steadiest figure, also as each turn's
ratio and their median), and the ratios (the issue's target: p99 < 1.05).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench.support import harness
from bench.support.access import AUTH
from bench.support.harness import (
    bench_key,
    gateway_env,
    sample_upstreams,
    serve,
    server_cpu_s,
    upstreams_file,
)
from bench.support.wrk import lua_posts, run_wrk
from demo.people.population import population

SIZE = 1000  # the demo people seeded, as bench/load's


def recommendations(
    port: int,
    people: tuple[Any, ...],
    ids: list[str],
    connections: int,
    duration: int,
    workdir: Path,
) -> dict[str, float]:
    """One consenting customer's recommendations over POST /api/recommendations, from
    warm caches (stock and products cached, the stored list read per request)."""
    index = next(i for i, p in enumerate(people) if p.personalisation_consent)
    url = f"http://127.0.0.1:{port}/api/recommendations"
    body = lua_posts([{"customer_id": ids[index], "limit": 4}])
    run_wrk(url, body, connections, 3, workdir)  # warm every worker's caches
    cpu = server_cpu_s(port)
    figures = run_wrk(url, body, connections, duration, workdir)
    # The server's CPU per request: what other load on the machine inflates least.
    figures["cpu_ms"] = (server_cpu_s(port) - cpu) * 1000 / (figures["rps"] * duration)
    return figures


def customer_ids(base: str, people: tuple[Any, ...]) -> list[str]:
    """The people's unified ids, from one GraphQL query to the gateway at ``base``."""
    found = httpx.post(
        f"{base}/graphql",
        json={
            "query": "query($e: [String!]) { customers(emails: $e) { id } }",
            "variables": {"e": [p.email for p in people]},
        },
        timeout=120,
        headers=AUTH,
    ).json()
    return [c["id"] for c in found["data"]["customers"]]


def impressions_ab(
    env: dict[str, str],
    port: int,
    people: tuple[Any, ...],
    ids: list[str],
    *run: Any,
    turns: int = 2,
) -> dict[str, dict[str, float]]:
    """Recommendations from the gateway on ``port`` (impressions recorded) against a
    second one on the same database with GATEWAY_RECS_IMPRESSIONS=false, in turns (on,
    off, off, on…): what recording impressions costs, measured in the same minutes."""
    with serve({**env, "GATEWAY_RECS_IMPRESSIONS": "false"}, workers=2) as off:
        off_port = int(off.rsplit(":", 1)[1])
        # The yardstick answers the query the first gateway answered (every profile
        # read and cached): both sides then serve from the same state, not one from a
        # heap a thousand profiles larger.
        customer_ids(off, people)
        on_runs: list[dict[str, float]] = []
        off_runs: list[dict[str, float]] = []
        for turn in range(turns):
            # On, off, then off, on: a load that rises or falls through the run weighs
            # on both sides alike.
            order = (port, off_port) if turn % 2 == 0 else (off_port, port)
            for p in order:
                (on_runs if p == port else off_runs).append(recommendations(p, people, ids, *run))
    print(
        f"recommendations p99 by turn (on | off): {[t['p99'] for t in on_runs]} | "
        f"{[t['p99'] for t in off_runs]}"
    )
    print(
        f"recommendations req/s by turn (on | off): {[round(t['rps']) for t in on_runs]} | "
        f"{[round(t['rps']) for t in off_runs]}"
    )
    ratios = [a["cpu_ms"] / b["cpu_ms"] for a, b in zip(on_runs, off_runs, strict=True)]
    cpu_on = [round(t["cpu_ms"], 3) for t in on_runs]
    cpu_off = [round(t["cpu_ms"], 3) for t in off_runs]
    print(
        f"server CPU ms/request by turn (on | off): {cpu_on} | {cpu_off}; ratio by turn "
        f"{[round(r, 3) for r in ratios]} (median {statistics.median(ratios):.3f})"
    )
    return {"recommendations": _mean(on_runs), "recommendations untracked": _mean(off_runs)}


def _mean(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(r[key] for r in runs) / len(runs) for key in runs[0]}


def run(turns: int, duration: int, connections: int) -> None:
    people = population(SIZE)
    with (
        tempfile.TemporaryDirectory() as tmp,
        harness.database("sqlite", workdir=Path(tmp)) as database,
    ):
        workdir = Path(tmp)
        from demo.wiring import prepare
        from gateway.settings import load_settings

        asyncio.run(prepare(load_settings(database_url=database), people))
        asyncio.run(bench_key(database))
        with sample_upstreams(SIZE) as samples_port:
            upstreams = upstreams_file(workdir, samples_port, 300.0)
            env = gateway_env(database, "memory://", upstreams, log_level="WARNING")
            with serve(env, workers=2) as base:
                ids = customer_ids(base, people)
                port = int(base.rsplit(":", 1)[1])
                results = impressions_ab(
                    env, port, people, ids, connections, duration, workdir, turns=turns
                )
    load = os.getloadavg()
    print(f"load average after the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores)")
    for name, figures in results.items():
        print(
            f"  {name:<26} {figures['rps']:8.0f} req/s  p50 {figures['p50']:7.2f} ms  "
            f"p99 {figures['p99']:7.2f} ms  server CPU {figures['cpu_ms']:.3f} ms/request  "
            f"non-2xx {int(figures['non2xx'])}"
        )
    tracked, untracked = results["recommendations"], results["recommendations untracked"]
    print(
        f"ratio server CPU per request with / without impressions: "
        f"{tracked['cpu_ms'] / untracked['cpu_ms']:.3f} (the steadiest figure); p99: "
        f"{tracked['p99'] / untracked['p99']:.3f} (target < 1.05); throughput: "
        f"{tracked['rps'] / untracked['rps']:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    run(args.turns, args.duration, args.connections)


if __name__ == "__main__":
    main()

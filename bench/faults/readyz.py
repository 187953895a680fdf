"""Readiness benchmark: /readyz latency while the gateway's own dependencies break under
load, and the log an outage writes.

    ./dev bench readyz [--phase-s 8] [--log-s 20] [--connections 16]
    (or .venv/bin/python -m bench.faults.readyz from a worktree sharing a virtualenv)

Starts, in processes of its own: a Postgres cluster (initdb, a free port) and a
`redis-server`, both the benchmark's own, the sample upstreams, and `gateway serve
--workers 2` on them (a seeded database, the benchmark key). A load process reads
cached profiles over GraphQL the whole time; a prober (a process of its own) calls
/readyz then /healthz on new connections every 20 ms. Phases: everything up, Redis
stopped, Redis frozen (SIGSTOP), Postgres stopped (`pg_ctl stop -m immediate`), each
restored before the next. Printed per phase: /readyz p50 / p99 / max, the yardstick
(/healthz, same prober, same moments) and the ratio of the maxima; the target is a
/readyz max under 200 ms. Then the bytes of log the workers write during a Redis
outage under load, with repeats summarised and (yardstick) with
GATEWAY_LOG_REPEAT_INTERVAL_S=0, each from a fresh server.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx

from bench.load import SINGLE
from bench.support import harness
from bench.support.access import AUTH
from bench.support.harness import get_on_new_connection, spread
from demo.people.population import population
from gateway.db.migrate import upgrade
from tests.faults.postgres_cluster import PostgresCluster
from tests.faults.redis_server import RedisServer

SIZE = 300
TARGET_MS = 200.0
PROBE_EVERY_S = 0.02


# --- load and prober --------------------------------------------------------------------


def _load(base: str, connections: int, started: Event, stop: Event, out: Any) -> None:
    """Cached-profile reads on ``connections`` connections; (end time, ok) per request."""
    emails = [p.email for p in population(SIZE)]
    done: list[tuple[float, bool]] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            ok = False
            with suppress(httpx.HTTPError, ValueError):
                body = {"query": SINGLE, "variables": {"e": random.choice(emails)}}
                answer = await client.post("/graphql", json=body)
                ok = answer.status_code == 200 and not answer.json().get("errors")
            done.append((time.monotonic(), ok))
            started.set()

    async def main() -> None:
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(
            base_url=base, headers=AUTH, timeout=10, limits=limits
        ) as client:
            await asyncio.gather(*(worker(client) for _ in range(connections)))

    asyncio.run(main())
    out.put(done)


def _probe(port: int, started: Event, stop: Event, out: Any) -> None:
    probes: list[tuple[str, float, float]] = []
    while not stop.is_set():
        for path in ("/readyz", "/healthz"):
            begin = time.monotonic()
            with suppress(OSError):
                get_on_new_connection(port, path)
            probes.append((path, begin, time.monotonic()))
        started.set()
        time.sleep(PROBE_EVERY_S)
    out.put(probes)


@contextmanager
def _background(target: Any, *args: Any) -> Iterator[list[Any]]:
    context = multiprocessing.get_context("spawn")
    started, stop, out = context.Event(), context.Event(), context.Queue()
    process = context.Process(target=target, args=(*args, started, stop, out), daemon=True)
    process.start()
    result: list[Any] = []
    try:
        if not started.wait(120):
            raise SystemExit(f"{target.__name__} did not start")
        yield result
    finally:
        stop.set()
        result.extend(out.get(timeout=60))
        process.join(10)


# --- figures ----------------------------------------------------------------------------


def _during(
    probes: list[tuple[str, float, float]], path: str, start: float, end: float
) -> list[float]:
    return [(e - b) * 1000 for p, b, e in probes if p == path and start <= b <= end]


def _ok_share(done: list[tuple[float, bool]], start: float, end: float) -> str:
    inside = [ok for t, ok in done if start <= t <= end]
    return f"{sum(inside)}/{len(inside)}" if inside else "0/0"


def run(phase_s: float, log_s: float, connections: int) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        PostgresCluster.started() as postgres,
        RedisServer() as redis,
        harness.sample_upstreams(SIZE) as samples_port,
    ):
        workdir = Path(tmp)
        upgrade(postgres.url)
        asyncio.run(harness.seed(postgres.url, SIZE))
        upstreams = harness.upstreams_file(workdir, samples_port, 300.0)
        env = harness.gateway_env(postgres.url, redis.url, upstreams, log_level="INFO")
        phases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
            ("everything up", lambda: None, lambda: None),
            ("Redis stopped", redis.stop, redis.start),
            ("Redis frozen (SIGSTOP)", redis.freeze, redis.thaw),
            ("Postgres stopped", postgres.stop_immediately, postgres.start),
        ]
        windows = []
        with (
            harness.serve(env, workers=2, log=workdir / "serve.log") as base,
            _background(_load, base, connections) as done,
            _background(_probe, _port(base)) as probes,
        ):
            time.sleep(2)  # warm: caches filled, both workers busy
            for name, fault, restore in phases:
                fault()
                start = time.monotonic()
                time.sleep(phase_s)
                windows.append((name, start, time.monotonic()))
                restore()
                time.sleep(2)  # back to normal before the next phase
        _report_phases(windows, probes, done, connections)
        print(f"\nlog written by both workers during a {log_s:.0f} s Redis outage under load:")
        for label, interval in (("summarised (10 s)", "10"), ("yardstick: every one", "0")):
            size, lines, share = _outage_log(
                {**env, "GATEWAY_LOG_REPEAT_INTERVAL_S": interval},
                workdir,
                log_s,
                connections,
                redis,
            )
            print(f"  {label:<22} {size:>11,} bytes {lines:>7,} lines; reads ok {share}")


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def _outage_log(
    env: dict[str, str],
    workdir: Path,
    seconds: float,
    connections: int,
    redis: RedisServer,
) -> tuple[int, int, str]:
    log = workdir / f"outage-{env['GATEWAY_LOG_REPEAT_INTERVAL_S']}.log"
    with (
        harness.serve(env, workers=2, log=log) as base,
        _background(_load, base, connections) as done,
    ):
        time.sleep(1)
        before = log.stat().st_size
        lines_before = log.read_bytes().count(b"\n")
        redis.stop()
        start = time.monotonic()
        time.sleep(seconds)
        end = time.monotonic()
        size = log.stat().st_size - before
        lines = log.read_bytes().count(b"\n") - lines_before
        if keep := os.environ.get("BENCH_KEEP_LOGS"):
            shutil.copy(log, Path(keep) / log.name)
        redis.start()
    return size, lines, _ok_share(done, start, end)


def _report_phases(
    windows: list[tuple[str, float, float]],
    probes: list[tuple[str, float, float]],
    done: list[tuple[float, bool]],
    connections: int,
) -> None:
    print(
        f"readyz benchmark: gateway serve --workers 2, Postgres and Redis of its own, "
        f"{connections} connections reading cached profiles; /readyz then /healthz on new "
        f"connections every {PROBE_EVERY_S * 1000:.0f} ms; target /readyz max < "
        f"{TARGET_MS:.0f} ms"
    )
    print(
        f"  {'phase':<24} {'/readyz p50 / p99 / max ms':>28}   "
        f"{'yardstick /healthz p50 / p99 / max':>36}  {'max ratio':>9}  reads ok"
    )
    worst = 0.0
    for name, start, end in windows:
        ready = spread(_during(probes, "/readyz", start, end))
        health = spread(_during(probes, "/healthz", start, end))
        worst = max(worst, ready[2])
        print(
            f"  {name:<24} {ready[0]:>8.1f} / {ready[1]:>6.1f} / {ready[2]:>6.1f}   "
            f"{health[0]:>14.1f} / {health[1]:>6.1f} / {health[2]:>6.1f}   "
            f"{ready[2] / health[2]:>8.1f}x  {_ok_share(done, start, end)}"
        )
    verdict = "met" if worst < TARGET_MS else "MISSED"
    print(f"  worst /readyz: {worst:.1f} ms (target < {TARGET_MS:.0f} ms: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phase-s", type=float, default=8.0, help="seconds per fault phase")
    parser.add_argument("--log-s", type=float, default=20.0, help="seconds of Redis outage")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    run(args.phase_s, args.log_s, args.connections)


if __name__ == "__main__":
    main()

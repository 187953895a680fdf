"""Readiness benchmark: /readyz latency while the gateway's own dependencies break under
load, and the log an outage writes.

    ./dev bench readyz [--phase-s 8] [--log-s 20] [--connections 16]
    (or .venv/bin/python -m bench.readyz from a worktree sharing a virtualenv)

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
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx

from bench.access import AUTH, create_bench_key
from bench.load import SINGLE, _free_port, _upstreams_file, _wait
from demo.people.population import population
from demo.wiring import DEMO_SECRETS

SIZE = 300
REPO = Path(__file__).resolve().parent.parent
TARGET_MS = 200.0
PROBE_EVERY_S = 0.02


# --- services of the benchmark's own ---------------------------------------------------


def _as_postgres(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@contextmanager
def own_postgres(workdir: Path) -> Iterator[tuple[str, Path, int]]:
    """A throwaway cluster: (admin URL, data directory, port)."""
    data = workdir / "pg"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        shutil.chown(data, "postgres")
    subprocess.run(
        _as_postgres(["initdb", "-D", str(data), "-U", "postgres", "-A", "trust"]),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    port = _free_port()
    _pg_ctl(data, "start", port)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", data, port
    finally:
        with suppress(subprocess.CalledProcessError):
            _pg_ctl(data, "stop", port)


def _pg_ctl(data: Path, action: str, port: int) -> None:
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {data} -c fsync=off"
    args = ["pg_ctl", "-D", str(data), "-w", "-l", str(data / "log")]
    args += ["-o", options, "start"] if action == "start" else ["-m", "immediate", "stop"]
    subprocess.run(_as_postgres(args), check=True, stdout=subprocess.DEVNULL)


def _redis(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return process
        time.sleep(0.02)
    raise SystemExit("redis-server did not start")


async def _prepare_database(admin_url: str) -> str:
    import asyncpg

    from demo.seed import seed
    from gateway.db.engine import create_engine, create_sessionmaker
    from gateway.db.migrate import upgrade

    connection = await asyncpg.connect(admin_url)
    await connection.execute('CREATE DATABASE "gateway"')
    await connection.close()
    url = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + "/gateway"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    try:
        await seed(create_sessionmaker(engine), population(SIZE))
        await create_bench_key(create_sessionmaker(engine))
    finally:
        await engine.dispose()
    return url


@contextmanager
def _serve(env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    # `python -m` from this checkout, not the `gateway` script: the script would import
    # whichever checkout the virtualenv was installed from.
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--workers", "2", "--port", str(port)],
            env={**os.environ, "PYTHONPATH": str(REPO), **env},
            cwd=REPO,
            stdout=sink,
            stderr=sink,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait(f"{base}/healthz")
            yield base
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


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


def _get(port: int, path: str) -> None:
    """One GET on a new connection, read to its end (plain sockets: what is timed is the
    server, not a client library)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        while sock.recv(65536):
            pass


def _probe(port: int, started: Event, stop: Event, out: Any) -> None:
    probes: list[tuple[str, float, float]] = []
    while not stop.is_set():
        for path in ("/readyz", "/healthz"):
            begin = time.monotonic()
            with suppress(OSError):
                _get(port, path)
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


def _figures(latencies: list[float]) -> tuple[float, float, float]:
    if not latencies:
        return (float("nan"),) * 3
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99, ordered[-1]


def _during(
    probes: list[tuple[str, float, float]], path: str, start: float, end: float
) -> list[float]:
    return [(e - b) * 1000 for p, b, e in probes if p == path and start <= b <= end]


def _ok_share(done: list[tuple[float, bool]], start: float, end: float) -> str:
    inside = [ok for t, ok in done if start <= t <= end]
    return f"{sum(inside)}/{len(inside)}" if inside else "0/0"


def run(phase_s: float, log_s: float, connections: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, own_postgres(Path(tmp)) as (admin, data, pg_port):
        workdir = Path(tmp)
        database_url = asyncio.run(_prepare_database(admin))
        redis_port = _free_port()
        redis = _redis(redis_port)
        samples_port = _free_port() + 10
        samples = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "demo.upstreams",
                "--base-port",
                str(samples_port),
                "--size",
                str(SIZE),
            ],
            stdout=subprocess.DEVNULL,
        )
        env = {
            "GATEWAY_DATABASE_URL": database_url,
            "GATEWAY_CACHE_URL": f"redis://127.0.0.1:{redis_port}/0",
            "GATEWAY_UPSTREAMS_FILE": str(_upstreams_file(workdir, samples_port, 300.0)),
            "GATEWAY_LOG_LEVEL": "INFO",
            "GATEWAY_ERASURE_KEY": secrets.token_hex(16),
            **DEMO_SECRETS,
        }
        try:
            _wait(f"http://127.0.0.1:{samples_port}/_sample/calls")

            def restart_redis() -> None:
                nonlocal redis
                redis = _redis(redis_port)

            def stop_redis() -> None:
                redis.terminate()
                redis.wait(10)

            phases: list[tuple[str, Any, Any]] = [
                ("everything up", lambda: None, lambda: None),
                ("Redis stopped", stop_redis, restart_redis),
                (
                    "Redis frozen (SIGSTOP)",
                    lambda: os.kill(redis.pid, signal.SIGSTOP),
                    lambda: os.kill(redis.pid, signal.SIGCONT),
                ),
                (
                    "Postgres stopped",
                    lambda: _pg_ctl(data, "stop", pg_port),
                    lambda: _pg_ctl(data, "start", pg_port),
                ),
            ]
            port = _free_port()
            windows = []
            with _serve(env, port, workdir / "serve.log") as base:
                _wait(f"{base}/readyz")
                with (
                    _background(_load, base, connections) as done,
                    _background(_probe, port) as probes,
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
                    stop_redis,
                    restart_redis,
                )
                print(f"  {label:<22} {size:>11,} bytes {lines:>7,} lines; reads ok {share}")
        finally:
            with suppress(ProcessLookupError):
                os.kill(redis.pid, signal.SIGCONT)
            redis.kill()
            samples.terminate()
            samples.wait(10)


def _outage_log(
    env: dict[str, str],
    workdir: Path,
    seconds: float,
    connections: int,
    stop_redis: Any,
    restart_redis: Any,
) -> tuple[int, int, str]:
    log = workdir / f"outage-{env['GATEWAY_LOG_REPEAT_INTERVAL_S']}.log"
    port = _free_port()
    with _serve(env, port, log) as base:
        _wait(f"{base}/readyz")
        with _background(_load, base, connections) as done:
            time.sleep(1)
            before = log.stat().st_size
            lines_before = log.read_bytes().count(b"\n")
            stop_redis()
            start = time.monotonic()
            time.sleep(seconds)
            end = time.monotonic()
            size = log.stat().st_size - before
            lines = log.read_bytes().count(b"\n") - lines_before
            if keep := os.environ.get("BENCH_KEEP_LOGS"):
                shutil.copy(log, Path(keep) / log.name)
            restart_redis()
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
        ready = _figures(_during(probes, "/readyz", start, end))
        health = _figures(_during(probes, "/healthz", start, end))
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

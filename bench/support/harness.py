"""What the benchmarks share to set up a run: ports, child processes, waiting for a URL,
the sample upstreams and the upstreams file pointing at them, a fresh seeded database,
the benchmark key, and the probe and figures of a latency benchmark.

One copy of each, so that two benchmarks compared side by side are set up alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.support.access import create_bench_key
from demo.people.population import demo_epoch, population
from demo.wiring import DEMO_SECRETS, example_upstreams
from tests.served import free_port, wait_until_served

REPO = Path(__file__).resolve().parents[2]
ADMIN_URL = os.environ.get(
    "GATEWAY_TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SAMPLE_SERVICES = 4  # hubspot, soap_crm, shopify, segment, on consecutive ports


# --- ports and processes ----------------------------------------------------------------


def consecutive_free_ports(count: int) -> int:
    """A first port with ``count`` free ports from it (the samples bind consecutive ones)."""
    for _ in range(100):
        base = random.randint(20_000, 30_000)  # below Linux's ephemeral range
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return base
    raise SystemExit("no free ports for the sample upstreams")


def wait(url: str, timeout: float = 60) -> None:
    """Until ``url`` answers anything but a 5xx; a benchmark that cannot start says so."""
    try:
        wait_until_served(url, timeout=timeout, answered=lambda status: status < 500)
    except AssertionError as exc:
        raise SystemExit(f"not ready: {exc}") from None


@contextlib.contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process for the block, its output discarded (or written to ``log``)."""
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(log.open("wb")) if log else subprocess.DEVNULL
        child = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=sink, stderr=sink)
        try:
            yield child
        finally:
            child.terminate()
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()


@contextlib.contextmanager
def sample_upstreams(size: int, *, limits: bool = False) -> Iterator[int]:
    """The four sample upstreams in a process of their own; yields the first port.
    ``limits``: HubSpot and Segment enforce their rate limits (bench/send); the serving
    benchmarks measure the gateway, not the upstreams' allowance, and go without."""
    port = consecutive_free_ports(SAMPLE_SERVICES)
    command = [sys.executable, "-m", "demo.upstreams", "--base-port", str(port)]
    # This process seeds the same people: both date them from its anchor, even when
    # the child starts after midnight UTC.
    command += ["--epoch", demo_epoch().isoformat()]
    if not limits:
        command.append("--no-limits")
    with process([*command, "--size", str(size)]):
        wait(f"http://127.0.0.1:{port}/_sample/calls")
        yield port


@contextlib.contextmanager
def serve(
    env: dict[str, str], workers: int = 1, log: Path | None = None, ready: str = "/readyz"
) -> Iterator[str]:
    """`gateway serve` on a free port until the block ends; yields its base URL once
    ``ready`` answers (its output, if any, to ``log``). Run as ``python -m gateway``
    with this checkout first on the path: the `gateway` script would import whichever
    checkout the virtualenv was installed from."""
    port = free_port()
    command = [sys.executable, "-m", "gateway", "serve", "--workers", str(workers)]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    with process([*command, "--port", str(port)], {**env, "PYTHONPATH": path}, log):
        base = f"http://127.0.0.1:{port}"
        try:
            wait(base + ready)
        except SystemExit:
            if log:  # why it did not start
                print(log.read_text()[-3000:], file=sys.stderr)
            raise
        yield base


def gateway_env(
    database_url: str, cache_url: str, upstreams: Path, log_level: str = "ERROR"
) -> dict[str, str]:
    """What a benchmark's `gateway serve` runs with: its database, cache and upstreams,
    a throwaway erasure key and the demo's upstream and webhook secrets."""
    return {
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_CACHE_URL": cache_url,
        "GATEWAY_UPSTREAMS_FILE": str(upstreams),
        "GATEWAY_LOG_LEVEL": log_level,
        "GATEWAY_ERASURE_KEY": secrets.token_hex(16),
        **DEMO_SECRETS,
    }


def upstreams_file(workdir: Path, samples_port: int, ttl_s: float) -> Path:
    """The demo's upstreams, pointed at the samples on ``samples_port`` and on, cached
    for ``ttl_s``, not paced (the samples of ``sample_upstreams`` enforce no limits)."""
    raw = example_upstreams()
    lines = []
    for offset, (name, table) in enumerate(raw["upstreams"].items()):
        table["base_url"] = f"http://127.0.0.1:{samples_port + offset}"
        table["cache"] = {"ttl_s": ttl_s, "stale_ttl_s": 86400}
        table["rate_limit"] = False
        lines.append(f"[upstreams.{name}]")
        for key, value in table.items():
            lines.append(f"{key} = {_toml(value)}")
    path = workdir / f"upstreams-{ttl_s}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


# --- databases --------------------------------------------------------------------------


async def admin(sql: str) -> None:
    """One statement on the Postgres server's admin database (CREATE/DROP DATABASE)."""
    import asyncpg

    connection = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@contextlib.contextmanager
def database(
    kind: str = "postgres", prefix: str = "gateway_bench", workdir: Path | None = None
) -> Iterator[str]:
    """A fresh, migrated database for the block: an SQLite file in ``workdir``, or a
    Postgres database made (and dropped) on the server at
    GATEWAY_TEST_POSTGRES_ADMIN_URL, as the tests do."""
    from gateway.db.migrate import upgrade

    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{(workdir or Path.cwd()) / f'{prefix}.db'}"
        upgrade(url)
        yield url
        return
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        upgrade(f"{base}/{name}")
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def seed(database_url: str, size: int) -> None:
    """The demo's ``size`` people and the benchmark's key, in a migrated database."""
    from demo.seed import seed as seed_people
    from gateway.db.engine import create_engine, create_sessionmaker

    engine = create_engine(database_url)
    try:
        await seed_people(create_sessionmaker(engine), population(size))
        await create_bench_key(create_sessionmaker(engine))
    finally:
        await engine.dispose()


async def bench_key(database_url: str) -> None:
    """The benchmark's own key; the demo's (which `prepare` made) revoked, as `serve`
    refuses to start while it is active."""
    from gateway.access.api_keys import DEMO_KEY_NAME, ApiKeys
    from gateway.db.engine import create_engine, create_sessionmaker

    engine = create_engine(database_url)
    try:
        await create_bench_key(create_sessionmaker(engine))
        await ApiKeys(create_sessionmaker(engine)).revoke(DEMO_KEY_NAME)
    finally:
        await engine.dispose()


async def customers(database_url: str, size: int) -> tuple[list[str], list[str]]:
    """The ids and emails of (up to) ``size`` stored customers."""
    from gateway.db.engine import create_engine
    from gateway.db.models import Customer

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(select(Customer.id, Customer.email))).all()
    finally:
        await engine.dispose()
    return [str(r[0]) for r in rows][:size], [str(r[1]) for r in rows][:size]


# --- latency probes ---------------------------------------------------------------------


def get_on_new_connection(port: int, path: str, timeout: float = 10) -> None:
    """One GET on a new connection, read to its end (plain sockets: an HTTP client's own
    set-up would be most of what is measured)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        while sock.recv(65536):
            pass


def spread(latencies: list[float]) -> tuple[float, float, float]:
    """(p50, p99, max) of the latencies; NaN when there are none."""
    if not latencies:
        return (float("nan"),) * 3
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99, ordered[-1]


def server_cpu_s(port: int) -> float:
    """CPU seconds (user + system) used so far by the `gateway serve` listening on
    ``port`` and its worker processes, from /proc: a cost per request that other load
    on a shared machine does not inflate the way it inflates latencies."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu seconds)
    master = None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
        if b"serve" in command and str(port).encode() in command:
            master = int(entry.name)
    if master is None:
        raise SystemExit(f"no gateway serve process on port {port}")
    return stats[master][1] + sum(cpu for parent, cpu in stats.values() if parent == master)

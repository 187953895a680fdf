"""Postgres stopped under load: what clients on keep-alive connections get.

    python -m bench.faults.outage_postgres [--clients 32] [--outage 20]

Starts its own Postgres cluster (tests/faults/postgres_cluster.py), its own
`redis-server`, the sample upstreams and the gateway (`gateway serve --workers 2`).
Profiles of WARM customers are read once (cached in Redis). Then CLIENTS clients, each
on one keep-alive connection, send a mix of cached profile reads (profile URL and
GraphQL), reads of never-read profiles, signed webhooks and recommendation requests:

1. the yardstick: the same load with everything up, for OUTAGE seconds;
2. the outage: Postgres stopped with `pg_ctl stop -m immediate` for OUTAGE seconds,
   then started again, and the load kept on for RECOVERY seconds.

Prints, per phase, cached reads answered with data / total, other requests served,
503s with a code and Retry-After, other failures and dropped connections; the time
until the first never-read profile is served again after the restart; and the ratio
of cached reads served per second during the outage to the yardstick's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import tempfile
import time
from pathlib import Path

from bench.support import harness
from bench.support.access import BENCH_KEY
from demo.people.population import population
from demo.wiring import prepare
from gateway.db.migrate import upgrade
from gateway.settings import load_settings
from tests.faults.keepalive import KeepAliveConnection
from tests.faults.outage_load import Load, tally
from tests.faults.postgres_cluster import PostgresCluster
from tests.faults.redis_server import RedisServer

SIZE = 1000
WARM = 200
RECOVERY_S = 10.0
SEGMENT_SECRET = secrets.token_urlsafe(16)


async def _warm(port: int, emails: list[str]) -> list[tuple[str, str]]:
    connection = KeepAliveConnection("127.0.0.1", port)
    found = []
    for email in emails:
        answer = await connection.request(
            "GET", f"/api/v1/users/{email}/profile", {"Authorization": f"Bearer {BENCH_KEY}"}
        )
        body = answer.json()
        if answer.status != 200 or not isinstance(body, dict):
            raise SystemExit(f"warming failed: {answer.status} {answer.body[:200]!r}")
        found.append((email, str(body["id"])))
    await connection.close()
    return found


async def _first_served(port: int, email: str, timeout_s: float) -> float | None:
    """Seconds until a never-read profile is served (the database is back in use)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        connection = KeepAliveConnection("127.0.0.1", port)
        answer = await connection.request(
            "GET", f"/api/v1/users/{email}/profile", {"Authorization": f"Bearer {BENCH_KEY}"}
        )
        await connection.close()
        if answer.status == 200:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    return None


async def _drive(
    cluster: PostgresCluster, port: int, people: list[str], clients: int, outage_s: float
) -> tuple[Load, Load, float | None]:
    warm = await _warm(port, people[:WARM])
    half = (SIZE - WARM) // 2
    yardstick = Load("127.0.0.1", port, BENCH_KEY, warm, people[WARM:][:half], SEGMENT_SECRET)
    yardstick.phase = "yardstick"
    stop = asyncio.Event()
    task = asyncio.create_task(yardstick.run(clients, stop))
    await asyncio.sleep(outage_s)
    stop.set()
    await task

    load = Load("127.0.0.1", port, BENCH_KEY, warm, people[WARM:][half:-1], SEGMENT_SECRET)
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(clients, stop))
    await asyncio.sleep(3)  # every worker verifies the key and serves from the cache
    load.phase = "down"
    await asyncio.to_thread(cluster.stop_immediately)
    await asyncio.sleep(outage_s)
    load.phase = "restarting"
    await asyncio.to_thread(cluster.start)
    load.phase = "back"
    recovered = await _first_served(port, people[-1], RECOVERY_S)
    await asyncio.sleep(max(0.0, RECOVERY_S - (recovered or RECOVERY_S)))
    stop.set()
    await task
    return yardstick, load, recovered


def run(clients: int, outage_s: float) -> None:
    people = [p.email for p in population(SIZE)]
    with tempfile.TemporaryDirectory() as tmp, PostgresCluster.started() as cluster:
        workdir = Path(tmp)
        upgrade(cluster.url)
        asyncio.run(prepare(load_settings(database_url=cluster.url), population(SIZE)))
        asyncio.run(harness.bench_key(cluster.url))
        with RedisServer() as redis, harness.sample_upstreams(SIZE) as samples_port:
            upstreams = harness.upstreams_file(workdir, samples_port, 300.0)
            env = harness.gateway_env(cluster.url, redis.url, upstreams, log_level="WARNING")
            env["GATEWAY_PROFILE_CACHE_TTL_S"] = "600"
            env["GATEWAY_WEBHOOK_SECRETS"] = json.dumps({"segment": SEGMENT_SECRET})
            log = workdir / "gateway.log"
            with harness.serve(env, workers=2, log=log, ready="/healthz") as base:
                yardstick, load, recovered = asyncio.run(
                    _drive(cluster, int(base.rsplit(":", 1)[1]), people, clients, outage_s)
                )
            lines = log.read_text().splitlines()
            logged = (sum('"ERROR"' in line for line in lines), len(lines), log.stat().st_size)
    _report(yardstick, load, recovered, clients, outage_s)
    print("gateway log, whole run: {} ERROR lines of {} lines, {} bytes".format(*logged))


def _report(
    yardstick: Load, load: Load, recovered: float | None, clients: int, outage_s: float
) -> None:
    rows = [
        ("yardstick (all up)", tally(yardstick.outcomes, "yardstick")),
        ("before the outage", tally(load.outcomes, "up")),
        ("Postgres stopped", tally(load.outcomes, "down")),
        ("after the restart", tally(load.outcomes, "back")),
    ]
    print(f"Postgres outage: {platform.machine()}, {os.cpu_count()} cores, gateway 2 workers,")
    print(f"{clients} clients on keep-alive connections, Postgres stopped {outage_s:.0f} s")
    print("(pg_ctl stop -m immediate), Redis and the sample upstreams up.\n")
    header = ("phase", "requests", "cached with data", "other 200", "503 coded", "other", "resets")
    print("{:<20} {:>9} {:>18} {:>10} {:>10} {:>6} {:>7}".format(*header))
    for name, t in rows:
        cached = f"{t['cached_served']}/{t['cached']}"
        print(
            f"{name:<20} {t['requests']:>9} {cached:>18} {t['other_served']:>10} "
            f"{t['coded_503']:>10} {t['other_failures']:>6} {t['resets']:>7}"
        )
    down, yard = rows[2][1], rows[0][1]
    share = down["cached_served"] / max(down["cached"], 1)
    marked = down["cached_marked"] / max(down["cached_served"], 1)
    ratio = down["cached_served"] / max(yard["cached_served"], 1)
    opened = sum(c.opened for c in load.connections)
    print(f"\ncached reads with data during the outage: {share:.2%} (target >= 99 %)")
    print(f"of those marked as served from the cache: {marked:.2%}")
    print(f"connections opened by {clients} clients through the whole run: {opened}")
    back = f"{recovered:.2f} s" if recovered is not None else f"not within {RECOVERY_S:.0f} s"
    print(f"first never-read profile served after the restart: {back}")
    print(
        f"cached reads served during the outage / yardstick (same duration): "
        f"{down['cached_served']} / {yard['cached_served']} = {ratio:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--outage", type=float, default=20.0, help="seconds Postgres is down")
    args = parser.parse_args()
    run(args.clients, args.outage)


if __name__ == "__main__":
    main()

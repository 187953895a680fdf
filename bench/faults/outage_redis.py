"""Redis outage benchmark: what clients get while the gateway's Redis is down or frozen.

    ./dev bench outage_redis [--workers 2] [--clients 20] [--outage-s 20] [--freeze-s 10]

Starts, in separate processes, the sample upstreams, a `redis-server` of its own (with
persistence, as an operator runs it: entries cached before an outage are still there
after it) and `gateway serve --workers N` on a fresh Postgres database. Clients read
cached profiles (stored fields and a CRM field) back to back, on keep-alive
connections, while one writer changes other customers' names. Phases, one run:

1. yardstick: the load with Redis up;
2. outage: Redis stopped for ``--outage-s``, then started again on the same port;
3. after: the load on the connections each worker opened before the restart;
4. freeze: Redis SIGSTOPped for ``--freeze-s`` (a hung Redis), then resumed.

Printed per phase: reads answered with data / total, failures, p50 / p99 / max
latency, and the ratio of p99 to the yardstick's; then whether every write
acknowledged during the outage is read back after it from every worker. A second
yardstick, the same readers on a gateway caching nothing (served again, memory
cache, every TTL 0), shows what a read costs without a cache: the outage's figure.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.support import harness
from bench.support.access import AUTH
from tests.faults.redis_server import RedisServer

READ = "query($e: String!) { customer(email: $e) { email firstName lifecycleStage } }"
WRITE = (
    "mutation($e: String!, $n: String!) { upsertCustomer(input: {email: $e, firstName: $n}) "
    "{ firstName } }"
)
SIZE = 1000
READERS_EMAILS = 300
WRITERS_EMAILS = 30


@dataclass
class Tally:
    answered: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)  # a few failures, as clients saw them

    @property
    def total(self) -> int:
        return self.answered + self.failed

    def add(self, ok: bool, seconds: float, what: str) -> None:
        self.latencies.append(seconds)
        if ok:
            self.answered += 1
        else:
            self.failed += 1
            if len(self.samples) < 3:
                self.samples.append(what)

    def p(self, share: float) -> float:
        ordered = sorted(self.latencies) or [0.0]
        return ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1000

    def line(self, name: str, yardstick: Tally | None) -> str:
        total = self.answered + self.failed
        ratio = (
            f"  p99 ratio {self.p(0.99) / max(yardstick.p(0.99), 0.001):5.1f}" if yardstick else ""
        )
        median = statistics.median(self.latencies) * 1000 if self.latencies else 0.0
        return (
            f"  {name:<22} with data {self.answered:6d} / {total:6d} "
            f"({100 * self.answered / max(total, 1):6.2f} %)  failed {self.failed:4d}  "
            f"p50 {median:6.1f}  p99 {self.p(0.99):6.1f}  max {self.p(1.0):7.1f} ms{ratio}"
        )


class Load:
    """Readers and one writer, counted into the tally of the phase under way."""

    def __init__(self, base: str, emails: list[str], writes: list[str], clients: int) -> None:
        self.base, self.emails, self.writes, self.clients = base, emails, writes, clients
        self.tally = Tally()
        self.stopped = asyncio.Event()
        self.written: dict[str, str] = {}  # email -> the last name acknowledged
        self.write_failures = 0
        self.writing = False

    def phase(self) -> Tally:
        self.tally = Tally()
        return self.tally

    async def _reader(self, n: int) -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(
            base_url=self.base, headers=AUTH, timeout=30, limits=limits
        ) as client:
            turn = n
            while not self.stopped.is_set():
                email = self.emails[turn % len(self.emails)]
                turn += self.clients
                started = time.perf_counter()
                ok, what = await _read(client, email)
                self.tally.add(ok, time.perf_counter() - started, what)

    async def _writer(self) -> None:
        async with httpx.AsyncClient(base_url=self.base, headers=AUTH, timeout=30) as client:
            turn = 0
            while not self.stopped.is_set():
                if not self.writing:
                    await asyncio.sleep(0.05)
                    continue
                email, name = self.writes[turn % len(self.writes)], f"w{turn}"
                turn += 1
                try:
                    response = await client.post(
                        "/graphql", json={"query": WRITE, "variables": {"e": email, "n": name}}
                    )
                    body = response.json()
                except (httpx.HTTPError, ValueError):
                    self.write_failures += 1
                    continue
                if response.status_code == 200 and not body.get("errors"):
                    self.written[email] = name
                else:
                    self.write_failures += 1
                await asyncio.sleep(0.05)

    async def run(self) -> None:
        await asyncio.gather(self._writer(), *(self._reader(n) for n in range(self.clients)))


async def _read(client: httpx.AsyncClient, email: str) -> tuple[bool, str]:
    try:
        response = await client.post("/graphql", json={"query": READ, "variables": {"e": email}})
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return False, type(exc).__name__
    customer = (body.get("data") or {}).get("customer") or {}
    ok = response.status_code == 200 and customer.get("email") == email and not body.get("errors")
    return ok, f"{response.status_code} {response.text[:160]}"


async def _stale(base: str, written: dict[str, str], workers: int) -> int:
    """Acknowledged writes not read back, on new connections (any worker may answer)."""
    stale = 0
    for email, name in written.items():
        for _ in range(workers * 2):
            async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as client:
                response = await client.post(
                    "/graphql", json={"query": READ, "variables": {"e": email}}
                )
            customer = (response.json().get("data") or {}).get("customer") or {}
            if customer.get("firstName") != name:
                stale += 1
                break
    return stale


async def _drive(
    base: str, emails: list[str], writes: list[str], args: argparse.Namespace, redis: RedisServer
) -> Tally:
    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=60) as client:
        for email in emails + writes:  # every profile cached, with its CRM record
            await _read(client, email)
    load = Load(base, emails, writes, args.clients)
    running = asyncio.create_task(load.run())
    await asyncio.sleep(2)  # connections opened, pools filled
    yardstick = load.phase()
    await asyncio.sleep(args.outage_s)
    outage = load.phase()
    load.writing = True
    redis.stop()
    await asyncio.sleep(args.outage_s)
    redis.start()
    load.writing = False
    after = load.phase()
    await asyncio.sleep(args.after_s)
    freeze = load.phase()
    redis.freeze()
    await asyncio.sleep(args.freeze_s)
    redis.thaw()
    load.phase()
    load.stopped.set()
    await running
    await asyncio.sleep(2)  # the workers' circuits close and owed invalidations replay
    stale = await _stale(base, load.written, args.workers)
    print(
        f"redis outage benchmark: gateway serve --workers {args.workers}, postgres, its own "
        f"redis-server; {args.clients} clients reading cached profiles (+1 writer)"
    )
    print(yardstick.line("yardstick (redis up)", None))
    print(outage.line(f"redis stopped {args.outage_s:.0f} s", yardstick))
    print(after.line(f"after restart {args.after_s:.0f} s", yardstick))
    print(freeze.line(f"redis frozen {args.freeze_s:.0f} s", yardstick))
    for name, tally in (("outage", outage), ("after", after), ("freeze", freeze)):
        for sample in tally.samples:
            print(f"    {name} failure: {sample}")
    print(
        f"  writes acknowledged during the outage: {len(load.written)} customers "
        f"({load.write_failures} writes refused); read back stale afterwards: {stale}"
    )
    share = outage.answered / max(outage.answered + outage.failed, 1)
    print(
        f"reads with data while redis was stopped: {100 * share:.2f} % (target >= 99 %); "
        f"failures after restart: {after.failed} (target 0); outage p99 / yardstick p99: "
        f"{outage.p(0.99) / max(yardstick.p(0.99), 0.001):.1f}"
    )
    return outage


async def _uncached(base: str, emails: list[str], args: argparse.Namespace, outage: Tally) -> None:
    """The same readers on a gateway caching nothing: what every read costs without a
    cache, which is what a read costs while Redis is away."""
    load = Load(base, emails, [], args.clients)
    running = asyncio.create_task(load.run())
    await asyncio.sleep(2)
    plain = load.phase()
    await asyncio.sleep(args.outage_s)
    load.stopped.set()
    await running
    print(plain.line("no cache at all", None))
    print(
        f"reads/s while redis was stopped / reads/s with no cache at all: "
        f"{outage.total / max(plain.total, 1):.2f} (the outage costs what not caching costs)"
    )


def run(args: argparse.Namespace) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        RedisServer(persist=True) as redis,
        harness.sample_upstreams(SIZE) as samples_port,
        harness.database("postgres", "gateway_bench_outage") as database_url,
    ):
        workdir = Path(tmp)
        asyncio.run(harness.seed(database_url, SIZE))
        _, emails = asyncio.run(harness.customers(database_url, SIZE))
        upstreams = harness.upstreams_file(workdir, samples_port, 300.0)
        env = harness.gateway_env(database_url, redis.url, upstreams)
        env["GATEWAY_PROFILE_CACHE_TTL_S"] = "120"
        reads = emails[:READERS_EMAILS]
        writes = emails[READERS_EMAILS : READERS_EMAILS + WRITERS_EMAILS]
        with harness.serve(env, workers=args.workers) as base:
            outage = asyncio.run(_drive(base, reads, writes, args, redis))
        uncached = env | {
            "GATEWAY_CACHE_URL": "memory://",
            "GATEWAY_PROFILE_CACHE_TTL_S": "0",
            "GATEWAY_UPSTREAMS_FILE": str(harness.upstreams_file(workdir, samples_port, 0.0)),
        }
        with harness.serve(uncached, workers=args.workers) as base:
            asyncio.run(_uncached(base, reads, args, outage))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--outage-s", type=float, default=20.0)
    parser.add_argument("--after-s", type=float, default=10.0)
    parser.add_argument("--freeze-s", type=float, default=10.0)
    run(parser.parse_args())


if __name__ == "__main__":
    main()

"""SendGrid Event Webhook throughput: signed batches of engagement events, each stored once.

    .venv/bin/python -m bench.esp [--batches 10] [--size 1000] [--workers 2] [--in-flight 2]

Serves the gateway (`gateway serve`, ``--workers`` processes) on a fresh Postgres
database seeded with the demo's people, then posts ``--batches`` SendGrid batches of
``--size`` events (opens, clicks, deliveries and a few unsubscribes for the stored
people), ECDSA-signed as SendGrid signs them, ``--in-flight`` at a time; then posts the
first batch again. One batch of each kind is posted first, unmeasured, so neither side
pays for a cold server (the yardstick, measured first, did: it came out slower than the
stored path it bounds). Printed: events/s accepted, events stored vs sent (each exactly once;
the replay stores nothing). The yardstick is the same number of batches for addresses
nobody has (signature, parsing and the lookup, nothing written), on the same server;
then the ratio. The issue's target: 5,000 events/s in batches of 1,000 on 2 cores.
Also printed, for both: CPU seconds per 1,000 events of the gateway's processes and of
the database's Postgres backends (from /proc), which a busy shared machine moves less
than the wall clock.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.support import harness

KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC = base64.b64encode(
    KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
KINDS = ("delivered", "open", "open", "click", "processed")


def batch(emails: list[str], size: int, rng: random.Random) -> list[dict[str, Any]]:
    now = int(time.time())
    events = []
    for _ in range(size):
        kind = "unsubscribe" if rng.random() < 0.01 else rng.choice(KINDS)
        event: dict[str, Any] = {
            "email": rng.choice(emails),
            "timestamp": now - rng.randrange(86400),
            "event": kind,
            "sg_event_id": uuid.uuid4().hex,
            "sg_message_id": f"{uuid.uuid4().hex[:22]}.filter0001",
            "campaign": "bench",
        }
        if kind == "click":
            event["url"] = f"https://shop.example/p/{rng.randrange(500)}"
        events.append(event)
    return events


def signed(events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(events).encode()
    stamp = str(int(time.time()))
    signature = KEY.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return body, {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        "content-type": "application/json",
    }


async def post_all(base: str, batches: list[list[dict[str, Any]]], in_flight: int) -> float:
    """Seconds to have every batch answered 200 (anything else stops the run)."""
    gate = asyncio.Semaphore(in_flight)
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:

        async def post(events: list[dict[str, Any]]) -> None:
            body, headers = signed(events)  # signed when sent: the replay window holds
            async with gate:
                answer = await client.post("/webhooks/sendgrid", content=body, headers=headers)
            if answer.status_code != 200:
                raise SystemExit(f"{answer.status_code}: {answer.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(post(events) for events in batches))
        return time.perf_counter() - started


async def backends_cpu(url: str) -> dict[int, float]:
    """CPU seconds so far of this database's Postgres client backends (the gateway's
    pools; not an autovacuum worker analysing the seeded tables), by pid: a Postgres on
    this machine only."""
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
    finally:
        await connection.close()
    return _cpu_by_pid([row["pid"] for row in rows])


def _cpu_by_pid(pids: list[int]) -> dict[int, float]:
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        found[pid] = (int(fields[11]) + int(fields[12])) / tick
    return found


def measured(
    url: str, port: int, base: str, batches: list[list[dict[str, Any]]], in_flight: int
) -> tuple[float, float, float]:
    """Seconds to post ``batches``, and the CPU seconds the gateway and Postgres spent."""
    app, database = harness.server_cpu_s(port), asyncio.run(backends_cpu(url))
    seconds = asyncio.run(post_all(base, batches, in_flight))
    app = harness.server_cpu_s(port) - app
    after = asyncio.run(backends_cpu(url))
    return seconds, app, sum(cpu - database.get(pid, 0.0) for pid, cpu in after.items())


async def stored(url: str) -> int:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM events WHERE source = 'sendgrid'"
        )
    finally:
        await connection.close()
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--in-flight", type=int, default=2)
    args = parser.parse_args(argv)
    rng = random.Random(25)
    events = args.batches * args.size
    print(
        f"SendGrid webhook: {args.batches} batches of {args.size} events, {args.workers} "
        f"workers, Postgres, {args.in_flight} batches in flight",
        flush=True,
    )
    with harness.database("postgres", "gateway_esp") as url:
        asyncio.run(harness.seed(url, args.people))
        _, emails = asyncio.run(harness.customers(url, args.people))
        env = {
            "GATEWAY_DATABASE_URL": url,
            "GATEWAY_CACHE_URL": "memory://",
            "GATEWAY_LOG_LEVEL": "ERROR",
            "GATEWAY_ERASURE_KEY": secrets.token_hex(32),
            "GATEWAY_WEBHOOK_SECRETS": json.dumps({"sendgrid": PUBLIC}),
        }
        with harness.serve(env, workers=args.workers, ready="/healthz") as base:
            strangers = [f"nobody{n}@example.net" for n in range(args.people)]
            warm = [batch(strangers, args.size, rng), batch(emails, args.size, rng)]
            for events_of_one in warm:  # one at a time, unmeasured
                asyncio.run(post_all(base, [events_of_one], 1))
            warmed = asyncio.run(stored(url))
            port = int(base.rsplit(":", 1)[1])
            unknown = [batch(strangers, args.size, rng) for _ in range(args.batches)]
            yardstick, bare_app, bare_db = measured(url, port, base, unknown, args.in_flight)
            known = [batch(emails, args.size, rng) for _ in range(args.batches)]
            seconds, app, database = measured(url, port, base, known, args.in_flight)
            first = asyncio.run(stored(url)) - warmed
            replay = asyncio.run(post_all(base, known[:1], 1))
            after = asyncio.run(stored(url)) - warmed
    rate, bare = events / seconds, events / yardstick
    print(f"yardstick (unknown addresses, nothing stored): {bare:,.0f} events/s", flush=True)
    print(
        f"stored path: {rate:,.0f} events/s; stored {first} of {events} sent "
        f"(each once: {first == events}); replay of {args.size} in {replay:.2f} s stored "
        f"{after - first}",
        flush=True,
    )
    print(f"ratio stored / yardstick: {rate / bare:.2f}; vs the 5,000/s target: {rate / 5000:.2f}")
    per = 1000 / events
    print(
        f"CPU s per 1,000 events: stored path app {app * per:.3f} + Postgres "
        f"{database * per:.3f} = {(app + database) * per:.3f}; yardstick app "
        f"{bare_app * per:.3f} + Postgres {bare_db * per:.3f} = "
        f"{(bare_app + bare_db) * per:.3f}; ratio {(app + database) / (bare_app + bare_db):.2f}"
    )
    load = os.getloadavg()
    print(f"load average after the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores)")


if __name__ == "__main__":
    main()

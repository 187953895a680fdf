"""Webhook storm benchmark: near-identical records, each webhook delivered twice at once.

    .venv/bin/python -m bench.faults.storm [--webhooks 2000] [--workers 2] [--in-flight 32]

Serves the gateway (`gateway serve`, uvicorn, ``--workers`` processes) on a fresh
Postgres database, then sends ``--webhooks`` signed Shopify customer webhooks, four per
person (linked by shared e-mails and phones, the same name and time of observation),
each delivered twice at the same moment, ``--in-flight`` pairs at a time.  Printed:
the answers by status, events acknowledged vs stored (each must be stored exactly
once), transactions retried (the gateway's own counter, from /metrics), events/s.
The yardstick is the same count of webhooks for other people, each sent once, the same
number of requests in flight, on a fresh database and server; then the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import random
import re
import secrets
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from bench.support import harness

SECRET = secrets.token_hex(16)
FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken")
_RETRIES = re.compile(r"^gateway_db_transaction_retries_total\{[^}]*\} ([\d.e+]+)$", re.M)


def storm_customers(people: int, seed: int = 17) -> list[dict[str, Any]]:
    """Four Shopify customers per person: two share an e-mail, two a phone, two another
    e-mail (a shared phone with another e-mail links only by score); every one with the
    same name and the same time of observation, so the profiles they join or fold into
    are offered the same observation many times.  Shuffled."""
    rng = random.Random(seed)
    base = rng.randrange(10**9, 10**10)
    records = []
    for person in range(people):
        email, other = f"storm{base}.{person}@example.com", f"storm{base}.{person}@example.org"
        phone = f"+44 20 7946 {rng.randrange(10000):04d}"
        same = {
            "first_name": rng.choice(FIRST_NAMES),
            "last_name": "".join(rng.choice("bcdfghklmnprstvz") for _ in range(9)).title(),
            "updated_at": "2026-11-30T09:00:00+00:00",
        }
        ids = [base * 10 + person * 4 + n for n in range(4)]
        records += [
            {"id": ids[0], "email": email, "phone": phone, **same},
            {"id": ids[1], "email": email, **same},
            {"id": ids[2], "email": other, "phone": phone, **same},
            {"id": ids[3], "email": other, **same},
        ]
    rng.shuffle(records)
    return records


def signed_shopify(record: dict[str, Any], secret: str) -> tuple[bytes, dict[str, str]]:
    """A ``customers/update`` webhook as Shopify signs it (HMAC-SHA256 of the body)."""
    body = json.dumps(record).encode()
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return body, {
        "X-Shopify-Hmac-Sha256": digest.decode(),
        "X-Shopify-Topic": "customers/update",
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "content-type": "application/json",
    }


@dataclass(slots=True)
class Phase:
    name: str
    statuses: Counter[int]
    acknowledged: set[str]
    stored: int
    stored_twice: int
    retries: float
    seconds: float
    webhooks: int

    def line(self) -> str:
        rate = self.webhooks / self.seconds
        statuses = ", ".join(f"{status}: {n}" for status, n in sorted(self.statuses.items()))
        return (
            f"{self.name}: answers {{{statuses}}}; acknowledged {len(self.acknowledged)}, "
            f"stored {self.stored} (twice: {self.stored_twice}); retries {self.retries:.0f}; "
            f"{self.webhooks} events in {self.seconds:.1f} s = {rate:,.0f} events/s"
        )


def _gateway(url: str, workers: int) -> contextlib.AbstractContextManager[str]:
    env = {
        "GATEWAY_DATABASE_URL": url,
        "GATEWAY_CACHE_URL": "memory://",
        "GATEWAY_LOG_LEVEL": "ERROR",
        "GATEWAY_ERASURE_KEY": secrets.token_hex(32),
        "GATEWAY_WEBHOOK_SECRETS": json.dumps({"shopify": SECRET}),
    }
    return harness.serve(env, workers=workers, ready="/healthz")


async def _retries(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    return sum(float(value) for value in _RETRIES.findall(text))


async def _send(
    base: str, records: list[dict[str, Any]], copies: int, in_flight: int
) -> tuple[Counter[int], set[str], float, float]:
    deliveries = [signed_shopify(record, SECRET) for record in records]
    statuses: Counter[int] = Counter()
    failures: Counter[str] = Counter()
    acknowledged: set[str] = set()
    gate = asyncio.Semaphore(in_flight)
    limits = httpx.Limits(max_connections=in_flight * copies, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        before = await _retries(client)

        async def deliver(body: bytes, headers: dict[str, str]) -> None:
            async with gate:
                answers = await asyncio.gather(
                    *(
                        client.post("/webhooks/shopify", content=body, headers=headers)
                        for _ in range(copies)
                    ),
                    return_exceptions=True,
                )
            for answer in answers:
                if isinstance(answer, BaseException):
                    failures[type(answer).__name__] += 1
                    statuses[0] += 1  # no answer at all (connection reset, timeout)
                    continue
                statuses[answer.status_code] += 1
                if answer.status_code >= 500:
                    print(f"  {answer.status_code}: {answer.text[:200]}", flush=True)
                if answer.status_code < 300:
                    acknowledged.add(headers["X-Shopify-Webhook-Id"])

        started = time.perf_counter()
        await asyncio.gather(*(deliver(body, headers) for body, headers in deliveries))
        seconds = time.perf_counter() - started
        retries = await _retries(client) - before
    if failures:
        print(f"  requests without an answer: {dict(failures)}", flush=True)
    return statuses, acknowledged, retries, seconds


async def _stored(url: str, acknowledged: set[str]) -> tuple[int, int]:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await connection.fetch(
            "SELECT event_id, count(*) AS n FROM events WHERE source = 'shopify' "
            "AND event_id = ANY($1::text[]) GROUP BY event_id",
            list(acknowledged),
        )
    finally:
        await connection.close()
    return len(rows), sum(1 for row in rows if row["n"] > 1)


def run_phase(name: str, records: list[dict[str, Any]], copies: int, args: Any) -> Phase:
    with harness.database("postgres", "gateway_storm") as url, _gateway(url, args.workers) as base:
        statuses, acknowledged, retries, seconds = asyncio.run(
            _send(base, records, copies, args.in_flight)
        )
        stored, twice = asyncio.run(_stored(url, acknowledged))
    return Phase(name, statuses, acknowledged, stored, twice, retries, seconds, len(records))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--webhooks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--in-flight", type=int, default=32, help="pairs (or singles) at once")
    args = parser.parse_args(argv)
    people = max(1, args.webhooks // 4)
    print(
        f"webhook storm: {people * 4} Shopify webhooks, {args.workers} workers, Postgres, "
        f"{args.in_flight} deliveries in flight",
        flush=True,
    )
    yardstick = run_phase("yardstick (each sent once)", storm_customers(people, seed=2), 1, args)
    print(yardstick.line(), flush=True)
    storm = run_phase("storm (each sent twice at once)", storm_customers(people, seed=1), 2, args)
    print(storm.line(), flush=True)
    server_errors = sum(n for status, n in storm.statuses.items() if status >= 500 or status == 0)
    lost = len(storm.acknowledged) - storm.stored
    print(
        f"storm: 5xx or no answer {server_errors}, acknowledged but not stored {lost}, "
        f"stored twice {storm.stored_twice}"
    )
    ratio = (storm.webhooks / storm.seconds) / (yardstick.webhooks / yardstick.seconds)
    print(f"ratio storm / yardstick events/s: {ratio:.2f}")


if __name__ == "__main__":
    main()

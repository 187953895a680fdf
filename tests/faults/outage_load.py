"""Concurrent clients on keep-alive connections against a gateway whose Postgres goes
down and comes back; what each request got, by phase. Shared by the fault test and
bench/faults/outage_postgres.py.

Requests, by kind:
- ``cached``: a profile read before the outage (the profile URL, or ``customer`` over
  GraphQL): the ones that should keep answering with data;
- ``uncached``: a profile never read (needs the database);
- ``webhook``: a signed Segment ``identify`` of a new customer (needs the database);
- ``recommendations``: ``POST /api/recommendations`` for a cached customer.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import orjson

from tests.faults.keepalive import Answer, KeepAliveConnection

GRAPHQL_READ = "query($e: String) { customer(email: $e) { id firstName sources { status } } }"
CODES = {"DATABASE_UNAVAILABLE", "CACHE_UNAVAILABLE"}


@dataclass(frozen=True, slots=True)
class Outcome:
    phase: str
    kind: str
    answer: Answer

    @property
    def served(self) -> bool:
        """200 with the customer in it."""
        if self.answer.status != 200:
            return False
        body = self.answer.json()
        if not isinstance(body, dict):
            return False
        if self.kind in {"cached", "uncached"} and "data" in body:
            return bool((body.get("data") or {}).get("customer"))
        return True

    @property
    def coded_503(self) -> bool:
        answer = self.answer
        return (
            answer.status == 503
            and answer.headers.get("content-type", "").startswith("application/json")
            and answer.code in CODES
            and answer.headers.get("retry-after", "").isdigit()
        )

    @property
    def degraded(self) -> bool:
        body = self.answer.json() if self.answer.status == 200 else {}
        if not isinstance(body, dict):
            return False
        return "degraded" in body or "degraded" in (body.get("extensions") or {})


@dataclass
class Load:
    """What to send: the warm and cold people, keys and the webhook secret."""

    host: str
    port: int
    key: str
    warm: Sequence[tuple[str, str]]  # (email, customer id), read before the outage
    cold: Sequence[str]  # emails never read
    segment_secret: str
    phase: str = "up"
    outcomes: list[Outcome] = field(default_factory=list)
    connections: list[KeepAliveConnection] = field(default_factory=list)
    _cold: itertools.cycle[str] | None = None

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def _request(self, n: int) -> tuple[str, str, str, dict[str, str], bytes]:
        email, customer_id = self.warm[n % len(self.warm)]
        json = {**self._auth(), "Content-Type": "application/json"}
        slot = n % 10
        if slot < 4:
            return "cached", "GET", f"/api/v1/users/{email}/profile", self._auth(), b""
        if slot < 7:
            body = orjson.dumps({"query": GRAPHQL_READ, "variables": {"e": email}})
            return "cached", "POST", "/graphql", json, body
        if slot == 7 and self.phase != "up":
            # Never during the first phase: read then, they would be cached.
            cold = next(self._cold or iter(self.cold))
            return "uncached", "GET", f"/api/v1/users/{cold}/profile", self._auth(), b""
        if slot == 8:
            body = orjson.dumps({"customer_id": customer_id, "limit": 3})
            return "recommendations", "POST", "/api/recommendations", json, body
        return "webhook", "POST", "/webhooks/segment", *self._webhook()

    def _webhook(self) -> tuple[dict[str, str], bytes]:
        body = orjson.dumps(
            {
                "type": "identify",
                "messageId": str(uuid.uuid4()),
                "userId": f"outage-{uuid.uuid4().hex[:12]}",
                "traits": {"email": f"outage.{uuid.uuid4().hex[:12]}@example.com"},
                "timestamp": "2026-11-23T10:00:00Z",
            }
        )
        signature = hmac.new(self.segment_secret.encode(), body, hashlib.sha1).hexdigest()
        return {"Content-Type": "application/json", "X-Signature": signature}, body

    async def run(self, clients: int, stop: asyncio.Event) -> None:
        """``clients`` connections, each sending one request after another until ``stop``."""
        self._cold = itertools.cycle(self.cold)

        async def client(offset: int) -> None:
            connection = KeepAliveConnection(self.host, self.port)
            self.connections.append(connection)
            n = offset
            try:
                while not stop.is_set():
                    phase = self.phase
                    kind, method, path, headers, body = self._request(n)
                    answer = await connection.request(method, path, headers, body)
                    self.outcomes.append(Outcome(phase, kind, answer))
                    n += 1
            finally:
                await connection.close()

        await asyncio.gather(*(client(i * 7) for i in range(clients)))


def tally(outcomes: Sequence[Outcome], phase: str) -> dict[str, int]:
    """Counts of one phase: cached reads served, 503s with a code, anything else."""
    mine = [o for o in outcomes if o.phase == phase]
    cached = [o for o in mine if o.kind == "cached"]
    counts = Counter(
        "reset" if o.answer.status == 0 else "coded_503" if o.coded_503 else "other"
        for o in mine
        if not (o.kind == "cached" and o.served)
        and not (o.kind != "cached" and o.answer.status == 200)
    )
    return {
        "requests": len(mine),
        "cached": len(cached),
        "cached_served": sum(o.served for o in cached),
        "cached_marked": sum(o.degraded for o in cached if o.served),
        "other_served": sum(o.answer.status == 200 for o in mine if o.kind != "cached"),
        "coded_503": counts["coded_503"],
        "resets": counts["reset"],
        "other_failures": counts["other"],
    }


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout_s: float) -> bool:
    """Whether ``predicate`` came true within ``timeout_s`` (asked every 0.2 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.2)
    return False

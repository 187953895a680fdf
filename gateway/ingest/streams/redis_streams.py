"""Redis Streams consumer groups behind the ``Transport`` interface.

XREADGROUP gives each entry to one consumer of the group; XACK after the commit takes
it off the group's pending entries list. A consumer that dies leaves its entries
pending: XAUTOCLAIM hands those idle for ``claim_idle_s`` to a live consumer (their
delivery count goes up, which is how a poison entry is recognised). A consumer
restarted under its own name first reads its own pending entries again. Dead letters
go to a second stream (XADD MAXLEN ~: bounded, the oldest dropped first) with the
reason, in one MULTI with the XACK, so an entry is in exactly one of the two.

A Redis restarted without its data (a cache Redis without persistence, the default
stream Redis) has lost the stream and the group: XREADGROUP answers NOGROUP (UNBLOCKED
when the key goes while it waits). ``read``
then creates the group again (MKSTREAM, from the stream's start: what producers added
since the restart is the group's) and reads on; the entries that were pending are gone
with the group (an XACK of them acknowledges nothing, and fails nothing).

An entry carries the Segment message as JSON in one field (``payload`` by
convention; any single field name is accepted).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from gateway.ingest.streams.transport import Delivery, Lag

logger = logging.getLogger("gateway.stream")

FIELD = b"payload"
_KNOWN_FIELDS = (FIELD, b"data", b"message", b"event", b"body")


class RedisStreams:
    name = "redis"

    def __init__(
        self,
        client: aioredis.Redis,
        stream: str,
        group: str,
        consumer: str,
        dead_letter: str,
        *,
        claim_idle_s: float = 30.0,
        dead_letter_maxlen: int = 100_000,
    ) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.dead_letter_stream = dead_letter
        self.claim_idle_s = claim_idle_s
        self.dead_letter_maxlen = dead_letter_maxlen
        self._claim_cursor = "0-0"
        self._claim_at = 0.0  # time.monotonic() of the next XAUTOCLAIM scan
        # After a restart under this name: its pending entries first, from this id on
        # (advanced past each read: a batch still being stored is not read again).
        self._own_backlog: str | None = "0"

    @classmethod
    def from_url(cls, url: str, stream: str, group: str, consumer: str, **kw: Any) -> RedisStreams:
        client = aioredis.Redis.from_url(url, socket_timeout=None, socket_connect_timeout=5)
        return cls(client, stream, group, consumer, f"{stream}:dead", **kw)

    async def open(self) -> None:
        try:
            # From the stream's start: entries produced before the first consumer are
            # the group's too.
            await self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, count: int, wait_s: float) -> list[Delivery]:
        try:
            return await self._read(count, wait_s)
        except ResponseError as exc:
            # UNBLOCKED: the key was deleted under a blocked read (FLUSHALL, an
            # eviction policy on a cache Redis); the next read would answer NOGROUP.
            if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                raise
        # Created once at start, the group was gone for good: every read failed and
        # the consumer stored nothing until it was restarted.
        logger.warning(
            "stream group missing (Redis lost its data?); creating it again",
            extra={"transport": self.name},
        )
        await self.open()
        self._own_backlog = None  # the new group has no pending entries
        self._claim_cursor = "0-0"
        return await self._read(count, wait_s)

    async def _read(self, count: int, wait_s: float) -> list[Delivery]:
        if self._own_backlog is not None:
            mine = await self._read_group(self._own_backlog, count, None)
            if mine:
                self._own_backlog = _text(mine[-1][0])
                return await self._with_attempts(mine)
            self._own_backlog = None
        if time.monotonic() >= self._claim_at:
            claimed = await self._claim(count)
            if claimed:
                return claimed
        fresh = await self._read_group(">", count, max(1, int(wait_s * 1000)))
        return [_delivery(entry_id, fields, 1) for entry_id, fields in fresh]

    async def _read_group(
        self, start: str, count: int, block_ms: int | None
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        answer: Any = await self.client.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=count, block=block_ms
        )
        if not answer:
            return []
        _, entries = answer[0]
        return entries  # type: ignore[no-any-return]

    async def _claim(self, count: int) -> list[Delivery]:
        """Entries idle in any consumer's pending list (a dead one's) for longer than
        the claim idle time, taken over by this consumer."""
        answer = await self.client.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            int(self.claim_idle_s * 1000),
            start_id=self._claim_cursor,
            count=count,
        )
        cursor, entries = answer[0], answer[1]
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if self._claim_cursor == "0-0":
            # The whole pending list scanned: an entry becomes claimable only after
            # ``claim_idle_s``, so the next scan can wait a quarter of that (a scan
            # before every read went over the batch in flight each time: a round trip
            # and Redis work per batch, for nothing).
            self._claim_at = time.monotonic() + self.claim_idle_s / 4
        # Entries deleted from the stream meanwhile come back as None: Redis 7 drops them
        # from the pending list itself; nothing is left to store.
        live = [(entry_id, fields) for entry_id, fields in entries if fields]
        return await self._with_attempts(live) if live else []

    async def _with_attempts(
        self, entries: list[tuple[bytes, dict[bytes, bytes]]]
    ) -> list[Delivery]:
        """Deliveries with their delivery counts, read from the pending list."""
        deliveries = [(entry_id, fields) for entry_id, fields in entries if fields]
        gone = [entry_id for entry_id, fields in entries if not fields]
        if gone:
            await self.client.xack(self.stream, self.group, *gone)
        if not deliveries:
            return []
        ids = [entry_id for entry_id, _ in deliveries]
        pending = await self.client.xpending_range(
            self.stream,
            self.group,
            min=min(ids, key=_order),
            max=max(ids, key=_order),
            count=len(ids) * 4 + 16,
            consumername=self.consumer,
        )
        counts = {p["message_id"]: int(p["times_delivered"]) for p in pending}
        return [_delivery(i, fields, counts.get(i, 1)) for i, fields in deliveries]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            await self.client.xack(self.stream, self.group, *(d.handle for d in deliveries))

    async def retry(self, delivery: Delivery, delay_s: float) -> None:
        # Left pending: claimed again (by this consumer or another) once idle for
        # ``claim_idle_s``; Redis has no per-entry delay.
        return None

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(
                self.dead_letter_stream,
                {
                    FIELD: delivery.payload,
                    b"reason": reason.encode(),
                    b"stream": self.stream.encode(),
                    b"entry": delivery.handle,
                    b"attempts": str(delivery.attempts).encode(),
                },
                maxlen=self.dead_letter_maxlen,
                approximate=True,
            )
            pipe.xack(self.stream, self.group, delivery.handle)
            await pipe.execute()

    async def lag(self) -> Lag:
        summary = await self.client.xpending(self.stream, self.group)
        pending = int(summary.get("pending") or 0)
        oldest: list[float] = []
        if pending and summary.get("min"):
            oldest.append(_age_s(summary["min"]))
        waiting = 0
        for group in await self.client.xinfo_groups(self.stream):
            if _text(group.get("name")) != self.group:
                continue
            waiting = int(group.get("lag") or 0)
            if waiting:
                last = _text(group.get("last-delivered-id")) or "0-0"
                after: Any = await self.client.xrange(self.stream, min=f"({last}", count=1)
                if after:
                    oldest.append(_age_s(after[0][0]))
        return Lag(pending, waiting, max(oldest) if oldest else None)

    async def publish(self, payloads: Sequence[bytes]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for payload in payloads:
                pipe.xadd(self.stream, {FIELD: payload})
            await pipe.execute()

    async def dead_letters(self) -> int:
        return int(await self.client.xlen(self.dead_letter_stream))

    async def replay_dead_letters(self, count: int) -> int:
        entries: Any = await self.client.xrange(self.dead_letter_stream, count=count)
        if not entries:
            return 0
        async with self.client.pipeline(transaction=True) as pipe:
            # Both in one MULTI: a replayed entry is in the stream or the dead letter.
            for _, fields in entries:
                pipe.xadd(self.stream, {FIELD: fields.get(FIELD, b"")})
            pipe.xdel(self.dead_letter_stream, *(entry_id for entry_id, _ in entries))
            await pipe.execute()
        return len(entries)

    async def delete(self) -> None:
        """Remove the stream and its dead letter (tests, benchmarks)."""
        await self.client.delete(self.stream, self.dead_letter_stream)

    async def aclose(self) -> None:
        await self.client.aclose()


def _delivery(entry_id: bytes, fields: dict[bytes, bytes], attempts: int) -> Delivery:
    payload = fields.get(FIELD)  # the usual entry: one field, ``payload``
    if payload is not None:
        return Delivery(entry_id, payload, attempts)
    payload = next((fields[name] for name in _KNOWN_FIELDS if name in fields), None)
    if payload is None and len(fields) == 1:
        payload = next(iter(fields.values()))
    if payload is None:
        problem = "the entry must carry the message as JSON in one field (payload)"
        return Delivery(entry_id, _as_json(fields), attempts, problem)
    return Delivery(entry_id, payload, attempts)


def _as_json(fields: dict[bytes, bytes]) -> bytes:
    """An entry of several fields, kept as JSON for its dead letter (nothing is lost)."""
    return orjson.dumps(
        {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
    )


def _order(entry_id: bytes) -> tuple[int, int]:
    millis, _, sequence = entry_id.partition(b"-")
    return int(millis), int(sequence or 0)


def _age_s(entry_id: bytes | str) -> float:
    raw = entry_id.encode() if isinstance(entry_id, str) else entry_id
    return max(0.0, time.time() - _order(raw)[0] / 1000)


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return None if value is None else str(value)

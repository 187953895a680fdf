"""Change notifications: "customer X changed" after each committed write, to whoever
subscribed to X on this instance or, through Redis pub/sub, on any instance.

Messages carry ids and field names only, never values: they cross process and machine
boundaries and may be logged by Redis monitoring. With Redis every instance, including
the publisher, receives a change through the channel once, so a change is never
delivered twice. A subscriber that falls behind loses its oldest changes rather than
holding memory without bound: a change says "read again", not the data itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import orjson
import redis.asyncio as aioredis

from gateway.settings import Settings
from gateway.upstreams.redis_client import RedisGuard, open_client

if TYPE_CHECKING:
    from gateway.ingest.webhook_payloads import InboundEvent

CHANNEL = "gw:customer-updated"
QUEUE_SIZE = 100
_CHANGES_PER_MESSAGE = 500
_RECONNECT_S = 1.0

logger = logging.getLogger("gateway.notifications")


@dataclass(frozen=True, slots=True)
class CustomerChange:
    customer_id: uuid.UUID
    source: str
    event_type: str
    event_id: str
    fields: tuple[str, ...]
    occurred_at: datetime

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "customer_id": str(self.customer_id),
                "source": self.source,
                "event_type": self.event_type,
                "event_id": self.event_id,
                "fields": list(self.fields),
                "occurred_at": self.occurred_at.isoformat(),
            }
        )

    @classmethod
    def of_event(
        cls, customer_id: uuid.UUID, event: InboundEvent, fields: tuple[str, ...] | None = None
    ) -> CustomerChange:
        """What a stored webhook event changed of its customer (``event.changed``, or
        ``fields``)."""
        return cls(
            customer_id=customer_id,
            source=event.source,
            event_type=event.type,
            event_id=event.event_id,
            fields=event.changed if fields is None else fields,
            occurred_at=event.occurred_at,
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> CustomerChange:
        data = orjson.loads(raw)
        return cls(
            customer_id=uuid.UUID(data["customer_id"]),
            source=str(data["source"]),
            event_type=str(data["event_type"]),
            event_id=str(data["event_id"]),
            fields=tuple(str(f) for f in data["fields"]),
            occurred_at=datetime.fromisoformat(data["occurred_at"]),
        )


class Notifications:
    """In-process fan-out: one bounded queue per subscriber, keyed by customer."""

    def __init__(self) -> None:
        self._subscribers: dict[uuid.UUID, set[asyncio.Queue[CustomerChange]]] = {}

    def subscribers(self, customer_id: uuid.UUID) -> int:
        return len(self._subscribers.get(customer_id, ()))

    async def publish(self, change: CustomerChange) -> None:
        self._deliver(change)

    async def publish_many(self, changes: Sequence[CustomerChange]) -> None:
        """Several changes at once (a stream batch's, one per customer)."""
        for change in changes:
            await self.publish(change)

    def _deliver(self, change: CustomerChange) -> None:
        for queue in self._subscribers.get(change.customer_id, ()):
            if queue.full():
                queue.get_nowait()  # drop the oldest: the newest says just as much
            queue.put_nowait(change)

    async def _listening(self) -> None:
        """Hook for a shared transport to be ready before a subscription counts."""

    @contextlib.asynccontextmanager
    async def subscribe(
        self, customer_id: uuid.UUID
    ) -> AsyncIterator[AsyncIterator[CustomerChange]]:
        """Changes to one customer from now on, until the block exits."""
        await self._listening()
        queue: asyncio.Queue[CustomerChange] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.setdefault(customer_id, set()).add(queue)

        async def changes() -> AsyncIterator[CustomerChange]:
            while True:
                yield await queue.get()

        try:
            yield changes()
        finally:
            group = self._subscribers.get(customer_id)
            if group is not None:
                group.discard(queue)
                if not group:
                    del self._subscribers[customer_id]

    async def aclose(self) -> None:
        self._subscribers.clear()


class RedisNotifications(Notifications):
    """Publishes to a Redis channel; one listener task per instance delivers locally.

    The listener starts with the first subscription (an instance nobody subscribes to
    holds no extra connection) and reconnects when Redis drops it; changes published
    while it is disconnected are lost, which a subscriber sees as a missed "read again".
    Publishing goes through the process's guarded client: a write whose notification
    cannot reach Redis still succeeds. The listener has a client of its own, without a
    socket timeout: it waits for messages, however long they take. A Redis lost from
    the network (no reset, no close) would leave that wait blocked for hours, so the
    listener reads in slices of ``ping_s``, PINGs the channel when it heard nothing, and
    takes a connection silent for ``dead_after_s`` as dead: it reconnects.
    """

    def __init__(
        self,
        redis: RedisGuard,
        listener: aioredis.Redis,
        channel: str = CHANNEL,
        *,
        ping_s: float = 5.0,
        dead_after_s: float = 12.0,
        ready_timeout_s: float = 5.0,
    ) -> None:
        super().__init__()
        self._ping_s = ping_s
        self._dead_after_s = dead_after_s
        self._ready_timeout_s = ready_timeout_s
        self._redis = redis
        self._client = listener
        self._channel = channel
        self._listener: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._start = asyncio.Lock()

    async def publish(self, change: CustomerChange) -> None:
        client, message = self._redis.client, change.encode()
        await self._redis.call("publish", lambda: client.publish(self._channel, message), None)

    async def publish_many(self, changes: Sequence[CustomerChange]) -> None:
        """A JSON array of changes per message, a few hundred each: a PUBLISH per change
        cost a stream batch of 1,000 customers more than its transaction (the client's
        reply parsing alone)."""
        if not changes:
            return
        # One pipeline, one guarded call: each call is one chance to time out, and a
        # few failures in a row open Redis's circuit.
        pipe = self._redis.client.pipeline(transaction=False)
        for start in range(0, len(changes), _CHANGES_PER_MESSAGE):
            part = changes[start : start + _CHANGES_PER_MESSAGE]
            pipe.publish(self._channel, b"[" + b",".join(change.encode() for change in part) + b"]")
        await self._redis.call("publish", pipe.execute, None)

    async def _listening(self) -> None:
        async with self._start:
            if self._listener is None or self._listener.done():
                self._ready.clear()
                self._listener = asyncio.create_task(self._listen(), name="notifications")
        try:
            async with asyncio.timeout(self._ready_timeout_s):
                await self._ready.wait()
        except TimeoutError:
            # Redis unreachable: the subscription still counts, and receives changes
            # once the listener connects (those published before are lost, as in any
            # outage); a subscriber is not held waiting for it.
            logger.warning("notification channel not ready; subscribing without it")

    async def _listen(self) -> None:
        while True:
            pubsub = self._client.pubsub()
            try:
                async with asyncio.timeout(self._dead_after_s):
                    await pubsub.subscribe(self._channel)
                self._ready.set()
                await self._receive(pubsub)
            except (OSError, aioredis.RedisError) as exc:
                logger.warning(
                    "notification channel lost; reconnecting", extra={"error": type(exc).__name__}
                )
                await asyncio.sleep(_RECONNECT_S)
            finally:
                with contextlib.suppress(OSError, aioredis.RedisError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis-py 8.2

    async def _receive(self, pubsub: aioredis.client.PubSub) -> None:
        """Deliver messages until the connection breaks or goes silent (raises)."""
        loop = asyncio.get_running_loop()
        heard = loop.time()
        while True:
            # Bounded even where the socket is not: a dead peer only ever times out here.
            async with asyncio.timeout(self._ping_s + 1):
                message = await pubsub.get_message(timeout=self._ping_s)
            if message is not None:
                heard = loop.time()
                if message.get("type") == "message":
                    self._dispatch(message["data"])
                continue
            if loop.time() - heard >= self._dead_after_s:
                raise TimeoutError("notification channel silent; taken as lost")
            async with asyncio.timeout(self._ping_s):
                await pubsub.ping()  # its pong is a message: heard while alive

    def _dispatch(self, raw: bytes) -> None:
        try:
            if raw[:1] == b"[":  # a batch's changes in one message (``publish_many``)
                changes = [CustomerChange.decode(orjson.dumps(c)) for c in orjson.loads(raw)]
            else:
                changes = [CustomerChange.decode(raw)]
        except (ValueError, KeyError, TypeError):
            logger.warning("ignored a malformed change notification")
            return
        for change in changes:
            self._deliver(change)

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await super().aclose()
        await self._client.aclose()


def build_notifications(redis: RedisGuard | None, settings: Settings) -> Notifications:
    """Across instances when the cache is Redis (they share it already), else in-process."""
    if redis is None:
        return Notifications()
    listener = open_client(
        settings.cache_url,
        timeout_s=settings.redis_timeout_s,
        retries=settings.redis_retries,
        health_check_interval_s=settings.redis_health_check_interval_s,
        pubsub=True,
    )
    ping_s = settings.redis_health_check_interval_s
    return RedisNotifications(
        redis,
        listener,
        ping_s=ping_s,
        dead_after_s=2 * ping_s + settings.redis_timeout_s,
        ready_timeout_s=max(1.0, settings.redis_timeout_s * 4),
    )

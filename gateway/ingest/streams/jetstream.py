"""NATS JetStream durable pull consumers behind the ``Transport`` interface.

Every consumer process binds the same durable consumer (the group): JetStream hands
each message to one fetch, and redelivers it when it is not acknowledged within the
ack wait (its consumer died) or when it is nak'ed with a delay (a failure to retry).
The consumer's ``max_deliver`` is one more than the gateway's attempts: the gateway
dead-letters a message on that last delivery itself; should the consumer holding it
die then too, the server's max-deliveries advisory (taken by one consumer of a queue
group) dead-letters it from the stream, so nothing stops silently.

The stream keeps messages under limits retention (another durable, a replay or the
benchmark's bare drain may read them too); the dead letter is a work-queue stream on
``SUBJECT.dead`` (a replayed message leaves it), each message with its reason in the
``Gateway-Reason`` header. Publishing sets ``Nats-Msg-Id`` to the messageId when the
producer knows it, so JetStream drops a producer's retry within its window too.

A JetStream that lost its streams (a server restarted without its storage, a stream
deleted) answers a fetch of the durable that went with them by timing out, as an idle
stream does: a read that came back empty asks, at most every ``CHECK_S``, whether the
durable is still there, and when it is not makes the streams and the durable again
(messages published from then on are the group's).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC
from typing import Any

import nats
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from gateway.ingest.streams.transport import Delivery, Lag

logger = logging.getLogger("gateway.stream")

CHECK_S = 5.0  # an idle read's check that the durable is there, at most this often


class JetStream:
    name = "nats"

    def __init__(
        self,
        servers: str,
        *,
        stream: str,
        subject: str,
        durable: str,
        ack_wait_s: float = 30.0,
        max_attempts: int = 5,
        dead_letter_max: int = 1_000_000,
    ) -> None:
        self.servers = [s.strip() for s in servers.split(",") if s.strip()]
        self.stream = stream.replace(".", "_").replace(":", "_")
        self.subject = subject
        self.durable = durable
        self.dead_stream = f"{self.stream}_DEAD"
        self.dead_subject = f"{subject}.dead"
        self.ack_wait_s = ack_wait_s
        self.max_attempts = max_attempts
        self.dead_letter_max = dead_letter_max
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._check_at = 0.0  # time.monotonic() of the next check that the durable exists

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("JetStream transport used before open()")
        return self._js

    async def open(self) -> None:
        if self._nc is None:
            self._nc = await nats.connect(servers=self.servers, max_reconnect_attempts=-1)
            self._js = self._nc.jetstream()
        await self._ensure_streams()
        await self._nc.subscribe(
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.{self.durable}",
            queue=self.durable,
            cb=self._max_deliveries,
        )

    async def _ensure_streams(self) -> None:
        await self._ensure_stream(StreamConfig(name=self.stream, subjects=[self.subject]))
        await self._ensure_stream(
            StreamConfig(
                name=self.dead_stream,
                subjects=[self.dead_subject],
                retention=RetentionPolicy.WORK_QUEUE,
                max_msgs=self.dead_letter_max,
            )
        )

    async def _ensure_stream(self, config: StreamConfig) -> None:
        try:
            await self.js.stream_info(str(config.name))
        except NotFoundError:
            await self.js.add_stream(config)

    async def _subscription(self) -> JetStreamContext.PullSubscription:
        if self._sub is None:
            self._sub = await self.js.pull_subscribe(
                self.subject,
                durable=self.durable,
                stream=self.stream,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self.ack_wait_s,
                    max_deliver=self.max_attempts + 1,
                    max_ack_pending=100_000,
                ),
            )
        return self._sub

    async def read(self, count: int, wait_s: float) -> list[Delivery]:
        subscription = await self._subscription()
        try:
            messages = await subscription.fetch(batch=count, timeout=wait_s)
        except (nats.errors.TimeoutError, TimeoutError):  # nothing came in time
            await self._check_durable()
            return []
        return [Delivery(m, m.data, m.metadata.num_delivered) for m in messages]

    async def _check_durable(self) -> None:
        """After an empty read: the streams and the durable made again if they are gone
        (fetching from a durable that is gone times out for ever: nothing stored, and
        nothing said, until the consumer was restarted)."""
        now = time.monotonic()
        if now < self._check_at:
            return
        self._check_at = now + CHECK_S
        try:
            await self.js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            logger.warning(
                "stream durable missing (JetStream lost its data?); creating it again",
                extra={"transport": self.name},
            )
            if self._sub is not None:
                await self._sub.unsubscribe()
                self._sub = None
            await self._ensure_streams()
            await self._subscription()

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            message: Msg = delivery.handle
            await message.ack()
        if self._nc is not None:
            await self._nc.flush()  # the acks have left before the next read

    async def retry(self, delivery: Delivery, delay_s: float) -> None:
        message: Msg = delivery.handle
        await message.nak(delay=delay_s)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        await self._dead(delivery.payload, reason, delivery.attempts)
        message: Msg = delivery.handle
        await message.ack_sync()

    async def _dead(self, payload: bytes, reason: str, attempts: int) -> None:
        # Stored (PubAck) before the original is acknowledged: in one place or both.
        await self.js.publish(
            self.dead_subject,
            payload,
            headers={"Gateway-Reason": reason, "Gateway-Attempts": str(attempts)},
        )

    async def _max_deliveries(self, advisory: Msg) -> None:
        """The server gave up on a message (its consumers died on each delivery)."""
        try:
            sequence = int(orjson.loads(advisory.data)["stream_seq"])
            stored = await self.js.get_msg(self.stream, sequence)
            await self._dead(
                stored.data or b"",
                f"delivered {self.max_attempts + 1} times without being stored",
                self.max_attempts + 1,
            )
        except Exception:  # noqa: BLE001 - an advisory we cannot act on: the message stays
            return

    async def lag(self) -> Lag:
        info: Any = await self.js.consumer_info(self.stream, self.durable)
        pending, waiting = int(info.num_ack_pending or 0), int(info.num_pending or 0)
        oldest = None
        if pending or waiting:
            floor = int(getattr(info.ack_floor, "stream_seq", 0) or 0)
            try:
                first = await self.js.get_msg(
                    self.stream, floor + 1, subject=self.subject, next=True
                )
            except NotFoundError:
                first = None
            if first is not None and first.time is not None:
                oldest = max(0.0, time.time() - first.time.astimezone(UTC).timestamp())
        return Lag(pending, waiting, oldest)

    async def publish(self, payloads: Sequence[bytes]) -> None:
        for payload in payloads:
            await self.js.publish(self.subject, payload, headers=_message_id(payload))

    async def dead_letters(self) -> int:
        info = await self.js.stream_info(self.dead_stream)
        return int(info.state.messages)

    async def replay_dead_letters(self, count: int) -> int:
        subscription = await self.js.pull_subscribe(
            self.dead_subject, durable=f"{self.durable}_replay", stream=self.dead_stream
        )
        try:
            messages = await subscription.fetch(batch=count, timeout=1.0)
        except (nats.errors.TimeoutError, TimeoutError):  # nothing came in time
            return 0
        finally:
            await subscription.unsubscribe()
        for message in messages:
            # Published without the dedupe header: it is replayed on purpose.
            await self.js.publish(self.subject, message.data)
            await message.ack_sync()  # work queue: gone from the dead letter
        return len(messages)

    async def delete(self) -> None:
        """Remove both streams (tests, benchmarks)."""
        for name in (self.stream, self.dead_stream):
            try:
                await self.js.delete_stream(name)
            except NotFoundError:
                continue

    async def aclose(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()  # acks were flushed with each batch
        self._nc = self._js = self._sub = None


def _message_id(payload: bytes) -> dict[str, str] | None:
    try:
        message_id = orjson.loads(payload).get("messageId")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return {"Nats-Msg-Id": message_id} if isinstance(message_id, str) and message_id else None

"""The one interface between the consumer and a streaming engine.

An engine gives at-least-once delivery to a group of consumers: each message to one of
them, again to someone when it is not acknowledged (Redis: claimed after an idle time;
JetStream: redelivered after the ack wait or a nak). The consumer acknowledges only
after its transaction commits, and moves what it cannot store to a dead letter with a
reason. Kafka fits the same shape (a consumer group, offsets committed after the
write, a dead-letter topic).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and one
# is built per message (thousands a second).
@dataclass(slots=True)
class Delivery:
    """One message as delivered: the engine's handle, the bytes, the delivery count."""

    handle: Any  # the engine's own (a Redis entry id, a JetStream message)
    payload: bytes
    attempts: int  # deliveries so far, this one included
    problem: str | None = None  # the engine could not give a message (an entry's shape)


@dataclass(frozen=True, slots=True)
class Lag:
    """How far the group is behind: delivered but not acknowledged, not delivered yet,
    and the age of the oldest of them (None when nothing is behind)."""

    pending: int
    waiting: int
    oldest_age_s: float | None


class Transport(Protocol):
    """A streaming engine seen by one consumer of one group."""

    name: str

    async def open(self) -> None:
        """Create the stream, the group and the dead letter if missing (idempotent)."""

    async def read(self, count: int, wait_s: float) -> list[Delivery]:
        """Up to ``count`` messages for this consumer, waiting up to ``wait_s`` for the
        first; messages another consumer left unacknowledged too long come first."""

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Done with these: never delivered again."""

    async def retry(self, delivery: Delivery, delay_s: float) -> None:
        """Not done: deliver again, not before ``delay_s``."""

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move it to the dead letter with ``reason``, then acknowledge it."""

    async def lag(self) -> Lag: ...

    async def publish(self, payloads: Sequence[bytes]) -> None:
        """Produce messages (the load generator, tests, a replay)."""

    async def dead_letters(self) -> int:
        """How many messages wait in the dead letter."""

    async def replay_dead_letters(self, count: int) -> int:
        """Move up to ``count`` dead letters back to the stream; how many moved."""

    async def delete(self) -> None:
        """Remove the stream, the group and the dead letter (tests, benchmarks)."""

    async def aclose(self) -> None: ...

"""The consumer loop: read a batch, store it in one transaction, acknowledge, then
invalidate and notify once per customer.

- At least once: a message is acknowledged only after the transaction that stored it
  (or decided it is a duplicate, an erased person's or a refused one) committed; a crash
  before that leaves it to be delivered again, and the messageId makes that a no-op.
- Nothing silently dropped: a message that cannot be parsed, or that failed
  ``max_attempts`` deliveries, goes to the dead letter with its reason. A dead letter
  that cannot be written leaves its message unacknowledged, and costs the rest of the
  read nothing.
- Backpressure: one batch in flight to Postgres, and (in ``run``) the next one read and
  parsed meanwhile, so the parse overlaps the commit's round trips; the read after that
  waits for the commit, so a slow Postgres slows the reads and memory holds two batches.
  Batches commit in the order they were read. While the database is unreachable the
  batch is held and retried with a capped backoff (not dead-lettered: the messages are
  fine, the database is not). A batch's after-commit work (cache drops, notifications)
  is not overlapped with the next batch's storing: that one's Python steps over
  thousands of events held the loop long enough, on a loaded machine, for the cache's
  operation timeout to open its breaker (seen twice at load 17-22).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from uuid import UUID

from gateway.db.connectivity import is_connectivity_failure
from gateway.errors import DatabaseUnavailable
from gateway.ingest.json_text import PayloadError
from gateway.ingest.streams.event_batches import (
    BatchResult,
    CustomerTouch,
    EventBatches,
    StreamEvent,
)
from gateway.ingest.streams.status import ConsumerStatus
from gateway.ingest.streams.transport import Delivery, Transport
from gateway.observability import freshness
from gateway.observability.metrics import (
    STREAM_BATCH_SECONDS,
    STREAM_CONSUMED,
    STREAM_OLDEST_AGE,
    STREAM_OUTCOMES,
    STREAM_PENDING,
)
from gateway.observability.tracing import span

logger = logging.getLogger("gateway.stream")

# Messages parsed between two turns of the event loop while a batch is being stored.
_PARSE_SLICE = 50

AfterCommit = Callable[[Mapping[UUID, CustomerTouch]], Awaitable[None]]


class StreamConsumer:
    def __init__(
        self,
        transport: Transport,
        batches: EventBatches,
        after_commit: AfterCommit | None = None,
        *,
        batch_size: int = 500,
        wait_s: float = 1.0,
        max_attempts: int = 5,
        retry_delay_s: float = 1.0,
        lag_interval_s: float = 5.0,
        backoff_cap_s: float = 5.0,
    ) -> None:
        self.transport = transport
        self.batches = batches
        self.after_commit = after_commit
        self.batch_size = batch_size
        self.wait_s = wait_s
        self.max_attempts = max_attempts
        self.retry_delay_s = retry_delay_s
        self.lag_interval_s = lag_interval_s
        self.backoff_cap_s = backoff_cap_s
        self.status = ConsumerStatus(transport.name)
        self._stop = asyncio.Event()
        self._lag_at = 0.0
        self._progress = asyncio.Condition()  # notified after each batch's commit

    async def wait_stored(self, count: int) -> None:
        """Until this consumer has stored ``count`` events (for callers that wait for
        ingestion to catch up: tests, a benchmark, a drain before shutdown)."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.status.stored >= count)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Consume until ``stop``; the batch being stored and the one read after it are
        finished (committed and acknowledged) first."""
        self.status.running = True
        opened = False
        storing: asyncio.Task[None] | None = None  # the batch in flight to Postgres
        try:
            while not self._stop.is_set():
                try:
                    if not opened:  # an engine down at start is waited for, like later
                        await self.transport.open()
                        opened = True
                    await self._refresh_lag()
                    deliveries = await self.transport.read(self.batch_size, self.wait_s)
                    parsed = await self._parsed(deliveries, yielding=storing is not None)
                    if storing is not None:
                        # One batch in flight: this one commits after the last (order kept).
                        await storing
                        storing = None
                    if deliveries:
                        storing = asyncio.create_task(self._stored(parsed, time.perf_counter()))
                except Exception as exc:  # noqa: BLE001 - the engine failed: retry after a pause
                    if storing is not None:
                        # The batch in flight finishes first (committed and acknowledged,
                        # or left unacknowledged to be delivered again): left running, it
                        # would acknowledge later beside the next batch, two in flight.
                        # Its own failure is the one being handled here, or is logged next.
                        await asyncio.gather(storing, return_exceptions=True)
                        storing = None
                    # What this read held is not acknowledged: it is delivered again.
                    self.status.last_error = f"{type(exc).__name__}: transport"
                    logger.warning(
                        "stream read or acknowledgement failed; retrying",
                        extra={"transport": self.transport.name, "error": type(exc).__name__},
                    )
                    await self._pause(self.backoff_cap_s)
            if storing is not None:
                await storing
        except asyncio.CancelledError:
            if storing is not None:
                storing.cancel()  # rolled back, not acknowledged: delivered again
                with contextlib.suppress(BaseException):
                    await storing
            raise
        finally:
            self.status.running = False

    async def step(self) -> int:
        """One batch: read (after the last one committed), store, acknowledge; how many
        messages were read."""
        await self._refresh_lag()
        deliveries = await self.transport.read(self.batch_size, self.wait_s)
        if not deliveries:
            return 0
        started = time.perf_counter()
        await self._stored(await self._parsed(deliveries, yielding=False), started)
        return len(deliveries)

    async def _parsed(
        self, deliveries: list[Delivery], *, yielding: bool
    ) -> list[tuple[Delivery, StreamEvent]]:
        """The valid messages parsed, the others dead-lettered. ``yielding``: a batch is
        being stored meanwhile; its round trips get the loop every few dozen messages."""
        STREAM_CONSUMED.labels(self.transport.name).inc(len(deliveries))
        parsed: list[tuple[Delivery, StreamEvent]] = []
        for position, delivery in enumerate(deliveries, 1):
            reason: str | None = None
            event: StreamEvent | None = None
            if delivery.problem is not None:
                reason = f"invalid: {delivery.problem}"
            else:
                try:
                    event = self.batches.parse(delivery.payload)
                except PayloadError as exc:
                    # Parsed whatever its attempts: one whose dead letter could not be
                    # written comes back past them, and keeps its own reason.
                    reason = f"invalid: {exc.reason}"
                except Exception:
                    if delivery.attempts <= self.max_attempts:
                        raise  # the read fails and is delivered again
            if reason is None and delivery.attempts > self.max_attempts:
                # Delivered this often without an acknowledgement: it failed every time,
                # or the consumers holding it died (a message that crashes its consumer).
                reason = f"delivered {delivery.attempts} times without being stored"
            if reason is not None:
                await self._dead_letter(delivery, reason)
            elif event is not None:
                parsed.append((delivery, event))
            if yielding and position % _PARSE_SLICE == 0:
                await asyncio.sleep(0)
        return parsed

    async def _stored(self, parsed: list[tuple[Delivery, StreamEvent]], started: float) -> None:
        if parsed:
            name = self.transport.name
            with span("stream batch", {"gateway.transport": name, "gateway.events": len(parsed)}):
                await self._store(parsed)
            freshness.arrived("events", f"stream:{self.transport.name}")
        STREAM_BATCH_SECONDS.labels(self.transport.name).observe(time.perf_counter() - started)
        self.status.batches += 1
        self.status.last_batch_at = time.time()

    async def _store(
        self, parsed: list[tuple[Delivery, StreamEvent]], *, whole: bool = True
    ) -> bool:
        """``parsed`` in one transaction; if that fails, in halves, down to the events
        that fail alone (one bad event among 5,000 costs some 26 transactions, not
        5,000). False: the database became unreachable, and what is left of ``parsed``
        is unacknowledged (delivered again)."""
        if len(parsed) == 1:
            if not await self._store_alone(*parsed[0]):
                self._held(1)
                return False
            return True
        try:
            result = await self._committed([event for _, event in parsed])
        except Exception as exc:  # noqa: BLE001 - one event may be the cause: isolate it
            if _unreachable(exc):
                # Stopping while the database is down: no event is at fault, so the
                # batch is neither split (a connect timeout per part) nor counted
                # against its messages; unacknowledged, it is delivered again.
                self._held(len(parsed))
                return False
            if whole:
                logger.warning(
                    "stream batch failed; storing it in halves to isolate the cause",
                    extra={"transport": self.transport.name, "error": type(exc).__name__},
                )
            middle = len(parsed) // 2
            if not await self._store(parsed[:middle], whole=False):
                self._held(len(parsed) - middle)
                return False
            return await self._store(parsed[middle:], whole=False)
        await self._done([d for d, _ in parsed], result)
        return True

    def _held(self, count: int) -> None:
        logger.warning(
            "database unreachable; stream messages left to be delivered again",
            extra={"transport": self.transport.name, "messages": count},
        )

    async def _store_alone(self, delivery: Delivery, event: StreamEvent) -> bool:
        """Whether the database answered (stored, dead-lettered or retried); False
        leaves ``delivery`` unacknowledged and uncounted."""
        try:
            result = await self._committed([event])
        except Exception as exc:  # noqa: BLE001 - this event fails by itself: poison or retry
            if _unreachable(exc):
                return False
            reason = f"failed {delivery.attempts} times: {type(exc).__name__}"
            if delivery.attempts >= self.max_attempts:
                await self._dead_letter(delivery, reason)
            else:
                STREAM_OUTCOMES.labels(self.transport.name, "retried").inc()
                await self.transport.retry(delivery, self.retry_delay_s)
            return True
        await self._done([delivery], result)
        return True

    async def _committed(self, events: Sequence[StreamEvent]) -> BatchResult:
        """The batch stored; while the database is unreachable, the same batch again
        after a capped backoff (the stream keeps everything meanwhile)."""
        delay = 0.1
        while True:
            try:
                result = await self.batches.store(events)
            except Exception as exc:
                if not _unreachable(exc):
                    raise
                if self._stop.is_set():
                    raise
                self.status.database_waiting = True
                self.status.last_error = "database unreachable"
                await self._pause(delay)
                delay = min(delay * 2, self.backoff_cap_s)
                continue
            self.status.database_waiting = False
            return result

    async def _done(self, deliveries: list[Delivery], result: BatchResult) -> None:
        try:
            await self.transport.ack(deliveries)
        finally:
            # The commit, not the acknowledgement, changed the customers: a failed ack
            # still drops their caches and notifies (the redelivery is a duplicate that
            # touches nobody).
            name = self.transport.name
            for outcome, count in Counter(result.outcomes).items():
                STREAM_OUTCOMES.labels(name, outcome).inc(count)
            self.status.stored += result.outcomes.count("stored")
            async with self._progress:
                self._progress.notify_all()
            if self.after_commit is not None and result.customers:
                await self.after_commit(result.customers)

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        try:
            await self.transport.dead_letter(delivery, reason)
        except Exception as exc:  # noqa: BLE001 - left unacknowledged: delivered again
            # Raised, it failed the whole read (a full Redis refuses the dead letter's
            # XADD, not the reads and acks): the valid messages went unstored until their
            # attempts ran out, then were dead-lettered themselves, this one's reason lost.
            # Pending, it is dead-lettered with its reason once the write goes through.
            self.status.last_error = f"{type(exc).__name__}: dead letter"
            STREAM_OUTCOMES.labels(self.transport.name, "dead_letter_failed").inc()
            logger.warning(
                "stream dead letter failed; the message is left to be delivered again",
                extra={"transport": self.transport.name, "error": type(exc).__name__},
            )
            return
        STREAM_OUTCOMES.labels(self.transport.name, "dead_lettered").inc()
        logger.warning(
            "stream message dead-lettered",
            extra={"transport": self.transport.name, "reason": reason},
        )

    async def _refresh_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_at < self.lag_interval_s:
            return
        self._lag_at = now
        try:
            lag = await self.transport.lag()
        except Exception:  # noqa: BLE001 - a metric: the next refresh tries again
            return
        self.status.lag = lag
        name = self.transport.name
        STREAM_PENDING.labels(name, "pending").set(lag.pending)
        STREAM_PENDING.labels(name, "waiting").set(lag.waiting)
        STREAM_OLDEST_AGE.labels(name).set(lag.oldest_age_s or 0.0)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)


def _unreachable(error: BaseException) -> bool:
    return isinstance(error, DatabaseUnavailable) or is_connectivity_failure(error)


# Allocations between two collections of the youngest generation, in a consumer
# process (Python's default is 700).
_YOUNG_COLLECTION_EVERY = 50_000


def freeze_startup_heap() -> None:
    """For a process that consumes from now on: what start-up built (modules, the
    engine, validators, metadata) is moved out of the collector's generations. Each
    batch allocates enough to trigger full collections, and those traversed all of it
    again: a third of the consumer's CPU (55 us an event, 133 -> 83 us with this).

    And collections are made rarer: a batch of 5,000 events allocates a few hundred
    thousand objects, nearly all freed by their reference counts, yet at the default
    threshold each batch ran some hundred young collections (rescanning the batch in
    flight) and about one full one every second batch: 4.7 ms of CPU per 1,000 events,
    0.2 with this. Cycles are still collected, later; memory stays bounded by the
    batches in flight."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(_YOUNG_COLLECTION_EVERY, middle, oldest)


async def replay_dead_letters(
    transport: Transport, progress: Callable[[int, int], None], chunk: int = 500
) -> int:
    """Move every dead letter back to the stream, ``progress(moved, total)`` per chunk;
    how many moved. Each chunk moves atomically (a message is in one place)."""
    await transport.open()
    total = await transport.dead_letters()
    moved = 0
    while moved < total:
        done = await transport.replay_dead_letters(min(chunk, total - moved))
        if not done:
            break
        moved += done
        progress(moved, total)
    return moved

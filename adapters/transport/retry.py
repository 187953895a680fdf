"""The call policy every upstream call runs under: deadline, retries, breaker.

One call has one budget (``deadline_s``) covering every attempt and every wait. Each
attempt gets ``min(timeout_s, time left)``. Between attempts the wait is exponential
backoff with full jitter (uniform between 0 and ``min(backoff_max_s, base * 2**n)``,
the AWS "full jitter" scheme, so a fleet of gateways does not retry in step), except
after a 429, where the upstream's ``Retry-After`` is honoured exactly. A wait that
would not leave a useful slice of the budget is not taken: the last error is raised
at once (an ``UpstreamRateLimited`` when the 429's wait is what does not fit).

Traced: inside a traced request, each call is a span (``upstream <name> <operation>``,
the route template, never ids) with each retry and each breaker decision as an event;
the HTTP attempts under it are httpx's spans. Outside one, no span is made.

Retried: timeouts, connection failures, 5xx, 429 (only idempotent reads use this
policy). Not retried: other 4xx, auth failures, malformed or changed payloads, an open
circuit. Retrying is tenacity's (``AsyncRetrying``): it already does composable stop
and wait strategies well; what is ours is the budget and the error classification.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from adapters.errors import (
    CircuitOpen,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from adapters.transport.breaker import BreakerState, CircuitBreaker
from adapters.transport.call_pacer import CallPacer

__all__ = ["CallPolicy", "parse_retry_after"]

T = TypeVar("T")
logger = logging.getLogger(__name__)
_tracer = trace.get_tracer("adapters")

# Below this, an attempt could not even complete a loopback round trip: stop instead.
_MIN_ATTEMPT_S = 0.01


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds (Shopify sends
    ``"2.0"``) or an HTTP date; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, CircuitOpen | UpstreamAuthError):
        return False
    return isinstance(exc, UpstreamTimeout | UpstreamUnavailable | UpstreamRateLimited)


class _Deadline:
    def __init__(self, budget_s: float) -> None:
        self._ends = time.monotonic() + budget_s

    def remaining(self) -> float:
        return self._ends - time.monotonic()


class _OutOfBudget(stop_base):
    """Stop when the coming wait would leave no useful time for another attempt."""

    def __init__(self, deadline: _Deadline) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.deadline.remaining() - retry_state.upcoming_sleep < _MIN_ATTEMPT_S


class _CircuitOpened(stop_base):
    """Stop once this call's failures opened the circuit: the next attempt would only
    be refused, and the caller learns more from the failure that opened it."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.breaker.state is BreakerState.OPEN


class CallPolicy:
    """Runs one logical call as attempts under the upstream's budget and breaker."""

    def __init__(
        self,
        upstream: str,
        *,
        timeout_s: float,
        deadline_s: float,
        retries: int,
        backoff_base_s: float,
        backoff_max_s: float,
        breaker: CircuitBreaker,
        concurrency: int | None = None,
        pacer: CallPacer | None = None,
    ) -> None:
        self.upstream = upstream
        self.pacer = pacer
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.retries = retries
        self.breaker = breaker
        self._backoff = wait_random_exponential(multiplier=backoff_base_s, max=backoff_max_s)
        # Attempts in flight at most (the client's connections): the others wait here,
        # on the call's deadline, before their attempt's clock starts. Queued in the
        # HTTP pool instead, a send's 500 calls at once timed out on a busy machine as
        # if the upstream were slow, opened its breaker, and cost the pool's scheduler
        # time in proportion to the queue on every request.
        self._slots = asyncio.Semaphore(concurrency) if concurrency else None

    async def run(
        self,
        operation: str,
        attempt: Callable[[float], Awaitable[T]],
        *,
        budget_s: float | None = None,
    ) -> T:
        """Call ``attempt(slice_s)`` until it succeeds or the policy gives up; ``slice_s``
        is this attempt's share of the budget, for the transport's own timeout.
        ``budget_s`` narrows the call's budget (what a wait before it left of it).

        ``attempt`` raises ``UpstreamError``\\ s (mapped at its own border); the policy
        bounds it with ``asyncio.timeout`` too, so a slow drip cannot outlive its slice.
        """
        if not trace.get_current_span().is_recording():
            return await self._run(operation, attempt, budget_s)
        with _tracer.start_as_current_span(
            f"upstream {self.upstream} {operation}",
            attributes={"gateway.upstream": self.upstream, "gateway.operation": operation},
            record_exception=False,  # messages are ours and say no more than the code
            set_status_on_exception=False,
        ) as span:
            try:
                return await self._run(operation, attempt, budget_s)
            except UpstreamError as exc:
                span.set_attribute("gateway.error", exc.code)
                span.set_status(Status(StatusCode.ERROR, exc.code))
                raise

    async def _run(
        self, operation: str, attempt: Callable[[float], Awaitable[T]], budget_s: float | None
    ) -> T:
        deadline = _Deadline(
            self.deadline_s if budget_s is None else min(budget_s, self.deadline_s)
        )

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, UpstreamRateLimited) and exc.retry_after_s is not None:
                return exc.retry_after_s
            return self._backoff(state)

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            trace.get_current_span().add_event(
                "retry",
                {
                    "attempt": state.attempt_number,
                    "wait_s": state.upcoming_sleep or 0.0,
                    "error": getattr(exc, "code", type(exc).__name__),
                },
            )
            logger.info(
                "retrying %s in %.3fs",
                operation,
                state.upcoming_sleep,
                extra={
                    "upstream": self.upstream,
                    "operation": operation,
                    "attempt": state.attempt_number,
                    "wait_s": state.upcoming_sleep,
                    "error": getattr(exc, "code", type(exc).__name__),
                },
            )

        retrying = AsyncRetrying(
            stop=stop_any(
                stop_after_attempt(self.retries + 1),
                _OutOfBudget(deadline),
                _CircuitOpened(self.breaker),
            ),
            wait=wait,
            retry=retry_if_exception(_retryable),
            before_sleep=before_sleep,
            sleep=asyncio.sleep,
            reraise=True,
        )
        async for attempt_state in retrying:
            with attempt_state:
                return await self._attempt(operation, attempt, deadline)
        raise AssertionError("unreachable: tenacity either returns or reraises")

    async def _attempt(
        self, operation: str, attempt: Callable[[float], Awaitable[T]], deadline: _Deadline
    ) -> T:
        if self._slots is None:
            return await self._paced(operation, attempt, deadline)
        try:
            async with asyncio.timeout(max(0.0, deadline.remaining())):
                await self._slots.acquire()
        except TimeoutError:
            # Our own queue, not the upstream: no failure on its breaker.
            raise UpstreamTimeout(
                self.upstream, f"{operation}: call budget spent waiting for a connection"
            ) from None
        try:
            return await self._paced(operation, attempt, deadline)
        finally:
            self._slots.release()

    async def _paced(
        self, operation: str, attempt: Callable[[float], Awaitable[T]], deadline: _Deadline
    ) -> T:
        """The attempt, holding one of the upstream's rate-limit tokens (``call_pacer``)
        from before it is sent until its answer is read."""
        if self.pacer is None:
            return await self._timed(operation, attempt, deadline)
        async with self.pacer.slot(deadline.remaining() - _MIN_ATTEMPT_S):
            return await self._timed(operation, attempt, deadline)

    async def _timed(
        self, operation: str, attempt: Callable[[float], Awaitable[T]], deadline: _Deadline
    ) -> T:
        timeout = min(self.timeout_s, deadline.remaining())
        if timeout < _MIN_ATTEMPT_S:
            raise UpstreamTimeout(self.upstream, f"{operation}: call budget spent")
        span = trace.get_current_span()
        try:
            self.breaker.before_call()
        except CircuitOpen:
            span.add_event("breaker refused", {"state": self.breaker.state.value})
            raise
        try:
            async with asyncio.timeout(timeout):
                result = await attempt(timeout)
        except TimeoutError as exc:
            self._failed(span)
            raise UpstreamTimeout(
                self.upstream, f"{operation}: no answer within {timeout:.2f}s"
            ) from exc
        except (UpstreamTimeout, UpstreamUnavailable) as exc:
            if isinstance(exc, UpstreamAuthError):
                self.breaker.release()
            else:
                self._failed(span)
            raise
        except UpstreamError:
            # It answered (429, 4xx, a bad payload): alive, but no verdict on health.
            self.breaker.release()
            raise
        except BaseException:
            self.breaker.release()
            raise
        if self.breaker.state is not BreakerState.CLOSED:
            span.add_event("breaker closed")
        self.breaker.record_success()
        return result

    def _failed(self, span: Span) -> None:
        before = self.breaker.state
        self.breaker.record_failure()
        if self.breaker.state is not before:
            span.add_event("breaker opened", {"failures": self.breaker.consecutive_failures})

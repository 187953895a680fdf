"""The call policy on its own: which errors are retried, waits, the budget, Retry-After."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from adapters.errors import (
    UpstreamAuthError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from adapters.transport.breaker import BreakerState, CircuitBreaker
from adapters.transport.retry import CallPolicy, parse_retry_after


def policy(*, retries: int = 2, deadline_s: float = 1.0, threshold: int = 100) -> CallPolicy:
    breaker = CircuitBreaker("up", failure_threshold=threshold, reset_timeout_s=1)
    return CallPolicy(
        "up",
        timeout_s=0.2,
        deadline_s=deadline_s,
        retries=retries,
        backoff_base_s=0.01,
        backoff_max_s=0.02,
        breaker=breaker,
    )


class Script:
    """An attempt that raises the scripted errors in turn, then answers "ok"."""

    def __init__(self, *errors: UpstreamError) -> None:
        self.errors = list(errors)
        self.slices: list[float] = []

    async def __call__(self, slice_s: float) -> str:
        self.slices.append(slice_s)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


@pytest.mark.parametrize(
    "error",
    [
        UpstreamUnavailable("up", "503"),
        UpstreamTimeout("up", "slow"),
        UpstreamRateLimited("up", "429", retry_after_s=None),
    ],
)
async def test_transient_errors_are_retried(error: UpstreamError) -> None:
    script = Script(error, error)
    assert await policy().run("op", script) == "ok"
    assert len(script.slices) == 3
    assert all(0 < s <= 0.2 for s in script.slices)


@pytest.mark.parametrize(
    "error",
    [
        UpstreamBadResponse("up", "garbage"),
        UpstreamAuthError("up", "401"),
    ],
)
async def test_permanent_errors_are_not(error: UpstreamError) -> None:
    script = Script(error)
    calls = policy()
    with pytest.raises(type(error)):
        await calls.run("op", script)
    assert len(script.slices) == 1
    assert calls.breaker.consecutive_failures == 0  # it answered: not an outage


async def test_gives_up_after_the_retries() -> None:
    script = Script(*[UpstreamUnavailable("up", "503")] * 5)
    calls = policy(retries=3)
    with pytest.raises(UpstreamUnavailable):
        await calls.run("op", script)
    assert len(script.slices) == 4
    assert calls.breaker.consecutive_failures == 4


async def test_retry_after_is_honoured_within_the_budget() -> None:
    script = Script(UpstreamRateLimited("up", "429", retry_after_s=0.3))
    started = time.monotonic()
    assert await policy().run("op", script) == "ok"
    assert time.monotonic() - started >= 0.3


async def test_retry_after_beyond_the_budget_fails_at_once() -> None:
    script = Script(UpstreamRateLimited("up", "429", retry_after_s=1.2))
    started = time.monotonic()
    with pytest.raises(UpstreamRateLimited):
        await policy(deadline_s=1.0).run("op", script)
    assert time.monotonic() - started < 0.1
    assert len(script.slices) == 1


async def test_a_slow_attempt_is_cut_at_its_slice() -> None:
    async def slow(slice_s: float) -> str:
        await asyncio.Event().wait()  # never answers: only the slice ends it
        return "late"

    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match=r"no answer within 0\.20s"):
        await policy(retries=0).run("op", slow)
    assert time.monotonic() - started < 0.3


async def test_the_last_attempt_gets_only_what_is_left() -> None:
    async def slow(slice_s: float) -> str:
        slices.append(slice_s)
        await asyncio.Event().wait()  # never answers: only the slice ends it
        return "late"

    slices: list[float] = []
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await policy(retries=5, deadline_s=0.5).run("op", slow)
    assert time.monotonic() - started < 0.6
    assert slices[0] == 0.2
    assert slices[-1] < 0.2


async def test_stops_once_the_circuit_opens() -> None:
    script = Script(*[UpstreamUnavailable("up", "503")] * 5)
    calls = policy(retries=4, threshold=2)
    with pytest.raises(UpstreamUnavailable) as caught:
        await calls.run("op", script)
    assert len(script.slices) == 2
    assert "503" in str(caught.value)
    assert calls.breaker.state is BreakerState.OPEN


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("2.0") == 2.0  # Shopify's spelling
    assert parse_retry_after("-3") == 0.0
    assert (
        parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now)
        == 30.0
    )
    assert (
        parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    )
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None

"""Calls paced under an upstream's rate limit: a burst through the pacer meets no 429
from a sample that enforces its limit, alone or as two instances sharing Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import pytest
import redis.asyncio as aioredis

from adapters.config import SegmentConfig
from adapters.errors import UpstreamRateLimited
from adapters.registry import build_adapter
from adapters.segment import SegmentAdapter
from adapters.transport.call_pacer import CallPacer, Pacing
from demo.upstreams.quota import RateLimit
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.upstreams.redis_client import RedisGuard
from tests.conftest import clean_redis, redis_database_url

T = TypeVar("T")
# Small enough that a burst outruns it many times over, in a few seconds of test.
LIMIT = RateLimit(30, 1.0)
BURST = 90


@pytest.fixture
def enforcing(samples: SampleUpstreams) -> Iterator[SampleUpstreams]:
    """The shared samples with Segment enforcing ``LIMIT`` for this test only."""
    window = samples.segment.window
    assert window is not None
    samples.reset()
    window.configure(limit=LIMIT, enforced=True)
    try:
        yield samples
    finally:
        window.configure(limit=samples.segment.rate_limit, enforced=False)
        samples.reset()


def _segment(samples: SampleUpstreams, paced: bool, redis: Any = None) -> SegmentAdapter:
    table: dict[str, Any] = {
        # Budgets a paced burst fits in; retries enough to ride out the unpaced 429s.
        "timeout_s": 5.0,
        "deadline_s": 30.0,
        "retries": 10,
        "rate_limit": {"calls": LIMIT.calls, "per_s": LIMIT.per_s} if paced else None,
        "breaker": {"failure_threshold": 1000},
    }
    config = sample_upstreams_config(samples.base_urls, {"segment": table})
    upstream = config.upstreams["segment"]
    assert isinstance(upstream, SegmentConfig)
    return cast(SegmentAdapter, build_adapter(upstream, redis=redis))


async def _burst(adapters: Sequence[SegmentAdapter], samples: SampleUpstreams) -> None:
    """``BURST`` event reads at once, spread over the instances; every one answered."""
    people = samples.people[:BURST]
    try:
        answers = await asyncio.gather(
            *(
                adapters[n % len(adapters)].fetch_events(p.segment_user_id, 5)
                for n, p in enumerate(people)
            )
        )
    finally:
        await asyncio.gather(*(adapter.aclose() for adapter in adapters))
    assert len(answers) == BURST


def _refused(samples: SampleUpstreams) -> int:
    window = samples.segment.window
    assert window is not None
    return window.refused


async def test_a_burst_through_the_pacer_meets_no_429(enforcing: SampleUpstreams) -> None:
    # Unpaced, the same burst runs into the sample's limit: the test can fail.
    await _burst([_segment(enforcing, paced=False)], enforcing)
    assert _refused(enforcing) > 0
    enforcing.reset()
    await _burst([_segment(enforcing, paced=True)], enforcing)
    assert _refused(enforcing) == 0
    assert enforcing.segment.calls.total == BURST  # no call retried


async def test_two_instances_sharing_redis_stay_inside_the_limit_together(
    enforcing: SampleUpstreams,
) -> None:
    # Each paced alone, two instances spend the limit twice over.
    await _burst([_segment(enforcing, paced=True), _segment(enforcing, paced=True)], enforcing)
    assert _refused(enforcing) > 0
    enforcing.reset()
    async with clean_redis(redis_database_url(7)) as url:
        client = aioredis.from_url(url)
        try:
            guard = RedisGuard(client, timeout_s=2.0)
            pair = [_segment(enforcing, paced=True, redis=guard) for _ in range(2)]
            assert all(cast(CallPacer, a.rest.policy.pacer).shared for a in pair)
            await _burst(pair, enforcing)
        finally:
            await client.aclose()
    assert _refused(enforcing) == 0
    assert enforcing.segment.calls.total == BURST


async def test_a_token_beyond_the_deadline_is_refused_and_takes_nothing() -> None:
    now = 100.0
    pacer = CallPacer("segment", Pacing(2, 1.0), clock=lambda: now)
    for _ in range(2):
        async with pacer.slot(0.0):
            pass  # answered at 100.0: its token is back at 101.0
    with pytest.raises(UpstreamRateLimited) as refused:
        async with pacer.slot(0.5):
            pass
    assert refused.value.retry_after_s == pytest.approx(1.0)
    now = 101.0
    async with pacer.slot(0.0):  # the refusal took nothing
        pass


class _Switchable:
    """The gateway's guard as a Redis outage leaves it: ``call`` answers ``default``
    while ``up`` is false, as an open circuit does."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.up = True

    async def call(self, what: str, op: Callable[[], Awaitable[T]], default: T) -> T:
        return await op() if self.up else default


async def test_an_instance_stays_inside_the_limit_across_a_redis_outage() -> None:
    # One instance spends the limit through Redis; Redis fails: its own tokens start from
    # those calls, not full (the upstream would see twice the limit in one window). Then
    # the reverse: calls made on its own tokens, Redis back, and Redis never saw them.
    async with clean_redis(redis_database_url(7)) as url:
        client = aioredis.from_url(url)
        try:
            for fails_after in (True, False):
                await client.flushdb()
                guard = _Switchable(client)
                guard.up = fails_after
                pacer = CallPacer("segment", Pacing(3, 2.0), redis=guard)
                for _ in range(3):
                    async with pacer.slot(1.0):
                        pass
                guard.up = not fails_after
                with pytest.raises(UpstreamRateLimited):
                    async with pacer.slot(0.5):
                        pass
        finally:
            await client.aclose()

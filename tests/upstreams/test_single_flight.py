"""Concurrent callers share one fetch per key; errors and cancellations are handled."""

from __future__ import annotations

import asyncio

import pytest

from gateway.upstreams.single_flight import SingleFlight


class Upstream:
    """Counts fetches and holds each until released, so callers overlap for certain."""

    def __init__(self) -> None:
        self.fetched: list[list[str]] = []
        self.release = asyncio.Event()
        self.error: Exception | None = None

    async def fetch(self, keys: list[str]) -> dict[str, int]:
        self.fetched.append(keys)
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return {k: len(k) for k in keys if k != "unknown"}


async def _started(tasks: list[asyncio.Task[dict[str, int]]]) -> None:
    await asyncio.sleep(0)  # every task reaches its await
    assert not any(t.done() for t in tasks)


async def test_concurrent_callers_of_one_key_share_one_fetch() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    upstream = Upstream()
    tasks = [asyncio.create_task(flight.run(["abc"], upstream.fetch)) for _ in range(20)]
    await _started(tasks)
    upstream.release.set()
    assert [await t for t in tasks] == [{"abc": 3}] * 20
    assert upstream.fetched == [["abc"]]
    assert len(flight) == 0


async def test_only_keys_nobody_is_fetching_are_fetched() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    upstream = Upstream()
    first = asyncio.create_task(flight.run(["a", "bb"], upstream.fetch))
    await asyncio.sleep(0)
    second = asyncio.create_task(flight.run(["bb", "ccc", "unknown"], upstream.fetch))
    await _started([first, second])
    upstream.release.set()
    assert await first == {"a": 1, "bb": 2}
    assert await second == {"bb": 2, "ccc": 3}  # unknown keys are absent
    assert upstream.fetched == [["a", "bb"], ["ccc", "unknown"]]


async def test_the_fetch_error_reaches_every_waiter() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    upstream = Upstream()
    upstream.error = LookupError("shop down")
    tasks = [asyncio.create_task(flight.run(["abc"], upstream.fetch)) for _ in range(3)]
    await _started(tasks)
    upstream.release.set()
    for task in tasks:
        with pytest.raises(LookupError, match="shop down"):
            await task
    assert len(upstream.fetched) == 1
    assert len(flight) == 0


async def test_a_waiter_whose_leader_is_cancelled_fetches_for_itself() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    upstream = Upstream()
    leader = asyncio.create_task(flight.run(["abc"], upstream.fetch))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(flight.run(["abc"], upstream.fetch))
    await _started([leader, waiter])
    leader.cancel()
    await asyncio.sleep(0)
    upstream.release.set()
    assert await waiter == {"abc": 3}
    assert leader.cancelled()
    assert upstream.fetched == [["abc"], ["abc"]]

"""TurnBatch: the keys asked for in one turn of the event loop go out in one fetch,
and a caller never gets an answer read before it asked."""

from __future__ import annotations

import asyncio

import pytest

from gateway.profiles.turn_batch import TurnBatch


class Store:
    def __init__(self) -> None:
        self.values = {"a": 1, "b": 2, "c": 3}
        self.fetches: list[list[str]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail: Exception | None = None
        self.fetching = asyncio.Event()

    async def fetch(self, keys: list[str]) -> dict[str, int]:
        self.fetches.append(sorted(keys))
        self.fetching.set()
        snapshot = {k: self.values[k] for k in keys if k in self.values}
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return snapshot


async def test_callers_of_one_turn_share_one_fetch_and_get_their_own_keys() -> None:
    store = Store()
    batch = TurnBatch(store.fetch)
    got = await asyncio.gather(
        batch.get_many(["a"]), batch.get_many(["b", "a"]), batch.get_many(["zz"])
    )
    assert list(got) == [{"a": 1}, {"b": 2, "a": 1}, {}]
    assert store.fetches == [["a", "b", "zz"]]
    assert await batch.get_many([]) == {}


async def test_a_caller_after_the_fetch_began_reads_again_and_sees_a_later_write() -> None:
    store = Store()
    store.release.clear()
    batch = TurnBatch(store.fetch)
    first = asyncio.create_task(batch.get_many(["a"]))
    await store.fetching.wait()
    store.fetching.clear()
    store.values["a"] = 10  # written after the first read began
    second = asyncio.create_task(batch.get_many(["a"]))
    await store.fetching.wait()  # the second caller's own fetch began, the first still held
    store.release.set()
    assert await first == {"a": 1}
    assert await second == {"a": 10}
    assert store.fetches == [["a"], ["a"]]


async def test_the_fetchs_error_reaches_every_caller_and_the_next_turn_fetches_again() -> None:
    store = Store()
    store.fail = RuntimeError("database down")
    batch = TurnBatch(store.fetch)
    results = await asyncio.gather(
        batch.get_many(["a"]), batch.get_many(["b"]), return_exceptions=True
    )
    assert [str(r) for r in results] == ["database down", "database down"]
    store.fail = None
    assert await batch.get_many(["a"]) == {"a": 1}
    assert len(store.fetches) == 2


async def test_a_cancelled_caller_does_not_cancel_the_others() -> None:
    store = Store()
    store.release.clear()
    batch = TurnBatch(store.fetch)
    leaving = asyncio.create_task(batch.get_many(["a"]))
    staying = asyncio.create_task(batch.get_many(["a", "b"]))
    await store.fetching.wait()
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    store.release.set()
    assert await staying == {"a": 1, "b": 2}


async def test_a_large_turn_is_fetched_in_slices() -> None:
    store = Store()
    store.values = {f"k{i}": i for i in range(5)}
    batch = TurnBatch(store.fetch, most=2)
    got = await asyncio.gather(batch.get_many(["k0", "k1", "k2"]), batch.get_many(["k3", "k4"]))
    assert list(got) == [{"k0": 0, "k1": 1, "k2": 2}, {"k3": 3, "k4": 4}]
    assert sorted(len(keys) for keys in store.fetches) == [1, 2, 2]


async def test_a_cancelled_fetch_is_an_error_for_callers_that_were_not_cancelled() -> None:
    store = Store()
    store.release.clear()
    batch = TurnBatch(store.fetch)
    waiting = asyncio.create_task(batch.get_many(["a"]))
    await store.fetching.wait()
    for task in list(batch._running):
        task.cancel()
    with pytest.raises(RuntimeError, match="cancelled"):
        await waiting

"""The response cache's store (gateway/upstreams/response_cache.py), in memory: an answer
built before a write to a customer it holds is never stored, however many other writes
came between; what it keeps stays within its byte budget."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.upstreams.byte_memo import ByteMemo
from gateway.upstreams.response_cache import ResponseCache, id_tag


async def test_an_answer_built_before_a_write_is_refused_after_the_tags_are_cleared() -> None:
    cache = ResponseCache(None, max_entries=10)
    found = await cache.lookup("a's answer")
    assert found.ticket is not None
    await cache.invalidate([id_tag("a")])  # A written while its answer was built
    for other in range(100):  # enough writes to others to clear the invalidations
        await cache.invalidate([id_tag(f"other-{other}")])
    stored = await cache.store("a's answer", found.ticket, b"stale", [id_tag("a")], 60)
    assert not stored
    assert (await cache.lookup("a's answer")).hit is None


async def test_an_answer_built_after_the_clear_is_stored() -> None:
    cache = ResponseCache(None, max_entries=10)
    for other in range(100):
        await cache.invalidate([id_tag(f"other-{other}")])
    found = await cache.lookup("a's answer")
    assert found.ticket is not None
    assert await cache.store("a's answer", found.ticket, b"fresh", [id_tag("a")], 60)
    hit = (await cache.lookup("a's answer")).hit
    assert hit is not None
    assert hit.payload == b"fresh"


@given(sizes=st.lists(st.integers(0, 5000), max_size=40))
async def test_in_memory_answers_stay_within_their_byte_budget(sizes: list[int]) -> None:
    cache = ResponseCache(None, max_entries=1000, max_bytes=10_000)
    for number, size in enumerate(sizes):
        key = f"answer {number}"
        found = await cache.lookup(key)
        assert found.ticket is not None
        stored = await cache.store(key, found.ticket, b"x" * size, [id_tag(number)], 60)
        assert stored == (len(key) + size <= 10_000)
        assert cache._entries.bytes <= 10_000
        hit = (await cache.lookup(key)).hit
        assert (hit is not None) == stored  # the newest is kept while it fits


@given(
    pairs=st.lists(st.tuples(st.binary(max_size=50), st.integers(0, 5)), max_size=60),
    max_entries=st.integers(1, 10),
)
def test_a_byte_memo_keeps_the_newest_within_its_count_and_bytes(
    pairs: list[tuple[bytes, int]], max_entries: int
) -> None:
    memo: ByteMemo[bytes, int] = ByteMemo(
        lambda key, value: len(key) + value, max_entries=max_entries, max_bytes=100
    )
    for key, value in pairs:
        memo.put(key, value)
        assert len(memo) <= max_entries
        assert memo.bytes <= 100
        assert memo.bytes == sum(len(k) + memo.get(k) for k in list(memo._kept))
        assert key in memo  # each pair fits the budget alone: the newest stays
        assert memo.get(key) == value

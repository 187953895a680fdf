"""The response cache's store (gateway/upstreams/response_cache.py), in memory: an answer
built before a write to a customer it holds is never stored, however many other writes
came between."""

from __future__ import annotations

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

"""The row buffer impressions are queued in: one row appended at a time (the serving
path's way) is written in order, and past its limit the oldest are dropped, logged."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.errors import DatabaseUnavailable
from gateway.row_buffer import Lull, RowBuffer


async def test_rows_appended_one_at_a_time_are_written_in_order_once() -> None:
    written: list[list[int]] = []

    async def write(batch: list[int]) -> None:
        written.append(batch)

    buffer: RowBuffer[int] = RowBuffer(
        write, name="test", logger=logging.getLogger("test"), interval_s=3600
    )
    for row in range(5):
        buffer.append(row)
    buffer.add([5, 6])
    await buffer.aclose()
    assert written == [[0, 1, 2, 3, 4, 5, 6]]


async def test_appending_past_the_limit_drops_the_oldest(caplog: pytest.LogCaptureFixture) -> None:
    written: list[list[int]] = []

    async def write(batch: list[int]) -> None:
        written.append(batch)

    buffer: RowBuffer[int] = RowBuffer(
        write, name="test", logger=logging.getLogger("test"), interval_s=3600, max_rows=3
    )
    with caplog.at_level(logging.ERROR, logger="test"):
        for row in range(5):
            buffer.append(row)
    await buffer.aclose()
    assert written == [[2, 3, 4]]
    assert [r.getMessage() for r in caplog.records] == ["test buffer full; dropped entries"] * 2


class _Writes:
    """What a buffer wrote, and when (the loop's clock)."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, list[int]]] = []

    async def __call__(self, batch: list[int]) -> None:
        self.batches.append((asyncio.get_running_loop().time(), batch))


async def _burst(buffer: RowBuffer[int], seconds: float, rows_per_tick: int = 200) -> float:
    """Rows appended every 10 ms (~20,000 a second) for ``seconds``: when it ended."""
    clock = asyncio.get_running_loop().time
    end, row = clock() + seconds, 0
    while clock() < end:
        for _ in range(rows_per_tick):
            buffer.append(row)
            row += 1
        await asyncio.sleep(0.01)
    return clock()


def _lulled(
    writes: _Writes, max_delay_s: float = 30.0, write_at_rows: int = 100_000
) -> RowBuffer[int]:
    """A buffer due to write 50 ms after its first row, busy above 1,000 rows a second
    over 0.2 s."""
    lull = Lull(
        busy_rows_per_s=1000.0,
        max_delay_s=max_delay_s,
        write_at_rows=write_at_rows,
        probe_s=0.05,
        window_s=0.2,
    )
    return RowBuffer(writes, name="t", logger=logging.getLogger("t"), interval_s=0.05, lull=lull)


async def test_a_write_due_during_a_burst_waits_for_the_lull_after_it() -> None:
    writes = _Writes()
    buffer = _lulled(writes)
    ended = await _burst(buffer, 0.6)  # the write fell due ~0.55 s before the end
    assert writes.batches == []
    await asyncio.sleep(1.0)  # the lull is judged over 0.2 s, its write ~0.3 s after
    assert len(writes.batches) == 1
    written_at, batch = writes.batches[0]
    assert written_at >= ended
    assert batch == list(range(len(batch)))
    assert len(batch) > 1000
    await buffer.aclose()


async def test_a_burst_longer_than_the_longest_delay_is_written_during_it() -> None:
    writes = _Writes()
    buffer = _lulled(writes, max_delay_s=0.3)
    ended = await _burst(buffer, 1.2)
    assert writes.batches
    assert writes.batches[0][0] < ended - 0.3
    await buffer.aclose()
    rows = [row for _, batch in writes.batches for row in batch]
    assert rows == list(range(len(rows)))


async def test_a_burst_is_written_once_as_many_rows_wait_as_the_lull_allows() -> None:
    writes = _Writes()
    buffer = _lulled(writes, write_at_rows=500)
    ended = await _burst(buffer, 1.0)
    assert writes.batches
    assert writes.batches[0][0] < ended - 0.3
    assert len(writes.batches[0][1]) < 5000  # written near 500 rows, not at the end (~20,000)
    await buffer.aclose()


async def test_rows_that_trickle_in_are_written_on_time() -> None:
    writes = _Writes()
    buffer = _lulled(writes)
    ended = await _burst(buffer, 0.8, rows_per_tick=1)  # ~100 a second: not busy
    assert writes.batches
    assert writes.batches[0][0] < ended - 0.2
    await buffer.aclose()


async def test_a_row_queued_while_a_write_runs_is_written_without_another_row() -> None:
    # The burst ends during a write: nothing more is appended, yet the rows that came
    # in meanwhile are written within an interval, not at the next request or shutdown.
    writes = _Writes()
    writing = asyncio.Event()

    async def slow_write(batch: list[int]) -> None:
        writing.set()
        await asyncio.sleep(0.2)
        await writes(batch)

    buffer: RowBuffer[int] = RowBuffer(
        slow_write, name="t", logger=logging.getLogger("t"), interval_s=0.05
    )
    buffer.append(0)
    await writing.wait()
    buffer.append(1)  # while row 0 is being written
    await asyncio.sleep(0.6)
    assert [batch for _, batch in writes.batches] == [[0], [1]]
    await buffer.aclose()


async def test_a_send_served_in_pages_is_a_burst_not_a_lull() -> None:
    # renderBatch records a page's lists at once, then the next page comes: 300 rows every
    # 0.1 s is 3,000 a second, far above the 1,000 that make serving busy, yet a quiet
    # probe (50 ms here, 0.25 s in production) between two pages was taken for the lull.
    writes = _Writes()
    buffer = _lulled(writes)
    clock = asyncio.get_running_loop().time
    end = clock() + 1.0
    row = 0
    while clock() < end:
        for _ in range(300):
            buffer.append(row)
            row += 1
        await asyncio.sleep(0.1)
    assert writes.batches == []
    await buffer.aclose()


async def test_a_large_batch_is_written_in_slices_each_row_once() -> None:
    # Each write is a transaction: a lulled batch of 100,000 impressions held SQLite's
    # write lock for seconds, past the busy timeout other writers wait.
    written: list[list[int]] = []
    failures = [DatabaseUnavailable("database down")]

    async def write(batch: list[int]) -> None:
        if len(written) == 1 and failures:
            raise failures.pop()
        written.append(batch)

    buffer: RowBuffer[int] = RowBuffer(
        write, name="test", logger=logging.getLogger("test"), interval_s=3600, write_rows=3
    )
    buffer.add(range(8))
    await buffer.flush()  # the second slice fails: the first stays written
    assert written == [[0, 1, 2]]
    await buffer.aclose()
    assert written == [[0, 1, 2], [3, 4, 5], [6, 7]]

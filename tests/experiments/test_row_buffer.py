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


def _flat(write: object, **options: object) -> RowBuffer[int]:
    """A buffer of rows of three values, queued flat."""
    return RowBuffer(
        write,  # type: ignore[arg-type]
        name="flat",
        logger=logging.getLogger("flat"),
        interval_s=3600,
        width=3,
        **options,  # type: ignore[arg-type]
    )


async def test_rows_queued_flat_are_written_and_kept_in_whole_rows() -> None:
    # The impressions' rows wait as their values end to end: a slice or a retry that cut
    # a row would shift every later value into another column and another customer's row.
    written: list[list[int]] = []
    failures = [DatabaseUnavailable("database down")]

    async def write(values: list[int]) -> None:
        if len(written) == 1 and failures:
            raise failures.pop()
        written.append(values)

    buffer = _flat(write, write_rows=2)
    for row in range(5):
        buffer.append_values((row * 10, row * 10 + 1, row * 10 + 2))
    assert buffer.rows == 5
    await buffer.flush()  # the second slice fails: its rows and the next wait, whole
    assert written == [[0, 1, 2, 10, 11, 12]]
    assert buffer.rows == 3
    await buffer.aclose()
    assert written == [[0, 1, 2, 10, 11, 12], [20, 21, 22, 30, 31, 32], [40, 41, 42]]


async def test_flat_rows_past_the_limit_drop_the_oldest_whole(
    caplog: pytest.LogCaptureFixture,
) -> None:
    written: list[list[int]] = []

    async def write(values: list[int]) -> None:
        written.append(values)

    buffer = _flat(write, max_rows=2)
    with caplog.at_level(logging.ERROR, logger="flat"):
        for row in range(4):
            buffer.append_values((row, row, row))
    await buffer.aclose()
    assert written == [[2, 2, 2, 3, 3, 3]]
    assert [r.dropped for r in caplog.records] == [1, 1]  # type: ignore[attr-defined]


async def test_a_row_of_another_width_is_refused_and_nothing_queued() -> None:
    buffer = _flat(lambda values: asyncio.sleep(0))
    buffer.append_values((1, 2, 3))
    for wrong in ((4, 5), (4, 5, 6, 7)):
        with pytest.raises(ValueError, match="values for 3"):
            buffer.append_values(wrong)
    assert buffer.rows == 1
    await buffer.aclose()


async def test_the_lull_counts_flat_rows_not_values() -> None:
    # write_at_rows is rows: counted in values, a burst of rows three values wide would
    # be written at a third of the rows the lull allows.
    writes = _Writes()
    lull = Lull(busy_rows_per_s=1000.0, write_at_rows=600, probe_s=0.05, window_s=0.2)
    buffer: RowBuffer[int] = RowBuffer(
        writes, name="t", logger=logging.getLogger("t"), interval_s=0.05, lull=lull, width=3
    )
    clock = asyncio.get_running_loop().time
    end, row = clock() + 1.0, 0
    while clock() < end and not writes.batches:
        for _ in range(100):
            buffer.append_values((row, row, row))
            row += 1
        await asyncio.sleep(0.01)
    assert writes.batches
    assert len(writes.batches[0][1]) // 3 >= 600
    await buffer.aclose()


async def test_past_the_limit_the_oldest_are_dropped_to_nine_tenths_of_it_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # With the database down and serving on, every row queued past the limit dropped
    # one row, shifting the whole list: ~0.5 ms of the loop a served list at the
    # impressions' 1.8 million values. The oldest go, down to nine tenths of the limit.
    written: list[list[int]] = []

    async def write(values: list[int]) -> None:
        written.append(values)

    buffer = _flat(write, max_rows=1000)
    with caplog.at_level(logging.ERROR, logger="flat"):
        for row in range(1001):
            buffer.append_values((row, row, row))
        assert buffer.rows == 900
        for row in range(1001, 1101):
            buffer.append_values((row, row, row))  # up to the limit again: nothing dropped
    assert [r.dropped for r in caplog.records] == [101]  # type: ignore[attr-defined]
    await buffer.aclose()
    assert written == [[value for row in range(101, 1101) for value in (row, row, row)]]

"""The row buffer impressions are queued in: one row appended at a time (the serving
path's way) is written in order, and past its limit the oldest are dropped, logged."""

from __future__ import annotations

import logging

import pytest

from gateway.row_buffer import RowBuffer


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

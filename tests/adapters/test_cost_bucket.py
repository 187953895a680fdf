"""The local cost bucket (the shop's points when no Redis shares them)."""

from __future__ import annotations

import pytest

from adapters.errors import UpstreamRateLimited
from adapters.transport.cost_bucket import CostBucket


async def test_a_call_whose_deadline_has_passed_is_refused_even_with_points_to_spare() -> None:
    bucket = CostBucket("shop", 1000, 50, clock=lambda: 0.0)
    with pytest.raises(UpstreamRateLimited):
        await bucket.take(10, budget_s=-1.0)
    assert await bucket.take(990, budget_s=0.0) == 0.0  # nothing was taken by the refusal


async def test_points_taken_are_reserved_for_later_callers() -> None:
    bucket = CostBucket("shop", 1000, 100, clock=lambda: 0.0)
    await bucket.take(500, budget_s=0.0)
    with pytest.raises(UpstreamRateLimited):
        await bucket.take(600, budget_s=0.01)  # 500 left: needs over a second of restore

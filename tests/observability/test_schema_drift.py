"""Schema drift: each adapter checks what it receives against the shape it expects."""

from __future__ import annotations

import pytest

from demo.upstreams.runner import SampleUpstreams
from tests.observability.drift_calls import Heard, adapters_over, read_everything


@pytest.mark.parametrize("graphql", [False, True], ids=["rest", "graphql"])
async def test_the_sample_upstreams_as_they_are_show_no_drift(
    samples: SampleUpstreams, graphql: bool
) -> None:
    heard = Heard()
    async with adapters_over(samples, heard, graphql=graphql) as adapters:
        await read_everything(adapters, samples)
    assert sorted(set(heard.drifts)) == []

"""The tracing tests' gateways (tests/observability/traced.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from demo.upstreams.runner import SampleUpstreams
from tests.observability.traced import Traced, traced_gateways


@pytest.fixture
def traced(samples: SampleUpstreams, seeded_url: str) -> Iterator[Traced]:
    samples.reset()
    yield traced_gateways(samples, seeded_url)
    samples.reset()

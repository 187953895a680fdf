"""One set of sample upstreams for the whole directory, reset before each test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from demo.upstreams.credentials import (
    DEMO_HUBSPOT_TOKEN,
    DEMO_SEGMENT_SPACE,
    DEMO_SEGMENT_TOKEN,
    DEMO_SHOPIFY_TOKEN,
    DEMO_SOAP_PASSWORD,
    DEMO_SOAP_USER,
)
from demo.upstreams.runner import SampleUpstreams

SIZE = 1000


@pytest.fixture
def hubspot(upstreams: SampleUpstreams) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=upstreams.base_urls["hubspot"],
        timeout=5,
        headers={"Authorization": f"Bearer {DEMO_HUBSPOT_TOKEN}"},
    ) as client:
        yield client


@pytest.fixture
def shopify(upstreams: SampleUpstreams) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{upstreams.base_urls['shopify']}/admin/api/2024-10",
        timeout=5,
        headers={"X-Shopify-Access-Token": DEMO_SHOPIFY_TOKEN},
    ) as client:
        yield client


@pytest.fixture
def segment(upstreams: SampleUpstreams) -> Iterator[httpx.Client]:
    base = (
        f"{upstreams.base_urls['segment']}/v1/spaces/{DEMO_SEGMENT_SPACE}"
        "/collections/users/profiles"
    )
    with httpx.Client(base_url=base, timeout=5, auth=(DEMO_SEGMENT_TOKEN, "")) as client:
        yield client


@pytest.fixture
def soap_auth() -> httpx.BasicAuth:
    return httpx.BasicAuth(DEMO_SOAP_USER, DEMO_SOAP_PASSWORD)

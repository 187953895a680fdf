"""Every fault the samples can serve, against every adapter, proven by call counters.

Per attempt 0.3 s, per call 1.0 s, 2 retries (3 attempts), backoff 10-50 ms.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.errors import (
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from demo.upstreams.runner import SampleUpstreams
from demo.upstreams.service import SampleService

Build = Callable[..., Any]
PERSON = 7


@dataclass(frozen=True)
class Probe:
    variant: str
    service: Callable[[SampleUpstreams], SampleService]
    endpoint: str
    call: Callable[[Any, SampleUpstreams], Awaitable[Any]]

    def calls(self, upstreams: SampleUpstreams) -> int:
        return self.service(upstreams).calls.count(self.endpoint)


PROBES = [
    Probe(
        "hubspot",
        lambda up: up.hubspot,
        "GET /crm/v3/objects/contacts/{id}",
        lambda a, up: a.fetch_contact(up.people[PERSON].hubspot_id),
    ),
    Probe(
        "soap_crm",
        lambda up: up.soap_crm,
        "POST /soap/contacts",
        lambda a, up: a.fetch_contact(f"C-{PERSON:06d}"),
    ),
    Probe(
        "shopify",
        lambda up: up.shopify,
        "GET /admin/api/2024-10/customers/{id}/orders.json",
        lambda a, up: a.fetch_orders(str(up.people[PERSON].shopify_id)),
    ),
    Probe(
        "shopify_graphql",
        lambda up: up.shopify,
        "POST /admin/api/2024-10/graphql.json",
        lambda a, up: a.fetch_orders(str(up.people[PERSON].shopify_id)),
    ),
    Probe(
        "segment",
        lambda up: up.segment,
        "GET /v1/spaces/{space_id}/collections/{collection}/profiles/{identifier}/traits",
        lambda a, up: a.fetch_traits(user_id=up.people[PERSON].segment_user_id),
    ),
]


@pytest.fixture(params=PROBES, ids=lambda p: p.variant)
def probe(request: pytest.FixtureRequest) -> Probe:
    return request.param  # type: ignore[no-any-return]


def assert_clean_message(error: UpstreamError, upstreams: SampleUpstreams) -> None:
    """No customer data and no credentials in what may be logged or shown."""
    text = str(error)
    person = upstreams.people[PERSON]
    for secret in (
        person.email,
        person.hubspot_id,
        person.segment_user_id,
        upstreams.credentials.hubspot_token,
        upstreams.credentials.shopify_token,
        upstreams.credentials.segment_token,
        upstreams.credentials.soap_password,
    ):
        assert secret not in text
    assert "@" not in text


async def test_healthy_call_costs_one_request(
    build: Build, probe: Probe, upstreams: SampleUpstreams
) -> None:
    assert await probe.call(build(probe.variant), upstreams)
    assert probe.calls(upstreams) == 1


async def test_5xx_is_retried_then_unavailable(
    build: Build, probe: Probe, upstreams: SampleUpstreams
) -> None:
    probe.service(upstreams).faults.update(error_rate=1.0, error_status=503)
    with pytest.raises(UpstreamUnavailable) as caught:
        await probe.call(build(probe.variant), upstreams)
    assert probe.calls(upstreams) == 3  # 1 attempt + 2 retries
    assert caught.value.code == "UPSTREAM_UNAVAILABLE"
    assert caught.value.upstream == probe.variant
    assert_clean_message(caught.value, upstreams)


async def test_no_retries_when_configured_so(
    build: Build, probe: Probe, upstreams: SampleUpstreams
) -> None:
    probe.service(upstreams).faults.update(error_rate=1.0, error_status=502)
    with pytest.raises(UpstreamUnavailable):
        await probe.call(build(probe.variant, retries=0), upstreams)
    assert probe.calls(upstreams) == 1


async def test_other_4xx_is_not_retried(
    build: Build, probe: Probe, upstreams: SampleUpstreams
) -> None:
    probe.service(upstreams).faults.update(error_rate=1.0, error_status=400)
    with pytest.raises(UpstreamBadResponse) as caught:
        await probe.call(build(probe.variant), upstreams)
    assert probe.calls(upstreams) == 1
    assert caught.value.status_code == 400


async def test_429_within_budget_waits_retry_after(
    build: Build, probe: Probe, upstreams: SampleUpstreams
) -> None:
    # 0.3 s: Shopify words Retry-After with one decimal. A call budget of 3 s: within
    # 1 s, a first attempt slowed by a loaded machine (CI) left less than the wait.
    probe.service(upstreams).faults.update(rate_limit_next=1, retry_after_s=0.3)
    started = time.monotonic()
    assert await probe.call(build(probe.variant, deadline_s=3.0), upstreams)
    assert time.monotonic() - started >= 0.3
    assert probe.calls(upstreams) == 2


async def test_429_beyond_budget_fails_at_once(
    build: Build, probe: Probe, upstreams: SampleUpstreams
) -> None:
    probe.service(upstreams).faults.update(rate_limit_next=1, retry_after_s=5)
    started = time.monotonic()
    with pytest.raises(UpstreamRateLimited) as caught:
        await probe.call(build(probe.variant), upstreams)
    assert time.monotonic() - started < 0.5
    assert probe.calls(upstreams) == 1
    assert caught.value.retry_after_s == 5
    assert caught.value.code == "UPSTREAM_RATE_LIMITED"


async def test_hang_times_out_within_the_budget(
    build: Build, probe: Probe, upstreams: SampleUpstreams
) -> None:
    probe.service(upstreams).faults.update(hang=True)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as caught:
        await probe.call(build(probe.variant), upstreams)
    elapsed = time.monotonic() - started
    assert 0.6 <= elapsed <= 1.0 + 0.2  # several attempts, never past the call's budget
    assert 2 <= probe.calls(upstreams) <= 3
    assert caught.value.code == "UPSTREAM_TIMEOUT"


async def test_latency_within_the_attempt_timeout_is_fine(
    build: Build, probe: Probe, upstreams: SampleUpstreams
) -> None:
    probe.service(upstreams).faults.update(latency_ms=100)
    assert await probe.call(build(probe.variant), upstreams)
    assert probe.calls(upstreams) == 1


async def test_malformed_body_is_a_bad_response(
    build: Build, probe: Probe, upstreams: SampleUpstreams
) -> None:
    probe.service(upstreams).faults.update(malformed=True)
    with pytest.raises(UpstreamBadResponse) as caught:
        await probe.call(build(probe.variant), upstreams)
    assert probe.calls(upstreams) == 1  # never retried
    assert caught.value.code == "UPSTREAM_BAD_RESPONSE"
    assert_clean_message(caught.value, upstreams)


async def test_schema_change_is_a_bad_response(
    build: Build, probe: Probe, upstreams: SampleUpstreams
) -> None:
    probe.service(upstreams).faults.update(schema_change=True)
    with pytest.raises(UpstreamBadResponse) as caught:
        await probe.call(build(probe.variant), upstreams)
    assert probe.calls(upstreams) == 1
    assert caught.value.__cause__ is None  # pydantic's text (it quotes values) is not chained
    assert_clean_message(caught.value, upstreams)


async def test_refused_connection_is_unavailable(
    build: Build, probe: Probe, upstreams: SampleUpstreams
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    adapter = build(probe.variant, base_url=f"http://127.0.0.1:{port}")
    with pytest.raises(UpstreamUnavailable) as caught:
        await probe.call(adapter, upstreams)
    assert isinstance(caught.value.__cause__, Exception)  # the httpx error, chained
    assert_clean_message(caught.value, upstreams)

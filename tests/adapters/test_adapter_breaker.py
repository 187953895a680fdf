"""The circuit breaker: opens on failures, refuses without calling, half-opens, closes.

Against the real samples (counters prove "without calling"), with a hand-driven clock
for the cool-down, and the state machine's edges alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from adapters.errors import CircuitOpen, UpstreamBadResponse, UpstreamUnavailable
from adapters.transport.breaker import BreakerState, CircuitBreaker
from demo.upstreams.runner import SampleUpstreams
from tests.fake_clock import FakeClock

Build = Callable[..., Any]
CONTACT = "GET /crm/v3/objects/contacts/{id}"
BREAKER = {"failure_threshold": 3, "reset_timeout_s": 30}


def state(breaker: CircuitBreaker) -> BreakerState:
    """The state read afresh: mypy would carry an earlier assert's narrowing past the
    clock moving (the property changes with time, not with assignments)."""
    return breaker.state


async def test_opens_refuses_half_opens_and_closes(
    build: Build, upstreams: SampleUpstreams
) -> None:
    clock = FakeClock()
    crm = build("hubspot", breaker=BREAKER, clock=clock)
    person_id = upstreams.people[1].hubspot_id
    upstreams.hubspot.faults.update(error_rate=1.0, error_status=503)

    # One call, three failing attempts: the third opens the circuit.
    with pytest.raises(UpstreamUnavailable) as first:
        await crm.fetch_contact(person_id)
    assert not isinstance(first.value, CircuitOpen)
    assert state(crm.breaker) is BreakerState.OPEN
    assert upstreams.hubspot.calls.count(CONTACT) == 3

    # Open: refused locally, the upstream sees nothing.
    with pytest.raises(CircuitOpen) as refused:
        await crm.fetch_contact(person_id)
    assert refused.value.code == "UPSTREAM_UNAVAILABLE"
    assert upstreams.hubspot.calls.count(CONTACT) == 3

    # After the cool-down one probe goes through; it succeeds and closes the circuit.
    clock.advance(29)
    assert state(crm.breaker) is BreakerState.OPEN
    clock.advance(1)
    assert state(crm.breaker) is BreakerState.HALF_OPEN
    upstreams.hubspot.faults.reset()
    assert await crm.fetch_contact(person_id) is not None
    assert state(crm.breaker) is BreakerState.CLOSED
    assert upstreams.hubspot.calls.count(CONTACT) == 4


async def test_failed_probe_reopens_after_one_call(
    build: Build, upstreams: SampleUpstreams
) -> None:
    clock = FakeClock()
    crm = build("soap_crm", breaker=BREAKER, clock=clock)
    upstreams.soap_crm.faults.update(soap_fault=True)
    with pytest.raises(UpstreamUnavailable):
        await crm.fetch_contact("C-000001")
    assert upstreams.soap_crm.calls.operation("GetContact") == 3
    clock.advance(30)
    with pytest.raises(UpstreamUnavailable) as probe:
        await crm.fetch_contact("C-000001")
    assert not isinstance(probe.value, CircuitOpen)  # the probe's own failure
    assert upstreams.soap_crm.calls.operation("GetContact") == 4  # one probe, no retries
    assert state(crm.breaker) is BreakerState.OPEN


async def test_half_open_lets_a_single_probe_through(
    build: Build, upstreams: SampleUpstreams
) -> None:
    clock = FakeClock()
    shop = build("shopify", breaker=BREAKER, retries=0, clock=clock)
    customer = str(upstreams.people[2].shopify_id)
    upstreams.shopify.faults.update(error_rate=1.0, error_status=500)
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable):
            await shop.fetch_orders(customer)
    assert state(shop.breaker) is BreakerState.OPEN
    clock.advance(30)
    upstreams.shopify.faults.reset()
    upstreams.shopify.faults.update(latency_ms=150)
    results = await asyncio.gather(
        shop.fetch_orders(customer), shop.fetch_orders(customer), return_exceptions=True
    )
    assert sum(isinstance(r, CircuitOpen) for r in results) == 1
    assert sum(isinstance(r, list) for r in results) == 1
    assert state(shop.breaker) is BreakerState.CLOSED


async def test_answers_that_are_not_outages_do_not_open_it(
    build: Build, upstreams: SampleUpstreams
) -> None:
    crm = build("hubspot", breaker={"failure_threshold": 1})
    assert await crm.fetch_contact("99999999999") is None  # 404
    upstreams.hubspot.faults.update(malformed=True)
    with pytest.raises(UpstreamBadResponse):
        await crm.fetch_contact(upstreams.people[1].hubspot_id)
    assert state(crm.breaker) is BreakerState.CLOSED


async def test_a_burst_beyond_the_connections_waits_its_turn_and_opens_nothing(
    build: Build, upstreams: SampleUpstreams
) -> None:
    """12 calls at once on 2 connections, each answered in 0.2 s: the calls beyond the
    connections wait for one on the call's deadline, not on an attempt's 0.3 s, so none
    times out and the breaker does not read a burst of ours as the upstream failing."""
    crm = build(
        "hubspot",
        max_connections=2,
        timeout_s=0.3,
        deadline_s=5.0,
        retries=0,
        breaker={"failure_threshold": 1},
    )
    upstreams.hubspot.faults.update(latency_ms=200)
    ids = [p.hubspot_id for p in upstreams.people[1:13]]
    found = await asyncio.gather(*(crm.fetch_contact(i) for i in ids))
    assert all(contact is not None for contact in found)
    assert state(crm.breaker) is BreakerState.CLOSED
    assert upstreams.hubspot.calls.count(CONTACT) == 12


def test_state_machine_with_a_clock() -> None:
    clock = FakeClock(100.0)
    breaker = CircuitBreaker("x", failure_threshold=2, reset_timeout_s=10, clock=clock)
    breaker.before_call()
    breaker.record_failure()
    breaker.before_call()
    breaker.record_success()  # a success resets the count
    assert breaker.consecutive_failures == 0
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN
    with pytest.raises(CircuitOpen) as refused:
        breaker.before_call()
    assert refused.value.retry_in_s == pytest.approx(10)
    clock.now += 10
    assert state(breaker) is BreakerState.HALF_OPEN
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # anyone else while it is out
    breaker.release()  # probe ended without a verdict (e.g. a 429)
    breaker.before_call()  # a new probe may go
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN
    clock.now += 10
    breaker.before_call()
    breaker.record_success()
    assert state(breaker) is BreakerState.CLOSED
    assert "x closed" in repr(breaker)

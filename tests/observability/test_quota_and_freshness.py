"""Rate-limit headroom, Retry-After and freshness, as the operator's metrics show them."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import cast

import httpx
import pytest
from prometheus_client import REGISTRY

from adapters.hubspot import HubSpotAdapter
from adapters.protocols import BatchOrdersAdapter, CommerceAdapter
from adapters.registry import aclose_adapters, build_adapters
from adapters.transport.telemetry import Quota, quotas_in
from demo.upstreams.runner import SampleUpstreams
from demo.upstreams.shopify.cost import PLANS, Plan
from demo.wiring import sample_upstreams_config
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.ingest.sync import sync
from tests.conftest import FAST, GatewayFactory
from tests.gql_client import gql
from tests.observability.drift_calls import Heard, adapters_over

SERVED = "gateway_data_served_newest_timestamp_seconds"
FETCHED = "gateway_upstream_last_success_timestamp_seconds"
CRM = "query($e: String!) { customer(email: $e) { email company } }"
CRM_AND_SHOP = (
    "query($e: String!) { customer(email: $e) { email company lifetimeValue { amount } } }"
)


def _value(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_the_headers_of_each_service_read_as_quotas() -> None:
    shopify = httpx.Headers({"X-Shopify-Shop-Api-Call-Limit": "32/40"})
    hubspot = httpx.Headers(
        {
            "X-HubSpot-RateLimit-Max": "100",
            "X-HubSpot-RateLimit-Remaining": "3",
            "X-HubSpot-RateLimit-Daily": "1000000",
            "X-HubSpot-RateLimit-Daily-Remaining": "999000",
        }
    )
    assert list(quotas_in(shopify)) == [Quota("calls", 8, 40)]
    assert list(quotas_in(hubspot)) == [
        Quota("interval", 3, 100),
        Quota("daily", 999000, 1000000),
    ]
    assert list(quotas_in(httpx.Headers({"X-Shopify-Shop-Api-Call-Limit": "x/0"}))) == []


async def test_a_shrunk_quota_shows_in_what_the_adapters_report(samples: SampleUpstreams) -> None:
    samples.reset()
    heard = Heard()
    people = samples.people[:10]
    try:
        async with adapters_over(samples, heard, graphql=True) as adapters:
            samples.hubspot.faults.update(quota_limit=3)
            crm = cast(HubSpotAdapter, adapters["hubspot"])
            for person in people:  # ten calls within one 10 s window, or two
                await crm.fetch_contacts([person.hubspot_id])
            samples.shopify.graphql.reset(Plan(200, 5))
            shop = cast(BatchOrdersAdapter, adapters["shopify"])
            await shop.fetch_orders_by_email([p.email for p in people[:2]], 5)
    finally:
        samples.reset()
        samples.shopify.graphql.reset(PLANS["plus"])
    interval = [q for up, q in heard.quotas if up == "hubspot" and q.name == "interval"]
    assert {q.limit for q in interval} == {3}
    # At most one window boundary in a second: one side saw three calls or more.
    assert min(q.remaining for q in interval) == 0
    points = [q for up, q in heard.quotas if up == "shopify" and q.name == "points"]
    assert points
    assert {q.limit for q in points} == {200}
    assert all(q.remaining < 200 for q in points)


async def test_retry_after_is_counted_per_upstream(samples: SampleUpstreams) -> None:
    samples.reset()
    heard = Heard()
    try:
        async with adapters_over(samples, heard) as adapters:
            samples.shopify.faults.update(rate_limit_next=1, retry_after_s=0.2)
            shop = cast(CommerceAdapter, adapters["shopify"])
            await shop.find_customers_by_email([samples.people[0].email])
    finally:
        samples.reset()
    assert heard.retry_afters == [("shopify", 0.2)]
    # The 429 still announced the (full) bucket: the headroom the answer came with.
    assert ("shopify", Quota("calls", 0, 40)) in heard.quotas


async def test_the_gateway_exports_headroom_and_freshness(
    gateway: GatewayFactory, samples: SampleUpstreams
) -> None:
    started = time.time()
    async with gateway(cache_url="memory://") as client:
        samples.hubspot.faults.update(quota_limit=2)
        for person in samples.people[60:66]:
            answer = await gql(client, CRM_AND_SHOP, e=person.email)
            assert "errors" not in answer, answer
        text = (await client.get("/metrics")).text
    assert _value(text, "gateway_upstream_quota_limit", upstream="hubspot", quota="interval") == 2
    remaining = _value(
        text, "gateway_upstream_quota_remaining", upstream="hubspot", quota="interval"
    )
    assert remaining is not None
    assert remaining <= 2
    assert _value(text, "gateway_upstream_quota_limit", upstream="shopify", quota="calls") == 40
    fetched = _value(text, "gateway_upstream_last_success_timestamp_seconds", upstream="hubspot")
    served = _value(text, "gateway_data_served_newest_timestamp_seconds", upstream="hubspot")
    assert fetched is not None
    assert served is not None
    assert started <= served <= fetched <= time.time()


async def test_data_served_stale_does_not_look_fresh(
    gateway: GatewayFactory, samples: SampleUpstreams
) -> None:
    """An upstream down while its last answers are served: the newest data served keeps
    its age (so the freshness alert sees it grow), the last success does not move."""
    person = samples.people[70]
    overrides = {"hubspot": {"cache": {"ttl_s": 0.0}}}
    async with gateway(cache_url="memory://", overrides=overrides) as client:
        first = await gql(client, CRM, e=person.email)
        assert "errors" not in first, first
        text = (await client.get("/metrics")).text
        served = _value(text, SERVED, upstream="hubspot")
        fetched = _value(text, FETCHED, upstream="hubspot")
        samples.hubspot.faults.update(error_rate=1.0, error_status=503)
        stale = await gql(client, CRM, e=person.email)
        assert stale["data"]["customer"]["company"] == person.company  # served stale
        text = (await client.get("/metrics")).text
    assert _value(text, SERVED, upstream="hubspot") == served
    assert _value(text, FETCHED, upstream="hubspot") == fetched


@pytest.fixture
def empty_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}"
    upgrade(url)
    return url


async def test_a_sync_run_reports_its_freshness_and_reconciliation(
    samples: SampleUpstreams, empty_url: str
) -> None:
    engine = create_engine(empty_url)
    config = sample_upstreams_config(samples.base_urls, dict.fromkeys(samples.base_urls, FAST))
    adapters = build_adapters(config)
    samples.reset()

    def value(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    failed_before = value("gateway_sync_runs_total", source="hubspot", status="failed") or 0.0
    try:
        started = time.time()
        (report,) = await sync(create_sessionmaker(engine), adapters, ["hubspot"])
        assert report.status == "ok"
        synced = value("gateway_sync_last_success_timestamp_seconds", source="hubspot")
        assert synced is not None
        assert started <= synced <= time.time()
        assert value("gateway_sync_reconciliation_difference", source="hubspot") == 0
        newest = value(
            "gateway_data_stored_newest_timestamp_seconds", kind="contacts", source="hubspot"
        )
        assert newest is not None
        assert report.cursor_after is not None
        assert newest >= report.cursor_after.timestamp()

        samples.hubspot.faults.update(error_rate=1.0, error_status=503)
        (failed,) = await sync(create_sessionmaker(engine), adapters, ["hubspot"])
        assert failed.status == "failed"
        assert value("gateway_sync_last_success_timestamp_seconds", source="hubspot") == synced
        failed_after = value("gateway_sync_runs_total", source="hubspot", status="failed")
        assert failed_after == failed_before + 1
    finally:
        samples.reset()
        await aclose_adapters(adapters)
        await engine.dispose()

"""Every read the adapters make, over the sample upstreams, with a telemetry that records
what it hears: the drift tests' exercise (a module of its own, for the tracing tests too)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from adapters.protocols import AnalyticsAdapter, BatchOrdersAdapter, CommerceAdapter, CrmAdapter
from adapters.registry import aclose_adapters, build_adapters
from adapters.transport.telemetry import Quota
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from tests.conftest import FAST


@dataclass
class Heard:
    """What the adapters reported."""

    drifts: list[tuple[str, str, str]] = field(default_factory=list)
    quotas: list[tuple[str, Quota]] = field(default_factory=list)
    retry_afters: list[tuple[str, float]] = field(default_factory=list)

    def quota(self, upstream: str, quota: Quota) -> None:
        self.quotas.append((upstream, quota))

    def retry_after(self, upstream: str, seconds: float) -> None:
        self.retry_afters.append((upstream, seconds))

    def drift(self, upstream: str, path: str, kind: str) -> None:
        self.drifts.append((upstream, path, kind))


@asynccontextmanager
async def adapters_over(
    samples: SampleUpstreams, heard: Any, *, graphql: bool = False
) -> AsyncIterator[dict[str, Any]]:
    """Every sample upstream's adapter (the SOAP CRM too; the shop over GraphQL if
    ``graphql``), reporting to ``heard``."""
    overrides: dict[str, dict[str, Any]] = {name: dict(FAST) for name in samples.base_urls}
    overrides["soap_crm"]["enabled"] = True
    if graphql:
        overrides["shopify"]["api"] = "graphql"
    built = build_adapters(sample_upstreams_config(samples.base_urls, overrides), telemetry=heard)
    try:
        yield built
    finally:
        await aclose_adapters(built)


async def read_everything(adapters: dict[str, Any], samples: SampleUpstreams) -> None:
    """One call of each kind every adapter makes, for a few people."""
    people = samples.people[:3]
    for name in ("hubspot", "soap_crm"):
        crm = cast(CrmAdapter, adapters[name])
        ids = [p.hubspot_id if name == "hubspot" else f"C-{i:06d}" for i, p in enumerate(people)]
        await crm.fetch_contact(ids[0])
        await crm.fetch_contact_by_email(people[0].email)
        await crm.fetch_contacts(ids)
        await crm.fetch_contacts_by_email([p.email for p in people])
        since = datetime(2000, 1, 1, tzinfo=UTC)
        await crm.count_changed_since(since)
        async for _ in crm.changed_since(datetime.now(UTC)):
            pass
    shop = cast(CommerceAdapter, adapters["shopify"])
    await shop.find_customers_by_email([p.email for p in people])
    await shop.fetch_orders(str(people[0].shopify_id), 5)
    products = await shop.fetch_products()
    await shop.fetch_inventory([p.inventory_item_id for p in products[:3] if p.inventory_item_id])
    if isinstance(shop, BatchOrdersAdapter):
        await shop.fetch_orders_by_email([p.email for p in people], 5, True)
    analytics = cast(AnalyticsAdapter, adapters["segment"])
    await analytics.fetch_traits(email=people[0].email)
    await analytics.fetch_traits(user_id=people[0].segment_user_id)
    await analytics.fetch_events(people[0].segment_user_id, 5)
    await analytics.fetch_external_ids(people[0].segment_user_id)

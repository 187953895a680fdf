"""The factory: one adapter per enabled upstream, typed by kind, closed together."""

from __future__ import annotations

from adapter_settings import ENV, VARIANTS

from adapters import (
    AnalyticsAdapter,
    CommerceAdapter,
    CrmAdapter,
    aclose_adapters,
    analytics_adapters,
    build_adapters,
    commerce_adapters,
    crm_adapters,
    load_upstreams,
)
from adapters.hubspot import HubSpotAdapter
from adapters.soap_crm import SoapCrmAdapter
from demo.upstreams.runner import SampleUpstreams


async def test_build_every_kind_and_close_them(upstreams: SampleUpstreams) -> None:
    tables = {
        name: {**table, "base_url": upstreams.base_urls[service]}
        for name, (service, table) in VARIANTS.items()
    }
    tables["hubspot_oauth"]["enabled"] = False
    tables["shopify_graphql"]["enabled"] = False  # one shop at a time, as deployed
    adapters = build_adapters(load_upstreams({"upstreams": tables}, ENV))
    assert set(adapters) == {"hubspot", "soap_crm", "shopify", "segment"}
    crms = crm_adapters(adapters)
    assert {type(a) for a in crms} == {HubSpotAdapter, SoapCrmAdapter}
    assert all(isinstance(a, CrmAdapter) for a in crms)
    assert [a.name for a in commerce_adapters(adapters)] == ["shopify"]
    assert isinstance(commerce_adapters(adapters)[0], CommerceAdapter)
    assert isinstance(analytics_adapters(adapters)[0], AnalyticsAdapter)
    person = upstreams.people[0]
    for crm in crms:
        contact = await crm.fetch_contact_by_email(person.email)
        assert contact is not None
        assert contact.email == person.email.lower()
    await aclose_adapters(adapters)
    assert all(a.rest.http.is_closed for a in adapters.values() if hasattr(a, "rest"))
    assert adapters["soap_crm"].soap.http.is_closed  # type: ignore[attr-defined]

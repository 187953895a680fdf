"""What only one CRM adapter does: HubSpot's batch by e-mail, SOAP's WSDL and faults."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.errors import UpstreamBadResponse, UpstreamUnavailable
from adapters.transport.soap import packaged_wsdl
from demo.upstreams.runner import SampleUpstreams

Build = Callable[..., Any]
BATCH = "POST /crm/v3/objects/contacts/batch/read"


async def test_hubspot_batch_by_email_uses_batch_read(
    build: Build, upstreams: SampleUpstreams
) -> None:
    crm = build("hubspot", page_size=40)
    people = upstreams.people[:90]
    found = await crm.fetch_contacts_by_email([p.email for p in people])
    assert len(found) == 90
    assert upstreams.hubspot.calls.count(BATCH) == math.ceil(90 / 40)
    assert upstreams.hubspot.calls.total == upstreams.hubspot.calls.count(BATCH)


async def test_soap_wsdl_is_loaded_once_from_the_package(
    build: Build, upstreams: SampleUpstreams
) -> None:
    assert packaged_wsdl().is_file()
    crm = build("soap_crm")
    assert upstreams.soap_crm.calls.total == 0  # nothing fetched to build the client
    for index in range(3):
        assert await crm.fetch_contact(f"C-{index:06d}") is not None
    assert upstreams.soap_crm.calls.snapshot()["by_endpoint"] == {"POST /soap/contacts": 3}


async def test_soap_has_no_batch_by_email(build: Build, upstreams: SampleUpstreams) -> None:
    crm = build("soap_crm")
    people = upstreams.people[:20]
    found = await crm.fetch_contacts_by_email([p.email for p in people])
    assert len(found) == 20
    assert upstreams.soap_crm.calls.operation("GetContactByEmail") == 20


async def test_soap_not_found_fault_is_none_and_not_retried(
    build: Build, upstreams: SampleUpstreams
) -> None:
    crm = build("soap_crm")
    assert await crm.fetch_contact_by_email("nobody.at.all@example.com") is None
    assert upstreams.soap_crm.calls.operation("GetContactByEmail") == 1
    assert crm.breaker.consecutive_failures == 0


async def test_soap_server_fault_is_retried_then_unavailable(
    build: Build, upstreams: SampleUpstreams
) -> None:
    crm = build("soap_crm")
    upstreams.soap_crm.faults.update(soap_fault=True)
    with pytest.raises(UpstreamUnavailable, match="server fault \\(ServiceUnavailable\\)"):
        await crm.fetch_contacts(["C-000001", "C-000002"])
    assert upstreams.soap_crm.calls.operation("GetContacts") == 3


async def test_soap_client_fault_is_a_bad_response(
    build: Build, upstreams: SampleUpstreams
) -> None:
    crm = build("soap_crm")
    # Over the service's page limit (the WSDL does not bound it): InvalidArgument.
    with pytest.raises(UpstreamBadResponse, match="fault soap:Client \\(InvalidArgument\\)"):
        await crm.soap.call(
            "ListChangedContacts", since=datetime(2026, 1, 1, tzinfo=UTC), maxResults=5000
        )
    assert upstreams.soap_crm.calls.operation("ListChangedContacts") == 1


async def test_soap_request_outside_the_wsdl_is_our_bug(
    build: Build, upstreams: SampleUpstreams
) -> None:
    crm = build("soap_crm")
    with pytest.raises(ValueError, match="request does not fit the WSDL"):
        await crm.soap.call("GetContacts", ids=[f"C-{i:06d}" for i in range(101)])
    assert upstreams.soap_crm.calls.total == 0
    assert crm.breaker.consecutive_failures == 0

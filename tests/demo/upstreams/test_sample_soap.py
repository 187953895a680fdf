"""The sample SOAP contact service, through zeep's async client as the adapter uses it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
import zeep
from zeep.exceptions import Fault, TransportError, XMLParseError
from zeep.proxy import AsyncServiceProxy
from zeep.transports import AsyncTransport

from demo.upstreams.runner import SampleUpstreams
from demo.upstreams.soap_crm import WSDL_PATH

BINDING = "{urn:gateway:sample:contacts:v1}ContactServiceBinding"


@pytest.fixture(scope="module")
def wsdl_client() -> zeep.Client:
    return zeep.Client(str(WSDL_PATH))  # type: ignore[no-untyped-call]


@pytest.fixture
async def contacts(upstreams: SampleUpstreams, soap_auth: httpx.BasicAuth) -> AsyncIterator[Any]:
    async with httpx.AsyncClient(auth=soap_auth, timeout=5) as client:
        transport = AsyncTransport(client=client, wsdl_client=httpx.Client())  # type: ignore[no-untyped-call]
        soap = zeep.AsyncClient(str(WSDL_PATH), transport=transport)  # type: ignore[no-untyped-call]
        # AsyncClient.create_service() returns a sync proxy in zeep 4.3: build the
        # async one for the configured address directly.
        yield AsyncServiceProxy(  # type: ignore[no-untyped-call]
            soap,
            soap.wsdl.bindings[BINDING],
            address=f"{upstreams.base_urls['soap_crm']}/soap/contacts",
        )


def test_wsdl_declares_the_contract(wsdl_client: zeep.Client) -> None:
    service = wsdl_client.wsdl.services["ContactService"]
    port = service.ports["ContactServicePort"]
    assert set(port.binding._operations) == {
        "GetContact",
        "GetContactByEmail",
        "GetContacts",
        "ListChangedContacts",
    }
    contact = wsdl_client.get_type(  # type: ignore[no-untyped-call]
        "{urn:gateway:sample:contacts:v1}Contact"
    )
    assert [name for name, _ in contact.elements][:3] == ["id", "email", "firstName"]


async def test_get_contact_and_by_email(contacts: Any, upstreams: SampleUpstreams) -> None:
    person = upstreams.people[21]
    contact = await contacts.GetContact(id="C-000021")
    assert contact.email == person.email
    assert contact.firstName == person.first_name
    assert contact.dateOfBirth == person.date_of_birth
    assert isinstance(contact.dateOfBirth, date)
    assert contact.analyticsConsent is person.analytics_consent
    assert contact.updatedAt == person.updated_at
    by_email = await contacts.GetContactByEmail(email=person.email.upper())
    assert by_email.id == "C-000021"


async def test_get_contacts_omits_unknown(contacts: Any) -> None:
    found = await contacts.GetContacts(ids=["C-000001", "C-999999", "C-000002"])
    assert [c.id for c in found] == ["C-000001", "C-000002"]


async def test_unknown_contact_is_a_client_fault(contacts: Any) -> None:
    with pytest.raises(Fault) as caught:
        await contacts.GetContactByEmail(email="nobody@example.com")
    assert caught.value.message == "ContactNotFound"
    assert caught.value.code == "soap:Client"


async def test_list_changed_pages_with_tokens(contacts: Any, upstreams: SampleUpstreams) -> None:
    since = datetime(2026, 9, 1, tzinfo=UTC)
    expected = sorted(f"C-{p.index:06d}" for p in upstreams.people if p.updated_at >= since)
    seen: list[str] = []
    token = None
    while True:
        page = await contacts.ListChangedContacts(since=since, pageToken=token, maxResults=40)
        assert page.total == len(expected)
        seen += [c.id for c in page.contacts]
        token = page.nextPageToken
        if token is None:
            break
    assert sorted(seen) == expected


async def test_soap_fault_knob_is_a_server_fault(contacts: Any, upstreams: SampleUpstreams) -> None:
    upstreams.soap_crm.faults.update(soap_fault=True)
    with pytest.raises(Fault) as caught:
        await contacts.GetContact(id="C-000001")
    assert caught.value.code == "soap:Server"


async def test_schema_change_and_malformed_fail_parsing(
    contacts: Any, upstreams: SampleUpstreams
) -> None:
    upstreams.soap_crm.faults.update(schema_change=True)
    with pytest.raises(XMLParseError):
        await contacts.GetContact(id="C-000001")
    upstreams.soap_crm.faults.update(schema_change=False, malformed=True)
    with pytest.raises(TransportError, match="invalid XML"):
        await contacts.GetContact(id="C-000001")


async def test_rate_limit_is_a_429_transport_error(
    contacts: Any, upstreams: SampleUpstreams
) -> None:
    upstreams.soap_crm.faults.update(rate_limit_next=1)
    with pytest.raises(TransportError) as caught:
        await contacts.GetContact(id="C-000001")
    assert caught.value.status_code == 429


async def test_basic_auth_is_required(upstreams: SampleUpstreams) -> None:
    async with httpx.AsyncClient(auth=("gateway", "wrong"), timeout=5) as client:
        transport = AsyncTransport(client=client, wsdl_client=httpx.Client())  # type: ignore[no-untyped-call]
        soap = zeep.AsyncClient(str(WSDL_PATH), transport=transport)  # type: ignore[no-untyped-call]
        proxy = AsyncServiceProxy(  # type: ignore[no-untyped-call]
            soap,
            soap.wsdl.bindings[BINDING],
            address=f"{upstreams.base_urls['soap_crm']}/soap/contacts",
        )
        with pytest.raises(TransportError) as caught:
            await proxy.GetContact(id="C-000001")
    assert caught.value.status_code == 401


def test_served_wsdl_points_at_the_server(upstreams: SampleUpstreams) -> None:
    base = upstreams.base_urls["soap_crm"]
    client = zeep.Client(f"{base}/soap/contacts?wsdl")  # type: ignore[no-untyped-call]
    address = client.wsdl.services["ContactService"].ports["ContactServicePort"].binding_options
    assert address["address"] == f"{base}/soap/contacts"


async def test_operations_are_counted(contacts: Any, upstreams: SampleUpstreams) -> None:
    await contacts.GetContact(id="C-000001")
    await contacts.GetContacts(ids=["C-000001"])
    upstreams.soap_crm.faults.update(rate_limit_next=1)
    with pytest.raises(TransportError):
        await contacts.GetContact(id="C-000001")
    calls = upstreams.soap_crm.calls.snapshot()
    assert calls["by_endpoint"] == {"POST /soap/contacts": 3}
    assert calls["by_operation"] == {"GetContact": 2, "GetContacts": 1}

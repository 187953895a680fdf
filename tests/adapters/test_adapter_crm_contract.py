"""The contract every CRM adapter passes: HubSpot (bearer and OAuth 2) and SOAP alike.

Each test runs once per variant against the real sample service; only how a person's
id is spelled and which endpoint counts as "one batch call" differ per variant.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.errors import InvalidExternalId
from adapters.protocols import CrmAdapter
from adapters.records import CrmContact
from demo.people.population import Person
from demo.upstreams.runner import SampleUpstreams

Build = Callable[..., Any]


@dataclass(frozen=True)
class Variant:
    name: str
    id_of: Callable[[Person], str]
    unknown_id: str
    batch_calls: Callable[[SampleUpstreams], int]
    changed_calls: Callable[[SampleUpstreams], int]


def _hubspot_calls(route: str) -> Callable[[SampleUpstreams], int]:
    return lambda up: up.hubspot.calls.count(route)


def _soap_calls(operation: str) -> Callable[[SampleUpstreams], int]:
    return lambda up: up.soap_crm.calls.operation(operation)


_HUBSPOT = Variant(
    "hubspot",
    id_of=lambda p: p.hubspot_id,
    unknown_id="99999999999",
    batch_calls=_hubspot_calls("POST /crm/v3/objects/contacts/batch/read"),
    changed_calls=_hubspot_calls("POST /crm/v3/objects/contacts/search"),
)
VARIANTS = [
    _HUBSPOT,
    replace(_HUBSPOT, name="hubspot_oauth"),
    Variant(
        "soap_crm",
        id_of=lambda p: f"C-{p.index:06d}",
        unknown_id="C-999999",
        batch_calls=_soap_calls("GetContacts"),
        changed_calls=_soap_calls("ListChangedContacts"),
    ),
]


@pytest.fixture(params=VARIANTS, ids=lambda v: v.name)
def variant(request: pytest.FixtureRequest) -> Variant:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def crm(build: Build, variant: Variant) -> CrmAdapter:
    adapter = build(variant.name, page_size=100)
    assert isinstance(adapter, CrmAdapter)
    return adapter


def assert_is_person(contact: CrmContact, person: Person, variant: Variant) -> None:
    assert contact.source == variant.name
    assert contact.external_id == variant.id_of(person)
    assert contact.email == person.email.lower()
    assert (contact.first_name, contact.last_name) == (person.first_name, person.last_name)
    assert (contact.phone, contact.company, contact.job_title) == (
        person.phone,
        person.company,
        person.job_title,
    )
    assert (contact.city, contact.country) == (person.city, person.country)
    assert contact.lifecycle_stage == person.lifecycle_stage
    assert contact.owner_id == person.owner_id
    assert contact.date_of_birth == person.date_of_birth
    assert contact.language == person.locale
    assert contact.consents.email_marketing is person.email_marketing_consent
    assert contact.consents.personalisation is person.personalisation_consent
    assert contact.consents.analytics is person.analytics_consent
    assert contact.created_at is not None
    assert contact.updated_at is not None
    assert contact.created_at.tzinfo is UTC
    assert contact.updated_at.tzinfo is UTC
    # HubSpot keeps milliseconds, SOAP whole seconds: compare to the second.
    assert abs((contact.created_at - person.created_at).total_seconds()) < 1
    assert abs((contact.updated_at - person.updated_at).total_seconds()) < 1


async def test_fetch_contact(crm: CrmAdapter, variant: Variant, upstreams: SampleUpstreams) -> None:
    person = upstreams.people[17]
    contact = await crm.fetch_contact(variant.id_of(person))
    assert contact is not None
    assert_is_person(contact, person, variant)


async def test_unknown_contact_is_none(crm: CrmAdapter, variant: Variant) -> None:
    assert await crm.fetch_contact(variant.unknown_id) is None


async def test_fetch_contact_by_email_normalises(
    crm: CrmAdapter, variant: Variant, upstreams: SampleUpstreams
) -> None:
    person = upstreams.people[42]
    contact = await crm.fetch_contact_by_email(f"  {person.email.upper()} ")
    assert contact is not None
    assert_is_person(contact, person, variant)


async def test_unknown_email_is_none(crm: CrmAdapter) -> None:
    assert await crm.fetch_contact_by_email("nobody.at.all@example.com") is None


async def test_fetch_contacts_batches_by_page_size(
    crm: CrmAdapter, variant: Variant, upstreams: SampleUpstreams
) -> None:
    people = upstreams.people[:230]
    ids = [variant.id_of(p) for p in people] + [variant.unknown_id, variant.id_of(people[0])]
    found = await crm.fetch_contacts(ids)
    assert set(found) == {variant.id_of(p) for p in people}  # unknown left out, dupes merged
    assert_is_person(found[variant.id_of(people[99])], people[99], variant)
    assert variant.batch_calls(upstreams) == math.ceil(231 / 100)


async def test_fetch_contacts_by_email(
    crm: CrmAdapter, variant: Variant, upstreams: SampleUpstreams
) -> None:
    people = upstreams.people[100:160]
    found = await crm.fetch_contacts_by_email(
        [p.email.upper() for p in people] + ["nobody.at.all@example.com"]
    )
    assert set(found) == {p.email.lower() for p in people}
    assert found[people[5].email.lower()].external_id == variant.id_of(people[5])


async def test_empty_batches_call_nobody(crm: CrmAdapter, upstreams: SampleUpstreams) -> None:
    assert await crm.fetch_contacts([]) == {}
    assert await crm.fetch_contacts_by_email([]) == {}
    with pytest.raises(InvalidExternalId):  # refused before sending, not "not found"
        await crm.fetch_contact("")
    with pytest.raises(InvalidExternalId):
        await crm.fetch_contact_by_email("  ")
    assert upstreams.hubspot.calls.total == 0
    assert upstreams.soap_crm.calls.total == 0


async def test_changed_since_pages_through_every_change(
    build: Build, variant: Variant, upstreams: SampleUpstreams
) -> None:
    crm = build(variant.name, page_size=25)
    assert isinstance(crm, CrmAdapter)
    since = datetime(2026, 3, 1, tzinfo=UTC)
    expected = {variant.id_of(p) for p in upstreams.people if p.updated_at >= since}
    seen = [contact async for contact in crm.changed_since(since)]
    assert {c.external_id for c in seen} == expected
    assert len(seen) == len(expected)
    stamps = [c.updated_at for c in seen if c.updated_at is not None]
    assert len(stamps) == len(seen)  # every change is dated
    assert stamps == sorted(stamps)  # oldest change first
    assert variant.changed_calls(upstreams) == math.ceil(len(expected) / 25)


async def test_records_are_frozen_and_strict(
    crm: CrmAdapter, variant: Variant, upstreams: SampleUpstreams
) -> None:
    contact = await crm.fetch_contact(variant.id_of(upstreams.people[3]))
    assert contact is not None
    with pytest.raises(ValidationError):
        contact.email = "other@example.com"  # type: ignore[misc]
    assert crm.kind == "crm"
    assert crm.name == variant.name

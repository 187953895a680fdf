"""CRM over SOAP: the WSDL-described contact service (``adapters/wsdl/contacts.wsdl``).

``GetContacts`` serves batches by id, ``page_size`` (<= 100, the service's limit) ids a
call. The service has no batch lookup by e-mail, so ``fetch_contacts_by_email`` makes
one ``GetContactByEmail`` call per address, a few at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Literal

from pydantic import AwareDatetime

from adapters.transport.soap import SoapClient
from adapters.transport.telemetry import NO_TELEMETRY, Telemetry

from .base import ClientBackedAdapter
from .config import SoapCrmConfig
from .external_ids import ID_RULES, checked_email, checked_id, email_problem
from .payload import Payload, checked, parse_object
from .records import Consents, CrmContact, normalise_email

__all__ = ["SoapCrmAdapter"]

# Concurrent single lookups when there is no batch operation to use.
_LOOKUP_CONCURRENCY = 8
# Ids travel in the envelope, not a path; what XML cannot carry is refused before zeep
# would fail on it with an error of its own.
_RULE = ID_RULES["soap_crm"]


class _Contact(Payload):
    """The WSDL's ``Contact`` after zeep: already typed, so strict checking holds."""

    id: str
    email: str
    firstName: str | None = None
    lastName: str | None = None
    phone: str | None = None
    company: str | None = None
    jobTitle: str | None = None
    city: str | None = None
    country: str | None = None
    lifecycleStage: str | None = None
    ownerId: str | None = None
    dateOfBirth: date | None = None
    language: str | None = None
    emailMarketingConsent: bool | None = None
    personalisationConsent: bool | None = None
    analyticsConsent: bool | None = None
    createdAt: AwareDatetime
    updatedAt: AwareDatetime


class _Contacts(Payload):
    contacts: list[_Contact]


class _Changed(Payload):
    contacts: list[_Contact]
    nextPageToken: str | None = None
    total: int


class SoapCrmAdapter(ClientBackedAdapter[SoapCrmConfig]):
    """``CrmAdapter`` over the SOAP contact service."""

    kind: Literal["crm"] = "crm"

    def __init__(
        self,
        config: SoapCrmConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self.config = config
        # Loads and parses the WSDL now: the app builds adapters in its lifespan.
        self.soap = SoapClient(config, clock=clock, telemetry=telemetry)
        self._client = self.soap

    async def fetch_contact(self, external_id: str) -> CrmContact | None:
        checked_id(self.name, _RULE, external_id)
        return self._one("GetContact", await self.soap.call("GetContact", id=external_id))

    async def fetch_contact_by_email(self, email: str) -> CrmContact | None:
        address = normalise_email(email)
        checked_email(self.name, address)
        result = await self.soap.call("GetContactByEmail", email=address)
        return self._one("GetContactByEmail", result)

    async def fetch_contacts(self, external_ids: Sequence[str]) -> Mapping[str, CrmContact]:
        keys = list(dict.fromkeys(key for key in external_ids if not _RULE.problem(key)))
        found: dict[str, CrmContact] = {}
        size = self.config.page_size
        for start in range(0, len(keys), size):
            result = await self.soap.call("GetContacts", ids=keys[start : start + size])
            # zeep unwraps a single repeated element to a bare list (None when empty).
            page = parse_object(
                self.name,
                "SOAP GetContacts",
                _Contacts,
                {"contacts": result or []},
                self.soap.telemetry,
            )
            for contact in page.contacts:
                found[contact.id] = self._record(contact)
        return found

    async def fetch_contacts_by_email(self, emails: Sequence[str]) -> Mapping[str, CrmContact]:
        gate = asyncio.Semaphore(_LOOKUP_CONCURRENCY)

        async def lookup(email: str) -> CrmContact | None:
            async with gate:
                return await self.fetch_contact_by_email(email)

        addresses = (normalise_email(e) for e in emails)
        wanted = list(dict.fromkeys(a for a in addresses if not email_problem(a)))
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(lookup(email)) for email in wanted]
        except ExceptionGroup as failed:
            # Callers handle UpstreamError, not groups: the first failure stands for all.
            raise failed.exceptions[0] from None
        return {c.email: c for task in tasks if (c := task.result()) is not None and c.email}

    async def changed_since(self, since: datetime) -> AsyncIterator[CrmContact]:
        token: str | None = None
        while True:
            params: dict[str, Any] = {"since": since, "maxResults": self.config.page_size}
            if token:
                params["pageToken"] = token
            result = dict(await self.soap.call("ListChangedContacts", **params) or {})
            result["contacts"] = result.get("contacts") or []
            page = parse_object(
                self.name, "SOAP ListChangedContacts", _Changed, result, self.soap.telemetry
            )
            for contact in page.contacts:
                yield self._record(contact)
            token = page.nextPageToken
            if not token:
                return

    async def count_changed_since(self, since: datetime) -> int:
        """The service's own ``total`` for the window: one page of one record."""
        result = dict(await self.soap.call("ListChangedContacts", since=since, maxResults=1) or {})
        result["contacts"] = result.get("contacts") or []
        changed = parse_object(
            self.name, "SOAP ListChangedContacts", _Changed, result, self.soap.telemetry
        )
        return changed.total

    def _one(self, operation: str, result: Any) -> CrmContact | None:
        if result is None:
            return None
        contact = parse_object(
            self.name, f"SOAP {operation}", _Contact, result, self.soap.telemetry
        )
        return self._record(contact)

    def _record(self, contact: _Contact) -> CrmContact:
        with checked(self.name, "SOAP Contact"):
            return self._convert(contact)

    def _convert(self, contact: _Contact) -> CrmContact:
        return CrmContact(
            source=self.name,
            external_id=contact.id,
            email=contact.email,
            first_name=contact.firstName,
            last_name=contact.lastName,
            phone=contact.phone,
            company=contact.company,
            job_title=contact.jobTitle,
            city=contact.city,
            country=contact.country,
            lifecycle_stage=contact.lifecycleStage,
            owner_id=contact.ownerId,
            date_of_birth=contact.dateOfBirth,
            language=contact.language,
            consents=Consents(
                email_marketing=contact.emailMarketingConsent,
                personalisation=contact.personalisationConsent,
                analytics=contact.analyticsConsent,
            ),
            created_at=contact.createdAt,
            updated_at=contact.updatedAt,
        )

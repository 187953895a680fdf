"""CRM over REST: HubSpot CRM v3 contacts.

Batch methods use ``POST /crm/v3/objects/contacts/batch/read`` (by id, or with
``idProperty=email``), at most ``page_size`` (<= 100, HubSpot's limit) inputs a call;
a 207 answer lists the unknown ids, which are simply absent from ours. Pages run one
after another rather than concurrently: HubSpot's rate limit is per second, and a
burst of parallel batches is the quickest way to meet it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, ConfigDict, field_validator

from adapters.transport.auth import build_auth
from adapters.transport.cost_bucket import GuardedRedis
from adapters.transport.rest import RestClient
from adapters.transport.telemetry import NO_TELEMETRY, Telemetry

from .base import ClientBackedAdapter
from .config import HubSpotConfig
from .external_ids import ID_RULES, checked_email, checked_id, email_problem
from .payload import Payload, checked
from .records import Consents, CrmContact, normalise_email

__all__ = ["PROPERTIES", "HubSpotAdapter"]

# Every property the record needs, asked for explicitly: HubSpot returns only a
# handful by default.
PROPERTIES = (
    "email",
    "firstname",
    "lastname",
    "phone",
    "company",
    "jobtitle",
    "city",
    "country",
    "lifecyclestage",
    "hubspot_owner_id",
    "date_of_birth",
    "hs_language",
    "consent_email_marketing",
    "consent_personalisation",
    "consent_analytics",
)
_CONTACT = "/crm/v3/objects/contacts/{id}"
_RULE = ID_RULES["hubspot"]
_BATCH_READ = "/crm/v3/objects/contacts/batch/read"
_SEARCH = "/crm/v3/objects/contacts/search"


class _Properties(Payload):
    # HubSpot sends every property value as a string (or null): lax parsing turns
    # "true" into True and "1980-02-03" into a date, and still rejects nonsense.
    model_config = ConfigDict(extra="allow", frozen=True, strict=False)

    email: str | None = None
    firstname: str | None = None
    lastname: str | None = None
    phone: str | None = None
    company: str | None = None
    jobtitle: str | None = None
    city: str | None = None
    country: str | None = None
    lifecyclestage: str | None = None
    hubspot_owner_id: str | None = None
    date_of_birth: date | None = None
    hs_language: str | None = None
    consent_email_marketing: bool | None = None
    consent_personalisation: bool | None = None
    consent_analytics: bool | None = None

    # Always sent, whatever was asked for.
    unread = frozenset({"createdate", "hs_object_id", "lastmodifieddate"})

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class _Contact(Payload):
    unread = frozenset({"propertiesWithHistory", "archivedAt", "url"})
    may_omit = frozenset({"archived"})

    id: str
    properties: _Properties
    createdAt: AwareDatetime
    updatedAt: AwareDatetime
    archived: bool = False


class _Batch(Payload):
    unread = frozenset({"requestedAt", "startedAt", "completedAt", "links", "errors", "numErrors"})

    status: str
    results: list[_Contact]


class _Next(Payload):
    unread = frozenset({"link"})

    after: str


class _Paging(Payload):
    next: _Next | None = None


class _Search(Payload):
    may_omit = frozenset({"paging"})  # absent on the last page

    total: int
    results: list[_Contact]
    paging: _Paging | None = None


class HubSpotAdapter(ClientBackedAdapter[HubSpotConfig]):
    """``CrmAdapter`` over HubSpot's contacts API."""

    kind: Literal["crm"] = "crm"

    def __init__(
        self,
        config: HubSpotConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        telemetry: Telemetry = NO_TELEMETRY,
        redis: GuardedRedis | None = None,
    ) -> None:
        self.config = config
        auth = build_auth(config.name, config.auth, token_url=config.token_url, clock=clock)
        self.rest = RestClient(config, auth=auth, clock=clock, telemetry=telemetry, redis=redis)
        self._client = self.rest

    async def fetch_contact(self, external_id: str) -> CrmContact | None:
        reply = await self.rest.get(
            _CONTACT,
            _Contact,
            path={"id": checked_id(self.name, _RULE, external_id)},
            params={"properties": ",".join(PROPERTIES)},
        )
        return self._record(reply.body) if reply else None

    async def fetch_contact_by_email(self, email: str) -> CrmContact | None:
        address = normalise_email(email)
        checked_email(self.name, address)
        reply = await self.rest.get(
            _CONTACT,
            _Contact,
            path={"id": address},
            params={"properties": ",".join(PROPERTIES), "idProperty": "email"},
        )
        return self._record(reply.body) if reply else None

    async def fetch_contacts(self, external_ids: Sequence[str]) -> Mapping[str, CrmContact]:
        # An id HubSpot cannot have is not asked for: it is simply not found.
        keys = list(dict.fromkeys(key for key in external_ids if not _RULE.problem(key)))
        found = await self._batch_read(keys, id_property=None)
        return {contact.external_id: contact for contact in found}

    async def fetch_contacts_by_email(self, emails: Sequence[str]) -> Mapping[str, CrmContact]:
        addresses = (normalise_email(e) for e in emails)
        wanted = list(dict.fromkeys(a for a in addresses if not email_problem(a)))
        found = await self._batch_read(wanted, id_property="email")
        return {contact.email: contact for contact in found if contact.email}

    @staticmethod
    def _modified_since(since: datetime) -> list[dict[str, Any]]:
        millis = str(int(since.timestamp() * 1000))
        return [
            {"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": millis}]}
        ]

    async def count_changed_since(self, since: datetime) -> int:
        """The search's own ``total`` for the window: one page of one record."""
        query = {
            "filterGroups": self._modified_since(since),
            # Every property, as the other reads ask: the one record read is checked for
            # drift as theirs are, and HubSpot sends only the properties asked for.
            "properties": list(PROPERTIES),
            "limit": 1,
        }
        reply = await self.rest.post(_SEARCH, _Search, json=query)
        return reply.body.total if reply is not None else 0

    async def changed_since(self, since: datetime) -> AsyncIterator[CrmContact]:
        query: dict[str, Any] = {
            "filterGroups": self._modified_since(since),
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
            "properties": list(PROPERTIES),
            "limit": self.config.page_size,
        }
        while True:
            reply = await self.rest.post(_SEARCH, _Search, json=query)
            if reply is None:
                return
            for contact in reply.body.results:
                yield self._record(contact)
            paging = reply.body.paging
            if paging is None or paging.next is None:
                return
            query = {**query, "after": paging.next.after}

    async def _batch_read(self, keys: list[str], *, id_property: str | None) -> list[CrmContact]:
        found: list[CrmContact] = []
        size = self.config.page_size
        for start in range(0, len(keys), size):
            body: dict[str, Any] = {
                "properties": list(PROPERTIES),
                "inputs": [{"id": key} for key in keys[start : start + size]],
            }
            if id_property:
                body["idProperty"] = id_property
            reply = await self.rest.post(_BATCH_READ, _Batch, json=body)
            if reply is not None:
                found.extend(self._record(contact) for contact in reply.body.results)
        return found

    def _record(self, contact: _Contact) -> CrmContact:
        with checked(self.name, "contact"):
            return self._convert(contact)

    def _convert(self, contact: _Contact) -> CrmContact:
        p = contact.properties
        return CrmContact(
            source=self.name,
            external_id=contact.id,
            email=p.email,
            first_name=p.firstname,
            last_name=p.lastname,
            phone=p.phone,
            company=p.company,
            job_title=p.jobtitle,
            city=p.city,
            country=p.country,
            lifecycle_stage=p.lifecyclestage,
            owner_id=p.hubspot_owner_id,
            date_of_birth=p.date_of_birth,
            language=p.hs_language,
            consents=Consents(
                email_marketing=p.consent_email_marketing,
                personalisation=p.consent_personalisation,
                analytics=p.consent_analytics,
            ),
            created_at=contact.createdAt,
            updated_at=contact.updatedAt,
        )

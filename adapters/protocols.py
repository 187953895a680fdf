"""One protocol per upstream kind: what the gateway may ask a CRM, a shop, an analytics tool.

Every method is a read, answers typed records (``adapters.records``) and raises only
``UpstreamError`` subclasses. Not found is an answer, not an error: ``None`` for one
record, a missing key or an empty list for many. Batch methods take any number of
keys and split them into pages of the upstream's configured ``page_size``, one
upstream call per page (so N keys cost ceil(N / page_size) calls); their answers are
keyed so a DataLoader can align them with its keys.

The adapter owns one pooled HTTP client for the life of the app: the app builds the
adapters at start-up (``adapters.build_adapters``) and closes them with ``aclose()``
in its lifespan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from adapters.transport.breaker import CircuitBreaker

from .records import (
    AnalyticsEvent,
    AnalyticsTraits,
    CommerceCustomer,
    CrmContact,
    ExternalId,
    InventoryLevel,
    Order,
    Product,
)

__all__ = [
    "Adapter",
    "AnalyticsAdapter",
    "BatchOrdersAdapter",
    "CommerceAdapter",
    "CrmAdapter",
    "Kind",
]

Kind = Literal["crm", "commerce", "analytics"]


@runtime_checkable
class Adapter(Protocol):
    """What every adapter has, whatever its kind."""

    @property
    def name(self) -> str:
        """The configured upstream name (the key in upstreams.toml)."""
        ...

    @property
    def kind(self) -> Kind: ...

    @property
    def breaker(self) -> CircuitBreaker:
        """The upstream's circuit breaker; its ``state`` is for readiness and metrics."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class CrmAdapter(Adapter, Protocol):
    async def fetch_contact(self, external_id: str) -> CrmContact | None: ...

    async def fetch_contact_by_email(self, email: str) -> CrmContact | None: ...

    async def fetch_contacts(self, external_ids: Sequence[str]) -> Mapping[str, CrmContact]:
        """Contacts by the CRM's id; unknown ids are absent from the answer."""
        ...

    async def fetch_contacts_by_email(self, emails: Sequence[str]) -> Mapping[str, CrmContact]:
        """Contacts keyed by normalised e-mail; unknown addresses are absent."""
        ...

    def changed_since(self, since: datetime) -> AsyncIterator[CrmContact]:
        """Every contact modified at or after ``since``, oldest change first, paged."""
        ...

    async def count_changed_since(self, since: datetime) -> int:
        """How many contacts the upstream says changed at or after ``since``."""
        ...


@runtime_checkable
class CommerceAdapter(Adapter, Protocol):
    async def find_customers_by_email(
        self, emails: Sequence[str]
    ) -> Mapping[str, CommerceCustomer]:
        """Customers keyed by normalised e-mail; unknown addresses are absent."""
        ...

    async def fetch_orders(self, customer_id: str, first: int = 10) -> Sequence[Order]:
        """The customer's ``first`` most recent orders, newest first."""
        ...

    async def fetch_products(self, ids: Sequence[str] | None = None) -> Sequence[Product]:
        """These products (unknown ids left out), or the whole active catalogue."""
        ...

    async def fetch_inventory(
        self, inventory_item_ids: Sequence[str]
    ) -> Mapping[str, Sequence[InventoryLevel]]:
        """Stock per inventory item, one level per location."""
        ...


@runtime_checkable
class BatchOrdersAdapter(CommerceAdapter, Protocol):
    """A shop that reads the orders of many customers at once (Shopify GraphQL)."""

    @property
    def orders_window(self) -> int:
        """The fewest recent orders per customer a batch read brings (fewer asked: this
        many, at no more calls)."""
        ...

    async def fetch_orders_by_email(
        self, emails: Sequence[str], first: int, line_items: bool = False
    ) -> Mapping[str, Sequence[Order]]:
        """Each found customer's ``first`` most recent orders, newest first, with all their
        line items when ``line_items`` (else none), keyed by normalised e-mail (a customer
        without orders: an empty list; unknown: absent)."""
        ...

    async def fetch_orders_by_ids(
        self, customer_ids: Sequence[str], first: int, line_items: bool = False
    ) -> Mapping[str, Sequence[Order]]:
        """``fetch_orders_by_email`` for customers known by their id in the shop."""
        ...


@runtime_checkable
class AnalyticsAdapter(Adapter, Protocol):
    async def fetch_traits(
        self, *, user_id: str | None = None, email: str | None = None
    ) -> AnalyticsTraits | None:
        """One profile's traits, found by user id or else by e-mail."""
        ...

    async def fetch_events(
        self, user_id: str, first: int = 50, event_name: str | None = None
    ) -> Sequence[AnalyticsEvent]:
        """The profile's ``first`` most recent events, newest first."""
        ...

    async def fetch_external_ids(self, user_id: str) -> Sequence[ExternalId]: ...

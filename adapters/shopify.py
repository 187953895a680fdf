"""Commerce: Shopify Admin REST (version from the config, 2024-10 by default).

Customers are found in batches with one search per page of addresses
(``email:a OR email:b …``, ``page_size`` addresses a call); products and inventory
levels by id lists of ``page_size`` ids; listings follow the ``Link`` header. Shopify
ids are integers on the wire and strings in our records.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Literal

from pydantic import AwareDatetime

from adapters.transport.auth import build_auth
from adapters.transport.rest import RestClient
from adapters.transport.telemetry import NO_TELEMETRY, Telemetry

from .base import ClientBackedAdapter
from .config import ShopifyConfig
from .external_ids import ID_RULES, checked_id, email_problem
from .payload import Payload, checked
from .records import (
    CommerceCustomer,
    InventoryLevel,
    LineItem,
    Money,
    Order,
    Product,
    normalise_email,
)

__all__ = ["ShopifyAdapter"]

_MAX_LIMIT = 250  # Shopify's largest page
_RULE = ID_RULES["shopify"]  # customer, product and inventory item ids alike


def _numbers(ids: Sequence[str]) -> list[str]:
    """Ids Shopify can have, once each: others can only be unknown, and a comma in one
    would add ids of its choosing to the ``ids=`` list."""
    return list(dict.fromkeys(i for i in ids if not _RULE.problem(i)))


class _Consent(Payload):
    unread = frozenset({"consent_updated_at", "opt_in_level", "consent_collected_from"})

    state: str | None = None


class _Customer(Payload):
    unread = frozenset(
        {
            "default_address", "addresses", "note", "tax_exempt", "tax_exemptions",
            "accepts_marketing", "accepts_marketing_updated_at", "marketing_opt_in_level",
            "multipass_identifier", "admin_graphql_api_id", "sms_marketing_consent",
        }
    )  # fmt: skip

    id: int
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    orders_count: int
    total_spent: Decimal
    currency: str
    created_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None
    state: str | None = None
    verified_email: bool | None = None
    tags: str = ""
    last_order_id: int | None = None
    last_order_name: str | None = None
    email_marketing_consent: _Consent | None = None


class _Customers(Payload):
    customers: list[_Customer]


class _LineItem(Payload):
    unread = frozenset(
        {"name", "variant_title", "vendor", "grams", "fulfillable_quantity", "properties",
         "taxable", "total_discount", "admin_graphql_api_id", "requires_shipping"}
    )  # fmt: skip

    id: int
    product_id: int | None = None
    variant_id: int | None = None
    title: str
    quantity: int
    price: Decimal
    sku: str | None = None


class _CustomerRef(Payload):
    # The order's customer: the adapter reads its id only.
    open = True

    id: int


class _Order(Payload):
    unread = frozenset(
        {
            "cancelled_at", "cancel_reason", "closed_at", "order_number", "number",
            "taxes_included", "updated_at", "note", "tags", "token", "admin_graphql_api_id",
            "billing_address", "shipping_address", "shipping_lines", "discount_codes",
            "total_discounts", "total_line_items_price", "presentment_currency", "test",
        }
    )  # fmt: skip

    id: int
    name: str | None = None
    email: str | None = None
    created_at: AwareDatetime
    processed_at: AwareDatetime | None = None
    financial_status: str | None = None
    fulfillment_status: str | None = None
    currency: str
    total_price: Decimal
    subtotal_price: Decimal | None = None
    total_tax: Decimal | None = None
    customer: _CustomerRef | None = None
    line_items: list[_LineItem]


class _Orders(Payload):
    orders: list[_Order]


class _Image(Payload):
    unread = frozenset(
        {"id", "position", "product_id", "alt", "width", "height", "variant_ids",
         "created_at", "updated_at", "admin_graphql_api_id"}
    )  # fmt: skip

    src: str


class _Variant(Payload):
    unread = frozenset(
        {"title", "position", "product_id", "inventory_management", "inventory_policy",
         "inventory_quantity", "compare_at_price", "barcode", "option1", "option2", "option3",
         "weight", "weight_unit", "taxable", "created_at", "updated_at", "admin_graphql_api_id"}
    )  # fmt: skip

    id: int
    price: Decimal
    sku: str | None = None
    inventory_item_id: int | None = None


class _Product(Payload):
    unread = frozenset(
        {"body_html", "created_at", "updated_at", "published_at", "published_scope",
         "images", "options", "template_suffix", "admin_graphql_api_id"}
    )  # fmt: skip

    id: int
    title: str
    handle: str
    product_type: str | None = None
    vendor: str | None = None
    status: str | None = None
    tags: str = ""
    image: _Image | None = None
    variants: list[_Variant]


class _Products(Payload):
    products: list[_Product]


class _Level(Payload):
    inventory_item_id: int
    location_id: int | None = None
    available: int | None = None
    updated_at: AwareDatetime | None = None


class _Levels(Payload):
    inventory_levels: list[_Level]


def _tags(raw: str) -> tuple[str, ...]:
    return tuple(tag.strip() for tag in raw.split(",") if tag.strip())


def _str(value: int | None) -> str | None:
    return None if value is None else str(value)


class ShopifyAdapter(ClientBackedAdapter[ShopifyConfig]):
    """``CommerceAdapter`` over the Shopify Admin REST API."""

    kind: Literal["commerce"] = "commerce"

    def __init__(
        self,
        config: ShopifyConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        telemetry: Telemetry = NO_TELEMETRY,
        rest: RestClient | None = None,
    ) -> None:
        """``rest``: the client to call through, when another adapter of the same shop
        already holds one (the GraphQL adapter's catalogue reads): one pool and one
        breaker per upstream, so its outage is seen once."""
        self.config = config
        self.rest = rest or RestClient(
            config, auth=build_auth(config.name, config.auth), clock=clock, telemetry=telemetry
        )
        self._client = self.rest
        self._api = f"/admin/api/{config.api_version}"
        storefront = config.storefront_url
        self._storefront = str(storefront).rstrip("/") if storefront else None

    async def find_customers_by_email(
        self, emails: Sequence[str]
    ) -> Mapping[str, CommerceCustomer]:
        addresses = (normalise_email(e) for e in emails)
        # An address with a blank in it would be search syntax (``a OR email:b``).
        wanted = list(dict.fromkeys(a for a in addresses if not email_problem(a)))
        found: dict[str, CommerceCustomer] = {}
        size = self.config.page_size
        route = f"{self._api}/customers/search.json"
        for start in range(0, len(wanted), size):
            query = " OR ".join(f"email:{email}" for email in wanted[start : start + size])
            async for page in self.rest.link_pages(
                route, _Customers, params={"query": query, "limit": size}
            ):
                for customer in page.customers:
                    record = self._customer(customer)
                    # A search may match more loosely than asked: keep exact matches only.
                    if record.email in wanted:
                        found[record.email] = record
        return found

    async def fetch_orders(self, customer_id: str, first: int = 10) -> Sequence[Order]:
        checked_id(self.name, _RULE, customer_id)
        if first <= 0:
            return []
        orders: list[Order] = []
        async for page in self.rest.link_pages(
            f"{self._api}/customers/{{id}}/orders.json",
            _Orders,
            path={"id": customer_id},
            params={"status": "any", "limit": min(first, _MAX_LIMIT)},
        ):
            orders.extend(self._order(order) for order in page.orders)
            if len(orders) >= first:
                break
        return orders[:first]

    async def fetch_products(self, ids: Sequence[str] | None = None) -> Sequence[Product]:
        route = f"{self._api}/products.json"
        size = self.config.page_size
        if ids is None:
            return [
                self._product(p)
                async for page in self.rest.link_pages(route, _Products, params={"limit": size})
                for p in page.products
            ]
        wanted = _numbers(ids)
        products: list[Product] = []
        for start in range(0, len(wanted), size):
            params: dict[str, str | int] = {
                "ids": ",".join(wanted[start : start + size]),
                "limit": size,
            }
            async for page in self.rest.link_pages(route, _Products, params=params):
                products.extend(self._product(p) for p in page.products)
        return products

    async def fetch_inventory(
        self, inventory_item_ids: Sequence[str]
    ) -> Mapping[str, Sequence[InventoryLevel]]:
        wanted = _numbers(inventory_item_ids)
        levels: dict[str, list[InventoryLevel]] = {}
        size = self.config.page_size
        for start in range(0, len(wanted), size):
            params: dict[str, str | int] = {
                "inventory_item_ids": ",".join(wanted[start : start + size]),
                "limit": size,
            }
            async for page in self.rest.link_pages(
                f"{self._api}/inventory_levels.json", _Levels, params=params
            ):
                for level in page.inventory_levels:
                    record = self._level(level)
                    levels.setdefault(record.inventory_item_id, []).append(record)
        return levels

    # Payload -> record ----------------------------------------------------------
    def _customer(self, c: _Customer) -> CommerceCustomer:
        consent = c.email_marketing_consent
        with checked(self.name, "customer"):
            return CommerceCustomer(
                source=self.name,
                external_id=str(c.id),
                email=c.email,
                first_name=c.first_name,
                last_name=c.last_name,
                phone=c.phone,
                orders_count=c.orders_count,
                total_spent=Money(amount=c.total_spent, currency=c.currency),
                last_order_id=_str(c.last_order_id),
                last_order_name=c.last_order_name,
                state=c.state,
                verified_email=c.verified_email,
                tags=_tags(c.tags),
                email_marketing_consent=(
                    None
                    if consent is None or consent.state is None
                    else consent.state == "subscribed"
                ),
                created_at=c.created_at,
                updated_at=c.updated_at,
            )

    def _order(self, o: _Order) -> Order:
        def money(amount: Decimal | None) -> Money | None:
            return None if amount is None else Money(amount=amount, currency=o.currency)

        with checked(self.name, "order"):
            return Order(
                source=self.name,
                external_id=str(o.id),
                name=o.name,
                customer_id=_str(o.customer.id) if o.customer else None,
                email=o.email,
                created_at=o.created_at,
                processed_at=o.processed_at,
                financial_status=o.financial_status,
                fulfillment_status=o.fulfillment_status,
                total_price=Money(amount=o.total_price, currency=o.currency),
                subtotal_price=money(o.subtotal_price),
                total_tax=money(o.total_tax),
                line_items=tuple(
                    LineItem(
                        external_id=str(item.id),
                        product_id=_str(item.product_id),
                        variant_id=_str(item.variant_id),
                        title=item.title,
                        quantity=item.quantity,
                        price=Money(amount=item.price, currency=o.currency),
                        sku=item.sku,
                    )
                    for item in o.line_items
                ),
            )

    def _product(self, p: _Product) -> Product:
        variant = p.variants[0] if p.variants else None
        with checked(self.name, "product"):
            return Product(
                source=self.name,
                external_id=str(p.id),
                title=p.title,
                handle=p.handle,
                category=p.product_type or None,
                vendor=p.vendor,
                status=p.status,
                tags=_tags(p.tags),
                price=Money(amount=variant.price, currency=self.config.currency)
                if variant
                else None,
                image_url=p.image.src if p.image else None,
                url=f"{self._storefront}/products/{p.handle}" if self._storefront else None,
                variant_id=str(variant.id) if variant else None,
                sku=variant.sku if variant else None,
                inventory_item_id=_str(variant.inventory_item_id) if variant else None,
            )

    def _level(self, level: _Level) -> InventoryLevel:
        with checked(self.name, "inventory level"):
            return InventoryLevel(
                source=self.name,
                inventory_item_id=str(level.inventory_item_id),
                location_id=_str(level.location_id),
                available=level.available,
                updated_at=level.updated_at,
            )

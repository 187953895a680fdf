"""The GraphQL Admin API's side of the Shopify GraphQL adapter: the queries, built from
a small field tree that prices itself by Shopify's rules (scalar and enum 0, object 1,
connection 2 + first x one node), the payload models their answers parse into, and
those payloads as the gateway's records (gids become the numbers the gateway stores).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from pydantic import AwareDatetime

from . import records
from .errors import UpstreamBadResponse
from .external_ids import ID_RULES
from .payload import Payload, checked
from .records import CommerceCustomer, LineItem, Money

__all__ = [
    "CUSTOMER",
    "Bag",
    "Customer",
    "Data",
    "Field",
    "Order",
    "PageInfo",
    "Reply",
    "customer_record",
    "gid_number",
    "order_fields",
    "order_record",
    "orders",
    "query_cost",
    "scalars",
    "with_page_info",
]


@dataclass(frozen=True, slots=True)
class Field:
    """One selected field: a scalar (no children), an object, or a connection (``first``)."""

    name: str
    children: tuple[Field, ...] = ()
    first: int | None = None
    args: str = ""

    def render(self) -> str:
        args = [f"first: {self.first}"] if self.first is not None else []
        args += [self.args] if self.args else []
        head = f"{self.name}({', '.join(args)})" if args else self.name
        if not self.children:
            return head
        inner = " ".join(child.render() for child in self.children)
        return (
            f"{head} {{ nodes {{ {inner} }} }}"
            if self.first is not None
            else f"{head} {{ {inner} }}"
        )

    def cost(self) -> int:
        """Shopify's requested cost of this field."""
        if not self.children:
            return 0
        inner = sum(child.cost() for child in self.children)
        return 2 + (self.first or 0) * (1 + inner) if self.first is not None else 1 + inner


def query_cost(fields: Sequence[Field]) -> int:
    return sum(f.cost() for f in fields)


def scalars(*names: str) -> tuple[Field, ...]:
    return tuple(Field(name) for name in names)


_RULE = ID_RULES["shopify"]
_MONEY = Field("shopMoney", scalars("amount", "currencyCode"))
CUSTOMER = (
    *scalars("id", "email", "firstName", "lastName", "phone", "numberOfOrders", "createdAt"),
    *scalars("updatedAt", "state", "verifiedEmail", "tags"),
    Field("amountSpent", scalars("amount", "currencyCode")),
    Field("emailMarketingConsent", scalars("marketingState")),
    Field("lastOrder", scalars("id", "name")),
)


def order_fields(line_items: int, full: bool) -> tuple[Field, ...]:
    fields = [
        *scalars("id", "name", "email", "createdAt", "processedAt"),
        *scalars("displayFinancialStatus", "displayFulfillmentStatus"),
        Field("totalPriceSet", (_MONEY,)),
    ]
    if full:
        fields += [Field("subtotalPriceSet", (_MONEY,)), Field("totalTaxSet", (_MONEY,))]
    if line_items:
        item = (
            *scalars("id", "title", "quantity", "sku"),
            Field("originalUnitPriceSet", (_MONEY,)),
            Field("product", scalars("id")),
            Field("variant", scalars("id")),
        )
        # With its pageInfo: an order with more items than read is re-read, never cut.
        fields.append(with_page_info(Field("lineItems", item, first=line_items)))
    return tuple(fields)


def orders(first: int, line_items: int, *, full: bool, after: bool = False) -> Field:
    args = "sortKey: CREATED_AT, reverse: true" + (", after: $after" if after else "")
    return Field("orders", order_fields(line_items, full), first=first, args=args)


# Payloads ---------------------------------------------------------------------------
class _Selected(Payload):
    # A GraphQL answer holds what the query selected, which varies by query: an absent
    # field is no drift (a renamed one still shows as unknown).
    complete = False


class _Amount(_Selected):
    amount: Decimal
    currencyCode: str


class Bag(_Selected):
    shopMoney: _Amount


class _Ref(_Selected):
    id: str


class _NamedRef(_Selected):
    id: str
    name: str | None = None


class _Consent(_Selected):
    marketingState: str


class _LineItem(_Selected):
    id: str
    title: str
    quantity: int
    sku: str | None = None
    originalUnitPriceSet: Bag
    product: _Ref | None = None
    variant: _Ref | None = None


class PageInfo(_Selected):
    hasNextPage: bool
    endCursor: str | None = None


class _LineItems(_Selected):
    nodes: list[_LineItem]
    pageInfo: PageInfo | None = None


class Order(_Selected):
    id: str
    name: str | None = None
    email: str | None = None
    createdAt: AwareDatetime
    processedAt: AwareDatetime | None = None
    displayFinancialStatus: str | None = None
    displayFulfillmentStatus: str | None = None
    totalPriceSet: Bag
    subtotalPriceSet: Bag | None = None
    totalTaxSet: Bag | None = None
    lineItems: _LineItems | None = None


class _Orders(_Selected):
    nodes: list[Order]
    pageInfo: PageInfo | None = None


class Customer(_Selected):
    id: str
    email: str | None = None
    firstName: str | None = None
    lastName: str | None = None
    phone: str | None = None
    numberOfOrders: str | None = None
    amountSpent: _Amount | None = None
    createdAt: AwareDatetime | None = None
    updatedAt: AwareDatetime | None = None
    state: str | None = None
    verifiedEmail: bool | None = None
    tags: tuple[str, ...] = ()
    lastOrder: _NamedRef | None = None
    emailMarketingConsent: _Consent | None = None
    orders: _Orders | None = None


class _Customers(_Selected):
    nodes: list[Customer]


class Data(_Selected):
    customers: _Customers | None = None
    customer: Customer | None = None


class _Status(_Selected):
    maximumAvailable: float
    currentlyAvailable: float
    restoreRate: float


class _Cost(_Selected):
    requestedQueryCost: int
    actualQueryCost: int | None = None
    throttleStatus: _Status


class _Extensions(_Selected):
    cost: _Cost | None = None


class _ErrorCode(_Selected):
    code: str | None = None


class _Error(_Selected):
    extensions: _ErrorCode | None = None


class Reply(_Selected):
    data: Data | None = None
    errors: tuple[_Error, ...] = ()
    extensions: _Extensions | None = None


# Payload -> record ------------------------------------------------------------------
def gid_number(upstream: str, value: str, kind: str) -> str:
    """The number of ``gid://shopify/<kind>/<number>``; anything else is a bad answer."""
    number = value.removeprefix(f"gid://shopify/{kind}/")
    if number == value or _RULE.problem(number):
        raise UpstreamBadResponse(upstream, f"{kind} id is not a Shopify gid")
    return number


def customer_record(upstream: str, c: Customer) -> CommerceCustomer:
    """A customer node as the gateway's record."""
    consent = c.emailMarketingConsent
    spent = c.amountSpent
    if spent is None or c.numberOfOrders is None or not c.numberOfOrders.isdigit():
        raise UpstreamBadResponse(upstream, "customer: amountSpent or numberOfOrders missing")
    last = c.lastOrder
    with checked(upstream, "customer"):
        return CommerceCustomer(
            source=upstream,
            external_id=gid_number(upstream, c.id, "Customer"),
            email=c.email,
            first_name=c.firstName,
            last_name=c.lastName,
            phone=c.phone,
            orders_count=int(c.numberOfOrders),
            total_spent=Money(amount=spent.amount, currency=spent.currencyCode),
            last_order_id=gid_number(upstream, last.id, "Order") if last else None,
            last_order_name=last.name if last else None,
            state=c.state.lower() if c.state else None,
            verified_email=c.verifiedEmail,
            tags=tuple(c.tags),
            email_marketing_consent=None
            if consent is None
            else consent.marketingState == "SUBSCRIBED",
            created_at=c.createdAt,
            updated_at=c.updatedAt,
        )


def order_record(upstream: str, o: Order, customer_id: str) -> records.Order:
    """An order node as the gateway's record, owned by ``customer_id`` (a number)."""

    def money(bag: Bag | None) -> Money | None:
        return (
            None
            if bag is None
            else Money(amount=bag.shopMoney.amount, currency=bag.shopMoney.currencyCode)
        )

    fulfilment = (o.displayFulfillmentStatus or "").lower()
    items = o.lineItems.nodes if o.lineItems else []
    with checked(upstream, "order"):
        return records.Order(
            source=upstream,
            external_id=gid_number(upstream, o.id, "Order"),
            name=o.name,
            customer_id=customer_id,
            email=o.email,
            created_at=o.createdAt,
            processed_at=o.processedAt,
            financial_status=o.displayFinancialStatus.lower() if o.displayFinancialStatus else None,
            fulfillment_status=None if fulfilment in ("", "unfulfilled") else fulfilment,
            total_price=Money(
                amount=o.totalPriceSet.shopMoney.amount,
                currency=o.totalPriceSet.shopMoney.currencyCode,
            ),
            subtotal_price=money(o.subtotalPriceSet),
            total_tax=money(o.totalTaxSet),
            line_items=tuple(
                LineItem(
                    external_id=gid_number(upstream, item.id, "LineItem"),
                    product_id=gid_number(upstream, item.product.id, "Product")
                    if item.product
                    else None,
                    variant_id=gid_number(upstream, item.variant.id, "ProductVariant")
                    if item.variant
                    else None,
                    title=item.title,
                    quantity=item.quantity,
                    price=Money(
                        amount=item.originalUnitPriceSet.shopMoney.amount,
                        currency=item.originalUnitPriceSet.shopMoney.currencyCode,
                    ),
                    sku=item.sku,
                )
                for item in items
            ),
        )


def with_page_info(connection: Field) -> Field:
    """``connection`` rendered with its ``pageInfo`` (free: part of the connection's 2)."""
    return _Paged(connection.name, connection.children, connection.first, connection.args)


class _Paged(Field):
    def render(self) -> str:
        inner = " ".join(child.render() for child in self.children)
        args = ", ".join([f"first: {self.first}", *([self.args] if self.args else [])])
        return f"{self.name}({args}) {{ nodes {{ {inner} }} pageInfo {{ hasNextPage endCursor }} }}"

"""Each person's order history at the sample shop: 0-12 orders, newest first.

Derived lazily per person from ``person.rng("orders")`` and the person's taste,
so asking for one customer's orders never builds everyone's. Order ids encode the
person's index, which makes a lookup by order id O(1) without an index.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from demo.people.population import Person
from demo.people.taste import taste

MAX_ORDERS = 12
_ORDER_ID_BASE = 5_900_000_000_000
_LINE_ITEM_ID_BASE = 15_000_000_000_000
_CENT = Decimal("0.01")
# Fewer people place many orders; about a fifth never ordered.
_COUNT_WEIGHTS = (20, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 3, 2)
_CURRENCIES = {"US": "USD", "GB": "GBP"}
# Simplification: one flat rate per country, added on top of the prices.
_TAX_RATES = {
    "US": Decimal("0.0725"),
    "GB": Decimal("0.20"),
    "DE": Decimal("0.19"),
    "FR": Decimal("0.20"),
    "ES": Decimal("0.21"),
    "NL": Decimal("0.21"),
}


def currency_of(person: Person) -> str:
    return _CURRENCIES.get(person.country, "EUR")


@dataclass(frozen=True, slots=True)
class LineItem:
    id: int
    product_id: int
    variant_id: int
    title: str
    sku: str
    category: str
    quantity: int
    price: Decimal


@dataclass(frozen=True, slots=True)
class Order:
    id: int
    number: int
    person_index: int
    customer_id: int
    email: str
    currency: str
    created_at: datetime
    processed_at: datetime
    closed_at: datetime | None
    financial_status: str
    fulfillment_status: str | None
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    line_items: tuple[LineItem, ...]

    @property
    def name(self) -> str:
        return f"#{self.number}"

    @property
    def counts_towards_spend(self) -> bool:
        return self.financial_status != "refunded"


def _statuses(rng_value: float, age: timedelta) -> tuple[str, str | None]:
    financial = "paid"
    if age > timedelta(days=14) and rng_value < 0.03:
        financial = "refunded"
    elif age > timedelta(days=14) and rng_value < 0.05:
        financial = "partially_refunded"
    if age < timedelta(days=3):
        return financial, None
    if age < timedelta(days=7):
        return financial, "partial" if rng_value > 0.7 else None
    return financial, "fulfilled"


def _order(person: Person, k: int, created_at: datetime, rng_seed: int) -> Order:
    rng = random.Random(rng_seed)
    liking = taste(person)
    order_id = _ORDER_ID_BASE + person.index * 100 + k
    items = []
    for j in range(rng.choices((1, 2, 3, 4), weights=(50, 30, 14, 6))[0]):
        product = liking.pick_product(rng)
        items.append(
            LineItem(
                id=_LINE_ITEM_ID_BASE + person.index * 1000 + k * 10 + j,
                product_id=product.id,
                variant_id=product.variant_id,
                title=product.title,
                sku=product.sku,
                category=product.category,
                quantity=rng.choices((1, 2, 3), weights=(80, 15, 5))[0],
                price=product.price,
            )
        )
    subtotal = sum((item.price * item.quantity for item in items), Decimal("0.00"))
    tax = (subtotal * _TAX_RATES.get(person.country, Decimal("0.20"))).quantize(
        _CENT, rounding=ROUND_HALF_UP
    )
    age = person.epoch - created_at
    financial, fulfillment = _statuses(rng.random(), age)
    processed_at = created_at + timedelta(seconds=rng.randrange(5, 120))
    closed_at = (
        processed_at + timedelta(days=rng.randrange(2, 6)) if fulfillment == "fulfilled" else None
    )
    return Order(
        id=order_id,
        number=1001 + person.index * MAX_ORDERS + k,
        person_index=person.index,
        customer_id=person.shopify_id,
        email=person.email,
        currency=currency_of(person),
        created_at=created_at,
        processed_at=processed_at,
        closed_at=closed_at,
        financial_status=financial,
        fulfillment_status=fulfillment,
        subtotal=subtotal.quantize(_CENT),
        tax=tax,
        total=(subtotal + tax).quantize(_CENT),
        line_items=tuple(items),
    )


@lru_cache(maxsize=8192)
def orders_for(person: Person) -> tuple[Order, ...]:
    """The person's orders, newest first."""
    rng = person.rng("orders")
    count = rng.choices(range(MAX_ORDERS + 1), weights=_COUNT_WEIGHTS)[0]
    span = (person.epoch - person.created_at - timedelta(hours=1)).total_seconds()
    # Squaring skews orders towards the recent past, as an active customer's are,
    # so a good share of them fall in the analytics window too.
    times = sorted(
        (
            person.epoch - timedelta(hours=1) - timedelta(seconds=int(span * rng.random() ** 2))
            for _ in range(count)
        ),
        reverse=True,
    )
    seeds = [rng.getrandbits(64) for _ in range(count)]
    # k counts from the oldest, so order numbers grow with time for a customer.
    return tuple(_order(person, count - 1 - i, at, seeds[i]) for i, at in enumerate(times))


def spend(person: Person) -> tuple[int, Decimal]:
    """(orders count, total spent) as the commerce platform reports them."""
    orders = orders_for(person)
    total = sum((o.total for o in orders if o.counts_towards_spend), Decimal("0.00"))
    return len(orders), total


def find_order(people: Sequence[Person], order_id: int) -> Order | None:
    """The order with this id among these people, found from the id alone."""
    index, k = divmod(order_id - _ORDER_ID_BASE, 100)
    if not 0 <= index < len(people) or not 0 <= k < MAX_ORDERS:
        return None
    return next((o for o in orders_for(people[index]) if o.id == order_id), None)

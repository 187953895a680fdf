"""Shopify Admin REST 2024-10 shapes of the sample shop's customers, orders, products.

Pure functions from the sample data to the JSON objects Shopify answers with:
ids as integers, money as decimal strings, times as ISO 8601 with an offset.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from demo.people.catalogue import Product
from demo.people.orders import Order, currency_of, orders_for, spend
from demo.people.population import Person

_COUNTRY_NAMES = {
    "US": "United States",
    "GB": "United Kingdom",
    "DE": "Germany",
    "FR": "France",
    "ES": "Spain",
    "NL": "Netherlands",
}
_STREETS = (
    "Maple Street",
    "Harbour Road",
    "Station Lane",
    "Mill Way",
    "Church Street",
    "Park Avenue",
    "Bridge Road",
    "Orchard Close",
)


def shopify_time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def customer_updated_at(person: Person) -> datetime:
    """A customer record changes when the person's data does and when they order."""
    orders = orders_for(person)
    return max(person.updated_at, orders[0].processed_at) if orders else person.updated_at


def _address(person: Person) -> dict[str, Any]:
    rng = person.rng("address")
    return {
        "id": 9_100_000_000_000 + person.index * 11,
        "customer_id": person.shopify_id,
        "first_name": person.first_name,
        "last_name": person.last_name,
        "company": person.company,
        "address1": f"{rng.randrange(1, 240)} {rng.choice(_STREETS)}",
        "address2": None,
        "city": person.city,
        "province": None,
        "country": _COUNTRY_NAMES.get(person.country, person.country),
        "zip": f"{rng.randrange(10000, 99999)}",
        "phone": person.phone,
        "name": f"{person.first_name} {person.last_name}",
        "province_code": None,
        "country_code": person.country,
        "country_name": _COUNTRY_NAMES.get(person.country, person.country),
        "default": True,
    }


@lru_cache(maxsize=8192)
def _customer(person: Person) -> dict[str, Any]:
    orders = orders_for(person)
    count, total = spend(person)
    rng = person.rng("shopify")
    tags = [
        tag
        for tag, on in (
            ("vip", total > Decimal(1000)),
            ("newsletter", person.email_marketing_consent),
        )
        if on
    ]
    consent_at = person.created_at if person.email_marketing_consent else None
    return {
        "id": person.shopify_id,
        "email": person.email,
        "first_name": person.first_name,
        "last_name": person.last_name,
        "phone": person.phone,
        "orders_count": count,
        "total_spent": str(total),
        "currency": currency_of(person),
        "created_at": shopify_time(person.created_at),
        "updated_at": shopify_time(customer_updated_at(person)),
        # Customers who ordered have an account; a few others were invited only.
        "state": "enabled" if orders or rng.random() < 0.5 else "invited",
        "verified_email": True,
        "note": None,
        "tax_exempt": False,
        "tags": ", ".join(tags),
        "last_order_id": orders[0].id if orders else None,
        "last_order_name": orders[0].name if orders else None,
        "default_address": _address(person),
        "email_marketing_consent": {
            "state": "subscribed" if person.email_marketing_consent else "not_subscribed",
            "opt_in_level": "single_opt_in",
            "consent_updated_at": shopify_time(consent_at),
        },
    }


def customer(person: Person) -> dict[str, Any]:
    """The customer object; a fresh copy, so callers may trim it."""
    return dict(_customer(person))


def order_updated_at(order: Order) -> datetime:
    return order.closed_at or order.processed_at


def order(o: Order) -> dict[str, Any]:
    return {
        "id": o.id,
        "name": o.name,
        "order_number": o.number,
        "email": o.email,
        "created_at": shopify_time(o.created_at),
        "processed_at": shopify_time(o.processed_at),
        "updated_at": shopify_time(order_updated_at(o)),
        "closed_at": shopify_time(o.closed_at),
        "cancelled_at": None,
        "financial_status": o.financial_status,
        "fulfillment_status": o.fulfillment_status,
        "currency": o.currency,
        "total_price": str(o.total),
        "subtotal_price": str(o.subtotal),
        "total_tax": str(o.tax),
        "taxes_included": False,
        "customer": {"id": o.customer_id, "email": o.email},
        "line_items": [
            {
                "id": item.id,
                "product_id": item.product_id,
                "variant_id": item.variant_id,
                "title": item.title,
                "quantity": item.quantity,
                "price": str(item.price),
                "sku": item.sku,
            }
            for item in o.line_items
        ],
    }


def product(p: Product, available: int) -> dict[str, Any]:
    image = {"id": p.id + 1, "product_id": p.id, "position": 1, "src": p.image_url}
    return {
        "id": p.id,
        "title": p.title,
        "handle": p.handle,
        "body_html": f"<p>{p.title} by {p.vendor}.</p>",
        "product_type": p.category,
        "vendor": p.vendor,
        "status": "active",
        "tags": ", ".join(p.tags),
        "created_at": shopify_time(p.created_at),
        "updated_at": shopify_time(p.updated_at),
        "published_at": shopify_time(p.created_at),
        "image": image,
        "images": [image],
        "variants": [
            {
                "id": p.variant_id,
                "product_id": p.id,
                "title": "Default Title",
                "price": str(p.price),
                "sku": p.sku,
                "position": 1,
                "inventory_item_id": p.inventory_item_id,
                "inventory_quantity": available,
                "inventory_management": "shopify",
                "inventory_policy": "deny",
            }
        ],
    }


def inventory_level(
    item_id: int, location_id: int, available: int, updated_at: datetime
) -> dict[str, Any]:
    return {
        "inventory_item_id": item_id,
        "location_id": location_id,
        "available": available,
        "updated_at": shopify_time(updated_at),
    }

"""Shopify query parameters and customer search syntax, as predicates.

Search supports what an adapter needs: ``email:a@x.com OR email:b@y.com`` (an
exact, case-insensitive match looked up in O(1) per email), plus ``first_name:``,
``last_name:``, ``phone:``, ``id:`` and bare words; terms side by side are ANDed.
(Simplification: Shopify's full search grammar has ranges, NOT and wildcards.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from demo.people.catalogue import Product
from demo.people.orders import Order
from demo.people.population import Person
from demo.upstreams.shopify.records import customer_updated_at, order_updated_at


class FilterError(ValueError):
    """A parameter Shopify would refuse; ``field`` names it in the error body."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _time(filters: Mapping[str, str], name: str) -> datetime | None:
    raw = filters.get(name)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.strip().replace(" ", "+"))
    except ValueError as exc:
        raise FilterError(name, f"{raw!r} is not an ISO 8601 time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _in_range(moment: datetime, filters: Mapping[str, str], prefix: str) -> bool:
    low, high = _time(filters, f"{prefix}_min"), _time(filters, f"{prefix}_max")
    return (low is None or moment >= low) and (high is None or moment <= high)


def _ids(filters: Mapping[str, str], name: str) -> set[int] | None:
    raw = filters.get(name)
    if not raw:
        return None
    try:
        return {int(part) for part in raw.split(",") if part.strip()}
    except ValueError as exc:
        raise FilterError(name, f"{raw!r} is not a list of ids") from exc


def _since_id(filters: Mapping[str, str]) -> int:
    try:
        return int(filters.get("since_id") or 0)
    except ValueError as exc:
        raise FilterError("since_id", "since_id must be an id") from exc


def customer_matches(person: Person, filters: Mapping[str, str]) -> bool:
    ids = _ids(filters, "ids")
    return (
        (ids is None or person.shopify_id in ids)
        and person.shopify_id > _since_id(filters)
        and _in_range(person.created_at, filters, "created_at")
        and _in_range(customer_updated_at(person), filters, "updated_at")
    )


def order_matches(order: Order, filters: Mapping[str, str]) -> bool:
    status = filters.get("status", "open")
    if status not in ("open", "closed", "cancelled", "any"):
        raise FilterError("status", f"{status!r} is not a valid status")
    # The sample shop never cancels, so "cancelled" is always empty.
    wanted = {
        "open": order.closed_at is None,
        "closed": order.closed_at is not None,
        "cancelled": False,
        "any": True,
    }[status]
    financial = filters.get("financial_status", "any")
    return (
        wanted
        and financial in ("any", order.financial_status)
        and order.id > _since_id(filters)
        and _in_range(order.created_at, filters, "created_at")
        and _in_range(order_updated_at(order), filters, "updated_at")
    )


def product_matches(product: Product, filters: Mapping[str, str]) -> bool:
    ids = _ids(filters, "ids")
    handles = {h.strip() for h in filters.get("handle", "").split(",") if h.strip()}
    return (
        (ids is None or product.id in ids)
        and product.id > _since_id(filters)
        and filters.get("product_type", product.category).lower() == product.category.lower()
        and filters.get("vendor", product.vendor).lower() == product.vendor.lower()
        and (not handles or product.handle in handles)
        and filters.get("status", "active") in ("active", "any")
    )


def _term_matches(person: Person, term: str) -> bool:
    field, colon, value = term.partition(":")
    if not colon:
        word = term.lower()
        return any(
            word in text.lower() for text in (person.email, person.first_name, person.last_name)
        )
    value = value.strip("\"'").lower()
    match field.lower():
        case "email":
            return person.email.lower() == value
        case "first_name":
            return person.first_name.lower() == value
        case "last_name":
            return person.last_name.lower() == value
        case "phone":
            return person.phone == value
        case "id":
            return str(person.shopify_id) == value
    return False


def search_customers(
    people: Sequence[Person],
    by_email: Mapping[str, Person],
    query: str,
    by_id: Mapping[int, Person] | None = None,
) -> list[Person]:
    """The customers a Shopify search query finds, by id. A lone ``email:`` or ``id:``
    term is looked up (a scan of 10,000 people per term made the sample shop, not the
    gateway, the slow side of a send)."""
    found: dict[int, Person] = {}
    for alternative in query.split(" OR "):
        terms = alternative.split()
        if not terms:
            continue
        if len(terms) == 1 and terms[0].lower().startswith("email:"):
            hit = by_email.get(terms[0][6:].strip("\"'").lower())
            hits = [hit] if hit else []
        elif by_id is not None and len(terms) == 1 and terms[0].lower().startswith("id:"):
            number = terms[0][3:].strip("\"'")
            exact = number.isascii() and number.isdigit() and str(int(number)) == number
            hit = by_id.get(int(number)) if exact else None
            hits = [hit] if hit else []
        else:
            hits = [p for p in people if all(_term_matches(p, t) for t in terms)]
        found.update((p.shopify_id, p) for p in hits)
    return [found[key] for key in sorted(found)]

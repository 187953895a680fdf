"""Purchases as arrays: one row per customer and purchase day, sorted by customer, day.

Every score is a function of a ``Ledger`` and a cut-off day; days are integers since
1970-01-01 (UTC), so a cut-off is one comparison and a window is two. Purchases on the
same day count as one (with their amounts summed), as BG/NBD counts repeat purchase
periods: a basket paid in two transactions is still one visit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np
import numpy.typing as npt

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
_EPOCH = date(1970, 1, 1)


def day_of(moment: date | datetime) -> int:
    """The UTC day number of a date or an aware moment."""
    if isinstance(moment, datetime):
        moment = moment.astimezone(UTC).date()
    return (moment - _EPOCH).days


def date_of(day: int) -> date:
    return date.fromordinal(_EPOCH.toordinal() + int(day))


@dataclass(frozen=True)
class Ledger:
    """Purchases: ``customer[i]`` (an index into ``keys``) bought for ``amount[i]`` on
    ``day[i]``; one row per customer and day, sorted by (customer, day)."""

    keys: Sequence[str]
    customer: Ints
    day: Ints
    amount: Floats
    # Behavioural events (views, sessions) per customer and day, when the source has any.
    event_customer: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    event_day: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    # Orders merged into each row (None: one each): a day is one purchase for the
    # models, but an average order value divides by the orders.
    orders: Ints | None = None

    @property
    def size(self) -> int:
        return len(self.keys)

    def upto(self, cutoff: int) -> Ledger:
        """Only what happened on or before day ``cutoff``: the only view features get."""
        keep = self.day <= cutoff
        events = self.event_day <= cutoff
        return Ledger(
            self.keys,
            self.customer[keep],
            self.day[keep],
            self.amount[keep],
            self.event_customer[events],
            self.event_day[events],
            None if self.orders is None else self.orders[keep],
        )

    def between(self, start: int, end: int) -> Ledger:
        """Purchases after day ``start`` up to and including day ``end`` (a label window)."""
        keep = (self.day > start) & (self.day <= end)
        orders = None if self.orders is None else self.orders[keep]
        return Ledger(
            self.keys, self.customer[keep], self.day[keep], self.amount[keep], orders=orders
        )

    def order_counts(self, cutoff: int) -> Floats:
        """Each customer's orders placed on or before day ``cutoff`` (several on one day
        counted apart, as their purchase days are not)."""
        keep = self.day <= cutoff
        weights = None if self.orders is None else self.orders[keep]
        return np.bincount(self.customer[keep], weights=weights, minlength=self.size).astype(
            np.float64
        )

    def span(self, cutoff: int) -> tuple[Floats, Ints, Ints, np.ndarray]:
        """Up to day ``cutoff``: each customer's purchase count, first and last purchase
        day (both ``cutoff`` for a customer with none) and whether they have any."""
        seen = self.upto(cutoff)
        count = np.bincount(seen.customer, minlength=self.size).astype(np.float64)
        first = np.full(self.size, cutoff, np.int64)
        last = np.full(self.size, np.iinfo(np.int64).min, np.int64)
        np.minimum.at(first, seen.customer, seen.day)
        np.maximum.at(last, seen.customer, seen.day)
        known = count > 0
        return count, first, np.where(known, last, first), known

    def first_day(self) -> Ints:
        """Each customer's first purchase day (a huge number for none)."""
        first = np.full(self.size, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(first, self.customer, self.day)
        return first


def ledger_from(
    rows: Iterable[tuple[str, int, float]],
    events: Iterable[tuple[str, int]] = (),
    keys: Sequence[str] | None = None,
) -> Ledger:
    """A ledger from (customer key, day, amount) rows in any order, and behavioural
    (customer key, day) events; ``keys`` lists customers with no purchase too."""
    index: dict[str, int] = {key: i for i, key in enumerate(keys or ())}
    customers: list[int] = []
    days: list[int] = []
    amounts: list[float] = []
    for key, day, amount in rows:
        customers.append(index.setdefault(key, len(index)))
        days.append(day)
        amounts.append(amount)
    event_customers: list[int] = []
    event_days: list[int] = []
    for key, day in events:
        event_customers.append(index.setdefault(key, len(index)))
        event_days.append(day)
    ordered_keys = [""] * len(index)
    for key, i in index.items():
        ordered_keys[i] = key
    return ledger_of(
        ordered_keys,
        np.asarray(customers, np.int64),
        np.asarray(days, np.int64),
        np.asarray(amounts, np.float64),
        np.asarray(event_customers, np.int64),
        np.asarray(event_days, np.int64),
    )


def ledger_of(
    keys: Sequence[str],
    who: Ints,
    when: Ints,
    paid: Floats,
    event_customer: Ints,
    event_day: Ints,
) -> Ledger:
    """A ledger from purchases as arrays (``who`` indexes ``keys``) in any order: sorted
    by customer and day, purchases on one day merged."""
    order = np.lexsort((when, who))
    who, when, paid = who[order], when[order], paid[order]
    orders = np.ones(len(who), np.int64)
    if len(who):
        # One row per customer and day, amounts summed, orders counted.
        starts = np.flatnonzero(
            np.concatenate(([True], (who[1:] != who[:-1]) | (when[1:] != when[:-1])))
        )
        paid = np.add.reduceat(paid, starts)
        orders = np.diff(np.append(starts, len(who)))
        who, when = who[starts], when[starts]
    return Ledger(keys, who, when, paid, event_customer, event_day, orders)

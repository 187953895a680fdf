"""Per-request DataLoaders, one per upstream kind, keyed by unified customer.

A loader batches the customers a request asks for within one tick and caches its
answer for the rest of the request, so every field of one upstream shares a single
fetch, and a batch of customers shares one call per page of the upstream.
"""

from __future__ import annotations

from strawberry.dataloader import DataLoader

from adapters.records import CommerceCustomer, CrmContact, Order
from gateway.customers import CustomerProfile
from gateway.federation import AnalyticsData, Federation, Outcome


def _key(customer: CustomerProfile) -> object:
    return customer.id


class Loaders:
    def __init__(self, federation: Federation) -> None:
        self.crm: DataLoader[CustomerProfile, Outcome[CrmContact]] = DataLoader(
            federation.crm, cache_key_fn=_key
        )
        self.commerce: DataLoader[CustomerProfile, Outcome[CommerceCustomer]] = DataLoader(
            federation.commerce, cache_key_fn=_key
        )
        self.orders: DataLoader[CustomerProfile, Outcome[tuple[Order, ...]]] = DataLoader(
            federation.orders, cache_key_fn=_key
        )
        self.analytics: DataLoader[CustomerProfile, Outcome[AnalyticsData]] = DataLoader(
            federation.analytics, cache_key_fn=_key
        )

    def named(self, name: str) -> DataLoader[CustomerProfile, Outcome[object]]:
        loader: DataLoader[CustomerProfile, Outcome[object]] = getattr(self, name)
        return loader

"""A served request leaves nothing for the cyclic garbage collector.

Whatever a request leaves in reference cycles waits for a collection, and under an
ESP's send those collections paused each worker for 60-70 ms every few seconds (the
p99 of `bench/load`). Here requests run with the collector off and saving what it
finds: nothing that belongs to a request may be among it.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

from demo.upstreams.runner import SampleUpstreams
from resolvers.graphql.context import Context
from resolvers.graphql.execution import AcyclicExecutionContext
from tests.gql_client import gql

QUERY = (
    "query($email: String!, $ids: [ID!]) { customer(email: $email) { id email firstName "
    "lifecycleStage lifetimeValue { amount currency } orderCount "
    "sources { upstream status } } customers(ids: $ids) { id email } }"
)


@contextmanager
def _cyclic_garbage() -> Iterator[Callable[[], list[object]]]:
    """Yields a function returning what the collector would have freed since entry."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:

        def found() -> list[object]:
            gc.collect()
            return list(gc.garbage)

        yield found
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()


async def test_a_served_request_is_freed_without_the_cycle_collector(
    federated: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    email = samples.people[3].email
    warm = await gql(federated, QUERY, email=email, ids=[])
    customer_id = warm["data"]["customer"]["id"]
    assert warm["data"]["customer"]["email"] == email

    with _cyclic_garbage() as garbage:
        for _ in range(10):
            body = await gql(federated, QUERY, email=email, ids=[customer_id])
            assert body["data"]["customers"] == [{"id": customer_id, "email": email}]
        left = [
            type(o).__name__
            for o in garbage()
            if isinstance(o, Context | AcyclicExecutionContext)
            or type(o).__module__.startswith(("resolvers.", "strawberry.", "graphql."))
        ]

    assert left == []

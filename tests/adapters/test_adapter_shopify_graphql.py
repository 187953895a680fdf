"""The Shopify GraphQL adapter's own promises: a page of customers' orders in one call,
the same cost arithmetic as the shop, and a bucket that is waited for, not overrun,
by concurrent calls and by instances sharing it through Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from graphql import OperationDefinitionNode, parse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import shopify_queries as q
from adapters.config import ShopifyConfig, UpstreamsConfig
from adapters.errors import (
    CircuitOpen,
    InvalidExternalId,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from adapters.shopify_graphql import ShopifyGraphQLAdapter
from adapters.transport.breaker import BreakerState
from demo.people.orders import orders_for
from demo.upstreams.runner import SampleUpstreams
from demo.upstreams.shopify.cost import PLANS, CostWalk
from demo.upstreams.shopify.graphql import schema
from gateway.profiles.customers import CustomerProfile, IdentityRecord
from gateway.upstreams.cache import UpstreamCache, build_cache
from gateway.upstreams.federation import Federation
from gateway.upstreams.order_reads import OrdersNeed
from gateway.upstreams.redis_client import RedisGuard
from tests.conftest import clean_redis, redis_database_url

Build = Callable[..., Any]
GRAPHQL = "POST /admin/api/2024-10/graphql.json"
PLUS = {"bucket_size": 2000.0, "restore_rate": 1000.0}
_SCHEMA = schema()


def shop(build: Build, **overrides: Any) -> ShopifyGraphQLAdapter:
    adapter = build("shopify_graphql", page_size=50, **overrides)
    assert isinstance(adapter, ShopifyGraphQLAdapter)
    return adapter


async def test_orders_of_a_page_of_50_customers_cost_one_call(
    build: Build, upstreams: SampleUpstreams
) -> None:
    people = upstreams.people[:50]
    # A patient attempt timeout: a retry after a slow answer would be a second call.
    found = await shop(build, timeout_s=5.0).fetch_orders_by_email([p.email for p in people], 5)
    assert upstreams.shopify.calls.count(GRAPHQL) == 1  # the REST shape: 50 calls
    assert set(found) == {p.email.lower() for p in people}
    for person in people:
        expected = [str(o.id) for o in orders_for(person)[:5]]
        assert [o.external_id for o in found[person.email.lower()]] == expected
        assert all(o.customer_id == str(person.shopify_id) for o in found[person.email.lower()])


@settings(max_examples=25, deadline=None)
@given(
    customers=st.integers(1, 250),
    orders=st.integers(1, 250),
    line_items=st.integers(0, 250),
    full=st.booleans(),
)
def test_planned_cost_is_the_shops_requested_cost(
    customers: int, orders: int, line_items: int, full: bool
) -> None:
    node = (*q.scalars("id", "email"), *q.CUSTOMER, q.orders(orders, line_items, full=full))
    fields = [q.Field("customers", node, first=customers, args='query: "email:a@b.c"')]
    document = parse(f"query {{ {' '.join(f.render() for f in fields)} }}")
    operation = document.definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    assert CostWalk(_SCHEMA, {}, {}).requested(operation) == q.query_cost(fields)


async def test_a_malformed_customer_id_is_refused_before_sending(
    build: Build, upstreams: SampleUpstreams
) -> None:
    for bad in ("gid://shopify/Customer/7", "07", "1 OR 2", ""):
        with pytest.raises(InvalidExternalId):
            await shop(build).fetch_orders(bad)
    assert upstreams.shopify.calls.count(GRAPHQL) == 0


async def test_concurrent_calls_wait_for_the_bucket_and_are_never_throttled(
    build: Build, upstreams: SampleUpstreams
) -> None:
    upstreams.shopify.graphql.reset(PLANS["plus"])
    adapter = shop(build, deadline_s=15.0, timeout_s=10.0, graphql=PLUS)
    emails = [p.email for p in upstreams.people]
    pages = [emails[i : i + 50] for i in range(0, 16 * 50, 50)]
    # 16 pages of 252 points at once: twice the bucket, so most have to wait.
    found = await asyncio.gather(*(adapter.find_customers_by_email(page) for page in pages))
    assert all(len(page) == 50 for page in found)
    assert upstreams.shopify.graphql.throttled == 0
    assert adapter.throttled == 0
    assert adapter.bucket.waited_s > 0


async def _two_instances_send(
    upstream: ShopifyConfig, upstreams: SampleUpstreams, redis: RedisGuard | None
) -> list[ShopifyGraphQLAdapter]:
    """Two instances, 32 pages of 10 customers (52 points each) at once, on the standard
    plan: 1,664 points against a bucket of 1,000 restoring 100/s."""
    upstreams.shopify.graphql.reset(PLANS["standard"])
    emails = [p.email for p in upstreams.people]
    pages = [emails[i : i + 10] for i in range(0, 32 * 10, 10)]
    instances = [ShopifyGraphQLAdapter(upstream, redis=redis) for _ in range(2)]
    try:
        await asyncio.gather(
            *(instances[n % 2].find_customers_by_email(page) for n, page in enumerate(pages))
        )
    finally:
        await asyncio.gather(*(adapter.aclose() for adapter in instances))
    return instances


async def test_instances_sharing_a_redis_bucket_stay_inside_it(
    configure: Callable[..., UpstreamsConfig], upstreams: SampleUpstreams
) -> None:
    standard = {"bucket_size": 1000.0, "restore_rate": 100.0}
    config = configure(
        "shopify_graphql", page_size=10, deadline_s=30.0, timeout_s=10.0, graphql=standard
    )
    upstream = config.upstreams["shopify_graphql"]
    assert isinstance(upstream, ShopifyConfig)
    # Alone, each instance thinks the whole bucket is its own, and overruns it.
    await _two_instances_send(upstream, upstreams, None)
    assert upstreams.shopify.graphql.throttled > 0
    async with clean_redis(redis_database_url(13)) as url:
        client = aioredis.from_url(url)
        try:
            # Behind the gateway's guard, as Services gives it; a loaded CI machine
            # answers slowly, so its timeout is generous here.
            guarded = RedisGuard(client, timeout_s=2.0)
            instances = await _two_instances_send(upstream, upstreams, guarded)
            assert all(adapter.bucket.shared for adapter in instances)
            assert await client.exists(instances[0].bucket._key)
        finally:
            await client.aclose()
    assert upstreams.shopify.graphql.throttled == 0
    assert sum(adapter.throttled for adapter in instances) == 0


async def test_throttled_is_waited_for_and_asked_again(
    build: Build, upstreams: SampleUpstreams
) -> None:
    upstreams.shopify.graphql.reset(PLANS["plus"])
    adapter = shop(build, deadline_s=5.0, graphql=PLUS)
    # Another client of the shop empties the bucket: this adapter cannot know.
    assert upstreams.shopify.graphql.bucket.take(1990)
    started = time.monotonic()
    found = await adapter.find_customers_by_email([p.email for p in upstreams.people[:50]])
    assert len(found) == 50
    assert upstreams.shopify.graphql.throttled == 1
    assert adapter.throttled == 1
    assert upstreams.shopify.calls.count(GRAPHQL) == 2
    assert time.monotonic() - started >= 0.2  # ~252 points at 1000/s, less what restored


async def test_throttled_without_the_buckets_state_is_backed_off_from(
    build: Build, upstreams: SampleUpstreams
) -> None:
    """THROTTLED without ``extensions.cost`` (a proxy's answer): the bucket held less
    than the query, so the adapter waits for the query's cost to restore before it asks
    again, and longer each time, instead of asking again at once."""
    upstreams.shopify.graphql.reset(PLANS["plus"])
    upstreams.shopify.graphql.throttle_blind = 2
    adapter = shop(build, deadline_s=10.0, timeout_s=5.0, graphql=PLUS)
    started = time.monotonic()
    found = await adapter.find_customers_by_email([p.email for p in upstreams.people[:50]])
    assert len(found) == 50
    assert adapter.throttled == 2
    assert upstreams.shopify.calls.count(GRAPHQL) == 3
    # The first refusal waited for the query's points to restore (1,000/s), the second
    # twice as long.
    cost = 2 + 50 * (1 + q.query_cost(q.CUSTOMER))
    assert time.monotonic() - started >= 3 * cost / 1000


async def test_a_shop_that_keeps_throttling_blind_is_asked_a_few_times_then_rate_limited(
    build: Build, upstreams: SampleUpstreams
) -> None:
    upstreams.shopify.graphql.reset(PLANS["plus"])
    upstreams.shopify.graphql.throttle_blind = 10_000
    adapter = shop(build, deadline_s=2.0, timeout_s=1.0, graphql=PLUS)
    with pytest.raises(UpstreamRateLimited):
        await adapter.find_customers_by_email([p.email for p in upstreams.people[:50]])
    # Waits of 0.3, 0.5, 1 s...: a handful of calls in 2 s, not one per round trip.
    assert 2 <= upstreams.shopify.calls.count(GRAPHQL) <= 5


async def test_products_and_orders_share_one_client_and_one_breaker(
    build: Build, upstreams: SampleUpstreams
) -> None:
    """The catalogue's REST reads go through the GraphQL adapter's client: a shop
    failing them opens the one breaker, and its order reads are then refused without
    a call (two clients would each have to learn of the outage)."""
    adapter = shop(build, breaker={"failure_threshold": 3, "reset_timeout_s": 30}, graphql=PLUS)
    upstreams.shopify.faults.update(error_rate=1.0, error_status=503)
    with pytest.raises(UpstreamUnavailable):
        await adapter.fetch_products()
    assert adapter.breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen):
        await adapter.fetch_orders_by_email([upstreams.people[0].email], 5)
    assert upstreams.shopify.calls.count(GRAPHQL) == 0


async def test_a_wait_beyond_the_deadline_fails_at_once_as_rate_limited(
    build: Build, upstreams: SampleUpstreams
) -> None:
    upstreams.shopify.graphql.reset(PLANS["standard"])
    adapter = shop(build, deadline_s=0.5, graphql={"bucket_size": 1000.0, "restore_rate": 100.0})
    emails = [p.email for p in upstreams.people[:50]]
    await adapter.fetch_orders_by_email(emails, 5)  # 902 of 1000 points
    started = time.monotonic()
    with pytest.raises(UpstreamRateLimited) as caught:
        await adapter.fetch_orders_by_email(emails, 5)  # ~8 s of restore at 100/s
    assert time.monotonic() - started < 0.2
    assert caught.value.retry_after_s is not None
    assert caught.value.retry_after_s > 0.5
    assert upstreams.shopify.calls.count(GRAPHQL) == 1


def _shown(orders: Any) -> list[tuple[Any, ...]]:
    """What the schema shows of orders (the batch read leaves subtotal and tax out)."""
    return [
        (
            o.external_id,
            o.name,
            o.created_at,
            o.financial_status,
            o.fulfillment_status,
            o.total_price,
            tuple((i.product_id, i.title, i.quantity, i.price) for i in o.line_items),
        )
        for o in orders
    ]


def _calls(adapter: ShopifyGraphQLAdapter, people: Any, first: int, lines: bool) -> int:
    """The fewest queries under the single-query limit: pages as large as fit; when one
    customer's read does not fit, pages of the cheapest window, and one query for each
    customer with more orders than that (the sample shop's 12 at most fit one)."""
    fits = adapter.batch_fits(first, lines)
    read = first if fits else adapter.orders_window
    per_customer = 1 + q.query_cost(adapter._orders_node(read, lines))
    pages = -(-len(people) // min(50, (1000 - 2) // per_customer))
    return pages + (0 if fits else sum(len(orders_for(p)) > read for p in people))


_REST: dict[str, list[tuple[Any, ...]]] = {}


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=st.integers(1, 50), lines=st.booleans())
async def test_batch_orders_equal_the_rest_shops_for_any_first_at_the_fewest_calls(
    build: Build, upstreams: SampleUpstreams, first: int, lines: bool
) -> None:
    people = sorted(upstreams.people, key=lambda p: -len(orders_for(p)))[:50]
    if not _REST:  # the REST shop's whole answer (12 orders at most), read once
        rest = build("shopify", page_size=50, timeout_s=5.0)
        for p in people:
            _REST[p.email.lower()] = _shown(await rest.fetch_orders(str(p.shopify_id), 50))
    expected = {e: orders[:first] for e, orders in _REST.items()}
    if not lines:
        expected = {e: [(*o[:-1], ()) for o in orders] for e, orders in expected.items()}
    upstreams.shopify.calls.reset()
    upstreams.shopify.graphql.reset(PLANS["plus"])  # full: a fresh adapter cannot know it
    adapter = shop(build, timeout_s=5.0, deadline_s=30.0, graphql=PLUS)
    found = await adapter.fetch_orders_by_email([p.email for p in people], first, lines)
    assert {e: _shown(o) for e, o in found.items()} == expected
    assert upstreams.shopify.calls.count(GRAPHQL) == _calls(adapter, people, first, lines)
    assert upstreams.shopify.graphql.throttled == 0


async def test_ten_orders_with_line_items_are_whole_at_the_fewest_calls(
    build: Build, upstreams: SampleUpstreams
) -> None:
    upstreams.shopify.graphql.reset(PLANS["plus"])
    people = sorted(upstreams.people, key=lambda p: -len(orders_for(p)))[:50]
    adapter = shop(build, timeout_s=5.0, deadline_s=30.0, graphql=PLUS)
    found = await adapter.fetch_orders_by_email([p.email for p in people], 10, True)
    for person in people:
        truth = orders_for(person)[:10]
        assert len(truth) == 10  # each has more than the 5 of the cheapest read
        got = found[person.email.lower()]
        assert [o.external_id for o in got] == [str(o.id) for o in truth]
        assert [len(o.line_items) for o in got] == [len(o.line_items) for o in truth]
    # 303 points a customer: 3 a query, 17 queries (the REST shop: 50).
    assert upstreams.shopify.calls.count(GRAPHQL) == 17


async def test_an_order_with_more_line_items_than_read_is_re_read_whole(
    build: Build, upstreams: SampleUpstreams
) -> None:
    upstreams.shopify.graphql.reset(PLANS["plus"])
    people = upstreams.people[:20]
    adapter = shop(build, timeout_s=5.0, deadline_s=30.0, graphql={**PLUS, "line_items_first": 1})
    found = await adapter.fetch_orders_by_email([p.email for p in people], 10, True)
    for person in people:
        truth = orders_for(person)[:10]
        got = found[person.email.lower()]
        assert [len(o.line_items) for o in got] == [len(o.line_items) for o in truth]
    assert any(len(o.line_items) > 1 for p in people for o in orders_for(p)[:10])


async def test_customers_known_by_id_alone_get_their_orders(
    build: Build, upstreams: SampleUpstreams
) -> None:
    upstreams.shopify.graphql.reset(PLANS["plus"])
    people = upstreams.people[:30]
    adapter = shop(build, timeout_s=5.0, graphql=PLUS)
    found = await adapter.fetch_orders_by_ids([str(p.shopify_id) for p in people], 5, True)
    assert upstreams.shopify.calls.count(GRAPHQL) == _calls(adapter, people, 5, True)
    for person in people:
        got = found[str(person.shopify_id)]
        assert [o.external_id for o in got] == [str(o.id) for o in orders_for(person)[:5]]
        assert all(o.line_items for o in got)


async def test_a_customer_without_an_email_gets_their_orders_by_shop_id(
    build: Build, upstreams: SampleUpstreams
) -> None:
    upstreams.shopify.graphql.reset(PLANS["plus"])
    adapter = shop(build, timeout_s=5.0, graphql=PLUS)
    federation = Federation({adapter.name: adapter}, UpstreamCache(build_cache("memory://")))
    now = datetime.now(UTC)
    with_email, without = [p for p in upstreams.people if len(orders_for(p)) > 5][:2]
    profiles = [
        CustomerProfile(
            uuid.uuid4(),
            p.email if p is with_email else None,
            None,
            None,
            None,
            None,
            now,
            now,
            (IdentityRecord(adapter.name, str(p.shopify_id)),),
        )
        for p in (with_email, without)
    ]
    outcomes = await federation.orders(profiles, OrdersNeed(10, line_items=True))
    for person, outcome in zip((with_email, without), outcomes, strict=True):
        assert [o.external_id for o in outcome.unwrap() or ()] == [
            str(o.id) for o in orders_for(person)[:10]
        ]
    assert upstreams.shopify.calls.count(GRAPHQL) == 1  # both linked: one read by id


async def test_a_linked_customer_whose_email_is_now_another_shop_customers_gets_their_own_orders(
    build: Build, upstreams: SampleUpstreams
) -> None:
    """The profile is linked to shop customer A, but its e-mail is now B's in the shop
    (changed, recycled, shared): the orders are A's, never B's, as on the REST path."""
    upstreams.shopify.graphql.reset(PLANS["plus"])
    adapter = shop(build, timeout_s=5.0, graphql=PLUS)
    federation = Federation({adapter.name: adapter}, UpstreamCache(build_cache("memory://")))
    now = datetime.now(UTC)
    owner, stranger = [p for p in upstreams.people if len(orders_for(p)) > 2][:2]
    profile = CustomerProfile(
        uuid.uuid4(),
        stranger.email,
        None,
        None,
        None,
        None,
        now,
        now,
        (IdentityRecord(adapter.name, str(owner.shopify_id)),),
    )
    (outcome,) = await federation.orders([profile], OrdersNeed(10, line_items=False))
    got = [o.external_id for o in outcome.unwrap() or ()]
    assert got == [str(o.id) for o in orders_for(owner)[:10]]
    assert not set(got) & {str(o.id) for o in orders_for(stranger)}

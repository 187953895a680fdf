"""The shared cache holds typed JSON: a pickle planted in Redis is never run, and any
entry the gateway did not write is a miss that falls through to the source."""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters import records
from demo.upstreams.runner import SampleUpstreams
from gateway.privacy.consent import ConsentRecord
from gateway.profiles.customers import CustomerProfile, IdentityRecord
from gateway.profiles.profile_cache import _Entry as ProfileEntry
from gateway.upstreams.cache import Entry
from gateway.upstreams.cache_serializer import TypedJsonSerializer
from gateway.upstreams.federation import AnalyticsData
from tests.conftest import GatewayFactory, clean_redis, redis_database_url
from tests.gql_client import gql

REDIS_URL = redis_database_url(14)
NOW = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)


class _Planted:
    """Unpickling this runs ``os.system``: what an attacker would plant."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
async def shared() -> AsyncIterator[str]:
    async with clean_redis(REDIS_URL) as url:
        yield url


async def test_a_pickle_planted_under_a_gateway_key_is_not_run_and_the_read_falls_through(
    gateway: GatewayFactory, samples: SampleUpstreams, shared: str, tmp_path: Path
) -> None:
    person = samples.people[3]
    query = """query($e: String!) { customer(email: $e) { id firstName lifecycleStage
      sources { upstream status } } }"""
    redis = aioredis.from_url(shared)
    try:
        async with gateway(shared) as client:
            first = await gql(client, query, e=person.email)
            customer = first["data"]["customer"]
            assert customer["firstName"] == person.first_name
            keys = sorted(k.decode() for k in await redis.keys("gw*") if isinstance(k, bytes))
            planted = [k for k in keys if customer["id"] in k or person.email in k]
            assert any("hubspot" in k for k in planted)
            assert any("profile" in k for k in planted)
            marker = tmp_path / "pwned"
            for key in planted:
                await redis.set(key, pickle.dumps(_Planted(marker)), keepttl=True)
            calls = samples.hubspot.calls.total

            second = await gql(client, query, e=person.email)

            assert not marker.exists(), "the planted pickle ran"
            again = second["data"]["customer"]
            assert again["firstName"] == person.first_name
            assert again["lifecycleStage"] == customer["lifecycleStage"]
            hubspot = next(s for s in again["sources"] if s["upstream"] == "hubspot")
            assert hubspot["status"] == "OK"  # read from the CRM again, not the cache
            assert samples.hubspot.calls.total > calls
            for key in planted:  # rewritten by this gateway, as JSON
                rewritten = await redis.get(key)
                assert rewritten is not None
                orjson.loads(rewritten)
    finally:
        await redis.aclose()


def _profile() -> CustomerProfile:
    return CustomerProfile(
        id=uuid.uuid4(),
        email="zoë@example.com",
        phone="+442079460958",
        first_name="Zoë",
        last_name=None,
        locale="fr-CA",
        created_at=NOW,
        updated_at=NOW + timedelta(seconds=1),
        identities=(IdentityRecord("hubspot", "51"), IdentityRecord("shopify", "9")),
        consents=(ConsentRecord("email_marketing", True, "api", NOW),),
    )


def _money(amount: str) -> records.Money:
    return records.Money(amount=Decimal(amount), currency="EUR")


def _cached_values() -> list[Any]:
    order = records.Order(
        source="shopify",
        external_id="1001",
        name="#1001",
        created_at=NOW,
        total_price=_money("19.990"),
        line_items=(
            records.LineItem(
                external_id="1", title="Sock «wool»", quantity=2, price=_money("9.995")
            ),
        ),
    )
    event = records.AnalyticsEvent(
        source="segment",
        id="m-1",
        type="track",
        name="Product Viewed",
        timestamp=NOW,
        properties={"product_id": "p1", "price": 12.5, "tags": ["a", None]},
    )
    return [
        Entry(
            records.CrmContact(
                source="hubspot",
                external_id="51",
                email="A@Example.com",
                date_of_birth=date(1990, 2, 28),
                consents=records.Consents(email_marketing=False),
                created_at=NOW,
            ),
            NOW,
        ),
        Entry(
            records.CommerceCustomer(
                source="shopify", external_id="9", total_spent=_money("1234.50"), tags=("vip",)
            ),
            NOW,
        ),
        Entry((order,), NOW),
        Entry((), NOW),
        Entry(None, NOW),
        Entry(AnalyticsData("u-1", (event,)), NOW),
        Entry(records.Product(source="shopify", external_id="p1", title="Hat", handle="hat"), NOW),
        Entry(7, NOW),
        ProfileEntry(_profile(), 1714566615.25),
        "query { customer(id: 1) { id } }",
    ]


@pytest.mark.parametrize("value", _cached_values(), ids=lambda v: type(v).__name__)
def test_every_cached_value_reads_back_equal(value: Any) -> None:
    serializer = TypedJsonSerializer()
    written = serializer.dumps(value)
    assert isinstance(written, bytes)
    orjson.loads(written)  # plain JSON
    assert serializer.loads(written) == value


def test_an_unknown_type_is_refused_when_written_not_silently_pickled() -> None:
    with pytest.raises(TypeError, match="no cache encoding for set"):
        TypedJsonSerializer().dumps({1, 2})


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.integers(-(2**63), 2**63)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["$", "d", "v", "at", "p", "r", "i", "u", "e"]) | st.text(),
            inner,
            max_size=4,
        )
        | st.fixed_dictionaries(
            {
                "$": st.sampled_from(
                    ["entry", "profile", "tuple", "analytics", "CrmContact", "Order"]
                )
            },
            optional={"d": inner, "v": inner, "at": inner, "p": inner, "r": inner, "i": inner},
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | json_values.map(orjson.dumps))
def test_foreign_bytes_are_a_miss_never_an_error(data: bytes) -> None:
    serializer = TypedJsonSerializer()
    found = serializer.loads(data)
    if found is not None:
        # Only what this gateway writes comes back: a value it could have written.
        assert serializer.loads(serializer.dumps(found)) == found


def test_a_pickled_entry_is_a_miss() -> None:
    entry = Entry(records.CrmContact(source="hubspot", external_id="1"), NOW)
    assert TypedJsonSerializer().loads(pickle.dumps(entry)) is None

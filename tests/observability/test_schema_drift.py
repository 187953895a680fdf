"""Schema drift: each adapter checks what it receives against the shape it expects,
reports the field path (never the value), and keeps serving what it can."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from typing import Any, cast

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field

from adapters.errors import UpstreamBadResponse
from adapters.hubspot import HubSpotAdapter
from adapters.payload import Payload, parse_json
from adapters.protocols import CommerceAdapter
from demo.upstreams.runner import SampleUpstreams
from gateway.observability.logs import JsonFormatter
from tests.conftest import GatewayFactory
from tests.gql_client import gql
from tests.observability.drift_calls import Heard, adapters_over, read_everything


@pytest.mark.parametrize("graphql", [False, True], ids=["rest", "graphql"])
async def test_the_sample_upstreams_as_they_are_show_no_drift(
    samples: SampleUpstreams, graphql: bool
) -> None:
    heard = Heard()
    async with adapters_over(samples, heard, graphql=graphql) as adapters:
        await read_everything(adapters, samples)
    assert heard.drifts == []


async def test_a_renamed_field_is_missing_and_unknown_and_the_rest_is_served(
    samples: SampleUpstreams,
) -> None:
    samples.reset()
    samples.hubspot.faults.update(rename_fields={"firstname": "first_name"})
    heard = Heard()
    person = samples.people[5]
    try:
        async with adapters_over(samples, heard) as adapters:
            crm = cast(HubSpotAdapter, adapters["hubspot"])
            found = await crm.fetch_contacts([person.hubspot_id])
    finally:
        samples.reset()
    contact = found[person.hubspot_id]
    assert contact.first_name is None  # what moved is not guessed at
    assert (contact.email, contact.last_name) == (person.email.lower(), person.last_name)
    assert sorted(set(heard.drifts)) == [
        ("hubspot", "results[].properties.first_name", "unknown"),
        ("hubspot", "results[].properties.firstname", "missing"),
    ]


async def test_an_optional_field_of_another_type_is_dropped_and_a_required_one_fails(
    samples: SampleUpstreams,
) -> None:
    samples.reset()
    person = samples.people[6]
    heard = Heard()
    try:
        async with adapters_over(samples, heard) as adapters:
            samples.hubspot.faults.update(retype_fields=["date_of_birth"])
            crm = cast(HubSpotAdapter, adapters["hubspot"])
            contact = await crm.fetch_contact(person.hubspot_id)
            assert contact is not None
            assert contact.date_of_birth is None
            assert contact.email == person.email.lower()
            assert heard.drifts == [("hubspot", "properties.date_of_birth", "type")]

            heard.drifts.clear()
            samples.shopify.faults.update(retype_fields=["orders_count"])
            shop = cast(CommerceAdapter, adapters["shopify"])
            with pytest.raises(UpstreamBadResponse, match="orders_count"):
                await shop.find_customers_by_email([person.email])
            assert heard.drifts == [("shopify", "customers[].orders_count", "type")]
    finally:
        samples.reset()


class _Inner(Payload):
    code: str
    note: str | None = None


class _Outer(Payload):
    id: str
    count: int | None = None
    label: str | None = None
    inner: _Inner | None = None
    items: list[_Inner] = Field(default_factory=list)


_VALID: dict[str, Any] = {
    "id": "a1",
    "count": 3,
    "label": "x",
    "inner": {"code": "c", "note": "n"},
    "items": [{"code": "d", "note": None}],
}
_OPTIONAL = {"count": 3, "label": "x", "inner.note": "n", "items.note": None}


def _retype(document: dict[str, Any], path: str) -> None:
    wrong: dict[str, Any] = {"n": 1}  # an object where a scalar was
    if path == "inner.note":
        document["inner"]["note"] = wrong
    elif path == "items.note":
        document["items"][0]["note"] = wrong
    else:
        document[path] = wrong


@settings(max_examples=60, deadline=None)
@given(st.sets(st.sampled_from(sorted(_OPTIONAL))), st.sets(st.text(min_size=1, max_size=8)))
def test_any_optional_fields_retyped_and_keys_added_are_reported_and_the_rest_served(
    retyped: set[str], added: set[str]
) -> None:
    document = orjson.loads(orjson.dumps(_VALID))
    for path in retyped:
        _retype(document, path)
    extra = {key for key in added if key not in _Outer.model_fields}
    document.update(dict.fromkeys(extra, "v"))
    heard = Heard()
    parsed = parse_json("up", "op", _Outer, orjson.dumps(document), heard)
    assert parsed.id == "a1"
    expected = {path.replace("items.", "items[]."): "type" for path in retyped}
    expected.update(dict.fromkeys(sorted(extra), "unknown"))
    assert {path: kind for _, path, kind in heard.drifts} == expected
    assert len(heard.drifts) == len(expected)  # each once per answer
    for path in retyped & {"count", "label"}:
        assert getattr(parsed, path) is None  # dropped: its default serves
    if "inner.note" in retyped:
        assert parsed.inner is not None
        assert parsed.inner.code == "c"


@pytest.fixture
def drift_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gateway.observability.upstream_telemetry")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def _counter(text: str, path: str, kind: str) -> float:
    labels = f'kind="{kind}",path="{re.escape(path)}",upstream="hubspot"'
    pattern = rf"^gateway_upstream_schema_drift_total\{{{labels}\}} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_the_gateway_counts_drift_logs_its_first_path_once_and_still_answers(
    gateway: GatewayFactory, samples: SampleUpstreams, drift_log: io.StringIO
) -> None:
    query = "query($e: String!) { customer(email: $e) { email company lifecycleStage } }"
    path = "results[].properties.life_cycle_stage"
    async with gateway(cache_url="memory://") as client:
        before = _counter((await client.get("/metrics")).text, path, "unknown")
        samples.hubspot.faults.update(rename_fields={"lifecyclestage": "life_cycle_stage"})
        people = samples.people[40:43]
        answers = [await gql(client, query, e=p.email) for p in people]
        after = _counter((await client.get("/metrics")).text, path, "unknown")
    for person, answer in zip(people, answers, strict=True):
        assert "errors" not in answer, answer
        customer = answer["data"]["customer"]
        assert customer["lifecycleStage"] is None  # renamed away
        assert customer["company"] == person.company  # the rest still served
    assert after - before == 3
    lines = [orjson.loads(line) for line in drift_log.getvalue().splitlines()]
    firsts = [line for line in lines if line.get("drift_path") == path]
    assert len(firsts) <= 1  # once per process (an earlier test may have logged it)
    for person in people:
        for value in (person.email, person.company, person.first_name):
            assert value not in drift_log.getvalue()

"""A number past what a score's column holds (a smallint's 32,767, an integer's 2^31, a
64-bit integer's range) is still a number: the segment is saved, answered and counted,
and ``Customer.segments`` keeps answering for everyone. A saved bound of 1e30 once
stored the segment, then failed every read of it and every customer's ``segments``."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from gateway.settings import Settings
from tests.conftest import unique_email
from tests.gql_client import gql
from tests.scores.people import scored_customer

SAVE = """mutation($name: String!, $filter: SegmentFilter!) {
  saveSegment(name: $name, filter: $filter) { name definition }
}"""
READ = """query($name: String!) {
  segment(name: $name) { definition size customers(first: 10) { nodes { email } } }
}"""
DELETE = "mutation($name: String!) { deleteSegment(name: $name) }"

# The stored customer: frequency 3, rScore 2, monetary 90 (tests/scores/people.py).
CASES: list[tuple[dict[str, Any], bool]] = [
    ({"field": "rScore", "lt": 40000}, True),  # past a smallint
    ({"field": "frequency", "lt": 3e9}, True),  # past an integer
    ({"field": "frequency", "lt": 1e30}, True),  # past a 64-bit integer
    ({"field": "frequency", "gt": -1e30}, True),
    ({"field": "frequency", "eq": 1e20}, False),
    ({"field": "frequency", "ne": 1e20}, True),
    ({"field": "frequency", "in": [1e20, 3]}, True),
    ({"field": "monetary", "lt": 1e300}, True),
]


async def test_a_bound_past_a_columns_range_is_compared_not_a_server_error(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    tag = uuid.uuid4().hex[:8]
    email = unique_email(f"big{tag}")
    await scored_customer(settings, email)
    names = [f"big {tag} {i}" for i in range(len(CASES))]
    try:
        for name, (condition, member) in zip(names, CASES, strict=True):
            only = {"all": [{"field": "email", "eq": email}, condition]}
            saved = await gql(client, SAVE, name=name, filter=only)
            assert "errors" not in saved, (condition, saved)
            body = await gql(client, READ, name=name)
            assert "errors" not in body, (condition, body)
            segment = body["data"]["segment"]
            assert segment["size"] == int(member), condition
            assert [n["email"] for n in segment["customers"]["nodes"]] == [email] * member
        body = await gql(
            client, "query($e: [String!]) { customers(emails: $e) { segments } }", e=[email]
        )
        assert "errors" not in body, body
        assert sorted(body["data"]["customers"][0]["segments"]) == sorted(
            name for name, (_, member) in zip(names, CASES, strict=True) if member
        )
    finally:
        for name in names:  # a stored one must not break other tests' Customer.segments
            await gql(client, DELETE, name=name)


async def test_a_number_too_large_for_a_float_is_refused_and_nothing_saved(
    client: httpx.AsyncClient,
) -> None:
    name = f"huge {uuid.uuid4().hex[:8]}"
    literal = "1" + "0" * 400
    query = (
        "mutation { saveSegment(name: "
        + f'"{name}"'
        + ', filter: {field: "monetary", lt: '
        + literal
        + "}) { name } }"
    )
    body = await gql(client, query)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body
    assert "monetary" in body["errors"][0]["message"]
    body = await gql(client, READ, name=name)
    assert body["data"]["segment"] is None

"""Input the database cannot keep is refused as the client's mistake, on every backend:
NUL characters, over-long locales, moments past what UTC can express. Each was an
"Internal server error." on Postgres (found by tests/resolvers/test_generated_operations.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import unique_email
from tests.gql_client import gql

GRAPHQL_RESPONSE = "application/graphql-response+json"
NUL_LITERALS = [
    'mutation { upsertCustomer(input: {email: "%s", firstName: "a\\u0000b"}) { id } }',
    '{ customer(identity: "hubspot:a\\u0000b") { id } }',
    'mutation { saveTemplate(name: "nul", source: "Hi \\u0000") { version } }',
    'mutation { unmergeCustomer(source: "hubspot", externalId: "a\\u0000") { id } }',
    '{ auditLog(actor: "a\\u0000") { actor } }',
]


async def _post(client: httpx.AsyncClient, query: str, **variables: Any) -> httpx.Response:
    return await client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"accept": GRAPHQL_RESPONSE},
    )


@pytest.mark.parametrize("template", NUL_LITERALS)
async def test_a_nul_character_in_the_document_is_a_request_error(
    client: httpx.AsyncClient, template: str
) -> None:
    email = unique_email("nul")
    response = await _post(client, template.replace("%s", email))
    assert response.status_code == 400, response.text
    body = response.json()
    assert "data" not in body
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "NUL" in error["message"]
    found = await gql(client, "query($e: String!) { customer(email: $e) { id } }", e=email)
    assert found["data"]["customer"] is None  # nothing was written


async def test_a_nul_character_in_the_variables_is_a_request_error(
    client: httpx.AsyncClient,
) -> None:
    email = unique_email("nulvar")
    query = "mutation($input: CustomerInput!) { upsertCustomer(input: $input) { id } }"
    response = await _post(client, query, input={"email": email, "lastName": "x\x00"})
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    by_identity = await _post(
        client, "query($i: String!) { customer(identity: $i) { id } }", i="shopify:1\x00"
    )
    assert by_identity.status_code == 400


async def test_a_locale_longer_than_the_store_keeps_is_refused(client: httpx.AsyncClient) -> None:
    locale = "en-abcdefgh-abcdefgh-abcdefgh-abcdefgh"  # a well-formed tag of 38 characters
    body = await gql(
        client,
        "mutation($e: String!, $l: String) { upsertCustomer(input: {email: $e, locale: $l}) "
        "{ id } }",
        e=unique_email("locale"),
        l=locale,
    )
    [error] = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "locale"}


MOMENTS = [
    '{ auditLog(since: "%s") { actor } }',
    'mutation { saveExperiment(name: "utc", start: "%s", end: "2030-01-01T00:00:00Z", '
    'variants: [{name: "a", strategy: POPULARITY, weight: 1}, '
    '{name: "b", strategy: ITEM_TO_ITEM, weight: 1}]) { name } }',
]


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
@pytest.mark.parametrize("template", MOMENTS, ids=["auditLog", "saveExperiment"])
async def test_a_moment_utc_cannot_express_is_refused(
    client: httpx.AsyncClient, template: str, moment: str
) -> None:
    # Every DateTime argument, not one resolver's: saveExperiment's was an internal
    # error (an outside check), converted for the database after it was accepted.
    response = await _post(client, template % moment)
    assert response.status_code == 400, response.text
    [error] = response.json()["errors"]
    assert "No UTC time is that moment" in error["message"]
    naive = await gql(client, '{ auditLog(since: "2024-01-01T00:00:00", first: 1) { actor } }')
    assert "errors" not in naive  # no offset: taken as UTC

"""The Customer API end to end, in-process, on SQLite and on Postgres."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import unique_email, unique_number
from tests.gql_client import error_codes, gql

UPSERT = """
mutation Upsert($input: CustomerInput!) {
  upsertCustomer(input: $input) {
    id email firstName lastName phone locale identities { source externalId }
  }
}
"""
BY_EMAIL = """query($email: String!) {
  customer(email: $email) {
    id email firstName lastName phone locale identities { source externalId }
  }
}"""
BY_ID = "query($id: ID!) { customer(id: $id) { id email firstName } }"


async def test_upserted_customer_is_found_by_email_and_by_id(client: httpx.AsyncClient) -> None:
    email = unique_email("ada")
    created = await gql(
        client,
        UPSERT,
        input={
            "email": f"  {email.upper()} ",
            "firstName": "Ada",
            "lastName": "Lovelace",
            "phone": "+44 20 7946 0958",
            "locale": "en-GB",
            "identities": [{"source": "hubspot", "externalId": unique_number()}],
        },
    )
    customer = created["data"]["upsertCustomer"]
    assert customer["email"] == email  # trimmed and lower-cased once, at the border
    assert customer["phone"] == "+442079460958"

    by_email = await gql(client, BY_EMAIL, email=email.upper())
    assert by_email["data"]["customer"] == customer
    by_id = await gql(client, BY_ID, id=customer["id"])
    assert by_id["data"]["customer"]["email"] == email


async def test_upsert_updates_only_the_fields_given(client: httpx.AsyncClient) -> None:
    email, shop_id = unique_email(), unique_number()
    first = await gql(
        client, UPSERT, input={"email": email, "firstName": "Grace", "lastName": "Hopper"}
    )
    second = await gql(
        client,
        UPSERT,
        input={
            "email": email,
            "locale": "en-US",
            "identities": [{"source": "shopify", "externalId": shop_id}],
        },
    )
    before, after = first["data"]["upsertCustomer"], second["data"]["upsertCustomer"]
    assert after["id"] == before["id"]
    assert (after["firstName"], after["lastName"], after["locale"]) == ("Grace", "Hopper", "en-US")
    assert after["identities"] == [{"source": "shopify", "externalId": shop_id}]


async def test_malformed_email_is_an_error_naming_the_field(client: httpx.AsyncClient) -> None:
    body = await gql(client, UPSERT, input={"email": "not-an-address", "firstName": "X"})
    assert body["data"] is None
    [error] = body["errors"]
    assert error["path"] == ["upsertCustomer"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "email"}
    assert "email" in error["message"]


async def test_invalid_input_writes_nothing(client: httpx.AsyncClient) -> None:
    email = unique_email()
    body = await gql(client, UPSERT, input={"email": email, "phone": "12"})
    assert error_codes(body) == [("BAD_USER_INPUT", ["upsertCustomer"])]
    assert body["errors"][0]["extensions"]["field"] == "phone"
    assert (await gql(client, BY_EMAIL, email=email))["data"]["customer"] is None


async def test_unknown_customer_is_null_not_an_error(client: httpx.AsyncClient) -> None:
    assert await gql(client, BY_EMAIL, email=unique_email()) == {"data": {"customer": None}}
    assert await gql(client, BY_ID, id="00000000-0000-4000-8000-000000000000") == {
        "data": {"customer": None}
    }


async def test_bad_arguments_are_errors_on_that_field_only(client: httpx.AsyncClient) -> None:
    body = await gql(
        client,
        """{
      bad: customer(id: "not-a-uuid") { id }
      both: customer(id: "00000000-0000-4000-8000-000000000000", email: "a@example.com") { id }
      fine: customer(email: "nobody@example.com") { id }
    }""",
    )
    assert body["data"] == {"bad": None, "both": None, "fine": None}
    assert sorted(error_codes(body)) == [("BAD_USER_INPUT", ["bad"]), ("BAD_USER_INPUT", ["both"])]


async def test_identity_owned_by_another_customer_is_a_conflict(client: httpx.AsyncClient) -> None:
    shared = {"source": "segment", "externalId": unique_email("id")}
    first = await gql(client, UPSERT, input={"email": unique_email(), "identities": [shared]})
    assert "errors" not in first
    second = await gql(client, UPSERT, input={"email": unique_email(), "identities": [shared]})
    assert error_codes(second) == [("CONFLICT", ["upsertCustomer"])]


async def test_concurrent_upserts_of_one_email_make_one_customer(client: httpx.AsyncClient) -> None:
    email = unique_email("race")
    bodies = await asyncio.gather(
        *[gql(client, UPSERT, input={"email": email, "firstName": f"N{i}"}) for i in range(8)]
    )
    ids = {b["data"]["upsertCustomer"]["id"] for b in bodies if b.get("data")}
    assert len(ids) == 1
    assert all("errors" not in b for b in bodies)


async def test_a_write_is_seen_by_the_next_read_despite_the_profile_cache(
    client: httpx.AsyncClient,
) -> None:
    email = unique_email("cached")
    await gql(client, UPSERT, input={"email": email, "firstName": "Before"})
    assert (await gql(client, BY_EMAIL, email=email))["data"]["customer"]["firstName"] == "Before"
    await gql(client, UPSERT, input={"email": email, "firstName": "After"})
    assert (await gql(client, BY_EMAIL, email=email))["data"]["customer"]["firstName"] == "After"

"""A key's scopes: FORBIDDEN on the fields they do not cover, the rest still answered."""

from __future__ import annotations

from starlette.applications import Starlette

from gateway.access.api_keys import Scope
from tests.access.instances import (
    BY_EMAIL,
    UPSERT,
    new_customer,
)
from tests.conftest import (
    api_client,
    unique_email,
)
from tests.gql_client import error_codes, gql


async def test_a_read_key_reads_but_cannot_write(app: Starlette) -> None:
    customer_id, email = await new_customer(app)
    async with api_client(app, Scope.PROFILES_READ) as reader:
        found = await gql(reader, BY_EMAIL, email=email)
        assert found == {"data": {"customer": {"id": customer_id, "email": email}}}

        refused = await gql(reader, UPSERT, email=unique_email("nope"))
        assert error_codes(refused) == [("FORBIDDEN", ["upsertCustomer"])]
        assert refused["errors"][0]["extensions"]["field"] == "upsertCustomer"
        assert "profiles:write" in refused["errors"][0]["message"]

        # A forbidden field next to an allowed one: the allowed one still answers.
        mixed = await gql(
            reader,
            "query($email: String!, $id: ID!) { customer(email: $email) { id } "
            "exportCustomer(id: $id) }",
            email=email,
            id=customer_id,
        )
    assert mixed["data"] == {"customer": {"id": customer_id}, "exportCustomer": None}
    assert error_codes(mixed) == [("FORBIDDEN", ["exportCustomer"])]
    assert mixed["errors"][0]["extensions"]["field"] == "exportCustomer"


async def test_a_write_key_is_refused_admin_fields_and_keeps_its_own(app: Starlette) -> None:
    customer_id, _ = await new_customer(app)
    async with api_client(app, Scope.PROFILES_WRITE) as writer:
        body = await gql(
            writer,
            "mutation($id: ID!) { setConsent(customerId: $id, purpose: ANALYTICS, "
            "granted: true) { purpose granted source } forgetCustomer(id: $id) { customerId } }",
            id=customer_id,
        )
        assert body["data"] == {
            "setConsent": {"purpose": "ANALYTICS", "granted": True, "source": "api"},
            "forgetCustomer": None,
        }
        assert error_codes(body) == [("FORBIDDEN", ["forgetCustomer"])]
        audit = await gql(writer, "{ auditLog { actor } }")
        assert error_codes(audit) == [("FORBIDDEN", ["auditLog"])]
        # A write key is not a read key: profiles:write alone does not read profiles.
        read = await gql(writer, "query($id: ID!) { customer(id: $id) { id } }", id=customer_id)
        assert error_codes(read) == [("FORBIDDEN", ["customer"])]
    # The customer is still there: the refused erasure did nothing.
    async with api_client(app) as admin:
        still = await gql(admin, "query($id: ID!) { customer(id: $id) { id } }", id=customer_id)
    assert still["data"]["customer"] == {"id": customer_id}

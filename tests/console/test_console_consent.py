"""The console's page of a person, as their consent stands."""

from __future__ import annotations

import uuid

from starlette.applications import Starlette

from gateway.access.api_keys import Scope
from tests.console.session_client import console_client
from tests.gql_client import gql


async def test_the_page_of_a_person_who_only_unsubscribed_opens(app: Starlette) -> None:
    # An unsubscribe (an ESP's, or setConsent) leaves one statement, for email marketing,
    # and none for the other purposes: the page of such a person answered 500.
    async with console_client(app, Scope.ADMIN) as client:
        http = client.http
        http.headers["Authorization"] = f"Bearer {client.key}"
        email = f"zq-{uuid.uuid4().hex[:10]}@example.org"
        made = await gql(
            http, "mutation($e: String!) { upsertCustomer(input: {email: $e}) { id } }", e=email
        )
        customer_id = made["data"]["upsertCustomer"]["id"]
        await gql(
            http,
            "mutation($id: ID!) { setConsent(customerId: $id, purpose: EMAIL_MARKETING, "
            'granted: false, source: "sendgrid:unsubscribe") { granted } }',
            id=customer_id,
        )
        page = await http.get(f"/console/customers/{customer_id}")
        assert page.status_code == 200, page.text
        assert 'data-consent="emailMarketing"><span class="bad">refused' in page.text
        assert "refused by sendgrid:unsubscribe" in page.text

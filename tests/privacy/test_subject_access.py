"""Subject access: an export holds everything stored about a customer, what was derived
from their behaviour included, and the privacy fields need their scopes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from demo.upstreams.runner import SampleUpstreams
from gateway.access.api_keys import Scope
from tests.conftest import (
    unique_email,
)
from tests.gql_client import error_codes
from tests.ingest.webhook_requests import (
    segment_request,
)
from tests.privacy.instances import SET_CONSENT, person_for

# Every stored time an export shows, by section and field: each must carry its zone.
_TIMES = [
    ("identities", "linked_at"),
    ("attributes", "observed_at"),
    ("consents", "recorded_at"),
    ("events", "occurred_at"),
]


async def test_export_holds_everything_stored(instance: Any) -> None:
    email, user_id = unique_email("export"), f"user-{uuid.uuid4().hex[:8]}"
    async with instance() as gw:
        identify = {
            "type": "identify",
            "messageId": str(uuid.uuid4()),
            "userId": user_id,
            "traits": {"email": email, "firstName": "Mary"},
            "timestamp": "2026-11-23T10:00:00Z",
        }
        track = {
            "type": "track",
            "messageId": str(uuid.uuid4()),
            "userId": user_id,
            "event": "Product Viewed",
            "properties": {"sku": "A-1"},
        }
        for payload in (identify, track):
            response = await gw.http.post(**segment_request(payload))
            assert response.json()["status"] == "processed", response.text
        customer_id = response.json()["events"][0]["customerId"]
        await gw.gql(
            SET_CONSENT, id=customer_id, purpose="ANALYTICS", granted=True, source="signup"
        )
        body = await gw.gql("query($id: ID!) { exportCustomer(id: $id) }", id=customer_id)
        unknown = await gw.gql("query($id: ID!) { exportCustomer(id: $id) }", id=str(uuid.uuid4()))
    assert "errors" not in body, body
    exported = body["data"]["exportCustomer"]
    assert exported["customer"]["id"] == customer_id
    assert exported["customer"]["email"] == email
    assert exported["customer"]["first_name"] == "Mary"
    assert {"source": "segment", "external_id": user_id} in [
        {k: i[k] for k in ("source", "external_id")} for i in exported["identities"]
    ]
    assert {"name": "first_name", "value": "Mary"} in [
        {k: a[k] for k in ("name", "value")} for a in exported["attributes"]
    ]
    assert [(c["purpose"], c["granted"], c["source"]) for c in exported["consents"]] == [
        ("analytics", True, "signup")
    ]
    assert [e["type"] for e in exported["events"]] == ["identify", "track:Product Viewed"]
    assert exported["events"][1]["properties"]["properties"] == {"sku": "A-1"}
    stamps = [exported["exported_at"], exported["customer"]["created_at"]]
    stamps += [row[f] for part, f in _TIMES for row in exported[part]]
    assert all(datetime.fromisoformat(t).tzinfo is not None for t in stamps), stamps
    assert exported["recommendations"] is None  # nothing built for them yet
    assert unknown == {"data": {"exportCustomer": None}}


async def test_export_includes_what_was_derived_from_behaviour(
    instance: Any, samples: SampleUpstreams, privacy_url: str
) -> None:
    person = person_for(samples, privacy_url, personalisation=True)
    async with instance() as gw:
        found = await gw.gql("query($e: String!) { customer(email: $e) { id } }", e=person.email)
        customer_id = found["data"]["customer"]["id"]
        body = await gw.gql("query($id: ID!) { exportCustomer(id: $id) }", id=customer_id)
    exported = body["data"]["exportCustomer"]
    assert {e["source"] for e in exported["events"]} >= {"segment"}  # their stored history
    derived = exported["recommendations"]
    assert derived is not None
    assert "items" in derived
    assert "purchased" in derived
    assert datetime.fromisoformat(derived["built_at"]).tzinfo is not None


async def test_privacy_fields_need_their_scopes(instance: Any) -> None:
    async with instance(scopes=(Scope.PROFILES_READ,)) as gw:
        body = await gw.gql("query($id: ID!) { exportCustomer(id: $id) }", id=str(uuid.uuid4()))
        consent = await gw.gql(
            SET_CONSENT, id=str(uuid.uuid4()), purpose="ANALYTICS", granted=True, source="api"
        )
    assert error_codes(body) == [("FORBIDDEN", ["exportCustomer"])]
    assert error_codes(consent) == [("FORBIDDEN", ["setConsent"])]

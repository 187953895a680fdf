"""``customerUpdated`` over graphql-transport-ws: fires after the commit, only for the
customer asked about, in-process and across instances through Redis pub/sub."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from starlette.testclient import TestClient, WebSocketTestSession

from gateway.access.api_keys import Scope
from gateway.settings import load_settings
from tests.conftest import IN_CI, authorize, redis_database_url, unique_email
from tests.in_process import services_of
from tests.ingest.webhook_requests import (
    hubspot_change,
    hubspot_request,
    realtime_app,
    shopify_request,
)

REDIS_URL = redis_database_url(13)
TESTSERVER = "http://testserver"
SUBSCRIPTION = (
    "subscription($id: ID!) { customerUpdated(id: $id) "
    "{ id source eventType eventId changedFields occurredAt } }"
)


@pytest.fixture
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except (OSError, redis.ConnectionError) as exc:
        if IN_CI:
            pytest.fail(f"Redis is not reachable ({exc}); CI requires it", pytrace=False)
        pytest.skip(f"Redis is not reachable ({exc})")
    yield REDIS_URL
    client.flushdb()
    client.close()


def _new_customer(client: TestClient) -> str:
    request = shopify_request(
        {"id": uuid.uuid4().int % 10**12 + 1, "email": unique_email("sub"), "first_name": "Ada"},
        topic="customers/create",
    )
    response = client.post(**request)
    assert response.status_code == 200, response.text
    customer_id: str = response.json()["events"][0]["customerId"]
    return customer_id


def _hubspot_id(client: TestClient, customer_id: str) -> int:
    """Give the customer a HubSpot contact id (through a webhook, the way it happens)."""
    contact = uuid.uuid4().int % 10**12 + 1
    email = client.post(
        "/graphql", json={"query": f'{{ customer(id: "{customer_id}") {{ email }} }}'}
    ).json()["data"]["customer"]["email"]
    response = client.post(**hubspot_request([hubspot_change(contact, "email", email)], TESTSERVER))
    assert response.json()["events"][0]["customerId"] == customer_id
    return contact


def _receive(ws: WebSocketTestSession) -> Any:
    """One protocol message, from a text frame (what graphql-ws clients expect) or, as
    the view answers today (orjson bytes), a binary one."""
    message = ws.receive()
    assert message["type"] == "websocket.send", message
    return orjson.loads(message.get("text") or message["bytes"])


def _subscribe(ws: WebSocketTestSession, customer_id: str) -> None:
    ws.send_json({"type": "connection_init"})
    assert _receive(ws)["type"] == "connection_ack"
    ws.send_json(
        {
            "id": "1",
            "type": "subscribe",
            "payload": {"query": SUBSCRIPTION, "variables": {"id": customer_id}},
        }
    )


def _wait_subscribed(client: TestClient, customer_id: str) -> None:
    """The subscription is live once the notifier counts it (with Redis: subscribed)."""
    notifications = services_of(client).notifications
    deadline = time.monotonic() + 5
    while notifications.subscribers(uuid.UUID(customer_id)) == 0:
        assert time.monotonic() < deadline, "the subscription never started"
        time.sleep(0.01)


def _first_name(client: TestClient, customer_id: str) -> Any:
    body = client.post(
        "/graphql", json={"query": f'{{ customer(id: "{customer_id}") {{ firstName }} }}'}
    ).json()
    return body["data"]["customer"]["firstName"]


def test_customer_updated_fires_after_the_commit_and_only_for_that_customer(
    database_url: str,
) -> None:
    app = realtime_app(load_settings(database_url=database_url, cache_url="memory://"))
    with TestClient(app) as client:
        authorize(client)
        watched, other = _new_customer(client), _new_customer(client)
        watched_contact = _hubspot_id(client, watched)
        other_contact = _hubspot_id(client, other)
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            _subscribe(ws, watched)
            _wait_subscribed(client, watched)
            # A change to someone else first: had it been delivered, it would arrive first.
            client.post(
                **hubspot_request([hubspot_change(other_contact, "firstname", "Eve")], TESTSERVER)
            )
            change = hubspot_change(watched_contact, "firstname", "Grace")
            client.post(**hubspot_request([change], TESTSERVER))
            message = _receive(ws)
            # Delivered after the commit: a read now already sees the new value.
            assert _first_name(client, watched) == "Grace"
            ws.send_json({"id": "1", "type": "complete"})
    assert message["type"] == "next"
    assert message["payload"]["data"]["customerUpdated"] == {
        "id": watched,
        "source": "hubspot",
        "eventType": "contact.propertyChange",
        "eventId": str(change["eventId"]),
        "changedFields": ["firstName"],
        "occurredAt": message["payload"]["data"]["customerUpdated"]["occurredAt"],
    }


def test_a_bad_id_is_an_error_on_the_subscription(database_url: str) -> None:
    app = realtime_app(load_settings(database_url=database_url, cache_url="memory://"))
    with TestClient(app) as client:
        authorize(client)
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            _subscribe(ws, "not-a-uuid")
            message = _receive(ws)
    assert message["type"] in {"error", "next"}
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert "not a customer id" in errors[0]["message"]


@pytest.mark.parametrize(
    ("scopes", "customer", "code"),
    [
        ((Scope.PROFILES_READ,), "not-a-uuid", "BAD_USER_INPUT"),
        ((Scope.PROFILES_WRITE,), str(uuid.uuid4()), "FORBIDDEN"),
    ],
)
def test_a_subscription_error_carries_its_code(
    database_url: str, scopes: tuple[Scope, ...], customer: str, code: str
) -> None:
    """As over HTTP: a client tells a refusal from a bad argument by extensions.code
    (subscription errors had none)."""
    app = realtime_app(load_settings(database_url=database_url, cache_url="memory://"))
    with TestClient(app) as client:
        authorize(client, *scopes)
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            _subscribe(ws, customer)
            message = _receive(ws)
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert [e["extensions"]["code"] for e in errors] == [code]


def test_a_webhook_on_one_instance_notifies_a_subscriber_on_another(
    database_url: str, redis_url: str
) -> None:
    settings = load_settings(database_url=database_url, cache_url=redis_url)
    with TestClient(realtime_app(settings)) as one, TestClient(realtime_app(settings)) as two:
        authorize(one)
        authorize(two)
        customer = _new_customer(one)
        contact = _hubspot_id(one, customer)
        assert _first_name(two, customer) == "Ada"  # now cached in Redis, for both
        with two.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            _subscribe(ws, customer)
            _wait_subscribed(two, customer)
            one.post(**hubspot_request([hubspot_change(contact, "firstname", "Hedy")], TESTSERVER))
            message = _receive(ws)
            # Instance one dropped the shared cache entry: instance two reads the new value.
            assert _first_name(two, customer) == "Hedy"
    update = message["payload"]["data"]["customerUpdated"]
    assert (update["id"], update["source"], update["changedFields"]) == (
        customer,
        "hubspot",
        ["firstName"],
    )

"""WebSocket subscriptions authenticate in ``connection_init``; without a key they are rejected."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from gateway.access.api_keys import Scope
from gateway.settings import load_settings
from resolvers.app import create_app
from resolvers.http.view import GatewayGraphQL
from tests.access.instances import (
    UPSERT,
)
from tests.conftest import (
    bearer,
    issue_key,
    unique_email,
)
from tests.in_process import services_of

SUBSCRIPTION = "subscription($id: ID!) { customerUpdated(id: $id) { id eventType changedFields } }"


def _receive(ws: Any) -> Any:
    message = ws.receive()
    assert message["type"] == "websocket.send", message
    return orjson.loads(message.get("text") or message["bytes"])


@pytest.fixture
def ws_client(database_url: str) -> Iterator[TestClient]:
    app = create_app(load_settings(database_url=database_url, cache_url="memory://"))
    with TestClient(app) as client:
        yield client


def test_a_websocket_authenticates_in_connection_init(ws_client: TestClient) -> None:
    portal = ws_client.portal
    assert portal is not None
    key = portal.call(issue_key, ws_client, Scope.PROFILES_READ)
    writer = portal.call(issue_key, ws_client, Scope.PROFILES_WRITE)
    email = unique_email("ws")
    created = ws_client.post(
        "/graphql", json={"query": UPSERT, "variables": {"email": email}}, headers=bearer(writer)
    )
    customer_id = created.json()["data"]["upsertCustomer"]["id"]
    notifications = services_of(ws_client).notifications
    with ws_client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}})
        assert _receive(ws)["type"] == "connection_ack"
        ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": SUBSCRIPTION, "variables": {"id": customer_id}},
            }
        )
        while notifications.subscribers(uuid.UUID(customer_id)) == 0:
            portal.call(asyncio.sleep, 0.01)
        consent = ws_client.post(
            "/graphql",
            json={
                "query": "mutation($id: ID!) { setConsent(customerId: $id, "
                "purpose: EMAIL_MARKETING, granted: false) { granted } }",
                "variables": {"id": customer_id},
            },
            headers=bearer(writer),
        )
        assert consent.json()["data"] == {"setConsent": {"granted": False}}, consent.text
        message = _receive(ws)
        ws.send_json({"id": "1", "type": "complete"})
    assert message["type"] == "next"
    assert message["payload"]["data"]["customerUpdated"] == {
        "id": customer_id,
        "eventType": "consent",
        "changedFields": ["consent"],
    }


def test_a_websocket_without_a_key_is_rejected(ws_client: TestClient) -> None:
    with ws_client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init"})
        closed = ws.receive()
    assert closed["type"] == "websocket.close"
    assert closed["code"] == 4403

    with ws_client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": {"Authorization": "Bearer gwk_bad"}})
        closed = ws.receive()
    assert closed["type"] == "websocket.close"
    assert closed["code"] == 4403

    # A bad key in the header is refused before the socket is accepted.
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        ws_client.websocket_connect(
            "/graphql", subprotocols=["graphql-transport-ws"], headers=bearer("gwk_bad")
        ),
    ):
        pass
    assert refused.value.code == 4401


def test_a_message_over_the_body_limit_closes_the_socket_unparsed(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An outside check: a socket is let in before its key is known, and one 16 MiB
    # message of nested lists was parsed on the event loop (1.3-4.5 s of every request
    # the worker held), keyless, before anything looked at its size or its key.
    parsed: list[int] = []
    decode = GatewayGraphQL.decode_json

    def counted(self: GatewayGraphQL, data: str | bytes) -> object:
        parsed.append(len(data))
        return decode(self, data)

    monkeypatch.setattr(GatewayGraphQL, "decode_json", counted)
    settings = load_settings(database_url=database_url, cache_url="memory://", max_body_bytes=4096)
    huge = '{"type":"connection_init","payload":{"a":[' + ",".join(["[]"] * 3000) + "]}}"
    with TestClient(create_app(settings)) as client:
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            ws.send_text(huge)
            closed = ws.receive()
        assert (closed["type"], closed["code"]) == ("websocket.close", 1009)
        assert parsed == []
        # Within the limit, the same socket's protocol goes on as before.
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            ws.send_json({"type": "connection_init"})
            assert ws.receive()["code"] == 4403
        assert parsed


def test_a_subscribe_that_does_not_parse_is_refused_to_its_client_and_not_logged(
    ws_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    # An outside check: the syntax error escaped into Strawberry's task runner, which
    # logged it with the query's text (a name and a phone in the log) and sent the
    # client a bare "complete".
    portal = ws_client.portal
    assert portal is not None
    key = portal.call(issue_key, ws_client, Scope.PROFILES_WRITE)
    broken = 'mutation { upsertCustomer(input: {firstName: "Ada", phone: "+44 20 7946 0999"}'
    with ws_client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}})
        assert _receive(ws)["type"] == "connection_ack"
        ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": broken}})
        closed = ws.receive()
    assert (closed["type"], closed["code"]) == ("websocket.close", 4400), closed
    assert "Syntax Error" in closed["reason"]
    assert "7946" not in caplog.text
    assert "Ada" not in caplog.text

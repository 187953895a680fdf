"""Signed webhook requests as each source sends them, the gateway that takes them, and
the row counts that show what a refused request did not write. Shared by the webhook
tests here and by the privacy, identity and database tests that feed webhooks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import SecretStr
from sqlalchemy import func, select
from starlette.applications import Starlette

from adapters.config import UpstreamsConfig
from gateway.db.engine import create_engine
from gateway.db.models import Attribute, Customer, Event, Identity
from gateway.ingest.signatures import hubspot_signature
from gateway.settings import Settings
from resolvers.app import create_app

SECRETS = {
    "shopify": SecretStr("shpss_test_secret"),
    "hubspot": SecretStr("hubspot-client-secret"),
    "segment": SecretStr("segment-shared-secret"),
}


BASE = "http://gw"


PROFILE = "query($email: String!) { customer(email: $email) { id firstName lastName } }"


def realtime_app(
    settings: Settings,
    secrets: Mapping[str, SecretStr] = SECRETS,
    upstreams: UpstreamsConfig | None = None,
) -> Starlette:
    return create_app(
        settings.model_copy(update={"webhook_secrets": dict(secrets)}), upstreams=upstreams
    )


def secret_of(source: str) -> bytes:
    return SECRETS[source].get_secret_value().encode()


def shopify_request(
    payload: Any, topic: str = "customers/update", webhook_id: str | None = None
) -> dict[str, Any]:
    body = orjson.dumps(payload)
    digest = base64.b64encode(hmac.new(secret_of("shopify"), body, hashlib.sha256).digest())
    headers = {
        "X-Shopify-Hmac-Sha256": digest.decode(),
        "X-Shopify-Topic": topic,
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "content-type": "application/json",
    }
    return {"url": "/webhooks/shopify", "content": body, "headers": headers}


def hubspot_request(
    events: list[dict[str, Any]], base: str = BASE, timestamp_ms: int | None = None
) -> dict[str, Any]:
    body = orjson.dumps(events)
    timestamp = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    signature = hubspot_signature(
        SECRETS["hubspot"].get_secret_value(), "POST", f"{base}/webhooks/hubspot", body, timestamp
    )
    headers = {
        "X-HubSpot-Signature-v3": signature,
        "X-HubSpot-Request-Timestamp": timestamp,
        "content-type": "application/json",
    }
    return {"url": "/webhooks/hubspot", "content": body, "headers": headers}


def segment_request(payload: Any) -> dict[str, Any]:
    body = orjson.dumps(payload)
    signature = hmac.new(secret_of("segment"), body, hashlib.sha1).hexdigest()
    return {
        "url": "/webhooks/segment",
        "content": body,
        "headers": {"X-Signature": signature, "content-type": "application/json"},
    }


def hubspot_change(
    object_id: int, name: str, value: str, event_id: int | None = None
) -> dict[str, Any]:
    return {
        "eventId": event_id or uuid.uuid4().int % 10**12,
        "subscriptionId": 1,
        "portalId": 62515,
        "occurredAt": int(time.time() * 1000),
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": object_id,
        "propertyName": name,
        "propertyValue": value,
        "changeSource": "CRM",
    }


def external_id() -> int:
    return uuid.uuid4().int % 10**12 + 1


async def row_counts(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return {
                model.__tablename__: int(
                    await connection.scalar(select(func.count()).select_from(model)) or 0
                )
                for model in (Event, Customer, Identity, Attribute)
            }
    finally:
        await engine.dispose()

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
from urllib.parse import urlencode

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr
from sqlalchemy import func, select
from starlette.applications import Starlette

from adapters.config import UpstreamsConfig
from gateway.db.engine import create_engine
from gateway.db.models import Attribute, Customer, Event, Identity
from gateway.ingest.signatures import hubspot_signature
from gateway.settings import Settings
from resolvers.app import create_app

# SendGrid's signing key pair, made for this test run: the gateway is given the public
# half as SendGrid shows it (base64 DER SubjectPublicKeyInfo).
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()

SECRETS = {
    "shopify": SecretStr("shpss_test_secret"),
    "hubspot": SecretStr("hubspot-client-secret"),
    "segment": SecretStr("segment-shared-secret"),
    "sendgrid": SecretStr(SENDGRID_PUBLIC),
    "mandrill": SecretStr("mandrill-webhook-key"),
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


def written(payload: Any) -> bytes:
    """``payload`` as a body; bytes are one written already (``json.dumps``'s, say, which
    escapes the lone surrogates orjson will not write), sent as they are."""
    return payload if isinstance(payload, bytes) else orjson.dumps(payload)


def shopify_request(
    payload: Any, topic: str = "customers/update", webhook_id: str | None = None
) -> dict[str, Any]:
    body = written(payload)
    digest = base64.b64encode(hmac.new(secret_of("shopify"), body, hashlib.sha256).digest())
    headers = {
        "X-Shopify-Hmac-Sha256": digest.decode(),
        "X-Shopify-Topic": topic,
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "content-type": "application/json",
    }
    return {"url": "/webhooks/shopify", "content": body, "headers": headers}


def hubspot_request(
    events: list[dict[str, Any]] | bytes, base: str = BASE, timestamp_ms: int | None = None
) -> dict[str, Any]:
    body = written(events)
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
    body = written(payload)
    signature = hmac.new(secret_of("segment"), body, hashlib.sha1).hexdigest()
    return {
        "url": "/webhooks/segment",
        "content": body,
        "headers": {"X-Signature": signature, "content-type": "application/json"},
    }


def sendgrid_request(
    events: list[dict[str, Any]],
    timestamp: int | None = None,
    key: ec.EllipticCurvePrivateKey = SENDGRID_KEY,
) -> dict[str, Any]:
    """A batch signed as SendGrid signs it: ECDSA P-256 over timestamp + raw body."""
    return sendgrid_signed(orjson.dumps(events), timestamp, key)


def sendgrid_signed(
    body: bytes,
    timestamp: int | None = None,
    key: ec.EllipticCurvePrivateKey = SENDGRID_KEY,
) -> dict[str, Any]:
    """Any body, signed as SendGrid signs a batch."""
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        "content-type": "application/json",
    }
    return {"url": "/webhooks/sendgrid", "content": body, "headers": headers}


def sendgrid_event(email: str, event: str, **fields: Any) -> dict[str, Any]:
    return {
        "email": email,
        "timestamp": int(time.time()),
        "event": event,
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": f"{uuid.uuid4().hex[:22]}.filter0001.1.0",
        **fields,
    }


def mandrill_request(events: list[dict[str, Any]], base: str = BASE) -> dict[str, Any]:
    """A form signed as Mandrill signs it: base64 HMAC-SHA1 of the URL, then each POST
    key and value sorted by key, computed here independently of the gateway's code."""
    return mandrill_signed(orjson.dumps(events).decode(), base)


def mandrill_signed(value: str, base: str = BASE) -> dict[str, Any]:
    """Any ``mandrill_events`` value, signed as Mandrill signs its form."""
    url = f"{base}/webhooks/mandrill"
    message = url + "mandrill_events" + value
    key = SECRETS["mandrill"].get_secret_value().encode()
    signature = base64.b64encode(hmac.new(key, message.encode(), hashlib.sha1).digest())
    return {
        "url": "/webhooks/mandrill",
        "content": urlencode({"mandrill_events": value}).encode(),
        "headers": {
            "X-Mandrill-Signature": signature.decode(),
            "content-type": "application/x-www-form-urlencoded",
        },
    }


def mandrill_event(email: str, event: str, **fields: Any) -> dict[str, Any]:
    message_id = uuid.uuid4().hex
    return {
        "event": event,
        "_id": message_id,
        "ts": int(time.time()),
        "msg": {"_id": message_id, "email": email, "ts": int(time.time()), "state": "sent"},
        **fields,
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

"""The sample ESP: what an email service provider does around the gateway during a send.

It renders a campaign's stored template for its recipients through ``renderBatch`` (the
send id passed along, so each recommendation list shown is recorded for that send),
delivers the bodies to simulated recipients, and reports what they did as SendGrid
reports it: signed Event Webhook batches (ECDSA P-256 over the timestamp and the body,
with the send id as a custom argument). Orders that follow come in as the shop reports
them: signed Shopify ``orders/create`` webhooks. Its keys are made per run; the gateway
it talks to is given the public half (``webhook_secrets()``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from demo.people.population import Person

BATCH = 1000  # events per SendGrid post, as SendGrid batches them
RENDER_BATCH = 250  # customers per renderBatch request
_LINK = re.compile(r'<a data-product="(?P<product>[^"]*)" href="(?P<url>[^"]*)">')
_RENDER = """
query($name: String!, $ids: [ID!]!, $send: String) {
  renderBatch(name: $name, customerIds: $ids, sendId: $send) { customerId body error { code } }
}
"""
# The campaign's template: each recommended product as a link the ESP can find again.
TEMPLATE = (
    "<p>Hello {{ first_name }}, picked for you:</p>\n"
    "{% for p in recommendations limit: 3 %}"
    '<a data-product="{{ p.id }}" href="{{ p.url }}">{{ p.title }}</a>\n'
    "{% endfor %}"
)


@dataclass(frozen=True, slots=True)
class Link:
    product_id: str
    url: str


class SampleEsp:
    def __init__(self, client: httpx.AsyncClient) -> None:
        """``client``: the gateway's base URL and a key that may render and save."""
        self.client = client
        self._sendgrid = ec.generate_private_key(ec.SECP256R1())
        self._shopify = secrets.token_urlsafe(32)

    def webhook_secrets(self) -> dict[str, str]:
        """What the gateway must be given to accept this ESP's (and shop's) webhooks."""
        public = self._sendgrid.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {"sendgrid": base64.b64encode(public).decode(), "shopify": self._shopify}

    async def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        answer = await self.client.post("/graphql", json={"query": query, "variables": variables})
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
        if body.get("errors"):
            raise RuntimeError(f"the gateway refused: {body['errors'][0]['message']}")
        data: dict[str, Any] = body["data"]
        return data

    async def render(
        self, template: str, customer_ids: Sequence[str], send_id: str
    ) -> dict[str, list[Link]]:
        """Each recipient's email, as the links to the products it recommends."""
        links: dict[str, list[Link]] = {}
        for start in range(0, len(customer_ids), RENDER_BATCH):
            part = list(customer_ids[start : start + RENDER_BATCH])
            data = await self.graphql(_RENDER, name=template, ids=part, send=send_id)
            for item in data["renderBatch"]:
                if item["body"] is not None:
                    links[item["customerId"]] = [
                        Link(m["product"], m["url"].replace("&amp;", "&"))
                        for m in _LINK.finditer(item["body"])
                    ]
        return links

    async def report(self, events: Sequence[dict[str, Any]]) -> int:
        """Post SendGrid events in signed batches; returns how many the gateway stored."""
        stored = 0
        for start in range(0, len(events), BATCH):
            body = orjson.dumps(list(events[start : start + BATCH]))
            stamp = str(int(time.time()))
            signature = self._sendgrid.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
            answer = await self.client.post(
                "/webhooks/sendgrid",
                content=body,
                headers={
                    "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                    "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
                    "content-type": "application/json",
                },
            )
            answer.raise_for_status()
            stored += sum(e["status"] == "processed" for e in answer.json()["events"])
        return stored

    async def order(self, person: Person, product_id: str, at: float) -> None:
        """The shop's webhook of an order ``person`` placed at ``at`` (epoch seconds)."""
        order = {
            "id": uuid.uuid4().int % 10**12,
            "email": person.email,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
            "total_price": "49.00",
            "currency": "USD",
            "line_items": [{"product_id": int(product_id), "quantity": 1}],
            "customer": {"id": person.shopify_id, "email": person.email},
        }
        body = orjson.dumps(order)
        digest = hmac.new(self._shopify.encode(), body, hashlib.sha256).digest()
        answer = await self.client.post(
            "/webhooks/shopify",
            content=body,
            headers={
                "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
                "X-Shopify-Topic": "orders/create",
                "X-Shopify-Webhook-Id": str(uuid.uuid4()),
                "content-type": "application/json",
            },
        )
        answer.raise_for_status()


def sendgrid_event(
    person: Person, kind: str, at: float, send_id: str, **fields: Any
) -> dict[str, Any]:
    """One SendGrid event for ``person``, carrying the send as a custom argument."""
    return {
        "email": person.email,
        "timestamp": int(at),
        "event": kind,
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": f"{uuid.uuid4().hex[:22]}.filter0001.1.0",
        "send_id": send_id,
        **fields,
    }

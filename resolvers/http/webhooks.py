"""``POST /webhooks/{source}``: the HTTP face of webhooks (gateway/ingest/webhook_receiver.py).

Refusals are answered with a JSON body naming the reason: 404 for a source that does not
exist or has no secret, 413 over the body limit, 401 for a bad signature, 400 or 422 for
a body that cannot be accepted (an ESP event for an address no customer has is
accepted and ``ignored``: nothing is stored; in an ESP batch, an event with a bad field,
a NUL or an unpaired surrogate escape among them, is ``rejected`` with its reason and
field, and the rest of the batch is stored; elsewhere the surrogate is a 422), 503
with ``Retry-After`` when the database stayed busy
(the events before the failing one were stored; a resend finds them duplicates).
Accepted events are listed with what became of each.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.ingest.json_text import PayloadError
from gateway.ingest.signatures import SignatureError
from gateway.ingest.webhook_receiver import (
    NotStored,
    SignedRequest,
    SourceNotConfigured,
    UnknownSource,
    Webhooks,
)
from gateway.ingest.webhooks import Ingested
from gateway.upstreams.event_store import ESP_SOURCES
from resolvers.state import services_of

MAX_BODY_BYTES = 1 << 20  # Shopify's largest order payloads stay well under this
# The ESPs' own limit is a setting (GATEWAY_ESP_WEBHOOK_MAX_BODY_BYTES), in the body
# limit middleware too.


async def webhook_endpoint(request: Request) -> JSONResponse:
    """``POST /webhooks/{source}`` (and ``HEAD``/``GET`` for Mandrill's URL check)."""
    webhooks: Webhooks = services_of(request).webhooks
    source = request.path_params["source"]
    try:
        webhooks.secret_of(source)
    except UnknownSource as exc:
        return _refuse(404, "unknown_source", str(exc))
    except SourceNotConfigured as exc:
        return _refuse(404, "source_not_configured", str(exc))
    if request.method in ("GET", "HEAD"):
        if source != "mandrill":
            response = _refuse(405, "method_not_allowed", "webhooks are delivered by POST")
            response.headers["Allow"] = "POST"
            return response
        # Mailchimp Transactional checks a webhook URL with an unsigned HEAD (or GET)
        # when it is added, and wants a 200: nothing is read or stored.
        return JSONResponse({"status": "ok"})
    limit = MAX_BODY_BYTES
    if source in ESP_SOURCES:  # a Mandrill batch of 1,000 events is about 2 MB
        limit = services_of(request).settings.esp_webhook_max_body_bytes
    if int(request.headers.get("content-length") or 0) > limit:
        return _refuse(413, "too_large", f"bodies are limited to {limit} bytes")
    signed = SignedRequest(request.method, str(request.url), request.headers, await request.body())
    try:
        results = await webhooks.receive(source, signed)
    except SignatureError as exc:
        return _refuse(401, exc.code, exc.reason)
    except PayloadError as exc:
        return _refuse(exc.status, "invalid_payload", exc.reason, exc.field)
    except NotStored:
        # 5xx with Retry-After only here: the events not stored are worth resending.
        response = _refuse(503, "busy", "the event could not be stored now; retry later")
        response.headers["Retry-After"] = "1"
        return response
    # "duplicate" only for a replay: a batch with nothing to store (Mandrill's empty
    # ``mandrill_events=[]`` when a webhook is added, sync events only) is accepted.
    replayed = bool(results) and all(r.status == "duplicate" for r in results)
    overall = "duplicate" if replayed else "processed"
    return JSONResponse({"status": overall, "events": [_result(r) for r in results]})


def _result(result: Ingested) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "eventId": result.event_id,
        "status": result.status,
        "customerId": str(result.customer_id) if result.customer_id else None,
    }
    if result.reason:
        answer["reason"] = result.reason
    if result.field:
        answer["field"] = result.field
    return answer


def _refuse(status: int, code: str, reason: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "reason": reason}
    if field:
        body["field"] = field
    return JSONResponse(body, status_code=status)

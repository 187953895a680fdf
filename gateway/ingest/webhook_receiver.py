"""Receiving a webhook: the source's signing secret, its signature over the request as
received, the body parsed into events, then each stored by ``WebhookIngest``
(gateway/ingest/webhooks.py). Failures are raised as domain errors; the HTTP receiver
(resolvers/http/webhooks.py) answers them."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import SecretStr

from gateway.db.retries import transient_reason
from gateway.errors import NotFound
from gateway.ingest.esp_payloads import (
    MANDRILL_MAX_AGE_S,
    SkippedEvent,
    parse_mandrill,
    parse_sendgrid,
)
from gateway.ingest.json_text import PayloadError
from gateway.ingest.signatures import (
    SignatureError,
    mandrill_form,
    secret_problem,
    sendgrid_public_key,
    verify_hubspot,
    verify_mandrill,
    verify_segment,
    verify_sendgrid,
    verify_shopify,
)
from gateway.ingest.webhook_payloads import (
    SOURCES,
    InboundEvent,
    parse_hubspot,
    parse_segment,
    parse_shopify,
)
from gateway.ingest.webhooks import Ingested, WebhookIngest
from gateway.observability import freshness
from gateway.observability.metrics import WEBHOOK_EVENTS_REJECTED
from gateway.observability.tracing import span
from gateway.upstreams.event_store import ESP_SOURCES

logger = logging.getLogger("gateway.webhooks")


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What a source signs, as received: method, URL, headers and the raw body."""

    method: str
    url: str
    headers: Mapping[str, str]  # looked up by lower-case name
    body: bytes


class UnknownSource(NotFound):
    """No webhook source has this name."""


class SourceNotConfigured(NotFound):
    """A known source without a secret: unsigned webhooks are never accepted."""


class NotStored(Exception):
    """Events a source sent that could not be stored now (the database stayed busy after
    every retry); the first ``stored`` were. The sender should retry soon."""

    def __init__(self, reason: str, *, stored: int) -> None:
        super().__init__(f"the event could not be stored now ({reason}); retry later")
        self.reason = reason
        self.stored = stored


class Webhooks:
    """Receiving webhooks: the source's signature, parsing, then one ``ingest`` per event.

    Raises ``UnknownSource``, ``SourceNotConfigured``, ``SignatureError``,
    ``PayloadError`` or ``NotStored``; the HTTP receiver (resolvers/http/webhooks.py)
    answers them."""

    def __init__(
        self,
        ingest: WebhookIngest,
        secrets: Mapping[str, SecretStr],
        *,
        mandrill_max_age_s: float = MANDRILL_MAX_AGE_S,
    ) -> None:
        self.ingest = ingest
        self._mandrill_max_age_s = mandrill_max_age_s
        self._secrets = dict(secrets)
        # Checked when settings load too; again here for secrets given otherwise. An
        # empty, blank or short HMAC key, or a SendGrid key that is not P-256, stops the
        # start (the message never quotes it).
        for source, secret in sorted(self._secrets.items()):
            problem = secret_problem(source, secret.get_secret_value())
            if problem is not None:
                raise ValueError(problem)
        # SendGrid's "secret" is its public verification key: loaded once.
        sendgrid = self._secrets.get("sendgrid")
        self._sendgrid_key = (
            sendgrid_public_key(sendgrid.get_secret_value()) if sendgrid is not None else None
        )

    def secret_of(self, source: str) -> str:
        """The source's signing secret; checked before its body is read."""
        if source not in SOURCES:
            raise UnknownSource(f"no webhook source named {source!r}")
        secret = self._secrets.get(source)
        if secret is None:
            raise SourceNotConfigured(f"webhooks from {source} are not enabled")
        return secret.get_secret_value()

    async def receive(self, source: str, request: SignedRequest) -> list[Ingested]:
        with span("webhook", {"gateway.source": source}) as traced:
            results = await self._receive(source, request)
            if traced is not None:
                traced.set_attribute("gateway.events", len(results))
        if results:
            freshness.arrived("events", source)
        return results

    async def _receive(self, source: str, request: SignedRequest) -> list[Ingested]:
        secret = self.secret_of(source)
        try:
            parsed = self._verify_and_parse(source, secret, request)
            events = [item for item in parsed if isinstance(item, InboundEvent)]
            prepared = self.ingest.prepare(events)
        except SignatureError as exc:
            logger.warning("webhook refused", extra={"source": source, "reason": exc.code})
            raise
        except PayloadError:
            logger.warning("webhook refused", extra={"source": source, "reason": "invalid_payload"})
            raise
        results: list[Ingested] = []
        try:
            if source in ESP_SOURCES:  # batches of thousands: one transaction each
                stored = iter(await self.ingest.ingest_batch(events))
                results = [
                    next(stored) if isinstance(item, InboundEvent) else _skipped(item)
                    for item in parsed
                ]
                _count_rejected(source, parsed)
            else:
                for item in prepared:
                    results.append(await self.ingest.ingest(item))
        except Exception as exc:
            reason = transient_reason(exc)
            if reason is None:
                raise
            # Still conflicting after every retry: this event (and those after it) were
            # not stored; the ones before were, and the sender's retry finds them
            # duplicates. Only here, where nothing more was kept, is a retry asked for.
            logger.warning(
                "webhook not stored",
                extra={"source": source, "reason": reason, "stored": len(results)},
            )
            raise NotStored(reason, stored=len(results)) from exc
        return results

    def _verify_and_parse(
        self, source: str, secret: str, request: SignedRequest
    ) -> Sequence[InboundEvent | SkippedEvent]:
        headers, body = request.headers, request.body
        if source == "sendgrid":
            assert self._sendgrid_key is not None  # configured: ``secret_of`` checked it
            verify_sendgrid(
                self._sendgrid_key,
                body,
                headers.get("x-twilio-email-event-webhook-signature"),
                headers.get("x-twilio-email-event-webhook-timestamp"),
            )
            return parse_sendgrid(body)
        if source == "mandrill":
            # Signed over the URL registered with Mandrill: behind a TLS proxy run
            # uvicorn with --proxy-headers so the scheme and host here are the public ones.
            params = mandrill_form(body)
            verify_mandrill(secret, request.url, params, headers.get("x-mandrill-signature"))
            return parse_mandrill(params, self._mandrill_max_age_s)
        if source == "shopify":
            verify_shopify(secret, body, headers.get("x-shopify-hmac-sha256"))
            return parse_shopify(
                body, headers.get("x-shopify-topic"), headers.get("x-shopify-webhook-id")
            )
        if source == "hubspot":
            # The URI HubSpot signed: behind a TLS proxy run uvicorn with --proxy-headers
            # so the scheme and host here are the public ones.
            verify_hubspot(
                secret,
                request.method,
                request.url,
                body,
                headers.get("x-hubspot-signature-v3"),
                headers.get("x-hubspot-request-timestamp"),
            )
            return parse_hubspot(body)
        verify_segment(secret, body, headers.get("x-signature"))
        return parse_segment(body)


def _skipped(item: SkippedEvent) -> Ingested:
    return Ingested(item.event_id, item.status, None, item.reason, item.field)


def _count_rejected(source: str, parsed: Sequence[InboundEvent | SkippedEvent]) -> None:
    """Events refused one by one, counted (``gateway_webhook_events_rejected_total``) and
    logged by what they would have done: a withdrawal refused is a statement lost, for
    an operator to see. Counts only: a reason may name an event's field, never its value."""
    rejected = Counter(
        item.consequence or "none"
        for item in parsed
        if isinstance(item, SkippedEvent) and item.status == "rejected"
    )
    if not rejected:
        return
    for consequence, count in sorted(rejected.items()):
        WEBHOOK_EVENTS_REJECTED.labels(source, consequence).inc(count)
    logger.warning(
        "webhook events rejected",
        extra={
            "source": source,
            "events": rejected.total(),
            "withdrawals": rejected["withdraw"],
            "bounces": rejected["undeliverable"],
        },
    )

"""Customer 360: find a customer, see everything the gateway knows and why, act on it.

The page is one GraphQL document run as the signed-in key (resolvers/console/operations.py):
the golden profile and every source's value with its time, the identities and the rule
and score that joined each, consent per purpose with its source and every earlier
statement (the consent history), orders, events and
email engagement on one timeline, each upstream's freshness, recommendations with their
reasons, scores, the RFM segment, the saved segments the customer is in and their
variant in the running experiment. The admin actions are the API's own mutations:
invalidate (profiles:write), export as JSON and forget (admin, after a confirmation).
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import Response

from gateway.privacy.audit import Action
from gateway.upstreams.event_store import ESP_SOURCES, StoredEvent
from resolvers.console.operations import Answer, run
from resolvers.console.pages import secure
from resolvers.console.visit import Visit, redirect

FIND = """query Find($id: ID, $email: String, $identity: String) {
  customer(id: $id, email: $email, identity: $identity) { id }
}"""
CUSTOMER = """query Customer360($id: ID!, $admin: Boolean!) {
  customer(id: $id) {
    id email phone firstName lastName locale createdAt updatedAt suppressed
    lifecycleStage company jobTitle city country dateOfBirth
    identities { source externalId }
    identityLinks { source externalId rule score reason matchedSource matchedExternalId createdAt }
    attributes { name value source observedAt golden }
    consent { emailMarketing personalisation analytics }
    consents { purpose granted source recordedAt }
    emailMarketingHistory: consentHistory(purpose: EMAIL_MARKETING, first: 50) { ...Statement }
    personalisationHistory: consentHistory(purpose: PERSONALISATION, first: 50) { ...Statement }
    analyticsHistory: consentHistory(purpose: ANALYTICS, first: 50) { ...Statement }
    orders(first: 10) { id name createdAt financialStatus totalPrice { amount currency } }
    orderCount lifetimeValue { amount currency } lastOrderAt
    recentEvents(first: 15) { type name occurredAt }
    engagement { sessions30d pageViews30d lastSeenAt emailOpens30d emailClicks30d lastEmailOpenAt }
    recommendations(limit: 6) { id title category score reason price { amount currency } }
    scores { recency frequency monetary averageOrderValue rfmSegment engagement30d
             purchasePropensity churnRisk modelVersion computedAt }
    segments
    experiments { experiment variant strategy start end }
    sources { upstream kind status latencyMs ageSeconds errorCode }
  }
  auditLog(customerId: $id, first: 15) @include(if: $admin) {
    occurredAt actor action operation
  }
}
fragment Statement on ConsentStatement { purpose granted source recordedAt }"""
INVALIDATE = "mutation($id: ID!) { invalidateCustomer(id: $id) }"
EXPORT = "query($id: ID!) { exportCustomer(id: $id) }"
FORGET = """mutation($id: ID!) {
  forgetCustomer(id: $id) { customerId identities attributes events consents tombstones }
}"""
_SOURCE_ID = re.compile(r"^[a-z][a-z0-9_]*:.+$")
TIMELINE_EVENTS = 20
HISTORIES = (
    ("EMAIL_MARKETING", "emailMarketingHistory"),
    ("PERSONALISATION", "personalisationHistory"),
    ("ANALYTICS", "analyticsHistory"),
)


def lookup_variables(query: str) -> dict[str, str]:
    """A search as the API takes it: ``source:externalId``, an email, or a unified id."""
    if _SOURCE_ID.match(query) and "@" not in query.partition(":")[0]:
        return {"identity": query}
    if "@" in query:
        return {"email": query}
    return {"id": query}


async def search(visit: Visit) -> Response:
    query = visit.request.query_params.get("q", "").strip()[:320]
    if not query:
        return visit.render("search.html", {"query": "", "message": None})
    answer = await run(visit, FIND, **lookup_variables(query))
    found = answer.data.get("customer")
    if found:
        return redirect(f"/console/customers/{found['id']}")
    message = answer.problems[0].message if answer.problems else "No customer matches."
    return visit.render("search.html", {"query": query, "message": message}, 404)


def _parse(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


async def customer(visit: Visit) -> Response:
    customer_id = _parse(visit.request.path_params["customer_id"])
    if customer_id is None:
        return visit.refuse(404, "No customer with this id.")
    answer = await run(visit, CUSTOMER, id=str(customer_id), admin=visit.is_admin)
    profile = answer.data.get("customer")
    if profile is None:
        message = answer.problems[0].message if answer.problems else "No customer with this id."
        return visit.refuse(404 if not answer.problems else 502, message)
    # Email opens and clicks are behaviour: shown, as the API shows them
    # (``Customer.engagement``), only with the person's consent to personalisation.
    email_events: list[StoredEvent] = []
    if (profile.get("consent") or {}).get("personalisation") is True:
        email_events = await visit.services.events.timeline(
            customer_id, TIMELINE_EVENTS, sources=ESP_SOURCES
        )
        visit.audit(Action.READ, "console:timeline", [customer_id])
    return visit.render(
        "customer.html",
        {
            "customer": profile,
            "provenance": provenance(profile["attributes"]),
            "identities": identity_evidence(profile),
            "consent_history": consent_history(profile),
            "timeline": timeline(profile, email_events),
            "audit": answer.data.get("auditLog") or [],
            "problems": [p for p in answer.problems if p.path[:1] != ("auditLog",)],
            "done": visit.request.query_params.get("done"),
        },
    )


def provenance(attributes: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every field with each source's value, the golden one first, then newest first."""
    fields: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for attribute in attributes:
        fields[attribute["name"]].append(attribute)
    return [
        (name, sorted(values, key=lambda a: (a["golden"], _utc(a["observedAt"])), reverse=True))
        for name, values in sorted(fields.items())
    ]


def identity_evidence(profile: dict[str, Any]) -> list[dict[str, Any]]:
    """Each identity with the evidence that put it here, newest first: a merge or an
    unmerge adds a link to the one that first joined it. An identity without any (one
    added before evidence was kept) is listed all the same."""
    links: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for link in profile.get("identityLinks") or []:
        links[(link["source"], link["externalId"])].append(link)
    return [
        {
            **identity,
            "links": sorted(
                links.get((identity["source"], identity["externalId"]), []),
                key=lambda link: _utc(link["createdAt"]),
                reverse=True,
            ),
        }
        for identity in profile.get("identities") or []
    ]


def consent_history(profile: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Each purpose's stored statements, newest first, as the API answers them. Asked per
    purpose: the newest statements of all purposes together let one purpose stated often
    (analytics, by a banner on every visit) push another's only statement off the page."""
    return [(purpose, profile.get(alias) or []) for purpose, alias in HISTORIES]


def _utc(moment: str) -> datetime:
    parsed = datetime.fromisoformat(moment)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def timeline(profile: dict[str, Any], email_events: list[StoredEvent]) -> list[dict[str, Any]]:
    """Orders, analytics events and email engagement, newest first, as one list."""
    entries: list[dict[str, Any]] = []
    for order in profile.get("orders") or []:
        entries.append(
            {
                "at": _utc(order["createdAt"]),
                "kind": "order",
                "what": f"Order {order.get('name') or order['id']}",
                "detail": order.get("financialStatus") or "",
                "money": order.get("totalPrice"),
            }
        )
    for event in profile.get("recentEvents") or []:
        entries.append(
            {
                "at": _utc(event["occurredAt"]),
                "kind": "event",
                "what": event.get("name") or event["type"],
                "detail": event["type"],
                "money": None,
            }
        )
    for stored in email_events:
        entries.append(
            {
                "at": stored.occurred_at,
                "kind": "email",
                "what": stored.type.removeprefix("email:").replace("_", " "),
                "detail": stored.source,
                "money": None,
            }
        )
    entries.sort(key=lambda e: e["at"], reverse=True)
    return entries


def _customer_id(visit: Visit) -> str | None:
    parsed = _parse(visit.request.path_params["customer_id"])
    return str(parsed) if parsed is not None else None


async def invalidate(visit: Visit) -> Response:
    customer_id = _customer_id(visit)
    if customer_id is None:
        return visit.refuse(404, "No customer with this id.")
    answer = await run(visit, INVALIDATE, id=customer_id)
    if answer.problems:
        return visit.refuse(_status(answer), answer.problems[0].message)
    return redirect(f"/console/customers/{customer_id}?done=invalidated")


async def export(visit: Visit) -> Response:
    customer_id = _customer_id(visit)
    if customer_id is None:
        return visit.refuse(404, "No customer with this id.")
    answer = await run(visit, EXPORT, id=customer_id)
    data = answer.data.get("exportCustomer")
    if answer.problems or data is None:
        message = answer.problems[0].message if answer.problems else "No customer with this id."
        return visit.refuse(_status(answer) if answer.problems else 404, message)
    return secure(
        Response(
            orjson.dumps(data, option=orjson.OPT_INDENT_2),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="customer-{customer_id}.json"'},
        )
    )


async def forget_page(visit: Visit) -> Response:
    customer_id = _parse(visit.request.path_params["customer_id"])
    if customer_id is None:
        return visit.refuse(404, "No customer with this id.")
    answer = await run(visit, FIND, id=str(customer_id))
    if not answer.data.get("customer"):
        return visit.refuse(404, "No customer with this id.")
    return visit.render("forget.html", {"customer_id": str(customer_id)})


async def forget(visit: Visit) -> Response:
    customer_id = _customer_id(visit)
    if customer_id is None:
        return visit.refuse(404, "No customer with this id; nothing was erased.")
    form = await visit.request.form()
    if form.get("confirm") != "yes":
        return visit.refuse(400, "Tick the box to confirm the erasure; nothing was erased.")
    answer = await run(visit, FORGET, id=customer_id)
    if answer.problems:
        return visit.refuse(_status(answer), answer.problems[0].message)
    erased = answer.data.get("forgetCustomer")
    if erased is None:
        return visit.refuse(404, "No customer with this id; nothing was erased.")
    return visit.render("forgotten.html", {"erasure": erased})


def _status(answer: Answer) -> int:
    codes = answer.codes()
    if "FORBIDDEN" in codes:
        return 403
    if "BAD_USER_INPUT" in codes or "NOT_FOUND" in codes:
        return 400
    return 502

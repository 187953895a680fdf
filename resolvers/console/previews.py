"""Previews of a template being edited: for chosen customers or a sample of a segment
(a saved one, or an RFM segment of the scores),
rendered by the API's own ``Customer.render`` as the signed-in key (each customer
rendered is a read, audited), the HTML beside its text version.

The HTML is shown in an ``<iframe sandbox srcdoc>``: no script runs in it, it has an
origin of its own (so it cannot reach the console's cookies or pages), and it inherits
the console's Content-Security-Policy, so an email that names a remote image or font
loads nothing from outside the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.templates.render import RenderFormat
from gateway.templates.text_version import text_version
from resolvers.console.operations import run
from resolvers.console.visit import Visit

MAX_CUSTOMERS = 10
_FIELDS = (
    "id email firstName lastName "
    "render(template: $source, format: $format, strict: $strict) { body variables warnings }"
)
PREVIEW = f"""query Preview($ids: [ID!], $emails: [String!], $byIds: Boolean!, $byEmails: Boolean!,
                 $source: String!, $format: RenderFormat!, $strict: Boolean!) {{
  byIds: customers(ids: $ids) @include(if: $byIds) {{ {_FIELDS} }}
  byEmails: customers(emails: $emails) @include(if: $byEmails) {{ {_FIELDS} }}
}}"""


@dataclass(frozen=True, slots=True)
class Preview:
    asked: str  # the id or email as given
    customer_id: str | None
    label: str
    html: str | None  # what the sandboxed frame shows (HTML templates only)
    text: str | None
    warnings: tuple[str, ...] = ()
    problem: str | None = None


@dataclass(slots=True)
class PreviewSet:
    previews: list[Preview] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # not tied to one customer
    sample: str | None = None  # which segment the customers were sampled from


def segment_label(segment: str) -> str:
    """A segment as the form names it (``saved:NAME``, ``rfm:NAME``), for people."""
    if segment.startswith(SAVED_PREFIX):
        return f"saved segment {segment.removeprefix(SAVED_PREFIX)}"
    return f"RFM segment {segment.removeprefix(RFM_PREFIX).replace('_', ' ')}"


def wanted(raw: str) -> list[str]:
    """Ids and emails from the form's box: one per line or separated by commas."""
    items = [part.strip() for line in raw.splitlines() for part in line.split(",")]
    return list(dict.fromkeys(item for item in items if item))[:MAX_CUSTOMERS]


SAVED = "{ segments { name size includeSuppressed } }"
SAVED_SAMPLE = """query Sample($name: String!, $first: Int!) {
  segment(name: $name) { customers(first: $first) { nodes { id } } }
}"""
SAVED_PREFIX, RFM_PREFIX = "saved:", "rfm:"


async def saved_segments(visit: Visit) -> list[dict[str, Any]]:
    """The saved segments as the API lists them, with their size now."""
    answer = await run(visit, SAVED)
    return list(answer.data.get("segments") or [])


async def segment_members(visit: Visit, segment: str, size: int) -> list[str]:
    """A sample of a segment: ``saved:NAME`` is a saved segment, its first members in
    customer-id order (random ids: an arbitrary sample) as the API pages them;
    ``rfm:NAME`` (or a bare name) an RFM segment, sampled by the score store."""
    size = max(1, min(size, MAX_CUSTOMERS))
    if segment.startswith(SAVED_PREFIX):
        answer = await run(visit, SAVED_SAMPLE, name=segment.removeprefix(SAVED_PREFIX), first=size)
        found = answer.data.get("segment")
        return [node["id"] for node in found["customers"]["nodes"]] if found else []
    ids = await visit.services.scores.segment_sample(segment.removeprefix(RFM_PREFIX), size)
    return [str(customer_id) for customer_id in ids]


async def previews(
    visit: Visit, source: str, format: RenderFormat, strict: bool, asked: list[str]
) -> PreviewSet:
    result = PreviewSet()
    asked = asked[:MAX_CUSTOMERS]
    emails = [item for item in asked if "@" in item]
    ids = [item for item in asked if "@" not in item]
    if not asked:
        return result
    answer = await run(
        visit,
        PREVIEW,
        ids=ids,
        emails=emails,
        byIds=bool(ids),
        byEmails=bool(emails),
        source=source,
        format=format.value,
        strict=strict,
    )
    for alias, given in (("byIds", ids), ("byEmails", emails)):
        if not given:
            continue
        found: list[dict[str, Any] | None] | None = answer.data.get(alias)
        if found is None:  # the whole list failed (a malformed id, an outage)
            result.problems += [p.message for p in answer.under(alias)] or ["Not rendered"]
            continue
        for position, (item, customer) in enumerate(zip(given, found, strict=False)):
            problems = answer.under(alias, position)
            result.previews.append(_preview(item, customer, format, problems))
    return result


def _preview(
    asked: str, customer: dict[str, Any] | None, format: RenderFormat, problems: list[Any]
) -> Preview:
    if customer is None:
        reason = problems[0].message if problems else "No such customer"
        return Preview(asked, None, asked, None, None, problem=reason)
    names = " ".join(filter(None, (customer.get("firstName"), customer.get("lastName"))))
    label = f"{names} <{customer['email']}>" if customer.get("email") else str(customer["id"])
    rendered = customer.get("render")
    if rendered is None:
        reason = problems[0].message if problems else "Not rendered"
        return Preview(asked, customer["id"], label, None, None, problem=reason)
    body: str = rendered["body"]
    html = body if format is RenderFormat.HTML else None
    text = text_version(body) if format is RenderFormat.HTML else body
    return Preview(asked, customer["id"], label, html, text, tuple(rendered["warnings"]))

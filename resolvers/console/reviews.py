"""Identity review: the pairs the linker left for a person, one at a time, decided fast.

Each pair is shown side by side, field by field, with the comparison level, that
level's match weight (log2 m/u of the model version that scored the pair) and the
pair's match probability. Merge and Keep apart are the API's ``resolveReview`` with
the steward's reason, audited under the signed-in key; the page then moves on to the
next pair. Keyboard: m merge, k keep apart, j next pair, n the reason field (the
page lists them); without JavaScript the same forms and links work.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from resolvers.console.operations import run
from resolvers.console.visit import Visit, redirect

PAGE = 50
_SIDE = (
    "source externalId customerId firstName lastName dateOfBirth address city postcode email phone"
)
QUEUE = f"""query Reviews($first: Int!) {{
  identityReviews(first: $first) {{
    nodes {{
      id reason status matchProbability modelVersion createdAt candidateCustomerId
      levels {{ field level }}
      record {{ {_SIDE} }}
      candidate {{ {_SIDE} }}
    }}
    hasNextPage
  }}
}}"""
RESOLVE = """mutation Resolve($id: ID!, $decision: ReviewDecision!, $reason: String!) {
  resolveReview(id: $id, decision: $decision, reason: $reason) { id status }
}"""
# The record fields in the order a steward reads them, with their labels.
FIELDS = (
    ("firstName", "first_name", "First name"),
    ("lastName", "last_name", "Last name"),
    ("dateOfBirth", "date_of_birth", "Date of birth"),
    ("email", "email", "Email (matching key)"),
    ("phone", "phone", "Phone"),
    ("address", "address", "Address"),
    ("postcode", "postcode", "Postcode"),
    ("city", "city", "City"),
)
DECISIONS = {"merge": "MERGE", "keep_apart": "KEEP_APART"}


async def queue(visit: Visit) -> Response:
    answer = await run(visit, QUEUE, first=PAGE)
    if answer.problems:
        return visit.refuse(502, answer.problems[0].message)
    page = answer.data["identityReviews"]
    nodes: list[dict[str, Any]] = page["nodes"]
    wanted = visit.request.query_params.get("review")
    position = next((i for i, n in enumerate(nodes) if n["id"] == wanted), 0)
    current = nodes[position] if nodes else None
    rows: list[dict[str, Any]] = []
    if current is not None:
        levels = {level["field"]: level["level"] for level in current["levels"]}
        weights = await visit.services.reviews.weights(current["modelVersion"], levels)
        record, candidate = current["record"] or {}, current["candidate"] or {}
        for key, field, label in FIELDS:
            rows.append(
                {
                    "label": label,
                    "record": record.get(key),
                    "candidate": candidate.get(key),
                    "level": levels.get(field),
                    "weight": weights.get(field),
                }
            )
    return visit.render(
        "reviews.html",
        {
            "reviews": nodes,
            "current": current,
            "rows": rows,
            "next_id": nodes[position + 1]["id"] if position + 1 < len(nodes) else None,
            "more": page["hasNextPage"],
            "done": visit.request.query_params.get("done"),
            "decision": visit.request.query_params.get("decision"),
        },
    )


async def resolve(visit: Visit) -> Response:
    review_id = visit.request.path_params["review_id"]
    form = await visit.request.form()
    decision = DECISIONS.get(str(form.get("decision", "")))
    reason = str(form.get("reason", "")).strip()
    if decision is None:
        return visit.refuse(400, "Choose Merge or Keep apart.")
    answer = await run(visit, RESOLVE, id=review_id, decision=decision, reason=reason)
    if answer.problems:
        problem = answer.problems[0]
        status = 403 if problem.code == "FORBIDDEN" else 400
        return visit.refuse(status, problem.message)
    resolved = answer.data["resolveReview"]
    return redirect(f"/console/reviews?done={resolved['id']}&decision={resolved['status']}")

"""Who is in a segment, asked in SQL written by hand, apart from the gateway's own query
builder: what the property tests hold the segment store to (the checker of issue #24
does the same with its own SQL).

Each field is a column of ``customers`` or of ``customer_scores`` (left-joined), or a
purpose's consent (left-joined, one row per purpose: no row is a no). The send rule: a
yes to email marketing, and no hard bounce of the address the customer has now (unless
a later e-mail status says otherwise).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.models import UtcDateTime

COLUMNS = {
    "recency": "s.recency_days",
    "frequency": "s.frequency",
    "monetary": "s.monetary",
    "averageOrderValue": "s.average_order_value",
    "daysBetweenOrders": "s.days_between_orders",
    "rScore": "s.r_score",
    "fScore": "s.f_score",
    "mScore": "s.m_score",
    "rfmSegment": "s.rfm_segment",
    "engagement30d": (
        "CASE WHEN s.engagement_30d IS NOT NULL "
        "AND NOT COALESCE(k_personalisation.granted, FALSE) THEN 0 ELSE s.engagement_30d END"
    ),
    "engagement90d": (
        "CASE WHEN s.engagement_90d IS NOT NULL "
        "AND NOT COALESCE(k_personalisation.granted, FALSE) THEN 0 ELSE s.engagement_90d END"
    ),
    "purchasePropensity": "s.purchase_propensity",
    "churnRisk": "s.churn_risk",
    "consent.emailMarketing": "COALESCE(k_email_marketing.granted, FALSE)",
    "consent.personalisation": "COALESCE(k_personalisation.granted, FALSE)",
    "consent.analytics": "COALESCE(k_analytics.granted, FALSE)",
    "email": "c.email",
    "firstName": "c.first_name",
    "lastName": "c.last_name",
    "locale": "c.locale",
    "createdAt": "c.created_at",
}
_SYMBOLS = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_FROM = """
FROM customers c
LEFT JOIN customer_scores s ON s.customer_id = c.id
LEFT JOIN consents k_email_marketing
  ON k_email_marketing.customer_id = c.id AND k_email_marketing.purpose = 'email_marketing'
LEFT JOIN consents k_personalisation
  ON k_personalisation.customer_id = c.id AND k_personalisation.purpose = 'personalisation'
LEFT JOIN consents k_analytics
  ON k_analytics.customer_id = c.id AND k_analytics.purpose = 'analytics'
"""
_MAILABLE = """
COALESCE(k_email_marketing.granted, FALSE) = TRUE
AND NOT EXISTS (
  SELECT 1 FROM (
    SELECT MAX(a.observed_at) AS bounced_at FROM attributes a
    WHERE a.customer_id = c.id AND a.name = 'bounced_email' AND a.value = c.email
  ) latest
  WHERE latest.bounced_at IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM attributes b
                    WHERE b.customer_id = c.id AND b.name = 'email_status'
                      AND b.value <> 'undeliverable' AND b.observed_at > latest.bounced_at))
"""


class _Where:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def bind(self, value: Any) -> str:
        name = f"v{len(self.values)}"
        if isinstance(value, int | float) and not isinstance(value, bool):
            # Numbers compared as doubles, whatever the column: 2.5 against an integer
            # column is a comparison, not a driver's type error.
            self.values[name] = float(value)
            return f"CAST(:{name} AS DOUBLE PRECISION)"
        self.values[name] = value
        return f":{name}"

    def node(self, data: dict[str, Any]) -> str:
        for group, joiner, empty in (("all", " AND ", "1 = 1"), ("any", " OR ", "1 = 0")):
            if group in data:
                parts = [f"({self.node(child)})" for child in data[group]]
                return joiner.join(parts) if parts else empty
        column = COLUMNS[data["field"]]
        operator = next(k for k in data if k != "field")
        value = data[operator]
        if isinstance(value, str) and data["field"] == "createdAt":
            value = datetime.fromisoformat(value)
        if operator == "in":
            items = value if data["field"] != "createdAt" else map(datetime.fromisoformat, value)
            return f"{column} IN ({', '.join(self.bind(v) for v in items)})"
        return f"{column} {_SYMBOLS[operator]} {self.bind(value)}"


async def members(
    engine: AsyncEngine, definition: dict[str, Any], *, include_suppressed: bool
) -> set[uuid.UUID]:
    where = _Where()
    clause = where.node(definition)
    if not include_suppressed:
        clause = f"({clause}) AND {_MAILABLE}"
    statement = text(f"SELECT c.id {_FROM} WHERE {clause}").columns()
    # Times bound as the column stores them (SQLite keeps text); the rest as given.
    statement = statement.bindparams(
        *(
            bindparam(name, type_=UtcDateTime())
            for name, value in where.values.items()
            if isinstance(value, datetime)
        )
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(statement, where.values)).scalars().all()
    return {uuid.UUID(str(row)) for row in rows}

"""The fields a segment may filter on: a whitelist, each name mapped to one SQL
expression and a kind that decides its operators and the values it takes.

Nothing else reaches SQL: a field outside this table is refused by name, and values are
always bound parameters. Score fields read ``customer_scores`` (outer-joined: a
customer not scored yet has no value, and a condition on a missing value is false);
consent fields are the customer's stored statement for that purpose, and no statement
means "not granted", as everywhere in the gateway (gateway/privacy/consent.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, Uuid, and_, bindparam, exists, select
from sqlalchemy.orm import InstrumentedAttribute

from gateway.db.models import Attribute, Consent, Customer
from gateway.db.score_models import CustomerScore
from gateway.ingest.engagement import BOUNCED_EMAIL, EMAIL_STATUS, UNDELIVERABLE
from gateway.privacy.consent import Purpose
from gateway.scores.rfm import SEGMENTS


class Kind(StrEnum):
    NUMBER = "number"
    TEXT = "text"
    CHOICE = "choice"  # text from a closed list (an RFM segment's name)
    BOOLEAN = "boolean"
    TIME = "time"  # ISO 8601 with an offset, e.g. 2026-01-31T00:00:00Z


class Operator(StrEnum):
    EQ = "eq"
    NE = "ne"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    IN = "in"


ORDERED = frozenset(Operator)
UNORDERED = frozenset({Operator.EQ, Operator.NE, Operator.IN})
OPERATORS: Mapping[Kind, frozenset[Operator]] = {
    Kind.NUMBER: ORDERED,
    Kind.TIME: ORDERED,
    Kind.TEXT: UNORDERED,
    Kind.CHOICE: UNORDERED,
    Kind.BOOLEAN: UNORDERED,
}


# The lowest customer id a query reads (a page's: the one after its cursor; everyone's:
# the nil id). Each table joined on the customer is bounded by it too, not only
# ``customers``: Postgres does not carry a range across a join's equality, and a merge
# join over consents or scores read each of them from its first row on every page.
FLOOR: BindParameter[uuid.UUID] = bindparam("floor", type_=Uuid())
EVERYONE = uuid.UUID(int=0)


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    expression: ColumnElement[Any]
    scores: bool = False  # read from customer_scores: the query joins it
    choices: tuple[str, ...] = ()
    # Behaviour: read as 0 for a customer without a stored yes to this purpose.
    hidden: Purpose | None = None


def granted(purpose: Purpose) -> ColumnElement[bool]:
    """The customer's stored statement for ``purpose`` is a yes."""
    return exists(
        select(Consent.id).where(
            Consent.customer_id == Customer.id,
            Consent.customer_id >= FLOOR,
            Consent.purpose == purpose.value,
            Consent.granted.is_(True),
        )
    )


def undeliverable() -> ColumnElement[bool]:
    """The address the customer has now hard-bounced: a ``bounced_email`` observation
    of it (an ESP's bounce, stored beside its ``email_status`` ``undeliverable``;
    gateway/ingest/engagement.py), and no later ``email_status`` observation says
    otherwise. A bounce of an address they no longer have (changed, merged away,
    delivered late) leaves them mailable at the new one; back at the bounced address
    they are undeliverable again.

    Read through ``ix_attributes_bounced_email`` from the page's floor, both tables
    bounded by it: Postgres merges the page's customers with the few bounces among them
    (an EXISTS nested one level deeper was hashed whole, every bounce on every page)."""
    bounce = Attribute.__table__.alias("bounce")
    later = Attribute.__table__.alias("later")
    return exists(
        select(bounce.c.id).where(
            bounce.c.customer_id == Customer.id,
            bounce.c.customer_id >= FLOOR,
            bounce.c.name == BOUNCED_EMAIL,
            bounce.c.value == Customer.email,
            ~exists(
                select(later.c.id).where(
                    later.c.customer_id == bounce.c.customer_id,
                    later.c.customer_id >= FLOOR,
                    later.c.name == EMAIL_STATUS,
                    later.c.observed_at > bounce.c.observed_at,
                    later.c.value != UNDELIVERABLE,
                )
            ),
        )
    )


def mailable() -> ColumnElement[bool]:
    """Who a send may reach: a stored yes to email marketing, and an address that has
    not bounced."""
    return and_(granted(Purpose.EMAIL_MARKETING), ~undeliverable())


def _score(name: str, column: InstrumentedAttribute[Any]) -> Field:
    return Field(name, Kind.NUMBER, column.expression, scores=True)


def _behaviour(name: str, column: InstrumentedAttribute[Any]) -> Field:
    """An engagement count, read as ``Customer.scores`` serves it: behaviour, so 0 (as
    for no history) without a stored yes to personalisation (gateway/segments/
    definition.py applies it)."""
    return Field(name, Kind.NUMBER, column.expression, scores=True, hidden=Purpose.PERSONALISATION)


FIELDS: Mapping[str, Field] = {
    field.name: field
    for field in (
        # Traits and scores, named as Customer.scores names them.
        _score("recency", CustomerScore.recency_days),
        _score("frequency", CustomerScore.frequency),
        _score("monetary", CustomerScore.monetary),
        _score("averageOrderValue", CustomerScore.average_order_value),
        _score("daysBetweenOrders", CustomerScore.days_between_orders),
        _score("rScore", CustomerScore.r_score),
        _score("fScore", CustomerScore.f_score),
        _score("mScore", CustomerScore.m_score),
        Field("rfmSegment", Kind.CHOICE, CustomerScore.rfm_segment.expression, True, SEGMENTS),
        _behaviour("engagement30d", CustomerScore.engagement_30d),
        _behaviour("engagement90d", CustomerScore.engagement_90d),
        _score("purchasePropensity", CustomerScore.purchase_propensity),
        _score("churnRisk", CustomerScore.churn_risk),
        # Consent, as stored.
        Field("consent.emailMarketing", Kind.BOOLEAN, granted(Purpose.EMAIL_MARKETING)),
        Field("consent.personalisation", Kind.BOOLEAN, granted(Purpose.PERSONALISATION)),
        Field("consent.analytics", Kind.BOOLEAN, granted(Purpose.ANALYTICS)),
        # The stored profile.
        Field("email", Kind.TEXT, Customer.email.expression),
        Field("firstName", Kind.TEXT, Customer.first_name.expression),
        Field("lastName", Kind.TEXT, Customer.last_name.expression),
        Field("locale", Kind.TEXT, Customer.locale.expression),
        Field("createdAt", Kind.TIME, Customer.created_at.expression),
    )
}

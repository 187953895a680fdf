"""A customer stored with a scores row (and, if asked, an e-mail consent and a bounce),
as a build would leave them: the GraphQL tests of scores and of segments build theirs
with this one builder."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import Attribute, Consent, Customer
from gateway.db.score_models import CustomerScore
from gateway.settings import Settings

COMPUTED_AT = datetime(2026, 12, 1, tzinfo=UTC)
MODEL_VERSION = "hgb-test"


async def scored_customer(
    settings: Settings,
    email: str,
    *,
    segment: str | None = "at_risk",
    propensity: float | None = 0.6,
    consent: bool | None = True,
    bounced: bool = False,
) -> uuid.UUID:
    """A new customer; no scores row when ``segment`` is None, no consent stored when
    ``consent`` is None, an undeliverable address when ``bounced``."""
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine).begin() as session:
            customer = Customer(id=uuid.uuid4(), email=email)
            session.add(customer)
            await session.flush()
            if segment is not None:
                session.add(
                    CustomerScore(
                        customer_id=customer.id,
                        recency_days=40,
                        frequency=3,
                        monetary=90.0,
                        average_order_value=30.0,
                        days_between_orders=20.0,
                        r_score=2,
                        f_score=3,
                        m_score=3,
                        rfm_segment=segment,
                        engagement_30d=0,
                        engagement_90d=1,
                        purchase_propensity=propensity,
                        churn_risk=0.5,
                        model_version=MODEL_VERSION,
                        computed_at=COMPUTED_AT,
                    )
                )
            if consent is not None:
                session.add(
                    Consent(
                        customer_id=customer.id,
                        purpose="email_marketing",
                        granted=consent,
                        source="test",
                        recorded_at=COMPUTED_AT,
                    )
                )
            if bounced:  # as an ESP's hard bounce is stored: the status and its address
                for name, value in (("email_status", "undeliverable"), ("bounced_email", email)):
                    session.add(
                        Attribute(
                            customer_id=customer.id,
                            name=name,
                            value=value,
                            source="sendgrid",
                            observed_at=COMPUTED_AT - timedelta(days=1),
                        )
                    )
            return customer.id
    finally:
        await engine.dispose()

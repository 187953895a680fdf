"""``Customer.scores`` through GraphQL and in Liquid, batched: one query per batch."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
from starlette.applications import Starlette

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import Customer
from gateway.db.score_models import CustomerScore
from gateway.settings import Settings
from tests.conftest import recorded_statements, unique_email
from tests.gql_client import gql
from tests.in_process import services_of

LIQUID = (
    "{% if customer.scores.purchase_propensity > 0.5 %}hot{% else %}cold{% endif %} "
    "{{ customer.scores.rfm_segment }}"
)
QUERY = """query($emails: [String!], $liquid: String!) {
  customers(emails: $emails) {
    email
    scores { recency frequency monetary rfmSegment purchasePropensity churnRisk
             modelVersion computedAt }
    render(template: $liquid, format: TEXT) { body }
  }
}"""


async def _scored(settings: Settings, propensity: float, segment: str) -> str:
    email = unique_email("scored")
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine).begin() as session:
            customer = Customer(id=uuid.uuid4(), email=email)
            session.add(customer)
            await session.flush()
            session.add(
                CustomerScore(
                    customer_id=customer.id,
                    recency_days=3,
                    frequency=4,
                    monetary=120.5,
                    average_order_value=30.125,
                    days_between_orders=20.0,
                    r_score=5,
                    f_score=4,
                    m_score=4,
                    rfm_segment=segment,
                    engagement_30d=2,
                    engagement_90d=5,
                    purchase_propensity=propensity,
                    churn_risk=0.1,
                    model_version="hgb-test",
                    computed_at=datetime(2026, 12, 1, tzinfo=UTC),
                )
            )
    finally:
        await engine.dispose()
    return email


async def test_scores_are_served_and_rendered_one_query_per_batch(
    client: httpx.AsyncClient, settings: Settings, app: Starlette
) -> None:
    hot = await _scored(settings, 0.8, "champions")
    cold = await _scored(settings, 0.2, "at_risk")
    unscored = unique_email("unscored")
    with recorded_statements(services_of(app).engine.sync_engine) as statements:
        body = await gql(client, QUERY, emails=[hot, cold, unscored], liquid=LIQUID)
    assert "errors" not in body, body
    found = {c["email"]: c for c in body["data"]["customers"] if c}
    assert found[hot]["scores"]["purchasePropensity"] == 0.8
    assert found[hot]["scores"]["rfmSegment"] == "champions"
    assert found[hot]["scores"]["modelVersion"] == "hgb-test"
    assert found[hot]["render"]["body"] == "hot champions"
    assert found[cold]["render"]["body"] == "cold at_risk"
    assert len([s for s in statements if "customer_scores" in s]) == 1

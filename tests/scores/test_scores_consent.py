"""A customer who refused personalisation: their behaviour is served as for a customer
with no history (``Customer.engagement``, ``recentEvents``, the templates), and the
engagement counts of ``Customer.scores`` are that behaviour counted; they were served
as stored, through GraphQL and in Liquid."""

from __future__ import annotations

import httpx

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import Consent
from gateway.db.score_models import CustomerScore
from gateway.settings import Settings
from tests.conftest import unique_email
from tests.gql_client import gql
from tests.scores.people import COMPUTED_AT, scored_customer

QUERY = """query($emails: [String!]) {
  customers(emails: $emails) {
    email
    scores { engagement30d engagement90d frequency }
    render(template: "{{ customer.scores.engagement_90d }}", format: TEXT) { body }
  }
}"""


async def test_engagement_scores_are_not_served_without_personalisation_consent(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    refused, granted = unique_email("refused"), unique_email("granted")
    engine = create_engine(settings.database_url)
    try:
        for email, personal in ((refused, False), (granted, True)):
            customer = await scored_customer(settings, email)
            async with create_sessionmaker(engine).begin() as session:
                row = await session.get(CustomerScore, customer)
                assert row is not None
                row.engagement_30d, row.engagement_90d = 7, 12
                session.add(
                    Consent(
                        customer_id=customer,
                        purpose="personalisation",
                        granted=personal,
                        source="test",
                        recorded_at=COMPUTED_AT,
                    )
                )
    finally:
        await engine.dispose()
    body = await gql(client, QUERY, emails=[refused, granted])
    assert "errors" not in body, body
    found = {c["email"]: c for c in body["data"]["customers"]}
    assert found[granted]["scores"] == {"engagement30d": 7, "engagement90d": 12, "frequency": 3}
    assert found[granted]["render"]["body"] == "12"
    # As for a customer with no history; what is not behaviour (the orders) stays.
    assert found[refused]["scores"] == {"engagement30d": 0, "engagement90d": 0, "frequency": 3}
    assert found[refused]["render"]["body"] == "0"

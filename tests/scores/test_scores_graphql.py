"""``Customer.scores`` through GraphQL and in Liquid, batched: one query per batch."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette

from gateway.settings import Settings
from tests.conftest import recorded_statements, unique_email
from tests.gql_client import gql
from tests.in_process import services_of
from tests.scores.people import COMPUTED_AT, MODEL_VERSION, scored_customer

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


async def test_scores_are_served_and_rendered_one_query_per_batch(
    client: httpx.AsyncClient, settings: Settings, app: Starlette
) -> None:
    hot, cold = unique_email("scored"), unique_email("scored")
    await scored_customer(settings, hot, segment="champions", propensity=0.8)
    await scored_customer(settings, cold, segment="at_risk", propensity=0.2)
    unscored = unique_email("unscored")
    await scored_customer(settings, unscored, segment=None)  # stored, never scored
    with recorded_statements(services_of(app).engine.sync_engine) as statements:
        body = await gql(client, QUERY, emails=[hot, cold, unscored], liquid=LIQUID)
    assert "errors" not in body, body
    found = {c["email"]: c for c in body["data"]["customers"] if c}
    assert found[hot]["scores"] == {
        "recency": 40,
        "frequency": 3,
        "monetary": 90.0,
        "rfmSegment": "champions",
        "purchasePropensity": 0.8,
        "churnRisk": 0.5,
        "modelVersion": MODEL_VERSION,
        "computedAt": COMPUTED_AT.isoformat(),
    }
    assert found[unscored]["scores"] is None
    assert found[unscored]["render"]["body"] == "cold "
    assert found[hot]["render"]["body"] == "hot champions"
    assert found[cold]["render"]["body"] == "cold at_risk"
    assert len([s for s in statements if "customer_scores" in s]) == 1

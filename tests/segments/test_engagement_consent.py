"""A segment on engagement counts (``engagement30d``/``engagement90d``) reads them as
``Customer.scores`` serves them: for a customer without personalisation consent, as for
no history (0). It read the stored counts, so a customer whose served scores say 0 was
a member of ``engagement30d gt 0``: targeted by the behaviour their refusal hides."""

from __future__ import annotations

import uuid

import httpx

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import Consent
from gateway.db.score_models import CustomerScore
from gateway.settings import Settings
from tests.conftest import unique_email
from tests.gql_client import gql
from tests.scores.people import COMPUTED_AT, scored_customer

SAVE = """mutation($name: String!, $filter: SegmentFilter!) {
  saveSegment(name: $name, filter: $filter) { name }
}"""
READ = """query($name: String!) {
  segment(name: $name) { size customers(first: 10) { nodes { email } } }
}"""
SCORES = "query($e: [String!]) { customers(emails: $e) { scores { engagement30d } } }"
DELETE = "mutation($name: String!) { deleteSegment(name: $name) }"


async def test_a_segment_on_engagement_leaves_out_who_refused_personalisation(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    email = unique_email("engaged-refused")
    customer = await scored_customer(settings, email)
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine).begin() as session:
            row = await session.get(CustomerScore, customer)
            assert row is not None
            row.engagement_30d = 7
            session.add(
                Consent(
                    customer_id=customer,
                    purpose="personalisation",
                    granted=False,
                    source="test",
                    recorded_at=COMPUTED_AT,
                )
            )
    finally:
        await engine.dispose()
    served = await gql(client, SCORES, e=[email])
    assert served["data"]["customers"][0]["scores"] == {"engagement30d": 0}
    name = f"engaged {uuid.uuid4().hex[:8]}"
    only = {"all": [{"field": "email", "eq": email}, {"field": "engagement30d", "gt": 0}]}
    try:
        saved = await gql(client, SAVE, name=name, filter=only)
        assert "errors" not in saved, saved
        body = await gql(client, READ, name=name)
        assert "errors" not in body, body
        assert body["data"]["segment"] == {"size": 0, "customers": {"nodes": []}}
    finally:
        await gql(client, DELETE, name=name)

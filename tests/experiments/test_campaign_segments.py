"""A send's open, click-through, conversion and unsubscribe rates per RFM segment of its
recipients, as ``campaign(sendId) { bySegment }`` answers them, on SQLite and Postgres."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, insert

from demo.seed import customer_id_for
from gateway.db.score_models import CustomerScore
from tests.experiments.serving import Served, click, person_with_history
from tests.gql_client import gql
from tests.in_process import services_of
from tests.ingest.webhook_requests import sendgrid_event, sendgrid_request

CAMPAIGN = (
    "query($send: String!) { campaign(sendId: $send) { delivered opened clicked "
    "bySegment { segment delivered opened clicked converted unsubscribed openRate "
    "clickThroughRate conversionRate unsubscribeRate } } }"
)


async def _place(served: Served, segments: dict[uuid.UUID, str | None]) -> None:
    """Give these customers score rows in these RFM segments (None: no row at all)."""
    engine = services_of(served.app).engine
    rows: list[dict[str, Any]] = [
        {
            "customer_id": customer,
            "frequency": 1,
            "monetary": 10.0,
            "r_score": 3,
            "f_score": 3,
            "m_score": 3,
            "rfm_segment": segment,
            "engagement_30d": 0,
            "engagement_90d": 0,
            "model_version": "test",
        }
        for customer, segment in segments.items()
        if segment is not None
    ]
    async with engine.begin() as connection:
        await connection.execute(
            delete(CustomerScore).where(CustomerScore.customer_id.in_(list(segments)))
        )
        if rows:
            await connection.execute(insert(CustomerScore), rows)


async def test_a_sends_rates_per_rfm_segment_add_up_to_the_send(served: Served) -> None:
    people = person_with_history(served.samples)[20:26]
    ids = [customer_id_for(p) for p in people]
    champions, at_risk = f"champions-{uuid.uuid4().hex[:4]}", f"at-risk-{uuid.uuid4().hex[:4]}"
    # Three champions, two at risk, one no score build has placed.
    await _place(served, dict(zip(ids, [champions] * 3 + [at_risk] * 2 + [None], strict=True)))
    send = f"seg-{uuid.uuid4().hex[:6]}"
    events = [sendgrid_event(p.email, "delivered", send_id=send) for p in people]
    events += [sendgrid_event(p.email, "open", send_id=send) for p in people[:4]]  # 3 + 1
    events += [click(p.email, "https://shop.example/products/x", send=send) for p in people[:2]]
    events += [sendgrid_event(people[4].email, "unsubscribe", send_id=send)]
    events += [sendgrid_event(people[5].email, "open", send_id=send)]
    events += [sendgrid_event(people[3].email, "open", send_id="another-send")]
    response = await served.client.post(**sendgrid_request(events))
    assert response.status_code == 200, response.text

    body = await gql(served.client, CAMPAIGN, send=send)
    assert "errors" not in body, body
    campaign = body["data"]["campaign"]
    by_segment = {row.pop("segment"): row for row in campaign["bySegment"]}
    assert set(by_segment) == {champions, at_risk, "unscored"}
    assert by_segment[champions] == {
        "delivered": 3,
        "opened": 3,
        "clicked": 2,
        "converted": 0,
        "unsubscribed": 0,
        "openRate": 1.0,
        "clickThroughRate": 2 / 3,
        "conversionRate": 0.0,
        "unsubscribeRate": 0.0,
    }
    risk = by_segment[at_risk]
    assert (risk["delivered"], risk["opened"], risk["clicked"], risk["unsubscribed"]) == (
        2,
        1,
        0,
        1,
    )
    assert (risk["openRate"], risk["clickThroughRate"], risk["unsubscribeRate"]) == (0.5, 0, 0.5)
    assert (by_segment["unscored"]["delivered"], by_segment["unscored"]["opened"]) == (1, 1)
    for figure in ("delivered", "opened", "clicked"):
        assert sum(row[figure] for row in by_segment.values()) == campaign[figure]

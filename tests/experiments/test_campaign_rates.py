"""A send's figures as ``campaign(sendId)`` counts them from the ESP events stored, on
SQLite and Postgres: every rate is a proportion of ``delivered`` (an unsubscribe or a
spam report proves a delivery, as an open or a click does), whatever mix of events the
ESPs report; and the send an event names is the same on both databases and the same as
attribution's (``send_of``): a boolean ``send_id`` names no send."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import unique_email
from tests.gql_client import gql
from tests.ingest.test_esp_webhooks import UPSERT
from tests.ingest.webhook_requests import (
    mandrill_event,
    mandrill_request,
    sendgrid_event,
    sendgrid_request,
)

FIGURES = (
    "delivered opened clicked converted unsubscribed "
    "openRate clickThroughRate conversionRate unsubscribeRate"
)
CAMPAIGN = (
    "query($send: String!) { campaign(sendId: $send) { "
    f"{FIGURES} bySegment {{ segment {FIGURES} }} }} }}"
)
SENDGRID_KINDS = ["processed", "delivered", "open", "click", "bounce", "dropped", "spamreport",
                  "unsubscribe", "group_unsubscribe", "deferred"]  # fmt: skip
MANDRILL_KINDS = ["send", "open", "click", "unsub", "spam", "reject", "hard_bounce",
                  "soft_bounce", "deferral"]  # fmt: skip
SLOW = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


async def _recipient(webhooks: httpx.AsyncClient) -> str:
    email = unique_email("send")
    assert "errors" not in await gql(webhooks, UPSERT, email=email)
    return email


async def _post(webhooks: httpx.AsyncClient, request: dict[str, Any]) -> None:
    response = await webhooks.post(**request)
    assert response.status_code == 200, response.text
    assert {e["status"] for e in response.json()["events"]} <= {"processed"}, response.text


async def _campaign(webhooks: httpx.AsyncClient, send: str) -> dict[str, Any]:
    body = await gql(webhooks, CAMPAIGN, send=send)
    assert "errors" not in body, body
    found: dict[str, Any] = body["data"]["campaign"]
    return found


def _mandrill(email: str, kind: str, send: object) -> dict[str, Any]:
    event = mandrill_event(email, kind)
    event["msg"]["metadata"] = {"send_id": send}
    return event


def _assert_proportions(figures: dict[str, Any]) -> None:
    delivered = figures["delivered"]
    for counted in ("opened", "clicked", "unsubscribed", "converted"):
        assert 0 <= figures[counted] <= delivered, (counted, figures)
    assert figures["converted"] <= figures["clicked"], figures
    for rate in ("openRate", "clickThroughRate", "conversionRate", "unsubscribeRate"):
        if delivered:
            assert 0.0 <= figures[rate] <= 1.0, (rate, figures)
        else:
            assert figures[rate] is None, (rate, figures)


async def test_unsubscribes_count_as_delivered_so_the_rate_stays_a_proportion(
    webhooks: httpx.AsyncClient,
) -> None:
    # The tester's case: one delivery reported, two recipients unsubscribing without one.
    a, b, c = [await _recipient(webhooks) for _ in range(3)]
    send = f"rate-{uuid.uuid4().hex[:8]}"
    await _post(
        webhooks,
        sendgrid_request(
            [
                sendgrid_event(a, "delivered", send_id=send),
                sendgrid_event(b, "unsubscribe", send_id=send),
                sendgrid_event(c, "group_unsubscribe", send_id=send),
            ]
        ),
    )
    d = await _recipient(webhooks)  # a spam report (Mandrill's) proves delivery too
    await _post(webhooks, mandrill_request([_mandrill(d, "spam", send)]))
    campaign = await _campaign(webhooks, send)
    assert (campaign["delivered"], campaign["unsubscribed"]) == (4, 2)
    assert campaign["unsubscribeRate"] == 0.5
    [unscored] = campaign["bySegment"]  # none of them has scores
    assert (unscored["segment"], unscored["delivered"], unscored["unsubscribed"]) == (
        "unscored",
        4,
        2,
    )


@SLOW
@given(
    mixes=st.lists(
        st.lists(st.tuples(st.booleans(), st.integers(0, 9)), max_size=5),
        min_size=1,
        max_size=3,
    )
)
async def test_every_rate_of_any_mix_of_events_is_a_proportion(
    webhooks: httpx.AsyncClient, mixes: list[list[tuple[bool, int]]]
) -> None:
    send = f"mix-{uuid.uuid4().hex[:8]}"
    sendgrid: list[dict[str, Any]] = []
    mandrill: list[dict[str, Any]] = []
    for events in mixes:
        email = await _recipient(webhooks)
        for by_sendgrid, kind in events:
            if by_sendgrid:
                name = SENDGRID_KINDS[kind % len(SENDGRID_KINDS)]
                sendgrid.append(sendgrid_event(email, name, send_id=send))
            else:
                mandrill.append(_mandrill(email, MANDRILL_KINDS[kind % len(MANDRILL_KINDS)], send))
    if sendgrid:
        await _post(webhooks, sendgrid_request(sendgrid))
    if mandrill:
        await _post(webhooks, mandrill_request(mandrill))
    campaign = await _campaign(webhooks, send)
    _assert_proportions(campaign)
    for segment in campaign["bySegment"]:
        _assert_proportions(segment)


async def test_a_boolean_send_id_names_no_send_on_either_database(
    webhooks: httpx.AsyncClient,
) -> None:
    email = await _recipient(webhooks)
    number = uuid.uuid4().int % 10**9 + 10  # an integer send id is its decimal string
    await _post(
        webhooks,
        sendgrid_request(
            [
                sendgrid_event(email, "delivered", send_id=True),
                sendgrid_event(email, "open", send_id=False),
                sendgrid_event(email, "click", send_id=number, url="https://shop.example/p"),
            ]
        ),
    )
    await _post(webhooks, mandrill_request([_mandrill(email, "open", True)]))
    for named in ("1", "0", "true", "false", "True", "False"):
        assert (await _campaign(webhooks, named))["delivered"] == 0, named
    counted = await _campaign(webhooks, str(number))
    assert (counted["delivered"], counted["clicked"]) == (1, 1)

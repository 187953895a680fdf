"""Attribution end to end, on SQLite and Postgres: a list served in an experiment, its
item's tracked link clicked as SendGrid reports it, the click tied to that list, item,
strategy and send; an order inside the conversion window after it counts, one outside
(or before the click) does not; and the results' interval is scipy's."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from scipy.stats import binomtest
from sqlalchemy import func, select

from demo.people.population import Person
from demo.seed import customer_id_for
from gateway.db.recommendation_models import RecommendationClick, RecommendationImpression
from tests.experiments.serving import (
    Served,
    click,
    person_with_history,
    recommend,
    running_experiment,
    until,
)
from tests.gql_client import gql
from tests.in_process import services_of
from tests.ingest.webhook_requests import (
    mandrill_event,
    mandrill_request,
    sendgrid_request,
    shopify_request,
)

RESULTS = """
query($name: String!, $metric: ExperimentMetric!) {
  experiment(name: $name, metric: $metric) {
    name running comparedVariant liftVsControl pValue
    variants { name strategy customers impressions clicks ctr conversions conversionRate
               ciLow ciHigh liftVsControl pValue }
  }
}
"""
CAMPAIGN = """
query($send: String!) {
  campaign(sendId: $send) { delivered opened clicked converted unsubscribed
                            openRate clickThroughRate conversionRate unsubscribeRate }
}
"""


async def _results(served: Served, name: str, metric: str = "CLICK_THROUGH") -> dict[str, Any]:
    body = await gql(served.client, RESULTS, name=name, metric=metric)
    assert "errors" not in body, body
    found: dict[str, Any] = body["data"]["experiment"]
    return found


async def _post(served: Served, request: dict[str, Any]) -> list[dict[str, Any]]:
    response = await served.client.post(**request)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def _order(
    person: Person, created: float, order_id: int | None = None, topic: str = "orders/create"
) -> dict[str, Any]:
    """A Shopify orders/create (or ``topic``) webhook of ``person``'s, placed at ``created``."""
    order = {
        "id": order_id or uuid.uuid4().int % 10**12,
        "email": person.email,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
        "total_price": "42.00",
        "currency": "USD",
        "customer": {"id": person.shopify_id, "email": person.email},
    }
    if topic != "orders/create":  # as Shopify sends it: the body differs from the create's
        order["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return shopify_request(order, topic=topic)


async def test_a_click_is_attributed_to_its_list_item_strategy_and_send(served: Served) -> None:
    person = person_with_history(served.samples)[0]
    async with running_experiment(
        served.client, [("control", "popularity", 1.0), ("personal", "model", 1.0)]
    ) as name:
        shown = await recommend(served.client, person, send="spring-1")
        [mine] = shown["experiments"]
        assert mine["experiment"] == name
        items = shown["recommendations"]
        assert len(items) == 3
        assert len({item["listId"] for item in items}) == 1
        assert all("?gw_rec=" in item["url"] for item in items)
        # The recipient clicks the second item; the ESP's custom argument names the send.
        stored = await _post(
            served, sendgrid_request([click(person.email, items[1]["url"], send="spring-1")])
        )
        assert stored[0]["status"] == "processed"
        services = services_of(served.app)
        [found] = await services.experiment_results.clicks(customer_id_for(person))
        assert found.list_id == items[0]["listId"]
        assert found.position == 1
        assert found.product_id == items[1]["id"]
        assert found.strategy == mine["strategy"].lower()
        assert (found.experiment, found.variant) == (name, mine["variant"])
        assert found.send_id == "spring-1"
        results = await _results(served, name)
    by_name = {v["name"]: v for v in results["variants"]}
    clicked = by_name[mine["variant"]]
    assert (clicked["impressions"], clicked["clicks"], clicked["customers"]) == (1, 1, 1)
    assert clicked["ctr"] == 1.0
    other = by_name[({"control", "personal"} - {mine["variant"]}).pop()]
    assert (other["impressions"], other["clicks"]) == (0, 0)


async def test_a_mandrill_click_is_attributed_with_its_metadata_send(served: Served) -> None:
    person = person_with_history(served.samples)[8]
    shown = await recommend(served.client, person)
    item = shown["recommendations"][2]
    event = mandrill_event(person.email, "click", url=item["url"])
    event["msg"]["metadata"] = {"send_id": "mandrill-9"}
    stored = await _post(served, mandrill_request([event]))
    assert stored[0]["status"] == "processed"
    services = services_of(served.app)
    [found] = await services.experiment_results.clicks(customer_id_for(person))
    assert (found.list_id, found.position, found.product_id) == (item["listId"], 2, item["id"])
    assert (found.send_id, found.strategy, found.experiment) == ("mandrill-9", "model", None)


async def test_clicks_on_untracked_or_forged_links_are_attributed_to_nothing(
    served: Served,
) -> None:
    person = person_with_history(served.samples)[1]
    shown = await recommend(served.client, person)
    url = shown["recommendations"][0]["url"]
    at = url.index("gw_rec=") + len("gw_rec=") + 20  # a character of the tag
    forged = url[:at] + ("A" if url[at] != "A" else "B") + url[at + 1 :]
    assert url.endswith(".0")
    events = [
        click(person.email, "https://shop.example/products/anything"),
        click(person.email, forged),
        # A position in digits of another kind (superscript, Arabic-Indic): int()
        # refused the first, and its ValueError failed the whole batch on every retry.
        click(person.email, url[:-1] + "%C2%B2"),
        click(person.email, url[:-1] + "%D9%A0"),
    ]
    stored = await _post(served, sendgrid_request(events))
    assert [e["status"] for e in stored] == ["processed"] * 4  # still engagement
    services = services_of(served.app)
    assert await services.experiment_results.clicks(customer_id_for(person)) == []
    # The same click twice (an ESP's retry): attributed once.
    again = click(person.email, url)
    await _post(served, sendgrid_request([again]))
    await _post(served, sendgrid_request([again]))
    assert len(await services.experiment_results.clicks(customer_id_for(person))) == 1


async def test_an_order_inside_the_window_converts_and_outside_does_not(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A window of 3 s (the setting's hours, as both results read it), so that orders
    # after the click, after the list and no later than their arrival (one dated later
    # counts from its arrival) fall inside and outside it in a few seconds.
    services = services_of(served.app)
    for counter in (services.experiment_results, services.campaigns):
        monkeypatch.setattr(counter, "window_s", 3.0)
    people = person_with_history(served.samples)[2:6]
    send = f"send-{uuid.uuid4().hex[:6]}"
    async with running_experiment(
        served.client, [("only", "model", 1.0), ("b", "model", 1e-9)]
    ) as name:
        urls = [
            (await recommend(served.client, person, send=send))["recommendations"][0]["url"]
            for person in people
        ]
        clicked = int(time.time()) + 1  # whole seconds, as SendGrid dates: after the lists
        await until(clicked)
        clicks = [
            click(p.email, url, send=send, at=clicked) for p, url in zip(people, urls, strict=True)
        ]
        await _post(served, sendgrid_request(clicks))
        # 1 s after the click: inside the window; 4 s: outside; 10 minutes before the
        # click: no conversion of it; the fourth never orders.
        for person, offset in zip(people, (1, 4, -600), strict=False):
            await until(clicked + offset)
            answer = await served.client.post(**_order(person, clicked + offset))
            assert answer.status_code == 200, answer.text
        conversion = await _results(served, name, "CONVERSION")
        click_through = await _results(served, name)
        body = await gql(served.client, CAMPAIGN, send=send)
    variant = conversion["variants"][0]
    assert (variant["impressions"], variant["clicks"], variant["conversions"]) == (4, 4, 1)
    assert variant["conversionRate"] == 0.25
    interval = binomtest(1, 4).proportion_ci(0.95, method="wilson")
    assert variant["ciLow"] == pytest.approx(interval.low, abs=1e-9)
    assert variant["ciHigh"] == pytest.approx(interval.high, abs=1e-9)
    interval = binomtest(4, 4).proportion_ci(0.95, method="wilson")
    assert click_through["variants"][0]["ciLow"] == pytest.approx(interval.low, abs=1e-9)
    assert click_through["variants"][0]["ciHigh"] == 1.0
    campaign = body["data"]["campaign"]
    assert (campaign["delivered"], campaign["clicked"], campaign["converted"]) == (4, 4, 1)
    assert campaign["conversionRate"] == 0.25


async def test_a_holdout_is_served_nothing_and_counted(served: Served) -> None:
    person = person_with_history(served.samples)[6]
    async with running_experiment(
        served.client, [("hold", "none", 1.0), ("x", "none", 1e-9)]
    ) as name:
        shown = await recommend(served.client, person)
        assert shown["recommendations"] == []
        assert shown["experiments"][0]["strategy"] == "NONE"
        results = await _results(served, name)
    assert results["variants"][0]["impressions"] == 1
    assert results["variants"][0]["ctr"] == 0.0


async def test_without_personalisation_consent_the_list_served_is_popular(served: Served) -> None:
    person = person_with_history(served.samples, consent=False)[0]
    async with running_experiment(served.client, [("p", "model", 1.0), ("q", "model", 1e-9)]):
        shown = await recommend(served.client, person)
        assert not any(i["reason"].startswith("because") for i in shown["recommendations"])
        services = services_of(served.app)
        await services.impressions.flush()
        async with services.engine.connect() as session:
            strategy = await session.scalar(
                select(RecommendationImpression.strategy).where(
                    RecommendationImpression.list_id == shown["recommendations"][0]["listId"]
                )
            )
    assert strategy == "popularity"


async def test_erasure_takes_the_customers_impressions_and_clicks(served: Served) -> None:
    person = person_with_history(served.samples)[7]
    shown = await recommend(served.client, person)
    await _post(served, sendgrid_request([click(person.email, shown["recommendations"][0]["url"])]))
    services = services_of(served.app)
    await services.impressions.flush()
    customer = customer_id_for(person)

    async def count() -> tuple[int, int]:
        async with services.engine.connect() as session:
            lists = await session.scalar(
                select(func.count()).where(RecommendationImpression.customer_id == customer)
            )
            clicks = await session.scalar(
                select(func.count()).where(RecommendationClick.customer_id == customer)
            )
        return int(lists or 0), int(clicks or 0)

    assert await count() == (1, 1)
    body = await gql(
        served.client, "mutation($id: ID!) { forgetCustomer(id: $id) { events } }", id=str(customer)
    )
    assert "errors" not in body, body
    assert await count() == (0, 0)


async def test_a_click_on_a_list_served_to_someone_else_is_not_attributed(served: Served) -> None:
    # The tag proves the link is genuine, not that the clicker was sent it: an ESP event
    # of one recipient carrying another customer's link (a forwarded mail's link pasted
    # into a reply, a misrouted event) must count for neither list nor person.
    owner, clicker = person_with_history(served.samples)[9:11]
    async with running_experiment(
        served.client, [("only", "model", 1.0), ("b", "model", 1e-9)]
    ) as name:
        now = time.time()
        url = (await recommend(served.client, owner))["recommendations"][0]["url"]
        await _post(served, sendgrid_request([click(clicker.email, url, at=now)]))
        answer = await served.client.post(**_order(clicker, now + 60))
        assert answer.status_code == 200, answer.text
        click_through = await _results(served, name)
        conversion = await _results(served, name, "CONVERSION")
    services = services_of(served.app)
    assert await services.experiment_results.clicks(customer_id_for(clicker)) == []
    variant = click_through["variants"][0]
    assert (variant["impressions"], variant["clicks"]) == (1, 0)
    assert conversion["variants"][0]["conversions"] == 0


@pytest.mark.parametrize("updated", [False, True], ids=["order", "then-updated"])
async def test_an_order_dated_ahead_converts_no_click_made_after_it_arrived(
    served: Served, updated: bool
) -> None:
    """A shop's clock ahead (or a forged date) must not turn later clicks into
    conversions: the order counts from its arrival, as an ESP's statement does. And
    once, at its first event: its ``orders/updated``, arriving after the later click
    still dated ahead, stood bounded by its own arrival as a new order after that
    click, which then converted."""
    person = person_with_history(served.samples)[12 if updated else 11]
    before, after = f"send-{uuid.uuid4().hex[:6]}", f"send-{uuid.uuid4().hex[:6]}"
    order_id = uuid.uuid4().int % 10**12
    async with running_experiment(
        served.client, [("only", "model", 1.0), ("b", "model", 1e-9)]
    ) as name:
        now = time.time()
        earlier = (await recommend(served.client, person, send=before))["recommendations"]
        await _post(served, sendgrid_request([click(person.email, earlier[0]["url"], before)]))
        # Placed "in 30 minutes" (inside the one-hour window of both clicks), received now.
        answer = await served.client.post(**_order(person, now + 1800, order_id))
        assert answer.status_code == 200, answer.text
        await asyncio.sleep(1.1)  # the next click's whole second is after the arrival
        later = (await recommend(served.client, person, send=after))["recommendations"]
        await _post(served, sendgrid_request([click(person.email, later[0]["url"], after)]))
        if updated:
            await asyncio.sleep(1.1)  # the update arrives after the later click
            again = _order(person, now + 1800, order_id, topic="orders/updated")
            answer = await served.client.post(**again)
            assert answer.status_code == 200, answer.text
        conversion = await _results(served, name, "CONVERSION")
        converted = {
            send: (await gql(served.client, CAMPAIGN, send=send))["data"]["campaign"]["converted"]
            for send in (before, after)
        }
    variant = conversion["variants"][0]
    assert (variant["impressions"], variant["clicks"], variant["conversions"]) == (2, 2, 1)
    assert converted == {before: 1, after: 0}


async def test_every_link_of_a_list_two_renders_print_is_attributed_to_its_product(
    served: Served,
) -> None:
    """Two renders of one request share the customer's list, one printing its first
    link, the other all of them: a click on any names its product (recorded with what
    the first body printed, the other's clicks found none at their position)."""
    person = person_with_history(served.samples)[14]
    customer = str(customer_id_for(person))
    for name, source in (
        ("first-only", "{{ recommendations[0].url }}"),
        ("all-links", "{% for p in recommendations %}[{{ p.url }}]{% endfor %}"),
    ):
        saved = await gql(
            served.client,
            "mutation($n: String!, $s: String!) { saveTemplate(name: $n, source: $s) { version } }",
            n=name,
            s=source,
        )
        assert "errors" not in saved, saved
    body = await gql(
        served.client,
        "query($ids: [ID!]!) {"
        ' a: renderBatch(name: "first-only", customerIds: $ids, sendId: "two-1") { body }'
        ' b: renderBatch(name: "all-links", customerIds: $ids, sendId: "two-1") { body } }',
        ids=[customer],
    )
    assert "errors" not in body, body
    links = [part.split("]")[0] for part in body["data"]["b"][0]["body"].split("[")[1:]]
    assert len(links) > 3
    assert body["data"]["a"][0]["body"] == links[0]
    events = [click(person.email, link, send="two-1") for link in links]
    await _post(served, sendgrid_request(events))
    services = services_of(served.app)
    found = await services.experiment_results.clicks(customer_id_for(person))
    assert sorted(c.position for c in found) == list(range(len(links)))
    assert all(c.product_id is not None for c in found)


async def test_a_click_dated_before_its_list_was_made_is_not_attributed(served: Served) -> None:
    """A click on a tracked link dated an hour before the list existed (an ESP's clock
    far behind, a back-dated event) is engagement, not a click on the list: it converts
    no order. One dated a minute early (clocks a little apart) is the list's."""
    person = person_with_history(served.samples)[9]
    shown = await recommend(served.client, person)
    early, late = (item["url"] for item in shown["recommendations"][:2])
    now = time.time()
    stored = await _post(
        served,
        sendgrid_request(
            [click(person.email, early, at=now - 3600), click(person.email, late, at=now - 60)]
        ),
    )
    assert [e["status"] for e in stored] == ["processed", "processed"]
    services = services_of(served.app)
    [found] = await services.experiment_results.clicks(customer_id_for(person))
    assert found.position == 1


async def test_an_order_before_the_list_was_served_converts_no_click_dated_early(
    served: Served,
) -> None:
    """Clicks dated a minute before their list (clocks apart: still attributed), and an
    order between such a click and the list: placed before anyone saw the list, it is
    no conversion. An order after the list is."""
    early_buyer, buyer = person_with_history(served.samples)[11:13]
    async with running_experiment(
        served.client, [("only", "model", 1.0), ("b", "model", 1e-9)]
    ) as name:
        for person, ordered in ((early_buyer, -30.0), (buyer, 1.0)):
            url = (await recommend(served.client, person))["recommendations"][0]["url"]
            now = time.time()
            await _post(served, sendgrid_request([click(person.email, url, at=now - 60)]))
            answer = await served.client.post(**_order(person, now + ordered))
            assert answer.status_code == 200, answer.text
        variant = (await _results(served, name, "CONVERSION"))["variants"][0]
    assert (variant["impressions"], variant["clicks"], variant["conversions"]) == (2, 2, 1)

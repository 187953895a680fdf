"""Experiments as a caller meets them, on SQLite and Postgres: saved by an admin only
(audited, refused naming the field, one at a time), a customer's variant the same on two
instances, each variant's strategy served (and recorded) through GraphQL, the
recommendation URL and a batch of renders, and per-send campaign metrics."""

from __future__ import annotations

import gc
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import false, select

from demo.seed import customer_id_for
from gateway.access.api_keys import Scope
from gateway.db.engine import create_sessionmaker
from gateway.db.models import Customer
from gateway.db.recommendation_models import RecommendationImpression
from gateway.experiments.assignment import experiment
from gateway.identity.linkage.folding import fold_customers
from gateway.identity.merges import merge_customers
from tests.conftest import api_client
from tests.experiments.serving import (
    SAVE,
    Served,
    click,
    person_with_history,
    recommend,
    running_experiment,
    serving_app,
)
from tests.gql_client import error_codes, gql
from tests.in_process import lifespan, services_of
from tests.ingest.webhook_requests import BASE, sendgrid_event, sendgrid_request

NOW = datetime.now(UTC)
TEMPLATE = "{% for p in recommendations limit: 2 %}[{{ p.list_id }} {{ p.url }}]{% endfor %}"


def _window(days: float) -> dict[str, Any]:
    start = NOW + timedelta(days=days)
    return {"start": start.isoformat(), "end": (start + timedelta(days=1)).isoformat()}


def _variants(*strategies: str) -> list[dict[str, Any]]:
    return [{"name": f"v{n}", "strategy": s, "weight": 1.0} for n, s in enumerate(strategies)]


async def _impressions(served: Served, **where: Any) -> list[Any]:
    """The stored impressions (rows) matching ``where``, this instance's written first."""
    services = services_of(served.app)
    await services.impressions.flush()
    query = select(RecommendationImpression).filter_by(**where)
    async with services.engine.connect() as connection:
        return list((await connection.execute(query)).all())


async def test_saving_an_experiment_takes_an_admin_and_is_audited(served: Served) -> None:
    name = f"later-{uuid.uuid4().hex[:6]}"
    variants = _variants("POPULARITY", "ITEM_TO_ITEM")
    async with api_client(served.app, Scope.PROFILES_READ, base_url=BASE) as reader:
        refused = await gql(reader, SAVE, name=name, variants=variants, **_window(30))
    assert error_codes(refused) == [("FORBIDDEN", ["saveExperiment"])]
    body = await gql(served.client, SAVE, name=name, variants=variants, **_window(30))
    assert "errors" not in body, body
    saved = body["data"]["saveExperiment"]
    assert saved["running"] is False
    assert [v["strategy"] for v in saved["variants"]] == ["POPULARITY", "ITEM_TO_ITEM"]
    entries = await services_of(served.app).audit.query(limit=20)
    assert any(e.operation == f"mutation:saveExperiment:{name}" for e in entries)
    # Another experiment overlapping it: refused, naming the one in the way.
    other = await gql(served.client, SAVE, name=f"{name}-b", variants=variants, **_window(30.5))
    assert error_codes(other) == [("CONFLICT", ["saveExperiment"])]
    assert name in other["errors"][0]["message"]
    # Bad input names the field.
    bad = await gql(served.client, SAVE, name=name, variants=variants[:1], **_window(30))
    assert error_codes(bad) == [("BAD_USER_INPUT", ["saveExperiment"])]
    assert bad["errors"][0]["extensions"]["field"] == "variants"
    # Moved out of the way again (replaced under its name), for the tests after this one.
    moved = await gql(served.client, SAVE, name=name, variants=variants, **_window(300))
    assert "errors" not in moved, moved


async def test_a_customer_has_the_same_variant_on_two_instances(served: Served) -> None:
    people = person_with_history(served.samples)[:40]
    strategies = [("a", "popularity", 1.0), ("b", "item_to_item", 2.0), ("c", "none", 1.0)]
    async with running_experiment(served.client, strategies) as name:
        second = serving_app(served.url, served.samples)
        async with lifespan(second), api_client(second, base_url=BASE) as other:
            here = [(await recommend(served.client, p))["experiments"] for p in people]
            there = [(await recommend(other, p))["experiments"] for p in people]
        impressions = await _impressions(served, experiment=name)
    expected = experiment(name, strategies, NOW, NOW + timedelta(days=1))
    assert here == there
    for person, [found] in zip(people, here, strict=True):
        variant = expected.variant_of(customer_id_for(person))
        assert (found["variant"], found["strategy"]) == (variant.name, variant.strategy.upper())
    assert len({found["variant"] for [found] in here}) == 3  # 40 people: all three seen
    # Each list served is recorded under the customer's variant, with its strategy.
    assert len(impressions) == 80
    for row in impressions:
        variant = expected.variant_of(row.customer_id)
        assert (row.variant, row.strategy) == (variant.name, variant.strategy)


async def test_each_strategy_serves_what_it_says(served: Served) -> None:
    person = person_with_history(served.samples)[10]
    reasons: dict[str, list[str]] = {}
    for strategy in ("popularity", "item_to_item", "none"):
        variants = [(strategy, strategy, 1.0), ("rare", strategy, 1e-9)]
        async with running_experiment(served.client, variants):
            found = await recommend(served.client, person)
            reasons[strategy] = [item["reason"] for item in found["recommendations"]]
    assert reasons["none"] == []
    assert reasons["popularity"]
    assert not any(r.startswith("because") for r in reasons["popularity"])
    # Item-to-item: what the customer bought names every personal reason.
    assert any(r.startswith("because you bought ") for r in reasons["item_to_item"])
    assert not any(r.startswith("because you viewed ") for r in reasons["item_to_item"])


async def test_renders_and_the_url_record_the_list_they_show(served: Served) -> None:
    first, second = person_with_history(served.samples)[11:13]
    ids = [str(customer_id_for(p)) for p in (first, second, first)]
    saved = await gql(
        served.client,
        'mutation($s: String!) { saveTemplate(name: "recs-mail", source: $s) { version } }',
        s=TEMPLATE,
    )
    assert "errors" not in saved, saved
    body = await gql(
        served.client,
        'query($ids: [ID!]!) { renderBatch(name: "recs-mail", customerIds: $ids, '
        'sendId: "mail-7") { customerId body error { code } } }',
        ids=ids,
    )
    assert "errors" not in body, body
    items = body["data"]["renderBatch"]
    assert [i["error"] for i in items] == [None, None, None]
    assert items[0]["body"] == items[2]["body"]  # one list per customer and request
    assert "?gw_rec=" in items[0]["body"]
    rendered = await _impressions(served, send_id="mail-7")
    assert sorted(str(r.customer_id) for r in rendered) == sorted(ids[:2])
    assert {r.surface for r in rendered} == {"render"}
    for row in rendered:
        assert row.list_id in (items[0]["body"] + items[1]["body"])
        # Every pick the template was given (it printed two): another render of the
        # same request may print more of the same list.
        assert len(row.items) > 2
    # The recommendation URL: its answer names the list recorded for the send.
    answer = await served.client.post(
        "/api/recommendations",
        json={"customer_id": ids[1], "limit": 2, "send_id": "api-3"},
    )
    assert answer.status_code == 200, answer.text
    data = answer.json()
    [row] = await _impressions(served, send_id="api-3")
    assert (row.list_id, row.surface, row.strategy) == (data["list_id"], "api", "model")
    assert row.items == [item["product_id"] for item in data["recommendations"]]
    assert all("gw_rec=" in item["url"] for item in data["recommendations"])


async def test_campaign_metrics_per_send_and_per_audience(served: Served) -> None:
    people = person_with_history(served.samples)[13:18]
    send = f"news-{uuid.uuid4().hex[:6]}"
    events = [sendgrid_event(p.email, "delivered", send_id=send) for p in people]
    events += [sendgrid_event(p.email, "open", send_id=send) for p in people[:3]]
    events += [click(p.email, "https://shop.example/products/x", send=send) for p in people[:2]]
    events += [sendgrid_event(people[4].email, "unsubscribe", send_id=send)]
    events += [sendgrid_event(people[0].email, "open", send_id="another-send")]
    response = await served.client.post(**sendgrid_request(events))
    assert response.status_code == 200, response.text
    campaigns = services_of(served.app).campaigns
    found = await campaigns.of_send(send)
    assert (found.delivered, found.opened, found.clicked, found.unsubscribed) == (5, 3, 2, 1)
    assert (found.open_rate, found.click_through_rate, found.unsubscribe_rate) == (0.6, 0.4, 0.2)
    # The hook for segments: only the audience's recipients count.
    audience = select(Customer.id).where(false())  # nobody
    assert (await campaigns.of_send(send, audience)).delivered == 0
    two = select(Customer.id).where(Customer.id.in_([customer_id_for(p) for p in people[:2]]))
    within = await campaigns.of_send(send, two)
    assert (within.delivered, within.opened, within.clicked) == (2, 2, 2)


async def test_impressions_of_a_customer_gone_before_the_write_are_dropped_alone(
    served: Served,
) -> None:
    impressions = services_of(served.app).impressions
    kept, gone = customer_id_for(person_with_history(served.samples)[18]), uuid.uuid4()
    for customer in (kept, gone):
        # As serving queues it: the customer's integer (the writer makes its digits).
        row = (customer.int, time.time_ns(), "api", "model", None, None, "fk-1", '["1"]')
        impressions.record((uuid.uuid4().hex[:16], *row))
    await impressions.flush()
    assert [r.customer_id for r in await _impressions(served, send_id="fk-1")] == [kept]


async def test_a_large_batch_of_impressions_is_written_whole_and_in_order(
    served: Served,
) -> None:
    """1,237 lists in one write (on SQLite a statement of 1,000 rows, then one of 237):
    every one stored once, with its own time, customer and items."""
    impressions = services_of(served.app).impressions
    customer = customer_id_for(person_with_history(served.samples)[19])
    send, start = f"bulk-{uuid.uuid4().hex[:6]}", time.time_ns()
    ids = [uuid.uuid4().hex[:16] for _ in range(1237)]
    for n, list_id in enumerate(ids):
        row = (
            customer.hex,
            start + n * 1_000_000,
            "api",
            "model",
            None,
            None,
            send,
            f'["{n}","x"]',
        )
        impressions.record((list_id, *row))
    await impressions.flush()
    stored = sorted(await _impressions(served, send_id=send), key=lambda r: r.served_at)
    assert [r.list_id for r in stored] == ids
    assert [r.items for r in stored] == [[str(n), "x"] for n in range(1237)]
    assert {r.customer_id for r in stored} == {customer}
    first = stored[0].served_at.replace(tzinfo=stored[0].served_at.tzinfo or UTC)
    assert abs(first.timestamp() - start / 1e9) < 0.001


async def test_a_send_id_no_database_keeps_is_refused_at_the_door(served: Served) -> None:
    """A NUL (or any unprintable character) in the recommendation URL's ``send_id``, as
    GraphQL's ``sendId`` refuses it: PostgreSQL's text cannot hold one (its impression
    failed the whole batch's COPY, retried for ever with every later list behind it) and
    SQLite's JSON reading stored the id cut at the NUL. The lists served after it are
    stored."""
    customer = str(customer_id_for(person_with_history(served.samples)[20]))
    refused = await served.client.post(
        "/api/recommendations", json={"customer_id": customer, "send_id": "nul\x00-1"}
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "send_id"
    answer = await served.client.post(
        "/api/recommendations", json={"customer_id": customer, "send_id": "after-nul"}
    )
    assert answer.status_code == 200, answer.text
    assert [r.list_id for r in await _impressions(served, send_id="after-nul")] == [
        answer.json()["list_id"]
    ]
    assert await _impressions(served, send_id="nul") == []


async def test_a_queued_impression_is_nothing_the_garbage_collector_counts(
    served: Served,
) -> None:
    """A send queues tens of thousands of lists before the lull writes them. A row the
    collector follows (one holding the customer's UUID) is scanned by every collection
    of its generation, pauses of up to ~20 ms while the send is served; a row that is an
    object at all (a tuple) is counted, and ~45,000 of them set off 4-5 collections a
    10 s turn of bench/impressions, none without recording. What waits must be only the
    rows' plain values (strings and numbers), end to end."""
    services = services_of(served.app)
    person = person_with_history(served.samples)[20]
    log = services.impressions
    buffer = log._buffer
    left: list[list[object]] = []  # what each row left in the queue
    queue = log.queue

    def noting(values: Any) -> None:
        queue(values)
        left.append(buffer._pending[-len(values) :])

    log.queue = noting
    try:
        await recommend(served.client, person, send="gc-1")
        answer = await served.client.post(
            "/api/recommendations",
            json={"customer_id": str(customer_id_for(person)), "limit": 2, "send_id": "gc-2"},
        )
        assert answer.status_code == 200, answer.text
    finally:
        log.queue = queue
    assert len(left) == 2
    for values in left:
        assert {type(value) for value in values} <= {str, int, type(None)}
        assert not any(gc.is_tracked(value) for value in values)
        assert values[1] == customer_id_for(person).int  # the writer makes its digits
    stored = await _impressions(served, customer_id=customer_id_for(person))
    assert {row.send_id for row in stored} >= {"gc-1", "gc-2"}


async def test_impressions_of_a_customer_merged_away_before_the_write_go_to_the_survivor(
    served: Served,
) -> None:
    """A list served to B, then B merged into A and A folded into C by the linker before
    the write (during a send's lull): the row is written to C, as the merges moved B's and A's
    stored lists, so a click on it is still attributed. It was dropped; an erased
    customer's row still is."""
    services = services_of(served.app)
    sessions = create_sessionmaker(services.engine)
    people = person_with_history(served.samples)[21:24]
    a, b, c = (customer_id_for(p) for p in people)
    gone = uuid.uuid4()  # never stored: as one erased
    send = f"merge-{uuid.uuid4().hex[:6]}"
    for list_id, customer in (("ml-b", b), ("ml-gone", gone), ("ml-c", c)):
        row = (customer.int, time.time_ns(), "api", "model", None, None, send, '["1"]')
        services.impressions.record((f"{list_id}-{send}", *row))  # as serving queues it
    assert await merge_customers(sessions, a, b, "same person") == a
    async with services.engine.begin() as connection:  # the linker's fold: A into C
        assert await fold_customers(connection, [(a, c)]) == {a}
    await services.impressions.flush()
    stored = {r.list_id: r.customer_id for r in await _impressions(served, send_id=send)}
    assert stored == {f"ml-b-{send}": c, f"ml-c-{send}": c}

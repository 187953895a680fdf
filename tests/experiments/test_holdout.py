"""A holdout in an experiment, on SQLite and Postgres: served nothing, it has no click
and no click-then-order by construction, so it is compared with the control by the
orders placed after a list was served (the ORDER metric), never by clicks; the figures
are scipy's."""

from __future__ import annotations

import time
from typing import Any

import pytest
from scipy.stats import binomtest, chi2_contingency

from demo.people.population import Person
from tests.experiments.serving import (
    Served,
    click,
    person_with_history,
    recommend,
    running_experiment,
)
from tests.experiments.test_attribution import _order, _post
from tests.gql_client import gql
from tests.ingest.webhook_requests import sendgrid_request

RESULTS = """
query($name: String!, $metric: ExperimentMetric!) {
  experiment(name: $name, metric: $metric) {
    comparedVariant liftVsControl pValue
    variants { name customers impressions clicks ctr orders orderRate ciLow ciHigh
               liftVsControl pValue }
  }
}
"""
ARMS = [("hold", "none", 1.0), ("popular", "popularity", 1.0), ("personal", "model", 1.0)]


async def test_a_holdout_is_compared_by_the_orders_placed_not_by_clicks(served: Served) -> None:
    """A holdout control is served nothing, so it has no click and no click-then-order
    by construction: on those metrics it is not compared (its "significant" lift of
    -100 % misled), and the arms served something are compared with the first of them.
    On ORDER (customers who ordered after a list, clicked or not) every arm is compared
    with the holdout, a customer served twice counting once; the figures are scipy's."""
    # People no other test of the module serves (their counts are asserted there).
    people = iter(person_with_history(served.samples)[20:])
    served_to: dict[str, list[Person]] = {arm: [] for arm, _, _ in ARMS}
    links: dict[str, str] = {}
    async with running_experiment(served.client, ARMS) as name:
        while min(len(group) for group in served_to.values()) < 4:
            person = next(people)
            shown = await recommend(served.client, person)
            served_to[shown["experiments"][0]["variant"]].append(person)
            if shown["recommendations"]:
                links[person.email] = shown["recommendations"][0]["url"]
        await recommend(served.client, served_to["hold"][0])  # a second list, one person
        clickers = {"hold": [], "popular": served_to["popular"][:1]}
        clickers["personal"] = served_to["personal"][:3]
        buyers = {arm: group[::2] for arm, group in served_to.items()}
        buyers["personal"] = served_to["personal"][:3]
        for person in clickers["popular"] + clickers["personal"]:
            await _post(served, sendgrid_request([click(person.email, links[person.email])]))
        # Orders dated ahead count from their arrival: after the lists, inside the window.
        for person in (p for group in buyers.values() for p in group):
            answer = await served.client.post(**_order(person, time.time() + 1))
            assert answer.status_code == 200, answer.text
        by_clicks = await _experiment(served, name, "CLICK_THROUGH")
        by_orders = await _experiment(served, name, "ORDER")
    n = {arm: len(group) for arm, group in served_to.items()}
    hold, popular, personal = by_clicks["variants"]
    assert (hold["impressions"], hold["customers"], hold["clicks"]) == (n["hold"] + 1, n["hold"], 0)
    assert (hold["liftVsControl"], hold["pValue"]) == (None, None)
    assert (popular["liftVsControl"], popular["pValue"]) == (None, None)  # the reference
    assert by_clicks["comparedVariant"] == "personal"
    _judged(personal, popular, [(3, n["personal"] - 3), (1, n["popular"] - 1)], "ctr")
    assert (personal["clicks"], popular["clicks"]) == (3, 1)
    for found in by_orders["variants"]:
        arm, ordered = found["name"], len(buyers[found["name"]])
        assert (found["customers"], found["orders"]) == (n[arm], ordered)
        assert found["orderRate"] == pytest.approx(ordered / n[arm])
        interval = binomtest(ordered, n[arm]).proportion_ci(0.95, method="wilson")
        assert (found["ciLow"], found["ciHigh"]) == pytest.approx((interval.low, interval.high))
    hold, *others = by_orders["variants"]
    assert (hold["liftVsControl"], hold["pValue"]) == (None, None)
    held = (len(buyers["hold"]), n["hold"] - len(buyers["hold"]))
    for found in others:
        ordered = len(buyers[found["name"]])
        _judged(found, hold, [(ordered, n[found["name"]] - ordered), held], "orderRate")
    best = max(others, key=lambda found: found["orderRate"])
    assert by_orders["comparedVariant"] == best["name"]


async def _experiment(served: Served, name: str, metric: str) -> dict[str, Any]:
    body = await gql(served.client, RESULTS, name=name, metric=metric)
    assert "errors" not in body, body
    found: dict[str, Any] = body["data"]["experiment"]
    return found


def _judged(
    found: dict[str, Any], reference: dict[str, Any], table: list[tuple[int, int]], rate: str
) -> None:
    """``found``'s lift over ``reference`` on ``rate``, and its p-value: scipy's
    uncorrected chi-square test of the 2x2 ``table`` (the pooled z-test's)."""
    assert found["liftVsControl"] == pytest.approx(found[rate] / reference[rate] - 1)
    assert found["pValue"] == pytest.approx(chi2_contingency(table, correction=False).pvalue)

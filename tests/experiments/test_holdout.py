"""A holdout in an experiment, on SQLite and Postgres: served nothing, it has no click
and no click-then-order by construction, so it is compared with the control by the
orders placed after a list was served (the ORDER metric), never by clicks; the figures
are scipy's."""

from __future__ import annotations

import time

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
from tests.experiments.test_attribution import _order, _post, _results
from tests.gql_client import gql
from tests.ingest.webhook_requests import sendgrid_request

ORDERS = """
query($name: String!, $metric: ExperimentMetric!) {
  experiment(name: $name, metric: $metric) {
    comparedVariant liftVsControl pValue
    variants { name impressions orders orderRate ciLow ciHigh liftVsControl pValue }
  }
}
"""


async def test_a_holdout_is_compared_by_the_orders_placed_not_by_clicks(served: Served) -> None:
    """A holdout is served nothing, so it has no click and no click-then-order by
    construction: on those metrics it is not compared (its "significant" lift of -100 %
    misled). On ORDER (lists followed by an order, clicked or not) it is, and the
    figures are scipy's."""
    # People no other test of the module serves (their counts are asserted there).
    people = iter(person_with_history(served.samples)[20:])
    served_to: dict[str, list[Person]] = {"hold": [], "personal": []}
    async with running_experiment(
        served.client, [("hold", "none", 1.0), ("personal", "model", 1.0)]
    ) as name:
        while min(len(group) for group in served_to.values()) < 4:
            person = next(people)
            shown = await recommend(served.client, person)
            served_to[shown["experiments"][0]["variant"]].append(person)
            if shown["recommendations"]:
                url = shown["recommendations"][0]["url"]
                await _post(served, sendgrid_request([click(person.email, url)]))
        # Every other customer of each variant orders after being served (dated ahead,
        # the order counts from its arrival: after the list, inside the window).
        for group in served_to.values():
            for person in group[::2]:
                answer = await served.client.post(**_order(person, time.time() + 1))
                assert answer.status_code == 200, answer.text
        by_clicks = await _results(served, name)
        body = await gql(served.client, ORDERS, name=name, metric="ORDER")
    assert "errors" not in body, body
    assert [(v["liftVsControl"], v["pValue"]) for v in by_clicks["variants"]] == [(None, None)] * 2
    assert (by_clicks["comparedVariant"], by_clicks["liftVsControl"]) == (None, None)
    by_orders = body["data"]["experiment"]
    hold, personal = by_orders["variants"]
    counts = []
    for found, group in ((hold, served_to["hold"]), (personal, served_to["personal"])):
        n, ordered = len(group), len(group[::2])
        assert (found["impressions"], found["orders"]) == (n, ordered)
        assert found["orderRate"] == pytest.approx(ordered / n)
        interval = binomtest(ordered, n).proportion_ci(0.95, method="wilson")
        assert (found["ciLow"], found["ciHigh"]) == pytest.approx((interval.low, interval.high))
        counts.append((ordered, n - ordered))
    assert by_orders["comparedVariant"] == "personal"
    lift = (personal["orderRate"] / hold["orderRate"]) - 1
    assert personal["liftVsControl"] == by_orders["liftVsControl"] == pytest.approx(lift)
    p_value = chi2_contingency(counts, correction=False).pvalue
    assert personal["pValue"] == by_orders["pValue"] == pytest.approx(p_value)

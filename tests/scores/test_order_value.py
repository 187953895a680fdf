"""``Scores.averageOrderValue`` is what was spent over the orders placed: two orders on
one day are two orders. It divided by the purchase days (``frequency``, one a day at
most): a customer with orders of 10 and 30 on one day and 20 on another had an average
order value of 30, not 20; 50 of the demo's 795 buyers were answered too high."""

from __future__ import annotations

import pytest

from gateway.scores.features import features
from gateway.scores.ledger import ledger_from


def test_the_average_order_value_divides_by_the_orders_not_the_days() -> None:
    ledger = ledger_from([("a", 100, 10.0), ("a", 100, 30.0), ("a", 150, 20.0)])
    table = features(ledger, 200, 30)
    assert table.column("frequency")[0] == 2  # purchase days, as documented
    assert table.column("monetary")[0] == pytest.approx(60.0)
    assert table.column("aov")[0] == pytest.approx(20.0)

"""``Scores.averageOrderValue`` is what was spent over the orders placed: two orders on
one day are two orders. It divided by the purchase days (``frequency``, one a day at
most, as BG/NBD counts them): a customer with orders of 10 and 30 on one day and 20 on
another had an average order value of 30, not 20; 50 of the demo's 795 buyers were
answered too high. The model's own ``aov`` feature stays spend per purchase day."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from gateway.scores.build import records_of
from gateway.scores.features import features
from gateway.scores.ledger import ledger_from
from gateway.scores.rfm import boundaries
from gateway.scores.store import COLUMNS

KEYS = ["00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"]


def test_the_average_order_value_divides_by_the_orders_not_the_days() -> None:
    ledger = ledger_from(
        [(KEYS[0], 100, 10.0), (KEYS[0], 100, 30.0), (KEYS[0], 150, 20.0), (KEYS[1], 90, 5.0)]
    )
    table = features(ledger, 200, 30)
    assert table.column("frequency")[0] == 2  # purchase days, as documented
    assert list(ledger.order_counts(200)) == [3, 1]
    assert list(ledger.order_counts(120)) == [2, 1]
    bounds = boundaries(
        table.column("recency_days"), table.column("frequency"), table.column("monetary")
    )
    now = datetime(2026, 1, 1, tzinfo=UTC)
    churn = np.full(ledger.size, np.nan)
    rows = records_of(
        ledger.keys, table, bounds, None, "none", now, ledger.order_counts(200), churn
    )
    served = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
    assert served[0]["monetary"] == pytest.approx(60.0)
    assert served[0]["average_order_value"] == pytest.approx(20.0)
    assert served[1]["average_order_value"] == pytest.approx(5.0)
    # What happened after a cut-off is not read, the orders' count included.
    assert ledger.upto(120).order_counts(200)[0] == 2

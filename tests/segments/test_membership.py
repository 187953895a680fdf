"""A segment's members are exactly those hand-written SQL finds, for any filter over any
field (random ones, by hypothesis), on SQLite and Postgres: paged in any page size
without a duplicate or a gap, counted, and named by ``memberships``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.errors import InvalidInput
from gateway.scores.rfm import SEGMENTS
from gateway.segments.fields import FIELDS, OPERATORS
from gateway.segments.store import SegmentStore
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.segments.audience import LOCALES, NAMES, NOW, write_audience
from tests.segments.oracle import members

SIZE = 600
Audience = tuple[AsyncEngine, SegmentStore, list[uuid.UUID]]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def audience(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Audience]:
    """An audience of its own (the session's database is shared with other tests)."""
    if request.param == "postgres":
        url = await asyncio.to_thread(create_postgres_database, "gateway_segments")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('segments') / 's.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    ids = await write_audience(engine, SIZE, seed=3)
    yield engine, SegmentStore(create_sessionmaker(engine)), ids
    await engine.dispose()
    if request.param == "postgres":
        await asyncio.to_thread(drop_postgres_database, url)


def _numbers(low: int, high: int) -> st.SearchStrategy[float]:
    """Whole numbers mostly (values the data holds, so eq and in hit), halves too."""
    return st.integers(low, high).map(float) | st.integers(2 * low, 2 * high).map(lambda n: n / 2)


_FRACTIONS = st.integers(0, 1000).map(lambda n: n / 1000)
_TIMES = st.integers(0, 900 * 24).map(lambda h: (NOW - timedelta(hours=h)).isoformat())
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "recency": _numbers(0, 400),
    "frequency": _numbers(0, 8),
    "monetary": _numbers(0, 300).map(lambda v: v * 37.5 / 10),
    "averageOrderValue": st.sampled_from([0.0, 37.5, 40.0]),
    "daysBetweenOrders": _numbers(5, 90),
    "rScore": _numbers(0, 5),
    "fScore": _numbers(0, 5),
    "mScore": _numbers(0, 5),
    "engagement30d": _numbers(0, 12),
    "engagement90d": _numbers(0, 30),
    "purchasePropensity": _FRACTIONS,
    "churnRisk": _FRACTIONS,
    "rfmSegment": st.sampled_from(SEGMENTS),
    "consent.emailMarketing": st.booleans(),
    "consent.personalisation": st.booleans(),
    "consent.analytics": st.booleans(),
    "email": st.integers(0, SIZE).map(lambda n: f"a{n}@example.com"),
    "firstName": st.sampled_from([n for n in NAMES if n]),
    "lastName": st.just("Lovelace"),  # nobody has one: an empty segment is one too
    "locale": st.sampled_from([loc for loc in LOCALES if loc]),
    "createdAt": _TIMES,
}


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from(sorted(VALUES)))
    operator = draw(st.sampled_from(sorted(OPERATORS[FIELDS[field].kind])))
    if operator == "in":
        return {"field": field, "in": draw(st.lists(VALUES[field], min_size=1, max_size=4))}
    return {"field": field, operator: draw(VALUES[field])}


FILTERS = st.recursive(
    conditions(),
    lambda inner: st.builds(
        lambda key, nodes: {key: nodes},
        st.sampled_from(["all", "any"]),
        st.lists(inner, max_size=4),
    ),
    max_leaves=8,
)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    definition=FILTERS,
    include_suppressed=st.booleans(),
    first=st.integers(5, 250),
)
async def test_members_are_what_hand_written_sql_finds(
    audience: Audience, definition: dict[str, Any], include_suppressed: bool, first: int
) -> None:
    engine, store, ids = audience
    if "field" in definition:
        definition = {"all": [definition]}
    segment = await store.save("random", definition, include_suppressed=include_suppressed)
    expected = await members(engine, definition, include_suppressed=include_suppressed)

    walked: list[uuid.UUID] = []
    after = None
    while True:
        page = await store.page(segment, first, after)
        assert len(page.ids) <= first
        walked += page.ids
        after = page.end_cursor
        if not page.has_next_page:
            break
    assert walked == sorted(set(walked)), "pages repeat or go out of order"
    assert set(walked) == expected, definition
    assert await store.size(segment) == len(expected)
    sample = ids[:40]
    named = await store.memberships(sample)
    assert {i for i in sample if "random" in named[i]} == expected & set(sample)


async def test_memberships_of_a_full_batch_with_many_segments_saved(audience: Audience) -> None:
    # ``customers(ids: [... 1,000])`` selecting ``segments`` asks every saved segment
    # about every id in one statement: past 32,767 parameters Postgres's driver refused
    # it, and every customer of the batch answered null.
    _, store, ids = audience
    names = [f"many-{n:02d}" for n in range(60)]
    try:
        for name in names:
            await store.save(name, {"all": []}, include_suppressed=True)
        assert len(names) * len(ids) > 32_767
        named = await store.memberships(ids)
        assert all(set(names) <= set(named[i]) for i in ids)
    finally:
        for name in names:
            await store.delete(name)


async def test_a_filter_of_more_values_than_a_statement_takes_is_refused(
    audience: Audience,
) -> None:
    # 40 ``in`` lists of 1,000 values each passed every per-condition limit; saved, the
    # segment's every read (size, pages, memberships) passed Postgres's 32,767-parameter
    # limit and failed.
    _, store, _ = audience
    definition = {
        "any": [
            {"field": "email", "in": [f"p{n}.{i}@example.org" for i in range(1000)]}
            for n in range(40)
        ]
    }
    with pytest.raises(InvalidInput, match="values in all"):
        await store.save("too-many-values", definition)
    assert await store.get("too-many-values") is None
    near = {"any": definition["any"][:10]}  # 10,000 values: taken, and read
    segment = await store.save("many-values", near, include_suppressed=True)
    try:
        assert await store.size(segment) == 0
    finally:
        await store.delete("many-values")

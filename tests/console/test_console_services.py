"""The services the console's pages read, on Postgres and SQLite: the operators' figures
from the metrics, RFM segments and their samples, a customer's stored timeline, the
template names, each review field's weight, and the text version of an email."""

from __future__ import annotations

import html
import math
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import insert

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.models import Customer, Event
from gateway.db.score_models import CustomerScore
from gateway.identity.reviews import ReviewQueue
from gateway.identity.scoring.model import DEFAULT_MODEL, LevelParams
from gateway.identity.scoring.model_store import ModelStore
from gateway.observability.overview import last_export, metric_figures
from gateway.scores.store import ScoreStore
from gateway.templates.text_version import text_version
from gateway.upstreams.event_store import EventStore

LEVELS = {"first_name": "one edit", "last_name": "exact", "date_of_birth": "else"}


def test_metric_figures_read_latency_hits_limits_and_lag() -> None:
    registry = CollectorRegistry()
    buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
    latency = Histogram(
        "gateway_upstream_request_duration_seconds",
        "",
        ["upstream"],
        buckets=buckets,
        registry=registry,
    )
    for seconds in [0.004] * 10 + [0.03] * 9 + [0.4]:
        latency.labels("crm").observe(seconds)
    lookups = Counter("gateway_cache_lookups", "", ["upstream", "result"], registry=registry)
    lookups.labels("crm", "hit").inc(3)
    lookups.labels("crm", "miss").inc(1)
    errors = Counter("gateway_upstream_errors", "", ["upstream", "code"], registry=registry)
    errors.labels("shop", "UPSTREAM_TIMEOUT").inc(2)
    limited = Counter("gateway_rate_limited", "", ["key"], registry=registry)
    limited.labels("esp").inc(5)
    lag = Gauge("gateway_stream_lag_entries", "", ["transport", "state"], registry=registry)
    lag.labels("redis", "pending").set(7)
    lag.labels("redis", "waiting").set(40)
    Gauge("gateway_stream_lag_oldest_seconds", "", ["transport"], registry=registry).labels(
        "redis"
    ).set(12.5)

    upstreams, operations, rate_limited, streams = metric_figures(
        generate_latest(registry).decode()
    )
    crm, shop = upstreams
    assert crm.upstream == "crm"
    assert crm.latency.count == 20
    assert math.isclose(crm.latency.mean_ms or 0, (0.004 * 10 + 0.03 * 9 + 0.4) / 20 * 1000)
    assert crm.latency.p50_ms == 5.0  # 10 of 20 within the 5 ms bucket
    assert crm.latency.p95_ms == 50.0  # 19 of 20 within 50 ms
    assert (crm.hits, crm.misses, crm.hit_ratio) == (3, 1, 0.75)
    assert shop.errors == {"UPSTREAM_TIMEOUT": 2}
    assert shop.hit_ratio is None
    assert operations == {}
    assert rate_limited == [("esp", 5)]
    (stream,) = streams
    assert (stream.transport, stream.pending, stream.waiting, stream.oldest_s) == (
        "redis",
        7,
        40,
        12.5,
    )


def test_the_last_export_says_why_there_is_none(tmp_path: Path) -> None:
    assert last_export(None).problem == "no export target is configured"
    assert last_export(str(tmp_path)).problem == "no export has finished in this target yet"


async def test_segments_and_their_samples(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = create_sessionmaker(engine)
    segment = f"test_{uuid.uuid4().hex[:8]}"
    ids = sorted(uuid.uuid4() for _ in range(4))
    try:
        async with sessions.begin() as session:
            await session.execute(
                insert(Customer), [{"id": i, "email": f"{i.hex}@example.com"} for i in ids]
            )
            await session.execute(
                insert(CustomerScore),
                [
                    {
                        "customer_id": i,
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
                    for i in ids
                ],
            )
        store = ScoreStore(sessions, None)  # scores only: no model
        assert (segment, 4) in await store.segments()
        assert await store.segment_sample(segment, 3) == ids[:3]  # the same ones each time
        assert await store.segment_sample("no_such_segment", 3) == []
    finally:
        await engine.dispose()


async def test_a_customers_timeline_is_newest_first_of_the_sources_asked(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    customer = uuid.uuid4()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    kinds = [("shopify", "orders/create"), ("sendgrid", "email:open"), ("segment", "page")]
    try:
        async with create_sessionmaker(engine).begin() as session:
            session.add(Customer(id=customer, email=f"{customer.hex}@example.com"))
            await session.flush()
            await session.execute(
                insert(Event),
                [
                    {
                        "customer_id": customer,
                        "source": source,
                        "event_id": f"{customer.hex}-{n}",
                        "type": kind,
                        "occurred_at": start + timedelta(hours=n),
                        "properties": {"email": "never shown"},
                    }
                    for n, (source, kind) in enumerate(kinds)
                ],
            )
        store = EventStore(engine)
        everything = await store.timeline(customer, 10)
        assert [(e.source, e.type) for e in everything] == list(reversed(kinds))
        assert everything[0].occurred_at == start + timedelta(hours=2)
        emails = await store.timeline(customer, 10, sources=["sendgrid", "mandrill"])
        assert [e.type for e in emails] == ["email:open"]
        assert len(await store.timeline(customer, 1)) == 1
    finally:
        await engine.dispose()


async def test_template_names_with_their_latest_version(database_url: str) -> None:
    from gateway.services import render_budgets
    from gateway.settings import Settings
    from gateway.templates.render import Renderer, RenderFormat
    from gateway.templates.render_pool import RenderPool
    from gateway.templates.store import open_templates

    engine = create_engine(database_url)
    renderer = Renderer(RenderPool(1), render_budgets(Settings.model_construct()))
    try:
        store = open_templates(create_sessionmaker(engine), renderer)
        name = f"names-{uuid.uuid4().hex[:8]}"
        await store.save(name, "one", RenderFormat.TEXT)
        await store.save(name, "<p>two</p>", RenderFormat.HTML)
        found = {t.name: t.latest for t in await store.names(limit=10_000)}
        assert found[name].version == 2
        assert found[name].format is RenderFormat.HTML
    finally:
        await renderer.aclose()
        await engine.dispose()


async def test_review_weights_come_from_the_model_that_scored_the_pair(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    sessions = create_sessionmaker(engine)
    try:
        queue = ReviewQueue(sessions)
        priors = await queue.weights(None, LEVELS)
        for field, label in LEVELS.items():
            assert priors[field] == DEFAULT_MODEL.level_weight(field, label)
        assert priors["last_name"] > 0 > priors["date_of_birth"]
        # A stored version with its own parameters: its weights, not the priors'.
        levels = DEFAULT_MODEL.levels_of("last_name")
        changed = (LevelParams(label=levels[0].label, m=0.5, u=0.25), *levels[1:])
        model = DEFAULT_MODEL.model_copy(
            update={"comparisons": {**DEFAULT_MODEL.comparisons, "last_name": changed}}
        )
        stored = await ModelStore(sessions).save(model, activate=False)
        assert (await queue.weights(stored.version, LEVELS))["last_name"] == 1.0
        assert await queue.weights(10**9, LEVELS) == {}  # not stored here: unknown
        assert await queue.weights(None, {"first_name": "no such level"}) == {}
    finally:
        await engine.dispose()


def test_the_text_version_of_an_email() -> None:
    body = (
        "<html><head><title>t</title><style>p { color: red }</style></head><body>"
        "<h1>Hello Ada</h1><p>Your cart:<br>2 items</p>"
        "<ul><li>Boot</li><li>Hat</li></ul>"
        '<p><a href="https://shop.example/cart">See your cart</a> <img alt="logo" src="x"></p>'
        "<script>alert(1)</script></body></html>"
    )
    assert text_version(body) == (
        "Hello Ada\n\nYour cart:\n2 items\n\n- Boot\n- Hat\n\n"
        "See your cart (https://shop.example/cart) logo"
    )
    assert text_version("") == ""
    assert text_version("plain words") == "plain words"


@given(
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))
        | st.sampled_from(" \t\n\r\f")
    )
)
def test_text_in_a_paragraph_comes_back_as_itself(words: str) -> None:
    """HTML's white space collapses to one space; everything else (a no-break space
    too) is the text itself."""
    expected = re.sub(r"[ \t\n\r\f]+", " ", words).strip(" ")
    assert text_version(f"<p>{html.escape(words)}</p>") == expected

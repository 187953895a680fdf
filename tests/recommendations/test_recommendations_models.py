"""The business rules hold whatever model a build serves, templates list recommendations
(one read for a whole renderBatch), and `recs build` learns from a history file.

Each family is built on its own on the sample people's stored history (SQLite), then
served against the sample shop."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from demo.people.catalogue import catalogue
from demo.people.orders import orders_for
from demo.people.population import Person
from demo.recommendation_history import store_demo_history
from demo.seed import customer_id_for, seed
from demo.upstreams.runner import SampleUpstreams
from demo.wiring import sample_upstreams_config
from gateway.cli import main
from gateway.db.engine import create_engine, create_sessionmaker
from gateway.db.migrate import upgrade
from gateway.db.recommendation_models import RecommendationList
from gateway.recommendations.store import RecommendationStore
from gateway.recommendations.training.builder import build
from gateway.settings import load_settings
from resolvers.app import create_app
from tests.conftest import FAST, bearer, issue_key, recorded_statements
from tests.gql_client import gql
from tests.in_process import asgi, lifespan, services_of

FAMILIES = ("popularity", "item_to_item", "ease", "als", "knn", "blend")
READABLE = re.compile(r"^(because you (viewed|bought) .+|popular in .+|trending)$")
BEHAVIOUR = ("because you viewed ", "because you bought ")
QUERY = """
query Recs($id: ID, $limit: Int, $category: String, $cap: Int) {
  customer(id: $id) {
    recommendations(limit: $limit, category: $category, maxPerCategory: $cap) {
      id title url category reason
    }
  }
}
"""
TEMPLATE = "{% for p in recommendations limit: 4 %}[{{ p.title }} {{ p.url }}]{% endfor %}"
RENDER = """
query R($id: ID, $t: String) { customer(id: $id) { render(template: $t, format: TEXT) { body } } }
"""
SAVE = """
mutation S($s: String!) { saveTemplate(name: "recs", source: $s, format: TEXT) { version } }
"""
BATCH = """
query B($ids: [ID!]!) {
  renderBatch(name: "recs", customerIds: $ids) { customerId body error { code } }
}
"""


def _categories() -> dict[str, str]:
    return {str(p.id): p.category for p in catalogue().products}


async def _prepare(url: str, people: tuple[Person, ...], families: tuple[str, ...]) -> None:
    engine = create_engine(url)
    try:
        sessions = create_sessionmaker(engine)
        await seed(sessions, people)
        await store_demo_history(sessions, people)
        await build(RecommendationStore(sessions), categories=_categories(), families=families)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module", params=FAMILIES)
def family_url(
    request: pytest.FixtureRequest,
    samples: SampleUpstreams,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, str]:
    """A database whose stored model is one family's (blend: the best blend)."""
    family: str = request.param
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('family') / f'{family}.db'}"
    upgrade(url)
    asyncio.run(_prepare(url, samples.people, (family,)))
    return family, url


async def _client(
    url: str, samples: SampleUpstreams
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    samples.reset()
    tables = {name: dict(FAST) for name in samples.base_urls}
    app = create_app(
        load_settings(database_url=url, cache_url="memory://"),
        upstreams=sample_upstreams_config(samples.base_urls, tables),
    )
    async with lifespan(app):
        key = await issue_key(app)
        transport = asgi(app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw", headers=bearer(key)
        ) as client:
            yield app, client


@pytest.fixture
async def served(
    family_url: tuple[str, str], samples: SampleUpstreams
) -> AsyncIterator[tuple[str, Any, httpx.AsyncClient]]:
    family, url = family_url
    async for app, client in _client(url, samples):
        yield family, app, client


def _people(samples: SampleUpstreams, *, consent: bool) -> list[Person]:
    return [p for p in samples.people if p.personalisation_consent == consent and orders_for(p)]


def _purchased(person: Person) -> set[str]:
    return {str(item.product_id) for order in orders_for(person) for item in order.line_items}


async def _recommend(client: httpx.AsyncClient, person: Person, **args: Any) -> list[Any]:
    body = await gql(client, QUERY, id=str(customer_id_for(person)), **args)
    assert "errors" not in body, body
    found: list[Any] = body["data"]["customer"]["recommendations"]
    return found


async def test_every_model_keeps_the_business_rules(
    served: tuple[str, Any, httpx.AsyncClient], samples: SampleUpstreams
) -> None:
    family, app, client = served
    stored = await services_of(app).recommendations.store.model()
    assert stored is not None
    assert stored.selection["chosen"]["family"] == family
    assert stored.reason.startswith(stored.label)
    behavioural = 0
    for person in _people(samples, consent=True)[:6]:
        found = await _recommend(client, person, limit=8)
        assert len(found) == 8
        assert len({item["id"] for item in found}) == 8
        assert not {item["id"] for item in found} & _purchased(person)
        for item in found:
            product = catalogue().by_id[int(item["id"])]
            assert samples.shopify.available(product.inventory_item_id) > 0
            assert READABLE.match(item["reason"]), item["reason"]
        behavioural += sum(item["reason"].startswith(BEHAVIOUR) for item in found)
        # Categories: only the one asked for; diversity: one of each when capped at one.
        shoes = await _recommend(client, person, limit=4, category="Shoes")
        assert shoes
        assert {item["category"] for item in shoes} == {"Shoes"}
        varied = await _recommend(client, person, limit=5, cap=1)
        assert len({item["category"] for item in varied}) == len(varied) == 5
    # A personal model names what the customer did; popularity never pretends to.
    assert (behavioural > 0) == (family != "popularity")
    for person in _people(samples, consent=False)[:3]:
        found = await _recommend(client, person, limit=6)
        assert found
        assert {item["reason"] for item in found} == {"trending"}


@pytest.mark.parametrize("family_url", ["blend", "popularity"], indirect=True)
async def test_a_template_lists_the_customers_recommendations(
    served: tuple[str, Any, httpx.AsyncClient], samples: SampleUpstreams
) -> None:
    _, _, client = served
    person = _people(samples, consent=True)[0]
    expected = await _recommend(client, person, limit=4)
    body = await gql(client, RENDER, id=str(customer_id_for(person)), t=TEMPLATE)
    assert "errors" not in body, body
    assert _untracked(body["data"]["customer"]["render"]["body"]) == _untracked(
        "".join(f"[{item['title']} {item['url']}]" for item in expected)
    )
    refused = _people(samples, consent=False)[0]
    body = await gql(
        client,
        RENDER,
        id=str(customer_id_for(refused)),
        t="{% for p in recommendations limit: 3 %}{{ p.reason }};{% endfor %}",
    )
    assert body["data"]["customer"]["render"]["body"] == "trending;" * 3


@pytest.mark.parametrize("family_url", ["blend"], indirect=True)
async def test_a_render_batch_reads_recommendations_once(
    served: tuple[str, Any, httpx.AsyncClient], samples: SampleUpstreams
) -> None:
    _, app, client = served
    saved = await gql(client, SAVE, s=TEMPLATE)
    assert "errors" not in saved, saved
    people = _people(samples, consent=True)[:20] + _people(samples, consent=False)[:5]
    ids = [str(customer_id_for(p)) for p in people]
    services = services_of(app)
    services.recommendations.forget()
    with recorded_statements(services.engine.sync_engine) as statements:
        body = await gql(client, BATCH, ids=ids)
    items = body["data"]["renderBatch"]
    assert [item["customerId"] for item in items] == ids
    assert all(item["error"] is None and item["body"].count("[") == 4 for item in items)
    reads = [s for s in statements if "FROM recommendation_lists" in s]
    assert len(reads) == 1, reads
    # Each customer's block is their own: the first one's equals what the field answers.
    first = await _recommend(client, people[0], limit=4)
    assert _untracked(items[0]["body"]) == _untracked(
        "".join(f"[{i['title']} {i['url']}]" for i in first)
    )
    # A template that does not read recommendations does not read them at all.
    services.recommendations.forget()
    with recorded_statements(services.engine.sync_engine) as statements:
        await gql(client, RENDER, id=ids[0], t="Hi {{ first_name }}")
    assert not [s for s in statements if "recommendation" in s]


def _untracked(text: str) -> str:
    """Without the tracking parameter, whose list id differs for each list served."""
    return re.sub(r"gw_rec=[^&\]\s]*", "gw_rec=", text)


def test_build_learns_from_a_history_file_keyed_by_email(
    tmp_path_factory: pytest.TempPathFactory, samples: SampleUpstreams
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('recs-file') / 'file.db'}"
    upgrade(url)
    people = samples.people[:200]

    async def seeded() -> None:
        engine = create_engine(url)
        await seed(create_sessionmaker(engine), people)
        await engine.dispose()

    asyncio.run(seeded())
    rows = ["email,product_id,event,timestamp"]
    for person in people:
        for order in orders_for(person):
            for item in order.line_items:
                stamp = int(order.created_at.timestamp())
                rows.append(f"{person.email.upper()},{item.product_id},transaction,{stamp}")
    rows.append("someone.else@example.com,1,view,1700000000")  # not a customer: no list
    path = tmp_path_factory.mktemp("export") / "orders.csv"
    path.write_text("\n".join(rows) + "\n")
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "recs",
            "build",
            "--database-url",
            url,
            "--interactions",
            str(path),
            "--user-key",
            "email",
        ],
    )
    assert result.exit_code == 0, result.output
    buyers = [p for p in people if orders_for(p)]
    assert f"{len(buyers)} users are stored customers (by email)" in result.output
    assert "model: " in result.output
    assert "why: " in result.output

    async def lists() -> dict[str, list[Any]]:
        engine = create_engine(url)
        async with create_sessionmaker(engine)() as session:
            found = await session.execute(
                select(RecommendationList.customer_id, RecommendationList.purchased)
            )
            stored = {str(c): list(p) for c, p in found}
        await engine.dispose()
        return stored

    stored = asyncio.run(lists())
    assert set(stored) == {str(customer_id_for(p)) for p in buyers}
    buyer = buyers[0]
    assert set(stored[str(customer_id_for(buyer))]) == _purchased(buyer)
    shown = runner.invoke(main, ["recs", "show", "--database-url", url, "--trials"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("model: ")
    assert "why: " in shown.output
    assert "popularity" in shown.output


def test_build_refuses_an_unreadable_history_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("user,rating\n1,4\n")
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    result = CliRunner().invoke(
        main, ["recs", "build", "--database-url", url, "--interactions", str(path)]
    )
    assert result.exit_code == 1
    assert "no user and item" in result.output

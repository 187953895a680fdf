"""Customer.render, stored templates and renderBatch, end to end against the sample
upstreams on loopback: ESP-style templates, only the upstreams a template names are
called (checked on the samples' call counters), escaping, limits and strict mode.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import httpx
import pytest

from demo.upstreams.runner import SampleUpstreams
from tests.gql_client import gql


@pytest.fixture
def client(federated: httpx.AsyncClient) -> httpx.AsyncClient:
    return federated


RENDER = """query($email: String!, $template: String, $name: String, $version: Int,
                  $format: RenderFormat, $strict: Boolean) {
  customer(email: $email) {
    email
    render(template: $template, name: $name, version: $version, format: $format,
           strict: $strict) { body variables warnings format name version }
  }
}"""
SAVE = """mutation($name: String!, $source: String!, $format: RenderFormat! = HTML) {
  saveTemplate(name: $name, source: $source, format: $format) { name version format createdAt }
}"""
GREETING = 'Hi {{ first_name | default: "there" }}, from {{ customer.first_name }}!'
ORDER_SUMMARY = """<h1>Thanks, {{ customer.first_name }}</h1>
<p>You are a {{ lifecycle_stage }}.</p>
<ul>{% for order in orders limit: 3 %}
  <li>{{ order.name }}: {{ order.total_price.amount }} {{ order.total_price.currency }}</li>
{%- endfor %}</ul>
<p>Lately: {% for event in recent_events limit: 2 %}{{ event.name }};{% endfor %}</p>"""
CART = """{% if cart and cart.items.size > 0 -%}
You left {{ cart.items.size }} item(s), {{ cart.subtotal }} in total: {% for item in cart.items %}
- {{ item.title }} x{{ item.quantity }}{% endfor %}
{%- else -%}
Nothing in your cart.
{%- endif %}"""
BY_STAGE = """{% if lifecycle_stage == "customer" %}Welcome back{% else %}Meet us{% endif %}"""


def calls(samples: SampleUpstreams) -> dict[str, int]:
    return {
        "hubspot": samples.hubspot.calls.total,
        "shopify": samples.shopify.calls.total,
        "segment": samples.segment.calls.total,
    }


async def render(client: httpx.AsyncClient, email: str, **args: Any) -> dict[str, Any]:
    return await gql(client, RENDER, email=email, **args)


def unique(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


async def test_a_profile_only_template_calls_no_upstream(
    client: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    person = samples.people[1]
    for format, greeting in (("HTML", GREETING), ("TEXT", GREETING)):
        body = await render(client, person.email, template=greeting, format=format)
        assert "errors" not in body, body
        result = body["data"]["customer"]["render"]
        assert result["body"] == f"Hi {person.first_name}, from {person.first_name}!"
        assert result["variables"] == ["customer.first_name", "first_name"]
        assert result["format"] == format
    assert calls(samples) == {"hubspot": 0, "shopify": 0, "segment": 0}


async def test_orders_and_events_come_from_three_upstreams(
    client: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    person = samples.people[3]
    body = await render(client, person.email, template=ORDER_SUMMARY)
    assert "errors" not in body, body
    html = body["data"]["customer"]["render"]["body"]
    facts = await gql(
        client,
        "query($e: String!) { customer(email: $e) { orders(first: 3) "
        "{ name } recentEvents(first: 2) { name } } }",
        e=person.email,
    )
    customer = facts["data"]["customer"]
    assert f"You are a {person.lifecycle_stage}." in html
    for order in customer["orders"]:
        assert f"<li>{order['name']}: " in html
    assert "Lately: " + "".join(f"{e['name']};" for e in customer["recentEvents"]) in html
    assert all(count > 0 for count in calls(samples).values()), calls(samples)


async def test_cart_abandonment_block_reads_analytics_only(
    client: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    rendered = []
    for person in samples.people[20:40]:
        body = await render(client, person.email, template=CART, format="TEXT")
        assert "errors" not in body, body
        rendered.append(body["data"]["customer"]["render"]["body"])
    assert any(text.startswith("You left") for text in rendered)
    assert calls(samples)["hubspot"] == calls(samples)["shopify"] == 0
    assert calls(samples)["segment"] > 0


async def test_a_conditional_on_the_lifecycle_stage(
    client: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    # Consent is not in the schema yet: the lifecycle stage stands in for a condition.
    for person in samples.people[40:46]:
        body = await render(client, person.email, template=BY_STAGE, format="TEXT")
        expected = "Welcome back" if person.lifecycle_stage == "customer" else "Meet us"
        assert body["data"]["customer"]["render"]["body"] == expected
    assert calls(samples)["shopify"] == calls(samples)["segment"] == 0


async def test_customer_data_is_escaped_in_html_only(client: httpx.AsyncClient) -> None:
    email = f"{unique('xss')}@example.com"
    created = await gql(
        client,
        "mutation($e: String!) { upsertCustomer(input: {email: $e, "
        'firstName: "<script>alert(1)</script>"}) { id } }',
        e=email,
    )
    assert "errors" not in created, created
    html = await render(client, email, template="<p>Hi {{ first_name }}</p>")
    assert (
        html["data"]["customer"]["render"]["body"]
        == "<p>Hi &lt;script&gt;alert(1)&lt;/script&gt;</p>"
    )
    text = await render(client, email, template="Hi {{ first_name }}", format="TEXT")
    assert text["data"]["customer"]["render"]["body"] == "Hi <script>alert(1)</script>"


async def test_missing_values_render_empty_or_their_default(client: httpx.AsyncClient) -> None:
    email = f"{unique('bare')}@example.com"
    await gql(
        client, "mutation($e: String!) { upsertCustomer(input: {email: $e}) { id } }", e=email
    )
    body = await render(
        client,
        email,
        template="[{{ last_name }}][{{ nope }}]"
        '[{{ first_name | default: "friend" }}][{{ customer.city }}]',
    )
    result = body["data"]["customer"]["render"]
    assert result["body"] == "[][][friend][]"  # never "None"
    assert result["warnings"] == ["'nope' is not a customer field; it renders empty"]


async def test_strict_mode_names_undefined_variables(
    client: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    person = samples.people[2]
    body = await render(
        client,
        person.email,
        strict=True,
        template="{{ first_name }} {{ nope }} {{ customer.shoe_size }}",
    )
    [error] = body["errors"]
    assert body["data"]["customer"] == {"email": person.email, "render": None}
    assert error["path"] == ["customer", "render"]
    assert error["extensions"]["code"] == "RENDER_ERROR"
    assert error["extensions"]["variables"] == ["customer.shoe_size", "nope"]
    assert "nope" in error["message"]
    assert "customer.shoe_size" in error["message"]
    deeper = await render(client, person.email, strict=True, template="{{ orders.first.nope }}")
    assert deeper["errors"][0]["extensions"]["variables"] == ["orders.first.nope"]
    fallback = await render(
        client, person.email, strict=True, template='{{ nope | default: "ok" }}', format="TEXT"
    )
    assert "errors" in fallback  # a strict render refuses names that can never exist


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        (
            "{% for i in (1..1000) %}{% for j in (1..1000) %}x{% endfor %}{% endfor %}",
            "loop iteration limit",
        ),
        (
            "{% capture s %}" + "x" * 100 + "{% endcapture %}{% for i in (1..1000) %}"
            "{% for j in (1..6) %}{{ s }}{% endfor %}{% endfor %}",
            "output passed 524,288 bytes",
        ),
        ("{% for a in (1..1) %}" * 25 + "x" + "{% endfor %}" * 25, "context depth"),
    ],
)
async def test_limits_fail_only_the_render_field(
    client: httpx.AsyncClient, samples: SampleUpstreams, template: str, reason: str
) -> None:
    person = samples.people[4]
    query = """query($email: String!, $bad: String!) { customer(email: $email) {
      email bad: render(template: $bad) { body } good: render(template: "ok") { body } } }"""
    body = await gql(client, query, email=person.email, bad=template)
    customer = body["data"]["customer"]
    assert customer == {"email": person.email, "bad": None, "good": {"body": "ok"}}
    [error] = body["errors"]
    assert error["extensions"]["code"] in {"RENDER_LIMIT", "BAD_USER_INPUT"}
    assert reason in error["message"]


@pytest.mark.parametrize("tag", ["{% include 'header' %}", "{% render '/etc/passwd' %}"])
async def test_templates_cannot_load_files(
    client: httpx.AsyncClient, samples: SampleUpstreams, tag: str
) -> None:
    body = await render(client, samples.people[4].email, template=f"Hi\n{tag}")
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["line"] == 2
    assert error["extensions"]["column"] == 1
    assert "not allowed" in error["message"]


@pytest.mark.parametrize("args", [{}, {"template": "x", "name": "y"}])
async def test_exactly_one_of_template_and_name(
    client: httpx.AsyncClient, samples: SampleUpstreams, args: dict[str, str]
) -> None:
    body = await render(client, samples.people[4].email, **args)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert body["data"]["customer"]["email"] == samples.people[4].email


async def test_a_failing_upstream_fails_the_render_with_its_code(
    client: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    samples.shopify.faults.update(error_rate=1.0, error_status=503)
    person = samples.people[6]
    body = await render(client, person.email, template=ORDER_SUMMARY)
    assert body["data"]["customer"] == {"email": person.email, "render": None}
    [error] = body["errors"]
    assert error["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
    assert error["extensions"]["upstream"] == "shopify"
    # A template that does not need the shop still renders.
    ok = await render(client, person.email, template=BY_STAGE)
    assert "errors" not in ok


async def test_save_validates_and_versions(
    client: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    name = unique("welcome")
    bad = await gql(client, SAVE, name=name, source="Hello\n  {{ first_name | }}")
    [error] = bad["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == "source"
    assert (error["extensions"]["line"], error["extensions"]["column"]) == (2, 3)
    assert "line 2, column 3" in error["message"]
    missing = await gql(client, "query($n: String!) { template(name: $n) { version } }", n=name)
    assert missing == {"data": {"template": None}}  # nothing saved

    first = await gql(client, SAVE, name=name, source="v1 {{ first_name }}", format="TEXT")
    second = await gql(client, SAVE, name=name, source="v2 <{{ first_name }}>")
    assert first["data"]["saveTemplate"]["version"] == 1
    assert second["data"]["saveTemplate"]["version"] == 2
    found = await gql(
        client,
        "query($n: String!) { template(name: $n) { name version format "
        "source history { version format createdAt } } }",
        n=name,
    )
    template = found["data"]["template"]
    assert (template["version"], template["format"], template["source"]) == (
        2,
        "HTML",
        "v2 <{{ first_name }}>",
    )
    assert [(h["version"], h["format"]) for h in template["history"]] == [(2, "HTML"), (1, "TEXT")]

    person = samples.people[5]
    latest = (await render(client, person.email, name=name))["data"]["customer"]["render"]
    assert latest == {
        "body": f"v2 <{person.first_name}>",
        "variables": ["first_name"],
        "warnings": [],
        "format": "HTML",
        "name": name,
        "version": 2,
    }
    older = (await render(client, person.email, name=name, version=1))["data"]["customer"]
    assert older["render"]["body"] == f"v1 {person.first_name}"
    assert older["render"]["format"] == "TEXT"  # the stored format, unless one is asked for
    gone = await render(client, person.email, name=name, version=9)
    assert gone["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_render_batch_shares_loaders_and_isolates_failures(
    client: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    name = unique("batch")
    source = "{{ first_name }} is a {{ lifecycle_stage }} worth {{ lifetime_value.amount }}"
    await gql(client, SAVE, name=name, source=source, format="TEXT")
    people = samples.people[50:170]
    ids = []
    for person in people:
        found = await gql(
            client, "query($e: String!) { customer(email: $e) { id } }", e=person.email
        )
        ids.append(found["data"]["customer"]["id"])
    samples.reset()
    unknown = str(uuid.uuid4())
    body = await gql(
        client,
        """query($n: String!, $ids: [ID!]!) { renderBatch(name: $n,
        customerIds: $ids) { customerId body warnings error { code message } } }""",
        n=name,
        ids=[*ids, unknown, "not-an-id"],
    )
    assert "errors" not in body, body
    items = body["data"]["renderBatch"]
    assert [i["customerId"] for i in items] == [*ids, unknown, "not-an-id"]
    for person, item in zip(people, items, strict=False):
        assert item["error"] is None
        assert item["body"].startswith(f"{person.first_name} is a {person.lifecycle_stage} worth ")
    assert items[-2]["error"]["code"] == "NOT_FOUND"
    assert items[-1]["error"]["code"] == "BAD_USER_INPUT"
    # HubSpot batch reads pages of 100; Shopify searches pages of 50 emails.
    assert calls(samples) == {
        "hubspot": math.ceil(120 / 100),
        "shopify": math.ceil(120 / 50),
        "segment": 0,
    }


async def test_render_batch_reports_a_failing_upstream_per_customer(
    client: httpx.AsyncClient, samples: SampleUpstreams
) -> None:
    name = unique("orders")
    await gql(client, SAVE, name=name, source="{{ first_name }}: {{ orders.size }} orders")
    person = samples.people[60]
    found = await gql(client, "query($e: String!) { customer(email: $e) { id } }", e=person.email)
    samples.shopify.faults.update(error_rate=1.0, error_status=503)
    body = await gql(
        client,
        "query($n: String!, $ids: [ID!]!) { renderBatch(name: $n, "
        "customerIds: $ids) { body error { code } } }",
        n=name,
        ids=[found["data"]["customer"]["id"]],
    )
    assert body["data"]["renderBatch"] == [
        {"body": None, "error": {"code": "UPSTREAM_UNAVAILABLE"}}
    ]


BY_CONSENT = """{% if consent.personalisation %}Picked for you, {{ first_name }}: \
{% for order in orders limit: 1 %}more like {{ order.line_items.first.title }}{% endfor %}\
{% else %}Our bestsellers this week{% endif %}"""


@pytest.mark.parametrize("format", ["HTML", "TEXT"])
async def test_a_block_conditional_on_consent(
    client: httpx.AsyncClient, samples: SampleUpstreams, format: str
) -> None:
    consenting = next(p for p in samples.people if p.personalisation_consent)
    refusing = next(p for p in samples.people if not p.personalisation_consent)
    yes = await render(client, consenting.email, template=BY_CONSENT, format=format)
    no = await render(client, refusing.email, template=BY_CONSENT, format=format)
    assert "errors" not in yes
    assert "errors" not in no
    assert yes["data"]["customer"]["render"]["body"].startswith(
        f"Picked for you, {consenting.first_name}"
    )
    assert no["data"]["customer"]["render"]["body"] == "Our bestsellers this week"

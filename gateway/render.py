"""Rendering Liquid templates for customers, safely, fetching only what a template uses.

A template is parsed once (``compile_template``, cached by source) and analysed
statically: the customer fields it names decide which upstream loaders run, so a
greeting that uses ``first_name`` alone costs no upstream call at all. The engine is
python-liquid in a sandbox: no loader that reaches files, include/render refused at
parse time, and limits on loop iterations, output size, context depth and locals.

    GatewayError
     ├── InvalidInput ── TemplateSyntaxError   BAD_USER_INPUT, with line and column
     └── RenderError                           RENDER_ERROR (limits, strict undefined)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from liquid import BoundTemplate, DictLoader, Environment, StrictDefaultUndefined, Undefined
from liquid.exceptions import LiquidError, ResourceLimitError, UndefinedError
from liquid.token import TOKEN_EXPRESSION, TOKEN_OUTPUT, TOKEN_TAG

from adapters.errors import UpstreamError
from adapters.records import AnalyticsEvent, CommerceCustomer, CrmContact, Money, Order
from gateway import behaviour, consent
from gateway.customers import CustomerProfile
from gateway.errors import GatewayError, InvalidInput
from gateway.federation import FIELD_LOADERS, AnalyticsData, Outcome, SourceStatus
from gateway.recommendations.serving import Picks

MAX_SOURCE_CHARS = 100_000
# Tags that would read other templates; there are none to read, and refusing them at
# parse time gives a clear error instead of a failure on the first send.
FORBIDDEN_TAGS = frozenset({"include", "render"})

# What a template can read: the customer's fields, and the products recommended to them
# (read only by templates that use them, for a whole batch at once).
TEMPLATE_LOADERS: dict[str, str | None] = {**FIELD_LOADERS, "recommendations": "recommendations"}
ALL_LOADERS = frozenset(name for name in TEMPLATE_LOADERS.values() if name)


class RenderFormat(StrEnum):
    HTML = "HTML"
    TEXT = "TEXT"


class TemplateSyntaxError(InvalidInput):
    """The source does not parse; ``extensions`` carries the position for clients."""

    def __init__(self, reason: str, line: int, column: int, *, field: str) -> None:
        super().__init__(
            f"Template syntax error at line {line}, column {column}: {reason}", field=field
        )
        self.line, self.column = line, column
        # graphql-core copies an original error's ``extensions`` onto the GraphQL error.
        self.extensions: dict[str, Any] = {"line": line, "column": column}


class RenderError(GatewayError):
    code = "RENDER_ERROR"

    def __init__(self, message: str, *, variables: Sequence[str] = ()) -> None:
        super().__init__(message, field="template")
        self.extensions: dict[str, Any] = {"variables": list(variables)} if variables else {}


class _Sandbox(Environment):
    # Generous for an email (Gmail clips at ~100 KB) and small enough that a hostile
    # template cannot tie up a worker: every limit raises a ResourceLimitError.
    loop_iteration_limit = 10_000
    output_stream_limit = 512 * 1024
    context_depth_limit = 20
    local_namespace_limit = 256 * 1024


@lru_cache(maxsize=4)
def _environment(format: RenderFormat, strict: bool) -> Environment:
    # An empty DictLoader: there is no file system or network behind any template name.
    # StrictDefaultUndefined still lets `| default: "x"` supply a fallback.
    return _Sandbox(
        loader=DictLoader({}),
        autoescape=format is RenderFormat.HTML,
        undefined=StrictDefaultUndefined if strict else Undefined,
    )


@dataclass(frozen=True, slots=True)
class Compiled:
    template: BoundTemplate
    format: RenderFormat
    strict: bool
    variables: tuple[str, ...]  # every customer path the template reads, e.g. customer.orders
    loaders: frozenset[str]  # the upstream loaders those paths need
    fields: frozenset[str]  # the customer fields to put in its context
    unknown: tuple[str, ...]  # paths that are not customer fields: empty, or errors if strict


@dataclass(frozen=True, slots=True)
class Rendered:
    body: str
    variables: tuple[str, ...]
    warnings: tuple[str, ...]


Fetch = Callable[[str, Sequence[CustomerProfile]], Awaitable[Sequence[Outcome[Any]]]]


@lru_cache(maxsize=512)
def compile_template(
    source: str, format: RenderFormat, strict: bool = False, *, field: str = "template"
) -> Compiled:
    """Parse and analyse once per distinct source; stored versions never change."""
    if len(source) > MAX_SOURCE_CHARS:
        raise InvalidInput(f"A template has at most {MAX_SOURCE_CHARS} characters", field=field)
    env = _environment(format, strict)
    try:
        template = env.from_string(source)
    except LiquidError as exc:
        line, column = _position(env, source, exc)
        raise TemplateSyntaxError(str(exc.message), line, column, field=field) from None
    analysis = template.analyze(include_partials=False)
    for tag in FORBIDDEN_TAGS & analysis.tags.keys():
        line, column = _line_column(source, _tag_start(source, analysis.tags[tag][0].index))
        raise TemplateSyntaxError(
            f"'{{% {tag} %}}' is not allowed: templates cannot load other templates or files",
            line,
            column,
            field=field,
        )
    paths = sorted({str(v) for found in analysis.globals.values() for v in found})
    loaders, fields, unknown = _needs(
        v.segments for found in analysis.globals.values() for v in found
    )
    return Compiled(template, format, strict, tuple(paths), loaders, fields, unknown)


def _needs(
    all_segments: Iterable[list[Any]],
) -> tuple[frozenset[str], frozenset[str], tuple[str, ...]]:
    loaders: set[str] = set()
    fields: set[str] = set()
    unknown: set[str] = set()
    for segments in all_segments:
        root = segments[0]
        if root == "customer":
            if len(segments) < 2 or not isinstance(segments[1], str):
                loaders |= ALL_LOADERS  # the whole customer, or a computed key: fetch all
                fields |= TEMPLATE_LOADERS.keys()
                continue
            field, shown = segments[1], f"customer.{segments[1]}"
        else:
            field, shown = root, str(root)
        if field in TEMPLATE_LOADERS:
            fields.add(field)
            loader = TEMPLATE_LOADERS[field]
            if loader:
                loaders.add(loader)
        else:
            unknown.add(shown)
    return frozenset(loaders), frozenset(fields), tuple(sorted(unknown))


def _line_column(source: str, index: int) -> tuple[int, int]:
    line = source.count("\n", 0, index) + 1
    return line, index - (source.rfind("\n", 0, index) + 1) + 1


def _tag_start(source: str, name_index: int) -> int:
    # python-liquid places a tag at its name; a person looks for the `{%` before it.
    opening = source.rfind("{%", 0, name_index)
    return opening if opening >= 0 else name_index


def _position(env: Environment, source: str, exc: LiquidError) -> tuple[int, int]:
    """1-based line and column of a syntax error.

    python-liquid reports errors found at the end of an expression or of the
    template without a position; find the markup that caused them instead."""
    if exc.token is not None and exc.token.start_index >= 0:
        index = exc.token.start_index
        return _line_column(
            source, _tag_start(source, index) if exc.token.kind == TOKEN_TAG else index
        )
    message = str(exc.message)
    markup = [t for t in env.tokenizer()(source) if t.kind in (TOKEN_TAG, TOKEN_OUTPUT)]
    if message.startswith("expected tag end"):
        # An unclosed block: point at the last opening tag left without its end tag.
        opener = message.split()[2].removeprefix("end").rstrip(",")
        open_at: list[int] = []
        for token in markup:
            if token.value == opener:
                open_at.append(_tag_start(source, token.start_index))
            elif token.value == f"end{opener}" and open_at:
                open_at.pop()
        if open_at:
            return _line_column(source, open_at[-1])
    else:
        # The first prefix of the source that fails with this message ends just after
        # the faulty markup; parsing stops at the first error, so bisect.
        tokens = [t for t in env.tokenizer()(source) if t.kind != TOKEN_EXPRESSION]
        ends = [t.start_index for t in tokens[1:]] + [len(source)]
        low, high = 0, len(ends) - 1
        while low < high:
            middle = (low + high) // 2
            if _fails_with(env, source[: ends[middle]], message):
                high = middle
            else:
                low = middle + 1
        faulty = tokens[low]
        return _line_column(
            source,
            _tag_start(source, faulty.start_index)
            if faulty.kind == TOKEN_TAG
            else faulty.start_index,
        )
    return _line_column(source, len(source))


def _fails_with(env: Environment, source: str, message: str) -> bool:
    try:
        env.from_string(source)
    except LiquidError as exc:
        return str(exc.message) == message
    return False


def check_strict(compiled: Compiled) -> None:
    """In strict mode a name that is not a customer field fails before any fetch."""
    if compiled.strict and compiled.unknown:
        raise RenderError(
            f"Undefined variables: {', '.join(compiled.unknown)}", variables=compiled.unknown
        )


def warnings_of(compiled: Compiled) -> list[str]:
    return [f"'{name}' is not a customer field; it renders empty" for name in compiled.unknown]


async def render_for(
    compiled: Compiled,
    profiles: Sequence[CustomerProfile],
    fetch: Fetch,
    now: datetime | None = None,
) -> list[Rendered | GatewayError | UpstreamError]:
    """Render for each customer, in order; one customer's failure is its own result.

    Each needed loader is asked once for all the customers, so a batch costs one
    upstream call per page where the adapter batches."""
    check_strict(compiled)
    names = sorted(compiled.loaders)
    columns = await asyncio.gather(*(fetch(name, profiles) for name in names))
    now = now or datetime.now(UTC)
    results: list[Rendered | GatewayError | UpstreamError] = []
    for index, profile in enumerate(profiles):
        warnings = warnings_of(compiled)
        try:
            values: dict[str, Any] = {}
            for name, column in zip(names, columns, strict=True):
                outcome = column[index]
                values[name] = outcome.unwrap()  # a failed upstream fails this render
                if outcome.status is SourceStatus.STALE:
                    warnings.append(f"{outcome.upstream} failed; its last known data was used")
            body = render_body(compiled, customer_context(profile, values, now, compiled.fields))
        except (GatewayError, UpstreamError) as exc:
            results.append(exc)
            continue
        results.append(Rendered(body, compiled.variables, tuple(warnings)))
    return results


def render_body(compiled: Compiled, context: Mapping[str, Any]) -> str:
    try:
        return compiled.template.render(context)
    except ResourceLimitError as exc:
        raise RenderError(f"The template exceeded a limit: {exc.message}") from None
    except UndefinedError as exc:
        name = str(exc.message).removesuffix(" is undefined")
        raise RenderError(f"Undefined variable: {name}", variables=[name]) from None
    except LiquidError as exc:
        raise RenderError(f"The template failed: {exc.message}") from None


@dataclass(frozen=True, slots=True)
class _Sources:
    profile: CustomerProfile
    crm: CrmContact | None
    shop: CommerceCustomer | None
    orders: tuple[Order, ...]
    analytics: AnalyticsData | None
    loaded: frozenset[str]
    now: datetime
    personal: bool
    picks: Picks | None

    @property
    def events(self) -> tuple[AnalyticsEvent, ...]:
        return self.analytics.events if self.analytics else ()


def _crm(name: str) -> Callable[[_Sources], Any]:
    return lambda s: getattr(s.crm, name, None)


# How to build each field, so a context holds only what its template reads: turning a
# hundred events into dicts for a template that shows the first name is wasted work.
_FIELDS: dict[str, Callable[[_Sources], Any]] = {
    "id": lambda s: str(s.profile.id),
    **{
        name: (lambda n: lambda s: getattr(s.profile, n))(name)
        for name in (
            "email",
            "phone",
            "first_name",
            "last_name",
            "locale",
            "created_at",
            "updated_at",
        )
    },
    "identities": lambda s: [
        {"source": i.source, "external_id": i.external_id} for i in s.profile.identities
    ],
    **{name: _crm(name) for name, loader in FIELD_LOADERS.items() if loader == "crm"},
    "consent": lambda s: {
        p.value: found.granted
        if (found := consent.effective(p, s.profile.consents, s.crm))
        else None
        for p in consent.Purpose
    },
    "consents": lambda s: [
        {
            "purpose": c.purpose,
            "granted": c.granted,
            "source": c.source,
            "recorded_at": c.recorded_at,
        }
        for p in consent.Purpose
        if (c := consent.effective(p, s.profile.consents, s.crm)) is not None
    ],
    "suppressed": lambda s: (
        not consent.granted(consent.Purpose.EMAIL_MARKETING, s.profile.consents, s.crm)
    ),
    "lifetime_value": lambda s: _money(s.shop.total_spent) if s.shop else None,
    "order_count": lambda s: (
        s.shop.orders_count if s.shop else (0 if "commerce" in s.loaded else None)
    ),
    "orders": lambda s: [_order(o) for o in s.orders],
    "last_order_at": lambda s: s.orders[0].created_at if s.orders else None,
    "recent_events": lambda s: [_event(e) for e in s.events],
    "engagement": lambda s: _engagement(s.events, s.now) if "analytics" in s.loaded else None,
    "cart": lambda s: _cart(behaviour.open_cart(s.events)) if s.analytics else None,
    "recommendations": lambda s: _recommendations(s.picks, s.personal),
}


def customer_context(
    profile: CustomerProfile,
    values: Mapping[str, Any],
    now: datetime,
    wanted: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The customer as the schema exposes it, snake_case, at the top level and under
    ``customer``: the ``wanted`` fields (default all). Fields of loaders that did not
    run are nil."""
    crm = values.get("crm")
    # Without personalisation consent the template sees no behaviour at all, so its
    # `if` branches fall back to the non-personal content.
    personal = consent.granted(consent.Purpose.PERSONALISATION, profile.consents, crm)
    sources = _Sources(
        profile,
        crm,
        values.get("commerce"),
        values.get("orders") or (),
        values.get("analytics") if personal else None,
        frozenset(values),
        now,
        personal,
        values.get("recommendations"),
    )
    fields = {name: _FIELDS[name](sources) for name in (_FIELDS if wanted is None else wanted)}
    return {**fields, "customer": fields}


def _recommendations(picks: Picks | None, personal: bool) -> list[dict[str, Any]]:
    """The products for ``{% for p in recommendations %}``: personalised ones only when
    this render's consent (the CRM's too, when read) allows them."""
    if picks is None:
        return []
    chosen = picks.personal if personal and picks.personal is not None else picks.popular
    return [
        {
            "id": r.product.external_id,
            "title": r.product.title,
            "url": r.product.url,
            "image_url": r.product.image_url,
            "price": _money(r.product.price),
            "category": r.category,
            "reason": r.reason,
            "score": r.score,
        }
        for r in chosen
    ]


def _money(money: Money | None) -> dict[str, Any] | None:
    return {"amount": money.amount, "currency": money.currency} if money else None


def _order(order: Order) -> dict[str, Any]:
    return {
        "id": order.external_id,
        "name": order.name,
        "created_at": order.created_at,
        "financial_status": order.financial_status,
        "fulfillment_status": order.fulfillment_status,
        "total_price": _money(order.total_price),
        "line_items": [
            {
                "product_id": i.product_id,
                "title": i.title,
                "quantity": i.quantity,
                "price": _money(i.price),
            }
            for i in order.line_items
        ],
    }


def _event(event: AnalyticsEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "name": event.name,
        "occurred_at": event.timestamp,
        "session_id": event.session_id,
        "properties": dict(event.properties),
    }


def _engagement(events: Sequence[AnalyticsEvent], now: datetime) -> dict[str, Any]:
    found = behaviour.engagement(events, now)
    return {
        "sessions_30d": found.sessions,
        "page_views_30d": found.page_views,
        "last_seen_at": found.last_seen_at,
    }


def _cart(cart: behaviour.Cart | None) -> dict[str, Any] | None:
    if cart is None:
        return None
    return {
        "items": [
            {"product_id": i.product_id, "title": i.title, "quantity": i.quantity, "price": i.price}
            for i in cart.items
        ],
        "subtotal": cart.subtotal,
        "updated_at": cart.updated_at,
    }

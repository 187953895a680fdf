"""The GraphQL face of templates: Customer.render, stored templates, batch rendering.

Merged into the schema by ``resolvers/graphql/schema.py`` (``TemplateQuery``,
``TemplateMutation``) and ``resolvers/graphql/types/customer.py`` (``Customer.render``). Resolvers
here ask ``gateway.templates.render`` and ``gateway.templates.store``; upstream data comes through
the request's DataLoaders, so a render shares fetches with the rest of the query.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.types import Info

from adapters.errors import UpstreamError
from gateway.access.api_keys import Scope
from gateway.errors import GatewayError, InvalidInput
from gateway.privacy.audit import Action
from gateway.profiles.customers import CustomerProfile, parse_customer_id
from gateway.templates import render
from gateway.templates.render import RenderFormat
from gateway.templates.store import TemplateStore, TemplateVersion, VersionInfo, parse_template_name
from gateway.upstreams.federation import Outcome
from gateway.upstreams.order_reads import OrdersNeed
from resolvers.graphql.access import audit, require
from resolvers.graphql.context import Context
from resolvers.graphql.types.recommendations import send_id_argument, template_recommendations
from resolvers.graphql.types.scores import score_loader

if TYPE_CHECKING:
    from resolvers.graphql.types.customer import Customer

GatewayInfo = Info[Context, None]
MAX_BATCH = 1000
SEND_ID_DESCRIPTION = (
    "The send these renders are for: recorded with the recommendation lists they show "
    "(whose links carry the tracking parameter)."
)

strawberry.enum(
    RenderFormat,
    name="RenderFormat",
    description="HTML escapes customer data in the output; TEXT leaves it as is.",
)


@strawberry.type(description="A rendered template.")
class RenderResult:
    body: str
    variables: list[str] = strawberry.field(
        description="The customer fields the template reads, e.g. customer.orders."
    )
    warnings: list[str] = strawberry.field(
        description="Names that are not customer fields (rendered empty), stale sources."
    )
    format: RenderFormat
    name: str | None = strawberry.field(description="The stored template, if one was used.")
    version: int | None


@strawberry.type(name="TemplateVersion", description="One saved version of a template.")
class TemplateVersionInfo:
    version: int
    format: RenderFormat
    created_at: datetime

    @classmethod
    def of(cls, info: VersionInfo) -> TemplateVersionInfo:
        return cls(version=info.version, format=info.format, created_at=info.created_at)


@strawberry.type(name="Template", description="A named Liquid template: its latest version.")
class StoredTemplate:
    name: str
    version: int
    format: RenderFormat
    source: str
    created_at: datetime

    @classmethod
    def of(cls, found: TemplateVersion) -> StoredTemplate:
        return cls(
            name=found.name,
            version=found.version,
            format=found.format,
            source=found.source,
            created_at=found.created_at,
        )

    @strawberry.field(description="Every version, newest first.")
    async def history(self, info: GatewayInfo) -> list[TemplateVersionInfo]:
        return [TemplateVersionInfo.of(v) for v in await _store(info).history(self.name)]


@strawberry.type(description="Why one customer's render failed.")
class RenderProblem:
    code: str
    message: str


@strawberry.type(description="One customer's render in a batch: a body or a problem.")
class RenderItem:
    customer_id: strawberry.ID
    body: str | None
    warnings: list[str]
    error: RenderProblem | None


def _store(info: GatewayInfo) -> TemplateStore:
    return info.context.services.templates


def _fetch(info: GatewayInfo, orders: OrdersNeed, send_id: str | None = None) -> render.Fetch:
    loaders = info.context.loaders

    async def fetch(name: str, profiles: Sequence[CustomerProfile]) -> Sequence[Outcome[Any]]:
        # The request's loaders: batched with, and cached for, every other field.
        if name == "orders":  # as many as the template reads, line items if it reads them
            return await loaders.orders.load_many([(p, orders) for p in profiles])
        loader: DataLoader[CustomerProfile, Outcome[Any]] | None = None
        if name == "recommendations":
            loader = template_recommendations(info, send_id)
        elif name == "scores":
            loader = score_loader(info)
        result: Sequence[Outcome[Any]] = await (loader or getattr(loaders, name)).load_many(
            profiles
        )
        return result

    return fetch


async def _stored(info: GatewayInfo, name: str, version: int | None) -> TemplateVersion:
    name = parse_template_name(name)
    found = await _store(info).get(name, version)
    if found is None:
        which = f"version {version} of " if version is not None else ""
        raise InvalidInput(f"No {which}template named '{name}'", field="name")
    return found


async def render_customer(
    root: Customer,
    info: GatewayInfo,
    template: str | None = None,
    name: str | None = None,
    version: int | None = None,
    format: Annotated[
        RenderFormat | None,
        strawberry.argument(
            description="Default: the stored template's format, or HTML for an inline one."
        ),
    ] = None,
    strict: Annotated[
        bool, strawberry.argument(description="Undefined variables are errors naming them.")
    ] = False,
    send_id: Annotated[str | None, strawberry.argument(description=SEND_ID_DESCRIPTION)] = None,
) -> RenderResult | None:
    """Render Liquid for this customer: an inline `template` or a stored `name`."""
    if (template is None) == (name is None):
        raise InvalidInput(
            "Give exactly one of the arguments 'template' and 'name'", field="template"
        )
    if template is not None:
        if version is not None:
            raise InvalidInput("'version' applies to a stored template ('name')", field="version")
        source, chosen = template, RenderFormat(format or RenderFormat.HTML)
        stored = None
    else:
        stored = await _stored(info, str(name), version)
        source, chosen = stored.source, RenderFormat(format or stored.format)
    renderer = info.context.services.renderer
    compiled = await renderer.compile(source, chosen, strict)
    fetch = _fetch(info, compiled.orders, send_id_argument(send_id))
    [outcome] = await renderer.render_for(
        compiled, [root.profile], fetch, info.context.render_budget()
    )
    if isinstance(outcome, Exception):
        raise outcome
    return RenderResult(
        body=outcome.body,
        variables=list(outcome.variables),
        warnings=list(outcome.warnings),
        format=chosen,
        name=stored.name if stored else None,
        version=stored.version if stored else None,
    )


@strawberry.type
class TemplateQuery:
    @strawberry.field(
        description="The latest version of a stored template, with its history. Null when unknown.",
    )
    async def template(self, info: GatewayInfo, name: str) -> StoredTemplate | None:
        require(info, Scope.PROFILES_READ)
        found = await _store(info).get(parse_template_name(name))
        return StoredTemplate.of(found) if found else None

    @strawberry.field(
        description=f"Render a stored template for up to {MAX_BATCH} customers, "
        "in the order given. Upstream reads are batched; one customer's "
        "failure is its own item's error.",
    )
    async def render_batch(
        self,
        info: GatewayInfo,
        name: str,
        customer_ids: list[strawberry.ID],
        version: int | None = None,
        format: RenderFormat | None = None,
        strict: bool = False,
        send_id: Annotated[str | None, strawberry.argument(description=SEND_ID_DESCRIPTION)] = None,
    ) -> list[RenderItem]:
        require(info, Scope.PROFILES_READ)
        send = send_id_argument(send_id)
        if len(customer_ids) > MAX_BATCH:
            raise InvalidInput(
                f"At most {MAX_BATCH} customers per batch; got {len(customer_ids)}",
                field="customerIds",
            )
        stored = await _stored(info, name, version)
        renderer = info.context.services.renderer
        compiled = await renderer.compile(
            stored.source, RenderFormat(format or stored.format), strict
        )
        render.check_strict(compiled)  # the same for everyone: one error, not N
        wanted: dict[str, uuid.UUID | GatewayError] = {}
        for raw in customer_ids:
            try:
                wanted[raw] = parse_customer_id(raw)
            except GatewayError as exc:
                wanted[raw] = exc
        profiles = await info.context.services.customers.get_many(
            [i for i in wanted.values() if isinstance(i, uuid.UUID)]
        )
        found = list(profiles.values())
        audit(info, Action.READ, [p.id for p in found])  # each customer rendered is a read
        outcomes = dict(
            zip(
                [p.id for p in found],
                await renderer.render_for(
                    compiled,
                    found,
                    _fetch(info, compiled.orders, send),
                    info.context.render_budget(),
                ),
                strict=True,
            )
        )
        return [_item(raw, wanted[raw], outcomes) for raw in customer_ids]


def _item(
    raw: str,
    key: uuid.UUID | GatewayError,
    outcomes: dict[uuid.UUID, render.Rendered | GatewayError | UpstreamError],
) -> RenderItem:
    outcome: render.Rendered | GatewayError | UpstreamError
    if isinstance(key, GatewayError):
        outcome = key
    elif key in outcomes:
        outcome = outcomes[key]
    else:
        return RenderItem(
            customer_id=strawberry.ID(raw),
            body=None,
            warnings=[],
            error=RenderProblem(code="NOT_FOUND", message="No such customer"),
        )
    if isinstance(outcome, render.Rendered):
        return RenderItem(
            customer_id=strawberry.ID(raw),
            body=outcome.body,
            warnings=list(outcome.warnings),
            error=None,
        )
    return RenderItem(
        customer_id=strawberry.ID(raw),
        body=None,
        warnings=[],
        error=RenderProblem(code=outcome.code, message=str(outcome)),
    )


@strawberry.type
class TemplateMutation:
    @strawberry.mutation(
        description="Save a new version of a named template. The source is "
        "checked first: a syntax error names its line and column and saves "
        "nothing.",
    )
    async def save_template(
        self,
        info: GatewayInfo,
        name: str,
        source: str,
        format: RenderFormat = RenderFormat.HTML,
    ) -> StoredTemplate:
        principal = require(info, Scope.PROFILES_WRITE)
        saved = await _store(info).save(name, source, RenderFormat(format))
        # A change of what every send renders: on record with who made it (no customer).
        info.context.services.audit.record_run(
            actor=principal.name,
            key_id=principal.key_id,
            action=Action.CHANGE,
            operation="mutation:saveTemplate",
        )
        return StoredTemplate.of(saved)

"""Segments as GraphQL: ``saveSegment`` (profiles:write, audited), ``segment(name)`` with
its size and its members a page at a time (profiles:read, each member read audited),
``segments``, ``deleteSegment`` and ``Customer.segments``.

A page's customers are shaped once for the page, as ``customers(ids:)`` shapes a
batch, whether the selection reads them as ``nodes`` or as ``edges { node }``: each
upstream their fields need is asked once for the page.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, NewType

import strawberry
from graphql import (
    BooleanValueNode,
    FloatValueNode,
    GraphQLError,
    IntValueNode,
    StringValueNode,
    ValueNode,
)
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON
from strawberry.types import Info
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from gateway.access.api_keys import Scope
from gateway.errors import InvalidInput, NotFound
from gateway.privacy.audit import Action
from gateway.profiles.customers import CustomerProfile
from gateway.segments.store import Page, SavedSegment, SegmentStore, cursor_of
from resolvers.graphql.access import audit, require
from resolvers.graphql.context import Context
from resolvers.graphql.loaders import per_request

if TYPE_CHECKING:
    from resolvers.graphql.types.customer import Customer

GatewayInfo = Info[Context, None]
LazyCustomer = Annotated["Customer", strawberry.lazy("resolvers.graphql.types.customer")]
FIRST = 100


_NOT_A_VALUE = "A SegmentValue is a string, a number or a boolean"


def _value(value: Any) -> str | float | bool:
    if isinstance(value, bool | int | float | str):
        return value
    raise GraphQLError(_NOT_A_VALUE)  # a client's mistake, answered as one


def _literal(node: ValueNode, variables: dict[str, Any] | None = None) -> str | float | bool:
    if isinstance(node, StringValueNode | BooleanValueNode):
        return node.value
    if isinstance(node, IntValueNode):
        return int(node.value)
    if isinstance(node, FloatValueNode):
        return float(node.value)
    raise GraphQLError(_NOT_A_VALUE)


SegmentValue = NewType("SegmentValue", object)
# In the schema's scalar_map (resolvers/graphql/schema.py).
SEGMENT_VALUE = strawberry.scalar(
    name="SegmentValue",
    description="A string, a number or a boolean, as the field compared takes: numbers for "
    "scores, strings for text and RFM segments (ISO 8601 with an offset for times), "
    "booleans for consent.",
    serialize=_value,
    parse_value=_value,
    parse_literal=_literal,
)


@strawberry.input(
    description="A group (`all` or `any` of filters) or a condition (`field` and exactly "
    "one operator). Fields: recency, frequency, monetary, averageOrderValue, "
    "daysBetweenOrders, rScore, fScore, mScore, rfmSegment, engagement30d, engagement90d, "
    "purchasePropensity, churnRisk; consent.emailMarketing, consent.personalisation, "
    "consent.analytics; email, firstName, lastName, locale, createdAt. A condition on a "
    "value the customer lacks (not scored yet) is false; no consent statement is a no."
)
class SegmentFilter:
    all_: list[SegmentFilter] | None = strawberry.field(default=None, name="all")
    any_: list[SegmentFilter] | None = strawberry.field(default=None, name="any")
    field: str | None = None
    eq: SegmentValue | None = None
    ne: SegmentValue | None = None
    gt: SegmentValue | None = None
    gte: SegmentValue | None = None
    lt: SegmentValue | None = None
    lte: SegmentValue | None = None
    in_: list[SegmentValue] | None = strawberry.field(default=None, name="in")


def filter_data(given: SegmentFilter) -> dict[str, Any]:
    """The input as the service takes it (and stores it): only what was given."""
    data: dict[str, Any] = {}
    for key, group in (("all", given.all_), ("any", given.any_)):
        if group is not None:
            data[key] = [filter_data(member) for member in group]
    operands = (
        ("field", given.field),
        ("eq", given.eq),
        ("ne", given.ne),
        ("gt", given.gt),
        ("gte", given.gte),
        ("lt", given.lt),
        ("lte", given.lte),
        ("in", given.in_),
    )
    data.update((key, value) for key, value in operands if value is not None)
    return data


@strawberry.type
class PageInfo:
    end_cursor: str | None = strawberry.field(description="Pass as `after` for the next page.")
    has_next_page: bool


@strawberry.type
class SegmentCustomerEdge:
    cursor: str
    node: LazyCustomer


@strawberry.type(description="One page of a segment's members, in customer-id order.")
class SegmentCustomers:
    nodes: list[LazyCustomer]
    page_info: PageInfo

    @strawberry.field
    def edges(self) -> list[SegmentCustomerEdge]:
        # Made only when asked: a send reading `nodes` skips a cursor per customer.
        return [SegmentCustomerEdge(cursor=cursor_of(c.profile.id), node=c) for c in self.nodes]


@strawberry.type(description="A saved audience: a typed filter and who matches it now.")
class Segment:
    name: str
    definition: JSON = strawberry.field(description="The filter, as saved (SegmentFilter's shape).")
    include_suppressed: bool = strawberry.field(
        description="False: customers without a stored yes to email marketing, or whose "
        "address hard-bounced, are left out (the default for a send)."
    )
    created_at: datetime
    updated_at: datetime
    saved: strawberry.Private[SavedSegment]

    @classmethod
    def of(cls, saved: SavedSegment) -> Segment:
        return cls(
            name=saved.name,
            definition=JSON(saved.definition.as_json()),
            include_suppressed=saved.include_suppressed,
            created_at=saved.created_at,
            updated_at=saved.updated_at,
            saved=saved,
        )

    @strawberry.field(description="How many customers match now (counted when asked).")
    async def size(self, info: GatewayInfo) -> int:
        return await _store(info).size(self.saved)

    @strawberry.field(
        description="Members in customer-id order, `first` at a time (at most the batch "
        "limit, 1,000 by default) after the cursor `after`: a walk sees each customer that "
        "stays a member once, however the others change meanwhile."
    )
    async def customers(
        self, info: GatewayInfo, first: int = FIRST, after: str | None = None
    ) -> SegmentCustomers:
        limit = info.context.services.settings.max_batch_size
        if not 1 <= first <= limit:
            raise InvalidInput(
                f"Invalid value for argument 'first': 1 to {limit}, got {first}", field="first"
            )
        page = await _store(info).page(self.saved, first, after)
        return await _shaped_page(page, info)


async def _shaped_page(page: Page, info: GatewayInfo) -> SegmentCustomers:
    from resolvers.graphql.types.customer import shaped_customers

    info_out = PageInfo(end_cursor=page.end_cursor, has_next_page=page.has_next_page)
    fields = _customer_fields(s for f in info.selected_fields for s in f.selections)
    if not fields or not page.ids:
        return SegmentCustomers(nodes=[], page_info=info_out)
    found = await info.context.services.customers.get_many(page.ids)
    # One that left the store between the page and this read is left out.
    profiles = [found[i] for i in page.ids if i in found]
    audit(info, Action.READ, [p.id for p in profiles])
    shaped = [c for c in await shaped_customers(profiles, info, fields) if c is not None]
    return SegmentCustomers(nodes=shaped, page_info=info_out)


def _customer_fields(selected: Iterable[Selection], in_edges: bool = False) -> list[SelectedField]:
    """The Customer fields a connection's selection reads: under ``nodes`` and under
    ``edges { node }``, through fragments."""
    found: list[SelectedField] = []
    for selection in selected:
        if isinstance(selection, FragmentSpread | InlineFragment):
            found += _customer_fields(selection.selections, in_edges)
        elif isinstance(selection, SelectedField):
            if selection.name == ("node" if in_edges else "nodes"):
                found.append(selection)
            elif selection.name == "edges" and not in_edges:
                found += _customer_fields(selection.selections, True)
    return found


def _store(info: GatewayInfo) -> SegmentStore:
    return info.context.services.segments


def _audit_change(info: GatewayInfo) -> None:
    principal = info.context.principal
    info.context.services.audit.record_run(
        actor=principal.name if principal else "anonymous",
        key_id=principal.key_id if principal else None,
        action=Action.CHANGE,
        operation=f"mutation:{info.field_name}",
    )


@strawberry.type
class SegmentQuery:
    @strawberry.field(description="A saved segment by name; null when there is none.")
    async def segment(self, info: GatewayInfo, name: str) -> Segment | None:
        require(info, Scope.PROFILES_READ)
        found = await _store(info).get(name)
        return Segment.of(found) if found is not None else None

    @strawberry.field(description="Every saved segment, by name.")
    async def segments(self, info: GatewayInfo) -> list[Segment]:
        require(info, Scope.PROFILES_READ)
        return [Segment.of(s) for s in await _store(info).all()]


@strawberry.type
class SegmentMutation:
    @strawberry.mutation(
        description="Save (create or replace) a named segment. The filter is checked first: "
        "an unknown field, operator or a value of the wrong kind saves nothing."
    )
    async def save_segment(
        self,
        info: GatewayInfo,
        name: str,
        filter: SegmentFilter,
        include_suppressed: bool = False,
    ) -> Segment:
        require(info, Scope.PROFILES_WRITE)
        saved = await _store(info).save(
            name, filter_data(filter), include_suppressed=include_suppressed
        )
        _audit_change(info)
        return Segment.of(saved)

    @strawberry.mutation(description="Delete a saved segment; NOT_FOUND if there is none.")
    async def delete_segment(self, info: GatewayInfo, name: str) -> bool:
        require(info, Scope.PROFILES_WRITE)
        if not await _store(info).delete(name):
            raise NotFound("No segment with this name", field="name")
        _audit_change(info)
        return True


def _membership_loader(info: GatewayInfo) -> DataLoader[uuid.UUID, list[str]]:
    store = _store(info)

    async def load(ids: Sequence[uuid.UUID]) -> list[list[str]]:
        found = await store.memberships(list(ids))
        return [found[i] for i in ids]

    return per_request(info.context.loaders, _membership_loader, lambda: DataLoader(load))


async def customer_segments(root: LazyCustomer, info: GatewayInfo) -> list[str]:
    """The saved segments this customer is in now, by name (suppression as each says)."""
    profile: CustomerProfile = root.profile
    return await _membership_loader(info).load(profile.id)

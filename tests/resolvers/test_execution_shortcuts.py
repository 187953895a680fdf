"""The execution context's shortcuts (plain objects completed by a plan, list items by
the same plan, plain methods called directly) answer exactly what Strawberry's own
path answers: the same data, the same errors at the same paths, whatever nulls,
bad values and failing resolvers the objects hold."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import strawberry
from graphql import GraphQLField, GraphQLObjectType
from hypothesis import given, settings
from hypothesis import strategies as st

from resolvers.graphql.execution import AcyclicExecutionContext, context


@strawberry.type
class Item:
    name: str | None
    count: int  # non-null: a None here is an error graphql-core must report


@strawberry.type
class Holder:
    items: list[Item]

    @strawberry.field
    def picked(self, first: int = 2, kind: str | None = None) -> list[Item]:
        if first < 0:
            raise ValueError("first must not be negative")
        return [i for i in self.items if kind is None or i.name == kind][:first]

    @strawberry.field
    def top(self) -> Item | None:
        return self.items[0] if self.items else None

    @strawberry.field
    def head(self) -> Item:  # non-null: an empty holder is an error that nulls the holder
        return self.items[0]

    @strawberry.field
    def size(self) -> int:
        return len(self.items)

    @strawberry.field
    def label(self) -> str | None:
        return self.items[-1].name if self.items else None


HOLDERS: list[Holder] = []


@strawberry.type
class Query:
    @strawberry.field
    def holders(self) -> list[Holder | None]:
        return list(HOLDERS)


SHORTCUT = strawberry.Schema(Query, execution_context_class=AcyclicExecutionContext)
STRAWBERRY = strawberry.Schema(Query)
QUERY = """query($first: Int!, $kind: String) { holders {
  items { name count }
  picked(first: $first, kind: $kind) { count name }
  all: picked(first: 10) { name }
  top { name count } } }"""

items = st.builds(
    Item,
    name=st.sampled_from([None, "a", "b"]),
    count=st.one_of(st.integers(-3, 3), st.none(), st.just("x")),
)


async def _answer(
    schema: strawberry.Schema, query: str, variables: dict[str, Any] | None = None
) -> Any:
    """The data, and the errors (message, path) in an order of their own."""
    result = await schema.execute(query, variable_values=variables)
    errors = sorted((e.message, tuple(e.path or ())) for e in result.errors or [])
    return result.data, errors


@pytest.mark.logs_errors(r"strawberry\.execution: ")
@settings(max_examples=60, deadline=None)
@given(
    holders=st.lists(st.lists(items, max_size=6), max_size=5),
    first=st.integers(-1, 4),
    kind=st.sampled_from([None, "a", "b"]),
)
def test_the_shortcuts_answer_as_strawberry_does(
    holders: list[list[Item]], first: int, kind: str | None
) -> None:
    HOLDERS[:] = [Holder(items=found) for found in holders]
    variables = {"first": first, "kind": kind}
    # Slices long enough never to end here: a list continued later lets its siblings
    # run and report errors of their own, which is the slicing's doing, not a shortcut's.
    sliced, context.SLICE_S = context.SLICE_S, 3600.0
    try:
        shortcut = asyncio.run(_answer(SHORTCUT, QUERY, variables))
    finally:
        context.SLICE_S = sliced
    assert shortcut == asyncio.run(_answer(STRAWBERRY, QUERY, variables))


# Generated operations: any mix of the holders' fields (attributes, methods called with
# arguments or without, leaves, objects, lists), under aliases, inline fragments,
# fragment spreads, @include and @skip, with __typename here and there.
_ITEM_FIELDS = ["name", "count", "n: name", "c: count", "__typename"]
_HOLDER_FIELDS = [
    "items {%s}",
    "picked(first: $first, kind: $kind) {%s}",
    "all: picked(first: 10) {%s}",
    "top {%s}",
    "head {%s}",
    "size",
    "label",
    "__typename",
]
_DIRECTIVES = ["", " @include(if: $yes)", " @skip(if: $yes)", " @include(if: true)"]


@st.composite
def _selection(draw: st.DrawFn, fields: list[str], inner: st.SearchStrategy[str] | None) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        field = draw(st.sampled_from(fields))
        if "%s" in field:
            assert inner is not None
            field = field % draw(inner)
        directive = draw(st.sampled_from(_DIRECTIVES))
        shape = draw(st.sampled_from(["plain", "inline", "spread"]))
        if shape == "inline":
            parts.append(f"... on {'Item' if inner is None else 'Holder'}{directive} {{ {field} }}")
        elif shape == "spread" and inner is None:
            parts.append(f"...ItemBits{directive} {field}")
        else:
            parts.append(f"{field}{directive}")
    return " ".join(parts)


_ITEM_SELECTION = _selection(_ITEM_FIELDS, None)
_OPERATIONS = _selection(_HOLDER_FIELDS, _ITEM_SELECTION).map(
    lambda holder: (
        "query($first: Int!, $kind: String, $yes: Boolean!) "
        f"{{ holders {{ {holder} }} }} fragment ItemBits on Item {{ name count }}"
    )
)


@pytest.mark.logs_errors(r"strawberry\.execution: ")
@settings(max_examples=150, deadline=None)
@given(
    holders=st.lists(st.one_of(st.none(), st.lists(items, max_size=4)), max_size=4),
    query=_OPERATIONS,
    first=st.integers(-1, 3),
    kind=st.sampled_from([None, "a"]),
    yes=st.booleans(),
)
def test_generated_operations_answer_as_strawberry_does(
    holders: list[list[Item] | None], query: str, first: int, kind: str | None, yes: bool
) -> None:
    """Planned objects (methods called directly, objects and lists completed by the plan,
    stopped part-way by a null, an error or a bad value and finished by graphql-core)
    answer what Strawberry answers, whatever the shape of the operation."""
    HOLDERS[:] = [Holder(items=found) if found is not None else None for found in holders]  # type: ignore[misc]
    variables = {"first": first, "kind": kind, "yes": yes}
    sliced, context.SLICE_S = context.SLICE_S, 3600.0
    try:
        shortcut = asyncio.run(_answer(SHORTCUT, query, variables))
    finally:
        context.SLICE_S = sliced
    assert shortcut == asyncio.run(_answer(STRAWBERRY, query, variables))


class _Counting(AcyclicExecutionContext):
    """Counts the fields graphql-core resolves the long way (each builds a resolve info)."""

    infos = 0

    def build_resolve_info(
        self,
        field_def: GraphQLField,
        field_nodes: Any,
        parent_type: GraphQLObjectType,
        path: Any,
    ) -> Any:
        _Counting.infos += 1
        return super().build_resolve_info(field_def, field_nodes, parent_type, path)


def test_a_planned_object_calls_its_methods_without_graphql_cores_per_field_path() -> None:
    """The holders' methods (with arguments or without; answering a leaf, an object or a
    list) are called by the plan: only the root field goes graphql-core's way."""
    HOLDERS[:] = [Holder(items=[Item(name="a", count=1), Item(name="b", count=2)])] * 50
    schema = strawberry.Schema(Query, execution_context_class=_Counting)
    query = "{ holders { size label top { name } picked(first: 1) { count } head { name } } }"
    _Counting.infos = 0
    result = asyncio.run(schema.execute(query))
    assert result.errors is None
    assert result.data is not None
    assert len(result.data["holders"]) == 50
    assert _Counting.infos == 1


class _Slices:
    """What ``next_slice`` keeps on its execution context: the gate and the slice's end."""

    _gate: asyncio.Future[None] | None = None
    slice_ends = 0.0


async def test_a_resolver_cancelled_while_it_waits_for_a_slice_leaves_the_gate_working() -> None:
    """A resolver past its budget is cancelled while it waits for the previous slice:
    the holder of that slice still ends it, and the next waiter goes. (The waiter's
    cancellation cancelled the holder's future, whose release then raised
    InvalidStateError: an unexpected error in another field, and a stuck operation.)"""
    slices: Any = _Slices()
    next_slice = AcyclicExecutionContext.next_slice
    held = await next_slice(slices)
    waiter = asyncio.create_task(next_slice(slices))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not held.cancelled()
    context._release(held)
    after = await asyncio.wait_for(next_slice(slices), 1)
    context._release(after)


class _Missing(Exception):
    """An error of ours: a String coerces it by ``str()``, as any class not built in."""


@strawberry.type
class Shelf:
    kept: str | None  # an attribute holding an error, not raising it

    @strawberry.field
    def label(self) -> str | None:
        return _Missing("no label")  # type: ignore[return-value]

    @strawberry.field
    def size(self) -> int:
        return 1


@strawberry.type
class ShelfQuery:
    @strawberry.field
    def shelf(self) -> Shelf:
        return Shelf(kept=_Missing("not kept"))  # type: ignore[arg-type]

    @strawberry.field
    def shelves(self) -> list[Shelf]:
        return [Shelf(kept=None), Shelf(kept=_Missing("not kept"))]  # type: ignore[arg-type]


@pytest.mark.logs_errors(r"strawberry\.execution: ")
@pytest.mark.parametrize(
    "query",
    [
        "{ shelf { label size } }",  # a planned object's method
        "{ shelves { kept label size } }",  # a planned list's items
        "{ shelf { __typename kept } }",  # no plan: the plain attribute's shortcut
    ],
)
def test_an_error_returned_not_raised_is_the_fields_error_as_in_graphql_core(query: str) -> None:
    """graphql-core reports an exception a resolver returns as the field's error (null
    and an error at its path). The shortcuts coerced it to a String by ``str()`` and
    answered its message as the value, with no error."""
    shortcut = strawberry.Schema(ShelfQuery, execution_context_class=AcyclicExecutionContext)
    expected = asyncio.run(_answer(strawberry.Schema(ShelfQuery), query))
    assert expected[1]  # graphql-core does report them
    assert asyncio.run(_answer(shortcut, query)) == expected


async def _found() -> Shelf:
    return Shelf(kept="found")


async def _gone() -> Shelf:
    raise LookupError("gone")


@strawberry.type
class AwaitedQuery:
    @strawberry.field
    def shelves(self) -> list[Shelf | None]:
        # Items graphql-core awaits, or reports (a DataLoader's ``[load(id) ...]``).
        return [_found(), _gone(), _Missing("no shelf")]  # type: ignore[list-item]


@pytest.mark.logs_errors(r"strawberry\.execution: ")
def test_a_lists_awaitable_or_failed_items_are_awaited_or_reported_as_in_graphql_core() -> None:
    """A list's items that are awaitables are awaited, and an exception among them is
    that item's error. The list's plan called the items' methods on the coroutine itself
    (``size`` answered 1 for an item that failed, its coroutine never awaited)."""
    query = "{ shelves { size } }"  # a method that never reads its object
    shortcut = strawberry.Schema(AwaitedQuery, execution_context_class=AcyclicExecutionContext)
    expected = asyncio.run(_answer(strawberry.Schema(AwaitedQuery), query))
    assert expected == (
        {"shelves": [{"size": 1}, None, None]},
        [("gone", ("shelves", 1)), ("no shelf", ("shelves", 2))],
    )
    assert asyncio.run(_answer(shortcut, query)) == expected

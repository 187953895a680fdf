"""The execution context's shortcuts (plain objects completed by a plan, list items by
the same plan, plain methods called directly) answer exactly what Strawberry's own
path answers: the same data, the same errors at the same paths, whatever nulls,
bad values and failing resolvers the objects hold."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import strawberry
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


HOLDERS: list[Holder] = []


@strawberry.type
class Query:
    @strawberry.field
    def holders(self) -> list[Holder]:
        return HOLDERS


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


async def _answer(schema: strawberry.Schema, variables: dict[str, Any]) -> Any:
    result = await schema.execute(QUERY, variable_values=variables)
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
        shortcut = asyncio.run(_answer(SHORTCUT, variables))
    finally:
        context.SLICE_S = sliced
    assert shortcut == asyncio.run(_answer(STRAWBERRY, variables))


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

"""The execution context: graphql-core's, without its cycle, completing in slices of
time and taking the plain fields' shortcuts (see the package's docstring)."""

from __future__ import annotations

import asyncio
import inspect
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from graphql import (
    GraphQLField,
    GraphQLLeafType,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
)
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.execution.values import get_argument_values
from graphql.pyutils import AwaitableOrValue, Path, Undefined, UndefinedType, gather_with_cancel
from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from resolvers.graphql.execution.plans import DirectResolvers, is_basic_field, reader
from resolvers.graphql.execution.resumption import Resumption
from resolvers.graphql.execution.slices import ListSlices
from resolvers.graphql.execution.steps import Nested, Partial, Plan, Step, odd, planned

SLICE_S = 0.005  # the longest an operation's completion holds the loop in one go
# A slice that ended this long ago ended while the operation waited (for a database
# or an upstream), not while it ran: a list met then starts a fresh slice.
STALE_S = 0.05


class AcyclicExecutionContext(Resumption):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.async_helpers = GraphQLResolveInfoHelpers(gather=_gather, track=_track_weakly(self))
        self.slice_ends = time.perf_counter() + SLICE_S
        self._gate: asyncio.Future[None] | None = None  # released when a slice ends
        # Strawberry always passes a manager; plain fields skip it only when it is empty
        # (no extension hooks resolving fields).
        manager = self.middleware_manager
        self._plain_fields = manager is None or not manager.middlewares
        # Then graphql-core takes each resolver from this one, which calls the plain
        # methods directly (plans.py).
        self._direct = DirectResolvers()
        if self._plain_fields:
            self.middleware_manager = self._direct
        # An object whose selected fields are all plain is completed in one loop; not
        # where a subclass checks each field (access.py's writer context).
        self._plain_objects = (
            self._plain_fields and type(self).execute_field is AcyclicExecutionContext.execute_field
        )
        self._plans: dict[tuple[int, bool], tuple[GroupedFieldSet, Plan | None]] = {}
        # A list item whose plan stopped part-way, for graphql-core's path to resume
        # (set just before that path starts the item, taken as it reaches its fields).
        self.partial: tuple[Partial, Plan] | None = None
        # Per schema field met in this operation: its leaf type when plain, else None.
        # Kept per operation (a handful of fields, each asked thousands of times), not
        # in a module-level table the app's state would not show.
        self._leaves: dict[int, GraphQLLeafType | None] = {}

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: GroupedFieldSet,
        position_context: Any,
    ) -> AwaitableOrValue[dict[str, Any]]:
        plan = self._plan(parent_type, grouped_field_set) if self._plain_objects else None
        if plan is not None:
            stopped = self.partial
            if stopped is not None and stopped[1] is plan and stopped[0].source is source_value:
                self.partial = None  # a list item's plan stopped here: go on from there
                return self.resume(
                    parent_type, path, grouped_field_set, stopped[0], position_context
                )
            results = planned(plan, source_value)
            if type(results) is dict:
                return results
            assert isinstance(results, Partial)
            return self.resume(parent_type, path, grouped_field_set, results, position_context)
        return super().execute_fields(
            parent_type, source_value, path, grouped_field_set, position_context
        )

    def _plan(
        self, parent_type: GraphQLObjectType, fields: GroupedFieldSet, top: bool = True
    ) -> Plan | None:
        """How to complete an object's selection when every field in it is plain (an
        ``Event``'s ``id name occurredAt``; a ``Customer``'s ``id recentEvents(first: 5)
        { ... } engagement { ... }``), else None. Selections are collected once per
        operation and list, so this is worked out once per selection, not per object.
        Below the top, only attributes: a nested object the plan does not complete is
        completed again by graphql-core, which must not call a method twice."""
        found = self._plans.get((id(fields), top))
        if found is not None and found[0] is fields:
            return found[1]
        plan: Plan | None = []
        for response_name, field_details_list in fields.items():
            step = self._step(parent_type, response_name, field_details_list, top)
            if step is None:
                plan = None
                break
            plan.append(step)  # type: ignore[union-attr]
        self._plans[(id(fields), top)] = (fields, plan)
        return plan

    def _step(
        self,
        parent_type: GraphQLObjectType,
        response_name: str,
        field_details_list: FieldDetailsList,
        top: bool,
    ) -> Step | None:
        """One field of a plan: an attribute, or (``top``) a direct method called with
        the operation's arguments; a leaf, an object or a list of objects, each plain."""
        first = field_details_list[0]
        field = parent_type.fields.get(first.node.name.value)
        if field is None or field.resolve is None:
            return None  # ``__typename``, or graphql-core's default resolver
        if any(
            d.fragment_variable_values is not None
            or any(directive.name.value == "stream" for directive in d.node.directives or ())
            for d in field_details_list
        ):
            return None
        if is_basic_field(field) and not field.args and not first.node.arguments:
            read = reader(field)
        else:
            method = self._direct.method(field) if top else None
            if method is None:
                return None
            try:
                arguments = get_argument_values(
                    field, first.node, self.variable_values, None, self.hide_suggestions
                )
            except Exception:  # noqa: BLE001 - graphql-core's path reports it
                return None
            read = method.bound(arguments)
        kind: Any = field.type
        nullable = not is_non_null_type(kind)
        kind = kind if nullable else kind.of_type
        if is_leaf_type(kind):
            return Step(response_name, read, kind, nullable, None)
        is_list = is_list_type(kind)
        item: Any = kind.of_type if is_list else kind
        item_nullable = not is_non_null_type(item)
        item = item if item_nullable else item.of_type
        if not isinstance(item, GraphQLObjectType) or item.is_type_of:
            return None
        grouped, deferred, _ = self.collect_subfields(item, field_details_list)
        plan = None if deferred else self._plan(item, grouped, top=False)
        if plan is None:
            return None
        return Step(response_name, read, None, nullable, Nested(is_list, item_nullable, plan))

    def item_plan(self, item_type: GraphQLOutputType, field_details_list: Any) -> Plan | None:
        """The plan of a list's items when they are objects whose selected fields are all
        plain (a customer's five ``Event``s; the customers of a send), else None: such
        an item is completed by the plan alone, without graphql-core's per-item path,
        value checks and object set-up (at 5,000 events a request, most of what was
        left of their cost)."""
        kind = item_type.of_type if is_non_null_type(item_type) else item_type
        if not (self._plain_objects and isinstance(kind, GraphQLObjectType)) or kind.is_type_of:
            return None
        grouped, deferred, _ = self.collect_subfields(kind, field_details_list)
        return None if deferred else self._plan(kind, grouped)

    def _plain_leaf(self, field: GraphQLField) -> GraphQLLeafType | None:
        """The field's leaf type when it is a plain Strawberry attribute (no resolver,
        no arguments), else None."""
        key = id(field)  # the schema outlives the operation: ids are stable within it
        if key in self._leaves:
            return self._leaves[key]
        kind = field.type.of_type if is_non_null_type(field.type) else field.type
        plain = kind if is_leaf_type(kind) and is_basic_field(field) and not field.args else None
        self._leaves[key] = plain
        return plain

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> AwaitableOrValue[Any] | UndefinedType:
        node = field_details_list[0].node
        field = parent_type.fields.get(node.name.value) if self._plain_fields else None
        if field is not None:
            leaf = None if node.arguments else self._plain_leaf(field)
            if leaf is not None:
                try:
                    # Strawberry's resolver for a field without one: getattr, no info.
                    value = field.resolve(source, None)
                    if value is not None:
                        coerced = leaf.coerce_output_value(value)
                        if (
                            coerced is not None
                            and coerced is not Undefined
                            and (coerced is value or not odd(value))
                        ):
                            return coerced
                except Exception:  # noqa: BLE001 - graphql-core's path below reports it
                    pass
            self._direct.learn(field)
        return super().execute_field(
            parent_type, source, field_details_list, path, position_context
        )

    async def with_abort_signal(self, awaitable: Awaitable[Any]) -> Any:
        # Every awaited resolver result and list item comes through here.
        resolved = await super().with_abort_signal(awaitable)
        now = time.perf_counter()
        if self.slice_ends < now <= self.slice_ends + STALE_S:
            _release(await self.next_slice())
        elif now > self.slice_ends:
            self.slice_ends = now + SLICE_S
        return resolved

    async def next_slice(self) -> asyncio.Future[None]:
        """Wait for a turn of the loop in which no other slice of this operation runs;
        the caller sets the returned future when its slice is over."""
        previous, mine = self._gate, asyncio.get_running_loop().create_future()
        self._gate = mine
        try:
            if previous is not None:
                # Shielded: a cancelled waiter (a resolver past its budget) would cancel
                # the future it awaits, the previous holder's, which then failed to
                # release it (InvalidStateError) and answered an unexpected error.
                await asyncio.shield(previous)
            await asyncio.sleep(0)  # and a turn of the loop since that slice ended
        except BaseException:
            _release(mine)
            raise
        self.slice_ends = time.perf_counter() + SLICE_S
        return mine

    def complete_iterable_value(
        self,
        item_type: GraphQLOutputType,
        field_details_list: Any,
        info: GraphQLResolveInfo[Any],
        path: Path,
        items: Iterable[Any],
        position_context: Any,
    ) -> AwaitableOrValue[list[Any]]:
        if (
            not isinstance(items, list | tuple)
            or not items
            or self.get_stream_usage(field_details_list, path) is not None
        ):
            return super().complete_iterable_value(
                item_type, field_details_list, info, path, items, position_context
            )
        slicer = ListSlices(self, item_type, field_details_list, info, path, items)
        now = time.perf_counter()
        if now > self.slice_ends + STALE_S:
            self.slice_ends = now + SLICE_S
        if now <= self.slice_ends:
            slicer.run(position_context)
            if slicer.index == len(items):
                return slicer.finished()
        return slicer.rest(position_context)


def _gather(values: Sequence[Awaitable[Any]]) -> Awaitable[list[Any]]:
    # What the bound ``gather_async_work`` does; it never needed the context.
    return gather_with_cancel(*values)


_settling: set[asyncio.Future[list[Any]]] = set()  # kept until done: the loop holds tasks weakly


def _track_weakly(
    context: StrawberryGraphQLCoreExecutionContext,
) -> Callable[[Sequence[Any]], None]:
    ref = weakref.ref(context)

    def track(values: Sequence[Any]) -> None:
        alive = ref()
        if alive is not None:
            alive.track_async_work(values)
            return
        # The operation has been answered: still settle the work, so that its errors
        # are observed rather than left in never-awaited coroutines.
        awaitables = [value for value in values if inspect.isawaitable(value)]
        if awaitables:
            settling = asyncio.gather(*awaitables, return_exceptions=True)
            _settling.add(settling)
            settling.add_done_callback(_settling.discard)

    return track


__all__ = ["SLICE_S", "STALE_S", "AcyclicExecutionContext"]


def _release(gate: asyncio.Future[None]) -> None:
    """End a slice: the next waiter may go (once; a gate is never released twice)."""
    if not gate.done():
        gate.set_result(None)

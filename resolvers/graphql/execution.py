"""The execution context every operation runs in: graphql-core's, minus its one cycle,
completing long lists a slice of time at a time.

graphql-core keeps ``async_helpers`` holding two methods bound to the execution
context itself. That reference cycle keeps each request's whole object graph
(context, DataLoaders, Starlette request, uvicorn's request cycle: ~110 objects)
alive until the cyclic collector runs. Under send-time load it was the only
cycle a request left, and its garbage made the full collections that paused a
worker for 60-70 ms every few seconds. Not holding the context lets
reference counting free a request as soon as it is answered. (``gather`` never used
the context; ``track`` reaches it through a weak reference.)

graphql-core completes a list's items in one go when their fields resolve at once
(cached data does): 1,000 customers with twenty fields each held the event loop for
0.6-1 s, during which no other request of the worker, ``/healthz`` included, was
served; introspection's sixty types, each a few milliseconds, 200 ms. Here the
operation's completion runs in slices of ``SLICE_S``: between two items of any list,
once the slice is used up (by those items or by anything nested in them), the rest of
the list waits. Waiting lists continue one at a time, one per turn of the loop, each
for a slice, so other requests are served between them (lists left waiting together
would otherwise all continue in the same turn). The same holds for fields whose
resolvers awaited: a DataLoader answering 1,000 customers at once wakes 1,000 of them
in one turn, so each goes on with its completion only while a slice lasts.

Most fields of a big batch are plain leaves: an attribute of a Strawberry object
(``Event.name``, ``Engagement.sessions30d``) with no resolver and no arguments. For
those graphql-core still builds a resolve info, reads the arguments, and walks
``complete_value``'s type checks: at 21,000 fields a request (1,000 customers with five
events each) that was most of the time. Here such a field reads the attribute and
coerces it directly; anything unusual (null, a failed coercion, an error) goes the
whole way, so errors and nulls are exactly graphql-core's.
"""

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
    is_non_null_type,
)
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.pyutils import AwaitableOrValue, Path, Undefined, UndefinedType, gather_with_cancel
from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

SLICE_S = 0.005  # the longest an operation's completion holds the loop in one go
# A slice that ended this long ago ended while the operation waited (for a database
# or an upstream), not while it ran: a list met then starts a fresh slice.
_STALE_S = 0.05


class AcyclicExecutionContext(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.async_helpers = GraphQLResolveInfoHelpers(gather=_gather, track=_track_weakly(self))
        self.slice_ends = time.perf_counter() + SLICE_S
        self._gate: asyncio.Future[None] | None = None  # released when a slice ends
        # Strawberry always passes a manager; plain fields skip it only when it is empty
        # (no extension hooks resolving fields).
        manager = self.middleware_manager
        self._plain_fields = manager is None or not manager.middlewares
        # An object whose selected fields are all plain is completed in one loop; not
        # where a subclass checks each field (access.py's writer context).
        self._plain_objects = (
            self._plain_fields and type(self).execute_field is AcyclicExecutionContext.execute_field
        )
        self._plans: dict[int, tuple[GroupedFieldSet, _Plan | None]] = {}
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
            results: dict[str, Any] = {}
            try:
                for response_name, resolve, leaf in plan:
                    value = resolve(source_value, None)
                    if value is None:
                        break
                    coerced = leaf.coerce_output_value(value)
                    if coerced is None or coerced is Undefined:
                        break
                    results[response_name] = coerced
                else:
                    return results
            except Exception:  # noqa: BLE001 - graphql-core's path below reports it
                pass
        return super().execute_fields(
            parent_type, source_value, path, grouped_field_set, position_context
        )

    def _plan(self, parent_type: GraphQLObjectType, fields: GroupedFieldSet) -> _Plan | None:
        """How to complete an object's selection when every field in it is plain (an
        ``Event``'s ``id name occurredAt``), else None. Selections are collected once per
        operation and list, so this is worked out once per selection, not per object."""
        found = self._plans.get(id(fields))
        if found is not None and found[0] is fields:
            return found[1]
        plan: _Plan | None = []
        for response_name, field_details_list in fields.items():
            node = field_details_list[0].node
            field = None if node.arguments else parent_type.fields.get(node.name.value)
            leaf = self._plain_leaf(field) if field is not None else None
            if field is None or leaf is None or field.resolve is None:
                plan = None
                break
            plan.append((response_name, field.resolve, leaf))  # type: ignore[union-attr]
        self._plans[id(fields)] = (fields, plan)
        return plan

    def _plain_leaf(self, field: GraphQLField) -> GraphQLLeafType | None:
        """The field's leaf type when it is a plain Strawberry attribute (no resolver,
        no arguments), else None."""
        key = id(field)  # the schema outlives the operation: ids are stable within it
        if key in self._leaves:
            return self._leaves[key]
        kind = field.type.of_type if is_non_null_type(field.type) else field.type
        plain = kind if is_leaf_type(kind) and _is_basic_field(field) and not field.args else None
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
        if self._plain_fields and not node.arguments:
            field = parent_type.fields.get(node.name.value)
            leaf = self._plain_leaf(field) if field is not None else None
            if leaf is not None:
                try:
                    # Strawberry's resolver for a field without one: getattr, no info.
                    value = field.resolve(source, None)
                    if value is not None:
                        coerced = leaf.coerce_output_value(value)
                        if coerced is not None and coerced is not Undefined:
                            return coerced
                except Exception:  # noqa: BLE001 - graphql-core's path below reports it
                    pass
        return super().execute_field(
            parent_type, source, field_details_list, path, position_context
        )

    async def with_abort_signal(self, awaitable: Awaitable[Any]) -> Any:
        # Every awaited resolver result and list item comes through here.
        resolved = await super().with_abort_signal(awaitable)
        now = time.perf_counter()
        if self.slice_ends < now <= self.slice_ends + _STALE_S:
            (await self.next_slice()).set_result(None)
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
                await previous
            await asyncio.sleep(0)  # and a turn of the loop since that slice ended
        except BaseException:
            mine.set_result(None)
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
        slicer = _ListSlices(self, item_type, field_details_list, info, path, items)
        now = time.perf_counter()
        if now > self.slice_ends + _STALE_S:
            self.slice_ends = now + SLICE_S
        if now <= self.slice_ends:
            slicer.run(position_context)
            if slicer.index == len(items):
                return slicer.finished()
        return slicer.rest(position_context)


class _ListSlices:
    """One list's completion, item by item as graphql-core does it, in slices of time."""

    def __init__(
        self,
        executor: AcyclicExecutionContext,
        item_type: GraphQLOutputType,
        field_details_list: Any,
        info: GraphQLResolveInfo[Any],
        path: Path,
        items: Sequence[Any],
    ) -> None:
        self.executor = executor
        self.item_type, self.field_details_list, self.info = item_type, field_details_list, info
        self.path, self.items = path, items
        self.index = 0
        self.completed: list[Any] = []
        self.awaitable: list[int] = []  # indices of completed items still to be awaited

    def run(self, position_context: Any) -> None:
        """Complete items until the list ends or the operation's slice is used up."""
        executor, items, completed = self.executor, self.items, self.completed
        try:
            while self.index < len(items):
                index, item = self.index, items[self.index]
                item_path = self.path.add_key(index, None)
                if executor.is_awaitable(item):
                    completed.append(
                        executor.complete_awaitable_list_item_value(
                            item,
                            self.item_type,
                            self.field_details_list,
                            self.info,
                            item_path,
                            position_context,
                        )
                    )
                    self.awaitable.append(index)
                elif executor.complete_list_item_value(
                    item,
                    completed,
                    self.item_type,
                    self.field_details_list,
                    self.info,
                    item_path,
                    position_context,
                ):
                    self.awaitable.append(index)
                self.index += 1
                if time.perf_counter() > executor.slice_ends:
                    return
        except Exception:
            # As graphql-core does: what was started is settled, not orphaned.
            pending = [completed[i] for i in self.awaitable]
            if pending:
                executor.settle_in_background(pending)
            raise

    def finished(self) -> AwaitableOrValue[list[Any]]:
        if not self.awaitable:
            return self.completed
        return self._gathered()

    async def rest(self, position_context: Any) -> list[Any]:
        while self.index < len(self.items):
            done = await self.executor.next_slice()
            try:
                self.run(position_context)
            finally:
                done.set_result(None)
        return await self._gathered() if self.awaitable else self.completed

    async def _gathered(self) -> list[Any]:
        completed = self.completed
        values = await gather_with_cancel(*(completed[i] for i in self.awaitable))
        for index, value in zip(self.awaitable, values, strict=True):
            completed[index] = value
        return completed


# An object's selection completed in one loop: (response name, resolver, leaf type).
_Plan = list[tuple[str, Callable[..., Any], GraphQLLeafType]]


def _is_basic_field(field: GraphQLField) -> bool:
    """Whether Strawberry resolves ``field`` with its basic-field reader (a plain
    attribute: no resolver, no extension, no permission class). Its ``_is_default``
    flag alone is also set on the wrapper that runs a field's extensions, which must
    not be skipped; should Strawberry rename the reader, the shortcut simply stays off."""
    resolve = field.resolve
    return (
        resolve is not None
        and getattr(resolve, "_is_default", False)
        and getattr(resolve, "__name__", "") == "_get_basic_result"
    )


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


__all__ = ["SLICE_S", "AcyclicExecutionContext"]

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
served. A list is completed here for at most ``SLICE_S`` at a time; the rest waits
for the next turn of the loop, so other requests are served in between.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from graphql import GraphQLOutputType, GraphQLResolveInfo
from graphql.pyutils import AwaitableOrValue, Path, gather_with_cancel
from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

SLICE_S = 0.005  # the longest a list's completion holds the loop in one go
_SLICED_FROM = 32  # shorter lists always complete in one go


class AcyclicExecutionContext(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.async_helpers = GraphQLResolveInfoHelpers(gather=_gather, track=_track_weakly(self))

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
            or len(items) < _SLICED_FROM
            or self.get_stream_usage(field_details_list, path) is not None
        ):
            return super().complete_iterable_value(
                item_type, field_details_list, info, path, items, position_context
            )
        slicer = _ListSlices(self, item_type, field_details_list, info, path, items)
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
        """Complete items until the list ends or the slice of time is used up."""
        executor, items, completed = self.executor, self.items, self.completed
        deadline = time.perf_counter() + SLICE_S
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
                if time.perf_counter() > deadline:
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
            await asyncio.sleep(0)  # let every other request have a turn
            self.run(position_context)
        return await self._gathered() if self.awaitable else self.completed

    async def _gathered(self) -> list[Any]:
        completed = self.completed
        values = await gather_with_cancel(*(completed[i] for i in self.awaitable))
        for index, value in zip(self.awaitable, values, strict=True):
            completed[index] = value
        return completed


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

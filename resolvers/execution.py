"""The execution context every operation runs in: graphql-core's, minus its one cycle.

graphql-core keeps ``async_helpers`` holding two methods bound to the execution
context itself. That reference cycle keeps each request's whole object graph
(context, DataLoaders, Starlette request, uvicorn's request cycle: ~110 objects)
alive until the cyclic collector runs. Under send-time load it was the only
cycle a request left, and its garbage made the full collections that paused a
worker for 60-70 ms every few seconds. Not holding the context lets
reference counting free a request as soon as it is answered. (``gather`` never used
the context; ``track`` reaches it through a weak reference.)
"""

from __future__ import annotations

import asyncio
import inspect
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from graphql.pyutils import gather_with_cancel
from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


class AcyclicExecutionContext(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.async_helpers = GraphQLResolveInfoHelpers(gather=_gather, track=_track_weakly(self))


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


__all__ = ["AcyclicExecutionContext"]

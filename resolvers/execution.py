"""The execution context every operation runs in: graphql-core's, minus its one cycle.

graphql-core keeps ``async_helpers`` holding two methods bound to the execution
context itself. That reference cycle keeps each request's whole object graph
(context, DataLoaders, Starlette request, uvicorn's request cycle: ~110 objects)
alive until the cyclic collector runs. Under send-time load it was the only
cycle a request left, and its garbage made the full collections that paused a
worker for 60-70 ms every few seconds. Holding the helpers' target weakly lets
reference counting free a request as soon as it is answered.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


class AcyclicExecutionContext(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.async_helpers = GraphQLResolveInfoHelpers(
            gather=_weakly(self.gather_async_work), track=_weakly(self.track_async_work)
        )


def _weakly(method: Callable[[Sequence[Any]], Any]) -> Callable[[Sequence[Any]], Any]:
    """The bound method, called through a weak reference to its object. Resolvers
    use the helpers only while the operation runs, so the object is alive then."""
    ref = weakref.WeakMethod(method)

    def call(values: Sequence[Awaitable[Any]]) -> Any:
        bound = ref()
        if bound is None:
            raise RuntimeError("the operation these helpers belong to has finished")
        return bound(values)

    return call


__all__ = ["AcyclicExecutionContext"]

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
whole way, so errors and nulls are exactly graphql-core's. A list of such objects
(a customer's events) is completed item by item by the same plan, and a field whose
resolver is a plain synchronous method with scalar arguments (``recentEvents(first:
5)``, ``engagement``) is called directly, without Strawberry's per-call set-up
(plans.py says when each shortcut holds). An object whose fields are all such (a
send's ``Customer``: ``id``, ``recentEvents(first: 5) { ... }``, ``engagement { ... }``)
is completed by one plan, its methods called with the operation's arguments worked out
once; a plan stopped by anything unusual hands graphql-core the value in hand, and it
completes the object from there (steps.py).
"""

from __future__ import annotations

from resolvers.graphql.execution.context import SLICE_S, AcyclicExecutionContext

__all__ = ["SLICE_S", "AcyclicExecutionContext"]

"""The rate limit charged by what an operation costs, not by the request alone.

The authentication middleware counts every request once, before its body is read. A
GraphQL operation is then charged the rest of what it costs: one request per started
``GATEWAY_RATE_LIMIT_COST_UNIT`` of its query cost, so a batch of 1,000 customers
counts as the 200 single-customer queries it replaces and 10,000 aliases cannot pass
as one request. A WebSocket's subscribe is counted once as it arrives
(resolvers/http/websocket.py), and its operation then charged the rest here too. Refused,
the operation does not run: 429 with ``Retry-After``.
"""

from __future__ import annotations

from graphql import GraphQLError
from starlette.responses import Response
from strawberry.types import ExecutionContext
from strawberry.types.execution import PreExecutionError

from gateway.access.rate_limit import retry_after_seconds
from resolvers.graphql.context import Context
from resolvers.http.authentication import COUNTED

CHARGED = "gateway.charged"  # scope key: the requests this operation counted as


def requests_for(cost: int, unit: int) -> int:
    """How many requests an operation of this cost counts as (at least one)."""
    return max(1, -(-cost // unit))


async def charge_cost(context: ExecutionContext, cost: int, unit: int) -> None:
    """Charge the key for this operation's cost; when it is over the key's limit, a
    result replaces the operation so that nothing runs."""
    gateway = context.context
    if not isinstance(gateway, Context) or gateway.principal is None:
        return
    requests = requests_for(cost, unit)
    gateway.request.scope[CHARGED] = requests  # what a stored answer charges when served
    extra = requests - int(gateway.request.scope.get(COUNTED, 0))
    if extra <= 0:
        return
    services = gateway.services
    per_minute = services.rate_limit_of(gateway.principal)
    if requests > per_minute:
        message = (
            f"The operation costs {cost}, which counts as {requests} requests; this key may "
            f"make {per_minute} a minute. Ask for less at once."
        )
        extensions = {"code": "QUERY_TOO_COSTLY", "cost": cost, "requests": requests}
        context.result = PreExecutionError(
            data=None, errors=[GraphQLError(message, extensions=extensions)]
        )
        return
    retry_after = await services.rate_limit(gateway.principal, extra)
    if retry_after is None:
        return
    seconds = retry_after_seconds(retry_after)
    if isinstance(gateway.response, Response):
        gateway.response.status_code = 429
        gateway.response.headers["Retry-After"] = str(seconds)
    error = GraphQLError(
        f"Rate limit exceeded: the operation counts as {requests} requests by its cost; "
        f"retry in {seconds} s",
        extensions={"code": "RATE_LIMITED", "retryAfter": seconds, "requests": requests},
    )
    context.result = PreExecutionError(data=None, errors=[error])

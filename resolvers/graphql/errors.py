"""Turning service and adapter errors into GraphQL errors with a machine-readable code.

An expected error (bad input, a conflict, a failing upstream) keeps its message and
gains ``extensions.code`` (and ``extensions.field`` where it names one); a dependency
that cannot be reached (the database, the cache) is such an error too, coded
``DATABASE_UNAVAILABLE`` or ``CACHE_UNAVAILABLE`` whatever shape it failed in. Anything
else is a bug: its message is masked so internals never reach a client, and it is
logged with its traceback by Strawberry.
"""

from __future__ import annotations

from collections.abc import Iterable

from graphql import GraphQLError

from adapters.errors import UpstreamError
from gateway.errors import GatewayError, Unavailable
from resolvers.http.error_boundary import as_unavailable

EXPECTED_ERRORS: tuple[type[Exception], ...] = (GatewayError, UpstreamError, GraphQLError)
UNEXPECTED_MESSAGE = "Internal server error."


def is_unexpected(error: GraphQLError) -> bool:
    # Parse and validation errors have no original error: they are the client's, keep them.
    original = error.original_error
    return (
        original is not None
        and not isinstance(original, EXPECTED_ERRORS)
        and as_unavailable(original) is None
    )


def unavailable_of(error: GraphQLError) -> Unavailable | None:
    """The dependency outage behind a field's error, if that is what it is."""
    original = error.original_error
    return as_unavailable(original) if original is not None else None


def add_codes(errors: Iterable[GraphQLError]) -> None:
    """Adds ``extensions.code`` to every error a service raised on purpose."""
    for error in errors:
        original = error.original_error
        if original is not None and not isinstance(original, GatewayError | UpstreamError):
            original = as_unavailable(original)
            if original is not None:
                error.message = str(original)  # not the driver's words
        if isinstance(original, GatewayError | UpstreamError):
            extensions = dict(error.extensions or {})
            extensions["code"] = original.code
            if isinstance(original, UpstreamError):
                extensions["upstream"] = original.upstream
            elif original.field:
                extensions["field"] = original.field
            error.extensions = extensions


def masked(errors: Iterable[GraphQLError]) -> list[GraphQLError]:
    """The errors with every unexpected one's message replaced, for errors that escaped
    the operation's own masking (graphql-core failing outside a resolver, e.g. a
    RecursionError): internals never reach a client."""
    return [
        GraphQLError(UNEXPECTED_MESSAGE, error.nodes, path=error.path)
        if is_unexpected(error)
        else error
        for error in errors
    ]


def unserved(data: object, errors: Iterable[GraphQLError]) -> bool:
    """Whether an outage of a dependency left the whole answer empty: no root field has
    a value, and every error is such an outage (the edge then answers 503; with a
    mistake of the client's among them, retrying would not help)."""
    empty = not isinstance(data, dict) or all(value is None for value in data.values())
    found = list(errors)
    return empty and bool(found) and all(unavailable_of(error) is not None for error in found)

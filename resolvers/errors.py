"""Turning service and adapter errors into GraphQL errors with a machine-readable code.

An expected error (bad input, a conflict, a failing upstream) keeps its message and
gains ``extensions.code`` (and ``extensions.field`` where it names one). Anything
else is a bug: its message is masked so internals never reach a client, and it is
logged with its traceback by Strawberry.
"""

from __future__ import annotations

from collections.abc import Iterable

from graphql import GraphQLError

from adapters.errors import UpstreamError
from gateway.errors import GatewayError

EXPECTED_ERRORS: tuple[type[Exception], ...] = (GatewayError, UpstreamError, GraphQLError)
UNEXPECTED_MESSAGE = "Internal server error."


def is_unexpected(error: GraphQLError) -> bool:
    # Parse and validation errors have no original error: they are the client's, keep them.
    original = error.original_error
    return original is not None and not isinstance(original, EXPECTED_ERRORS)


def add_codes(errors: Iterable[GraphQLError]) -> None:
    """Adds ``extensions.code`` to every error a service raised on purpose."""
    for error in errors:
        original = error.original_error
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

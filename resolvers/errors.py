"""Turning service and adapter errors into GraphQL errors with a machine-readable code.

An expected error (bad input, a conflict, a failing upstream) keeps its message and
gains ``extensions.code`` (and ``extensions.field`` where it names one). Anything
else is a bug: its message is masked so internals never reach a client, and it is
logged with its traceback by Strawberry.
"""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import MaskErrors, SchemaExtension

from adapters.errors import UpstreamError
from gateway.errors import GatewayError

EXPECTED_ERRORS: tuple[type[Exception], ...] = (GatewayError, UpstreamError, GraphQLError)


def is_unexpected(error: GraphQLError) -> bool:
    # Parse and validation errors have no original error: they are the client's, keep them.
    original = error.original_error
    return original is not None and not isinstance(original, EXPECTED_ERRORS)


def mask_unexpected_errors() -> MaskErrors:
    return MaskErrors(should_mask_error=is_unexpected, error_message="Internal server error.")


class ErrorCodes(SchemaExtension):
    """Adds ``extensions.code`` to every error a service raised on purpose."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        for error in (result.errors if result else None) or []:
            original = error.original_error
            if isinstance(original, GatewayError | UpstreamError):
                extensions = dict(error.extensions or {})
                extensions["code"] = original.code
                if isinstance(original, UpstreamError):
                    extensions["upstream"] = original.upstream
                elif original.field:
                    extensions["field"] = original.field
                error.extensions = extensions

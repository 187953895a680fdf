"""Everything the gateway does around each GraphQL operation, in one schema extension.

Parsed and validated documents are cached (an ESP repeats one document thousands of
times a minute); the depth, cost and introspection limits apply before anything
executes; expected errors gain their codes, unexpected ones are masked; and the
operation is timed into the latency histogram.

One extension rather than one per concern: Strawberry builds a context manager per
extension and per hook on every request, and with six extensions that bookkeeping
alone was about a tenth of a cached request's time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, parse
from strawberry.extensions import MaskErrors
from strawberry.schema.schema import validate_document
from strawberry.types import ExecutionContext

from resolvers.errors import add_codes, is_unexpected
from resolvers.input_text import NoNulCharacters, refuse_nul_variables
from resolvers.limits import QueryCost
from resolvers.operation_metrics import observe_operation

_TEXT_RULES = (NoNulCharacters,)  # the same class every time: cached validations still hit
_DOCUMENTS_KEPT = 1024  # distinct documents: bounded, as clients choose them


@lru_cache(maxsize=_DOCUMENTS_KEPT)
def _checked(
    schema: GraphQLSchema,
    query: str,
    rules: tuple[type[ASTValidationRule], ...],
    options: tuple[tuple[str, Any], ...],
) -> tuple[DocumentNode, list[GraphQLError]]:
    """A document and its validation errors, keyed by the query's text: a string hashes
    in a moment, where graphql-core's document nodes hash their whole tree on every
    lookup (a cache keyed by the document spent 2 % of a cached request hashing)."""
    document = parse(query, **dict(options))
    return document, validate_document(schema, document, rules)


class GatewayOperation(MaskErrors):
    """Made per request; the caches and the limits are the schema's, shared."""

    def __init__(self, limits: QueryCost) -> None:
        super().__init__(should_mask_error=is_unexpected, error_message="Internal server error.")
        self.limits = limits

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        # The same rule classes every time, so the validation cache's key stays the same.
        context.validation_rules = context.validation_rules + self.limits.rules + _TEXT_RULES
        self._prepare(context)
        started = time.perf_counter()
        yield from super().on_operation()  # masks unexpected errors on the way out
        result = context.result
        add_codes((result.errors if result else None) or ())
        observe_operation(context.operation_name, time.perf_counter() - started)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        # A subscription's results pass here one by one, not through on_operation's end:
        # each gains its codes (FORBIDDEN, BAD_USER_INPUT…) here, then is masked.
        add_codes(getattr(result, "errors", None) or ())
        yield from super().on_stream_result(result)

    def _process_result(self, result: object) -> None:
        # MaskErrors checks every result against a runtime Protocol (an isinstance that
        # walks the class's attributes); most results have no errors to mask.
        if getattr(result, "errors", None):
            super()._process_result(result)

    def _prepare(self, context: ExecutionContext) -> None:
        """Parse, validate and check the limits from the caches, all in this one hook:
        Strawberry then skips its own parse and validation, which it does only when no
        document or result is there yet. A hook per stage would cost a context manager
        each on every request. A document that does not parse is left to Strawberry,
        which reports the syntax error as it always does."""
        if not context.query or context.graphql_document is not None:
            return
        try:
            document, errors = _checked(
                context.schema._schema,
                context.query,
                context.validation_rules,
                tuple(context.parse_options.items()),
            )
        except GraphQLError:
            return
        context.graphql_document = document
        context.pre_execution_errors = list(errors)
        if not errors:
            self.limits.enforce(context)
            refuse_nul_variables(context)

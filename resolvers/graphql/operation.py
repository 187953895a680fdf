"""Everything the gateway does around each GraphQL operation, in one schema extension.

Parsed and validated documents are cached (an ESP repeats one document thousands of
times a minute); the size, depth, cost and introspection limits apply before anything
executes, and the key's rate limit is charged what the operation costs; expected
errors gain their codes, unexpected ones are masked; and the operation is timed into
the latency histogram.

A document seen for the first time is parsed and validated in a worker thread when it
is large: both are pure Python and, for the largest documents the limits allow, take
tens of milliseconds the event loop would otherwise spend on one request. In a thread
they share the interpreter with the loop in slices of a few milliseconds instead.

One extension rather than one per concern: Strawberry builds a context manager per
extension and per hook on every request, and with six extensions that bookkeeping
alone was about a tenth of a cached request's time.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, parse
from graphql import ExecutionResult as GraphQLExecutionResult
from starlette.websockets import WebSocket
from strawberry.extensions import MaskErrors
from strawberry.schema.schema import validate_document
from strawberry.types import ExecutionContext
from strawberry.types import ExecutionResult as StrawberryExecutionResult
from strawberry.types.execution import PreExecutionError

from resolvers.graphql.document_size import size_errors, variables_error
from resolvers.graphql.errors import UNEXPECTED_MESSAGE, add_codes, is_unexpected
from resolvers.graphql.input_text import NoNulCharacters, refuse_nul_variables
from resolvers.graphql.limits import QueryCost
from resolvers.graphql.operation_metrics import observe_operation
from resolvers.graphql.rate_charge import charge_cost

_TEXT_RULES = (NoNulCharacters,)  # the same class every time: cached validations still hit
_DOCUMENTS_KEPT = 1024  # distinct documents: bounded, as clients choose them
_IN_THREAD_CHARS = 500  # a new document longer than this is parsed and validated aside


@dataclass(frozen=True, slots=True)
class Checked:
    """A document's verdict: parsed and validated, or why not (a syntax error alone)."""

    document: DocumentNode | None
    errors: list[GraphQLError]


def check_document(
    schema: GraphQLSchema,
    query: str,
    rules: tuple[type[ASTValidationRule], ...],
    limits: QueryCost,
) -> Checked:
    """Parse (up to the token limit), measure, then validate: an operation selecting
    too much is refused before validation spends time on it."""
    try:
        document = parse(query, max_tokens=limits.max_tokens)
    except GraphQLError as error:
        if "tokens" in error.message:
            error.extensions = {"code": "QUERY_TOO_LARGE", "limit": limits.max_tokens}
        return Checked(None, [error])
    oversized = size_errors(document, limits.max_fields, limits.max_root_fields)
    if oversized:
        return Checked(document, oversized)
    return Checked(document, validate_document(schema, document, rules))


class DocumentCache:
    """Verdicts by the query's text: a string hashes in a moment, where graphql-core's
    document nodes hash their whole tree on every lookup (a cache keyed by the document
    spent 2 % of a cached request hashing). Read and written on the event loop only."""

    def __init__(self, limits: QueryCost) -> None:
        self.limits = limits
        self._kept: OrderedDict[tuple[str, tuple[type[ASTValidationRule], ...]], Checked]
        self._kept = OrderedDict()
        self.hits = 0

    async def get(
        self, schema: GraphQLSchema, query: str, rules: tuple[type[ASTValidationRule], ...]
    ) -> Checked:
        key = (query, rules)
        found = self._kept.get(key)
        if found is not None:
            self.hits += 1
            self._kept.move_to_end(key)
            return found
        if len(query) > _IN_THREAD_CHARS:
            found = await asyncio.to_thread(check_document, schema, query, rules, self.limits)
        else:
            found = check_document(schema, query, rules, self.limits)
        self._kept[key] = found
        if len(self._kept) > _DOCUMENTS_KEPT:
            self._kept.popitem(last=False)
        return found


class GatewayOperation(MaskErrors):
    """Made per request; the caches and the limits are the schema's, shared."""

    def __init__(self, limits: QueryCost, documents: DocumentCache) -> None:
        super().__init__(should_mask_error=is_unexpected, error_message=UNEXPECTED_MESSAGE)
        self.limits = limits
        self.documents = documents

    async def on_operation(self) -> AsyncIterator[None]:  # type: ignore[override]
        context = self.execution_context
        # The same rule classes every time, so the document cache's key stays the same.
        context.validation_rules = context.validation_rules + self.limits.rules + _TEXT_RULES
        # Strawberry parses again what failed to parse here: within the same limit.
        context.parse_options["max_tokens"] = self.limits.max_tokens
        await self._prepare(context)
        started = time.perf_counter()
        yield
        result = context.result
        # Most results have no errors to mask.
        if isinstance(result, GraphQLExecutionResult | StrawberryExecutionResult) and result.errors:
            self._process_result(result)
        errors = (result.errors if result else None) or ()
        add_codes(errors)
        observe_operation(context.operation_name, time.perf_counter() - started, errors)

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

    async def _prepare(self, context: ExecutionContext) -> None:
        """Parse, validate and check the limits from the cache, all in this one hook:
        Strawberry then skips its own parse and validation, which it does only when no
        document or result is there yet. A syntax error raised here is answered by
        Strawberry as a request error, without parsing the document again."""
        if not context.query or context.graphql_document is not None:
            return
        checked = await self.documents.get(
            context.schema._schema, context.query, tuple(context.validation_rules)
        )
        if checked.document is None:
            if isinstance(getattr(context.context, "request", None), WebSocket):
                # Strawberry's stream does not catch what this hook raises: it logged the
                # error (the query's text, customer data and all) as a crash and told the
                # client nothing. Left unparsed, Strawberry parses it again (within the
                # same token limit) and closes the socket with 4400, as the protocol says.
                return
            raise checked.errors[0]  # Strawberry answers it as a request error
        context.graphql_document = checked.document
        context.pre_execution_errors = list(checked.errors)
        if checked.errors:
            return
        error = variables_error(context.variables, self.limits.max_variable_values)
        if error is not None:
            context.result = PreExecutionError(data=None, errors=[error])
            return
        refuse_nul_variables(context)
        if context.result is not None:
            return
        cost = self.limits.enforce(context)
        if cost is not None and context.result is None:
            await charge_cost(context, cost, self.limits.cost_unit)

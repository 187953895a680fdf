"""Text the gateway cannot keep is refused at the door: no NUL character (U+0000).

PostgreSQL's text types cannot hold NUL, not even as a query parameter: a name, an
external id, a template or an audit filter carrying one failed deep in the database
driver, as an unexpected error, on Postgres only. No field of this schema means to
carry one, so an operation whose strings (in the document or in its variables) hold
one is a request error, on every backend alike, before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphql import GraphQLError, StringValueNode, ValidationRule
from strawberry.types import ExecutionContext
from strawberry.types.execution import PreExecutionError

NUL = "\x00"
MESSAGE = "Text may not contain the NUL character (U+0000)"
_CODE = {"code": "BAD_USER_INPUT"}


class NoNulCharacters(ValidationRule):
    """A string literal holding NUL, anywhere in the document, is a validation error."""

    def enter_string_value(self, node: StringValueNode, *_args: Any) -> None:
        if NUL in node.value:
            self.report_error(GraphQLError(MESSAGE, node, extensions=_CODE))


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, Mapping):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def refuse_nul_variables(context: ExecutionContext) -> None:
    """Before execution: variables holding NUL get a result that replaces the
    operation, so nothing runs and the view answers a request error."""
    if context.result is None and context.variables and _holds_nul(context.variables):
        error = GraphQLError(f"Variable values: {MESSAGE}", extensions=_CODE)
        context.result = PreExecutionError(data=None, errors=[error])

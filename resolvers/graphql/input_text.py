"""Input the gateway cannot keep is refused at the door: no NUL character (U+0000),
no moment past what UTC can express.

PostgreSQL's text types cannot hold NUL, not even as a query parameter: a name, an
external id, a template or an audit filter carrying one failed deep in the database
driver, as an unexpected error, on Postgres only. No field of this schema means to
carry one, so an operation whose strings (in the document or in its variables) hold
one is a request error, on every backend alike, before anything runs.

The ``DateTime`` scalar (``DATE_TIME``) is Strawberry's, but refuses at coercion a
moment no UTC time can express (``0001-01-01T00:00:00+14:00`` is in year 0 in UTC;
``9999-12-31T23:59:59-14:00`` in year 10000): such a value passed Strawberry's parser
and failed later, converted for the database, as an internal error (an outside probe:
``saveExperiment``). Refused here, it is the client's error, naming its value.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from graphql import GraphQLError, StringValueNode, ValidationRule
from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.schema.types.base_scalars import DateTimeDefinition
from strawberry.types import ExecutionContext
from strawberry.types.execution import PreExecutionError
from strawberry.types.scalar import ScalarDefinition

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


def _moment(value: object) -> object:
    moment = DateTimeDefinition.parse_value(value)  # type: ignore[misc]
    if isinstance(moment, datetime) and moment.tzinfo is not None:
        try:
            moment.astimezone(UTC)
        except OverflowError:
            raise StrawberryInputCoercionError(
                f'Value cannot represent a DateTime: "{value}". No UTC time is that moment.'
            ) from None
    return moment


DATE_TIME = ScalarDefinition(
    name=DateTimeDefinition.name,
    description=DateTimeDefinition.description,
    specified_by_url=DateTimeDefinition.specified_by_url,
    serialize=DateTimeDefinition.serialize,
    parse_value=_moment,
    parse_literal=None,
    origin=datetime,
)

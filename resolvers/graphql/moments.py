"""The ``DateTime`` scalar, as Strawberry's, but refusing at coercion a moment that no
UTC time can express (``0001-01-01T00:00:00+14:00`` is in year 0 in UTC;
``9999-12-31T23:59:59-14:00`` in year 10000): such a value passed Strawberry's
parser and failed later, converted for the database, as an internal error (an outside
check: ``saveExperiment``). Refused here, it is the client's error, naming its value.
"""

from __future__ import annotations

from datetime import UTC, datetime

from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.schema.types.base_scalars import DateTimeDefinition
from strawberry.types.scalar import ScalarDefinition


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

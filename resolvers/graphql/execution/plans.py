"""Shortcuts past Strawberry's and graphql-core's per-field machinery, for the fields
whose resolution is plain: a plan completes an object made only of plain attributes,
and a direct resolver calls a plain synchronous method with its scalar arguments.

Each is taken only when it provably does what the long way does; anything else (a
resolver asking for ``info``, an extension, a permission class, an exception handler,
an argument that Strawberry converts) keeps the long way.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from operator import attrgetter
from typing import Any, NamedTuple, cast

from graphql import GraphQLField, GraphQLResolveInfo, MiddlewareManager
from strawberry.types.base import StrawberryOptional
from strawberry.types.field import StrawberryField

DEFINITION = "strawberry-definition"  # where Strawberry keeps a field's own definition
# Arguments Strawberry passes on as graphql-core coerced them.
_SCALARS: tuple[object, ...] = (int, str, bool, float)

Resolver = Callable[..., Any]


def is_basic_field(field: GraphQLField) -> bool:
    """Whether Strawberry resolves ``field`` with its basic-field reader (a plain
    attribute: no resolver, no extension, no permission class). Its ``_is_default``
    flag alone is also set on the wrapper that runs a field's extensions, which must
    not be skipped; should Strawberry rename the reader, the shortcut simply stays off."""
    resolve = field.resolve
    return (
        resolve is not None
        and getattr(resolve, "_is_default", False)
        and getattr(resolve, "__name__", "") == "_get_basic_result"
    )


def reader(field: GraphQLField) -> Callable[[Any], Any]:
    """How a basic field reads its source: Strawberry's default resolver (``getattr``)
    by the attribute's name in one call, else Strawberry's own reader."""
    definition = field.extensions.get(DEFINITION)
    if isinstance(definition, StrawberryField) and definition.default_resolver is getattr:
        return attrgetter(definition.python_name)
    resolve = field.resolve
    assert resolve is not None
    return lambda source: resolve(source, None)


class DirectMethod(NamedTuple):
    """A field's method, called with its arguments under their Python names."""

    call: Callable[..., Any]
    names: dict[str, str]  # GraphQL argument name -> the method's parameter name

    def bound(self, arguments: dict[str, Any]) -> Callable[[Any], Any]:
        """The field's value from its parent, for one operation's (coerced) arguments."""
        return partial(self.call, **{self.names[name]: v for name, v in arguments.items()})


def direct_method(field: GraphQLField) -> DirectMethod | None:
    """The field's method, when Strawberry would only convert its arguments' names and
    call it: a synchronous method of the type (``self``), no ``info``, root or parent,
    no extension, no exception handler, and arguments of plain scalars
    (``recentEvents(first: Int, type: String)``, ``engagement``)."""
    resolve = field.resolve
    if resolve is None or getattr(resolve, "__name__", "") != "_resolver":
        return None
    try:
        cells = inspect.getclosurevars(resolve).nonlocals
    except (TypeError, ValueError):
        return None
    definition = field.extensions.get(DEFINITION)
    if (
        not isinstance(definition, StrawberryField)
        or cells.get("field_exception_handlers") != ()
        or definition.extensions
        or getattr(definition, "permission_classes", None)
    ):
        return None
    method = definition.base_resolver
    if (
        method is None
        or method.is_async
        or method.self_parameter is None
        or method.info_parameter is not None
        or method.root_parameter is not None
        or method.parent_parameter is not None
    ):
        return None
    names: dict[str, str] = {}
    for name, argument in field.args.items():
        spec = argument.extensions.get(DEFINITION)
        kind = getattr(spec, "type", None)
        if isinstance(kind, StrawberryOptional):
            kind = kind.of_type
        if spec is None or kind not in _SCALARS:
            return None
        names[name] = spec.python_name
    return DirectMethod(cast("Callable[..., Any]", method.wrapped_func), names)


def direct_resolver(field: GraphQLField) -> Resolver | None:
    """The field's method as a resolver graphql-core calls (``direct_method``)."""
    method = direct_method(field)
    if method is None:
        return None
    call, names = method

    def resolve_directly(source: Any, _info: GraphQLResolveInfo[Any], **args: Any) -> Any:
        return call(source, **{names[name]: value for name, value in args.items()})

    return resolve_directly


class DirectResolvers(MiddlewareManager):
    """A middleware manager without middleware (what Strawberry passes when no
    extension resolves fields) that hands graphql-core each field's direct resolver
    when it has one, else the field's own. Per operation: the table goes with it."""

    def __init__(self) -> None:
        super().__init__()
        self._table: dict[Resolver, Resolver] = {}
        self._methods: dict[Resolver, DirectMethod | None] = {}

    def learn(self, field: GraphQLField) -> None:
        """Work out ``field``'s direct resolver once, before graphql-core asks for it."""
        resolve = field.resolve
        if resolve is not None and resolve not in self._table:
            self._table[resolve] = direct_resolver(field) or resolve

    def method(self, field: GraphQLField) -> DirectMethod | None:
        """``field``'s direct method, worked out once per operation."""
        resolve = field.resolve
        if resolve is None:
            return None
        if resolve not in self._methods:
            self._methods[resolve] = direct_method(field)
        return self._methods[resolve]

    def get_field_resolver(self, field_resolver: Resolver) -> Resolver:
        return self._table.get(field_resolver, field_resolver)


__all__ = ["DirectMethod", "DirectResolvers", "direct_method", "is_basic_field", "reader"]

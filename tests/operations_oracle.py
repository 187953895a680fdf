"""What every answer to a generated operation must be, whatever the operation.

- No 5xx, and nothing slower than a generous bound.
- No masked unexpected error ("Internal server error."), and no raw exception text
  (a Python message, SQL, a library's words) in any error.
- Once execution started, every error carries a code (`BAD_USER_INPUT`, `FORBIDDEN`,
  `UPSTREAM_TIMEOUT`…): an error without one is graphql-core's or Python's, a bug.
  A request error (no `data`) is a 400.
- Every `DateTime` carries its offset (also inside an export's JSON).
- Scopes: a root field is answered only to a key holding its scope; below the root,
  a key without `profiles:read` sees nothing of a customer but its id.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import graphql

from gateway.access.api_keys import Scope

SLOW_S = 10.0  # generous: the shared 2-core machine, Postgres, upstream retries
MASKED = "Internal server error."
# Python's, the database drivers' and libraries' own words: never for a client.
RAW = re.compile(
    r"Traceback|unhashable type|object has no attribute|NoneType|not subscriptable|"
    r"not iterable|argument of type|invalid literal for|takes \d+ positional|"
    r"(Key|Type|Value|Attribute|Index|Runtime|Assertion|Recursion)Error|"
    r"\[SQL:|sqlalchemy|asyncpg|psycopg|sqlite3|Background on this error|"
    r"did not seem to be|NumberParseException|pydantic|validation error for|"
    r"coroutine|<[a-zA-Z_.]+ object at 0x"
)
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(?P<offset>Z|[+-]\d\d:\d\d)?$")

# The scope each root field needs (README "Access"; each resolver's `require`).
ROOT_SCOPES: Mapping[str, Scope] = {
    "customer": Scope.PROFILES_READ,
    "customers": Scope.PROFILES_READ,
    "template": Scope.PROFILES_READ,
    "renderBatch": Scope.PROFILES_READ,
    "exportCustomer": Scope.ADMIN,
    "auditLog": Scope.ADMIN,
    "upsertCustomer": Scope.PROFILES_WRITE,
    "invalidateCustomer": Scope.PROFILES_WRITE,
    "saveTemplate": Scope.PROFILES_WRITE,
    "mergeCustomers": Scope.PROFILES_WRITE,
    "unmergeCustomer": Scope.PROFILES_WRITE,
    "setConsent": Scope.PROFILES_WRITE,
    "forgetCustomer": Scope.ADMIN,
    "customerUpdated": Scope.PROFILES_READ,
}
# What of a customer a key without profiles:read may see in a reply: which one it was.
WRITER_SEES = {"id", "__typename"}


@dataclass(frozen=True)
class Problem:
    kind: str  # "status", "slow", "masked", "raw", "uncoded", "datetime", "scope", "reply-scope"
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def allows(scopes: Sequence[Scope], needed: Scope) -> bool:
    return Scope.ADMIN in scopes or needed in scopes


def check(
    schema: graphql.GraphQLSchema,
    document: str,
    scopes: Sequence[Scope],
    status: int,
    body: Any,
    seconds: float,
) -> list[Problem]:
    """Every problem with one answer (empty: it is as it must be)."""
    problems = []
    if status >= 500:
        problems.append(Problem("status", f"{status}: {str(body)[:300]}"))
    if seconds > SLOW_S:
        problems.append(Problem("slow", f"{seconds:.1f} s"))
    if not isinstance(body, dict) or not ({"data", "errors"} & set(body)):
        return [*problems, Problem("status", f"{status}, not a GraphQL response: {body!r:.300}")]
    executed = "data" in body
    if not executed and status != 400:
        problems.append(Problem("status", f"a request error answered {status}, not 400"))
    problems.extend(_errors(body.get("errors") or [], executed))
    data = body.get("data")
    if isinstance(data, dict):
        operation = _operation(document)
        root = _root_type(schema, operation)
        problems.extend(_walk(schema, root, operation.selection_set, data, (), scopes, False))
    return problems


def _errors(errors: list[Any], executed: bool) -> Iterator[Problem]:
    for error in errors:
        message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
        path = error.get("path") if isinstance(error, dict) else None
        code = ((error.get("extensions") or {}) if isinstance(error, dict) else {}).get("code")
        if MASKED in message:
            yield Problem("masked", f"at {path}: an unexpected exception (see the server log)")
        elif RAW.search(message):
            yield Problem("raw", f"at {path}: {message[:300]!r}")
        elif executed and (not code or code == "INTERNAL"):
            yield Problem("uncoded", f"at {path}: {message[:300]!r} has no extensions.code")


def _operation(document: str) -> graphql.OperationDefinitionNode:
    [operation] = graphql.parse(document).definitions
    assert isinstance(operation, graphql.OperationDefinitionNode)
    return operation


def _root_type(
    schema: graphql.GraphQLSchema, operation: graphql.OperationDefinitionNode
) -> graphql.GraphQLObjectType:
    root = schema.get_root_type(operation.operation)
    assert root is not None
    return root


def _walk(
    schema: graphql.GraphQLSchema,
    parent: graphql.GraphQLObjectType,
    selection_set: graphql.SelectionSetNode | None,
    data: Any,
    path: tuple[str | int, ...],
    scopes: Sequence[Scope],
    in_customer: bool,
) -> Iterator[Problem]:
    """The answered data along the document: types, scopes, times."""
    if selection_set is None or not isinstance(data, dict):
        return
    for node in selection_set.selections:
        if isinstance(node, graphql.InlineFragmentNode):
            yield from _walk(schema, parent, node.selection_set, data, path, scopes, in_customer)
            continue
        if not isinstance(node, graphql.FieldNode) or node.name.value == "__typename":
            continue
        key = node.alias.value if node.alias else node.name.value
        field = parent.fields.get(node.name.value)
        value = data.get(key)
        if field is None or value is None:
            continue
        here = (*path, key)
        needed = ROOT_SCOPES.get(node.name.value) if not path else None
        if needed is not None and not allows(scopes, needed):
            yield Problem("scope", f"{'.'.join(map(str, here))} answered without {needed.value}")
        if (
            in_customer
            and node.name.value not in WRITER_SEES
            and not allows(scopes, Scope.PROFILES_READ)
        ):
            yield Problem(
                "reply-scope",
                f"{'.'.join(map(str, here))} revealed to a key without profiles:read",
            )
            continue
        yield from _value(schema, field.type, node, value, here, scopes, in_customer)


def _value(
    schema: graphql.GraphQLSchema,
    type_: graphql.GraphQLOutputType,
    node: graphql.FieldNode,
    value: Any,
    path: tuple[str | int, ...],
    scopes: Sequence[Scope],
    in_customer: bool,
) -> Iterator[Problem]:
    named = graphql.get_named_type(type_)
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from _value(schema, type_, node, item, (*path, index), scopes, in_customer)
    elif isinstance(named, graphql.GraphQLObjectType):
        inside = in_customer or named.name == "Customer"
        yield from _walk(schema, named, node.selection_set, value, path, scopes, inside)
    elif named.name == "DateTime":
        if not (isinstance(value, str) and (m := ISO_TIME.match(value)) and m["offset"]):
            yield Problem("datetime", f"{'.'.join(map(str, path))} = {value!r} has no offset")
    elif node.name.value == "exportCustomer":  # the gateway's own JSON, times and all
        yield from _json_times(value, path)


def _json_times(value: Any, path: tuple[str | int, ...]) -> Iterator[Problem]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _json_times(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _json_times(item, (*path, index))
    elif isinstance(value, str) and (m := ISO_TIME.match(value)) and not m["offset"]:
        yield Problem("datetime", f"{'.'.join(map(str, path))} = {value!r} has no offset")

"""Scopes on fields: a key may only read or change what its scopes allow, and a reply
shows it only what those scopes let it see.

Each root field names the scope it needs; a key without it gets a ``FORBIDDEN`` error
on that field alone, and the rest of the query is still answered. Below the root
fields, what a reply reveals is checked too: a mutation answers a ``Customer`` (or a
template, a consent statement), and a key that may write but not read must not read
a person through it. Every read and change of a customer is written to the audit log
under the key's name.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from graphql import GraphQLObjectType
from graphql.execution.collect_fields import FieldDetailsList
from graphql.pyutils import Path, Undefined, UndefinedType
from strawberry.types import Info

from gateway.access.api_keys import Principal, Scope
from gateway.errors import GatewayError
from gateway.privacy.audit import Action
from gateway.services import Services
from gateway.upstreams.response_cache import TRACE
from resolvers.graphql.context import Context
from resolvers.graphql.execution import AcyclicExecutionContext


class Forbidden(GatewayError):
    code = "FORBIDDEN"


def forbidden(principal: Principal | None, scope: Scope, field: str) -> Forbidden:
    holder = f"API key {principal.name!r}" if principal else "This request"
    return Forbidden(
        f"{holder} lacks the {scope.value!r} scope that '{field}' requires", field=field
    )


def require(info: Info[Context, None], scope: Scope) -> Principal:
    """The caller, if its key holds ``scope``; else a FORBIDDEN error on this field.

    Called first thing in each root resolver (Strawberry's permission classes clash with
    resolver arguments named ``source``, and cost a field extension per call).
    """
    principal = info.context.principal
    if principal is None or not principal.allows(scope):
        raise forbidden(principal, scope, info.field_name)
    return principal


def audit(info: Info[Context, None], action: Action, customer_ids: Iterable[uuid.UUID]) -> None:
    """Record that this request's key read or changed these customers (ids only)."""
    operation = f"{info.operation.operation.value}:{info.field_name}"
    record_access(info.context.services, info.context.principal, action, operation, customer_ids)


def record_access(
    services: Services,
    principal: Principal | None,
    action: Action,
    operation: str,
    customer_ids: Iterable[uuid.UUID],
) -> None:
    """Record that ``principal`` read or changed these customers through ``operation``
    (``query:customer``, ``api:recommendations``…); ids only, never the data."""
    ids = tuple(customer_ids)
    trace = TRACE.get()
    if trace is not None:  # served again from the response cache, audited again then
        trace.reads.append((action.value, operation, tuple(map(str, ids))))
    services.audit.record(
        actor=principal.name if principal else "anonymous",
        key_id=principal.key_id if principal else None,
        action=action,
        operation=operation,
        customer_ids=ids,
    )


# --- what a reply reveals ------------------------------------------------------------------

# What a key without profiles:read may see below a root field: what it needs to know
# that its write worked, and nothing it did not send. Every other field of every
# object type needs profiles:read, whichever root field or mutation reaches it: deny by
# default, so a type or field added later is protected until it is listed here.
# (Types that only admin root fields reach, the audit log, exports and erasures, need
# nothing more: an admin key holds profiles:read.)
WRITER_VISIBLE: Mapping[str, frozenset[str]] = {
    # Which customer the write created or touched; its data needs profiles:read.
    "Customer": frozenset({"id"}),
    # setConsent's reply: the statement just sent, and when it was recorded.
    "ConsentStatement": frozenset({"purpose", "granted", "source", "recordedAt"}),
    # saveTemplate's reply: the template just sent and its new version number (not the
    # history, nor anything rendered).
    "Template": frozenset({"name", "version", "format", "source", "createdAt"}),
    # The identity review queue is a writer's to work: the pairs, how they compared and
    # how likely a match, but not the two records' personal fields.
    "IdentityReviewPage": frozenset({"nodes", "endCursor", "hasNextPage"}),
    "IdentityReview": frozenset(
        {
            "id",
            "reason",
            "status",
            "matchProbability",
            "levels",
            "modelVersion",
            "createdAt",
            "candidateCustomerId",
        }
    ),
    "ComparisonLevel": frozenset({"field", "level"}),
    # saveSegment's reply: the segment just sent; who is in it needs profiles:read.
    "Segment": frozenset({"name", "definition", "includeSuppressed", "createdAt", "updatedAt"}),
}
_ROOT_TYPES = frozenset({"Query", "Mutation", "Subscription"})  # check their own scopes
_NOTHING: frozenset[str] = frozenset()


def writer_may_see(type_name: str, field_name: str) -> bool:
    """Whether a key without profiles:read may see ``type_name.field_name`` in a reply."""
    return (
        type_name in _ROOT_TYPES
        or field_name == "__typename"
        or type_name.startswith("__")  # introspection: the schema, not a person
        or field_name in WRITER_VISIBLE.get(type_name, _NOTHING)
    )


def sees_profiles(principal: Principal | None) -> bool:
    return principal is not None and principal.allows(Scope.PROFILES_READ)


class ScopedExecutionContext(AcyclicExecutionContext):
    """Runs an operation with the fields below its root fields checked against the key.

    Decided once per operation, not per field: a key that may read profiles (every
    ESP's key, and every batch) may see every field a root field it is allowed lets it
    reach, so its operations run unchecked, exactly as before. Only an operation of a
    key without profiles:read runs in ``_WriterExecutionContext``, which checks each
    field against ``WRITER_VISIBLE``; such a key reaches customers only through a
    mutation's reply (one object), so that check costs nothing that matters.
    """

    @classmethod
    def build(
        cls,
        schema: Any,
        document: Any,
        root_value: Any = None,
        context_value: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        chosen = cls
        if not sees_profiles(getattr(context_value, "principal", None)):
            chosen = _WriterExecutionContext
        return super(ScopedExecutionContext, chosen).build(
            schema, document, root_value, context_value, *args, **kwargs
        )


class _WriterExecutionContext(ScopedExecutionContext):
    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> Any | UndefinedType:
        name = field_details_list[0].node.name.value
        if writer_may_see(parent_type.name, name):
            return super().execute_field(
                parent_type, source, field_details_list, path, position_context
            )
        field = self.schema.get_field(parent_type, name)
        if field is None:
            return Undefined
        # Null with a FORBIDDEN error naming the field, as for a root field; a non-null
        # field nulls its parent, as GraphQL requires. The resolver never runs.
        principal = getattr(self.context_value, "principal", None)
        error = forbidden(principal, Scope.PROFILES_READ, name)
        self.handle_field_error(error, field.type, field_details_list, path)
        return None

"""Scopes on fields: a key may only read or change what its scopes allow.

Each root field names the scope it needs; a key without it gets a ``FORBIDDEN`` error
on that field alone, and the rest of the query is still answered. Every read and
change of a customer is written to the audit log under the key's name.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from strawberry.types import Info

from gateway.api_keys import Principal, Scope
from gateway.audit import Action
from gateway.errors import GatewayError
from resolvers.context import Context


class Forbidden(GatewayError):
    code = "FORBIDDEN"


def require(info: Info[Context, None], scope: Scope) -> Principal:
    """The caller, if its key holds ``scope``; else a FORBIDDEN error on this field.

    Called first thing in each root resolver (Strawberry's permission classes clash with
    resolver arguments named ``source``, and cost a field extension per call).
    """
    principal = info.context.principal
    if principal is None or not principal.allows(scope):
        holder = f"API key {principal.name!r}" if principal else "This request"
        raise Forbidden(
            f"{holder} lacks the {scope.value!r} scope that '{info.field_name}' requires",
            field=info.field_name,
        )
    return principal


def audit(info: Info[Context, None], action: Action, customer_ids: Iterable[uuid.UUID]) -> None:
    """Record that this request's key read or changed these customers (ids only)."""
    principal: Principal | None = info.context.principal
    operation = f"{info.operation.operation.value}:{info.field_name}"
    info.context.services.audit.record(
        actor=principal.name if principal else "anonymous",
        key_id=principal.key_id if principal else None,
        action=action,
        operation=operation,
        customer_ids=customer_ids,
    )

"""Which persisted documents may have their whole answer stored by the response cache
(resolvers/http/response_cache.py): those whose every root field reads customers by id
or e-mail, selecting below them only data that every write to those customers drops."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from graphql import (
    FieldNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    Visitor,
    parse,
    visit,
)

_ROOTS = frozenset({"customer", "customers", "__typename"})
# What a stored answer may select below ``customer``/``customers``: an allow list, so
# that a field added to the schema is refused until someone asks whether a write to the
# customer drops it. Each is the customer's own, and every write path that changes it
# drops the customer's answers. Left out: ``render``, ``recommendations`` (templates,
# the catalogue and its stock), ``sources`` (the run's status and age, which would be
# frozen), ``scores`` and ``segments`` (rewritten by a scores build and segments saved,
# which drop no answer), ``experiments`` (``saveExperiment`` and the clock change it).
# The names of Customer, then of the types they reach: tests/resolvers/
# test_response_cache_writers.py walks the schema to keep this honest.
_STORABLE = """
    __typename id email phone firstName lastName locale createdAt updatedAt identities
    attributes identityLinks consentHistory lifecycleStage ownerId company jobTitle city
    country dateOfBirth consent consents suppressed orders lifetimeValue orderCount
    lastOrderAt recentEvents engagement cart source externalId name value observedAt
    golden matchedSource matchedExternalId rule score reason recordedAt emailMarketing
    personalisation analytics purpose granted financialStatus fulfillmentStatus
    totalPrice lineItems productId title quantity price amount currency type occurredAt
    sessionId properties sessions30d pageViews30d lastSeenAt emailOpens30d
    emailClicks30d lastEmailOpenAt items subtotal"""
STORABLE_FIELDS = frozenset(_STORABLE.split())


class _Fields(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.by_identity = False

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        self.names.add(node.name.value)
        if node.name.value == "customer" and any(
            a.name.value == "identity" for a in node.arguments or ()
        ):
            self.by_identity = True


@lru_cache(maxsize=1024)  # one verdict per document clients persist
def storable_document(query: str, operation_name: str | None) -> frozenset[str] | None:
    """The variables the operation declares, if an answer to it may be stored (None
    if not): a query whose root fields all read customers by id or e-mail, and nothing
    below them reads more."""
    try:
        document = parse(query)
    except GraphQLError:
        return None
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    if len(operations) != 1 or operations[0].operation is not OperationType.QUERY:
        return None
    roots = operations[0].selection_set.selections
    if not all(isinstance(r, FieldNode) and r.name.value in _ROOTS for r in roots):
        return None
    fields = _Fields()
    visit(document, fields)
    if fields.by_identity or not fields.names <= _ROOTS | STORABLE_FIELDS:
        return None
    return frozenset(v.variable.name.value for v in operations[0].variable_definitions or ())


__all__ = ["STORABLE_FIELDS", "storable_document"]

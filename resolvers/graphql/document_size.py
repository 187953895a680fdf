"""How big an operation is, measured before it is validated or run.

Validation and execution cost time in proportion to what a document selects, and a
client chooses that: 10,000 aliases of ``customer(id)`` cost 10,000 in the cost model
yet held a worker for 20 seconds, and 1,000 mutation fields ran into Python's
recursion limit. So, before the (cached) validation: the fields an operation selects,
each alias and each spread of a fragment counted where it is used, and its root fields
(mutation fields run one after another). Before the cost is computed: the number of
values the variables hold, so that coercing them stays short too.

Each check is one pass over the document (fragments measured once each) or over the
variables (stopping at the limit), so the measuring itself is cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)


def size_errors(
    document: DocumentNode, max_fields: int, max_root_fields: int
) -> list[GraphQLError]:
    """Errors for each operation of the document that selects too much; [] when none does."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    counter = _FieldCounter(fragments)
    errors = []
    for operation in document.definitions:
        if not isinstance(operation, OperationDefinitionNode):
            continue
        roots = counter.fields(operation.selection_set, depth=1)
        if roots > max_root_fields:
            errors.append(
                GraphQLError(
                    f"The operation has {_shown(roots)} root fields; at most {max_root_fields} are "
                    "allowed (ask for many customers with customers(ids: [...]))",
                    operation,
                    extensions={
                        "code": "TOO_MANY_ROOT_FIELDS",
                        "rootFields": _shown(roots),
                        "limit": max_root_fields,
                    },
                )
            )
            continue
        fields = counter.fields(operation.selection_set)
        if fields > max_fields:
            errors.append(
                GraphQLError(
                    f"The operation selects {_shown(fields)} fields (aliases and fragment spreads "
                    f"counted each time); at most {max_fields} are allowed",
                    operation,
                    extensions={
                        "code": "QUERY_TOO_LARGE",
                        "fields": _shown(fields),
                        "limit": max_fields,
                    },
                )
            )
    return errors


# Fragments spread in fragments multiply: 2^64 fields fit in 2 KB, and a count that
# large is not JSON (orjson refuses integers past 64 bits: the reply became a 500).
_MAX_SHOWN = 2**53 - 1  # the largest integer every JSON reader keeps exact


def _shown(count: int) -> int:
    return min(count, _MAX_SHOWN)


class _FieldCounter:
    def __init__(self, fragments: Mapping[str, FragmentDefinitionNode]) -> None:
        self.fragments = fragments
        self.memo: dict[tuple[str, int | None], int] = {}
        self.visiting: set[str] = set()

    def fields(self, selections: SelectionSetNode | None, depth: int | None = None) -> int:
        """Fields selected under ``selections`` (``depth`` levels down; all by default)."""
        total = 0
        for selection in selections.selections if selections else ():
            if isinstance(selection, FieldNode):
                total += 1
                if depth is None:
                    total += self.fields(selection.selection_set)
                elif depth > 1:
                    total += self.fields(selection.selection_set, depth - 1)
            elif isinstance(selection, InlineFragmentNode):
                total += self.fields(selection.selection_set, depth)
            elif isinstance(selection, FragmentSpreadNode):
                total += self._fragment(selection.name.value, depth)
        return total

    def _fragment(self, name: str, depth: int | None) -> int:
        fragment = self.fragments.get(name)
        if fragment is None or name in self.visiting:
            return 0  # unknown fragments and cycles are validation's to report
        # Memoised per depth too: ``fragment a on Query { ...b ...b ...b ...b ...b }``
        # nested ten deep (447 bytes) made the root-field count walk 5^10 spreads and
        # held the event loop for 8 s.
        key = (name, depth)
        if key not in self.memo:
            self.visiting.add(name)
            try:
                self.memo[key] = self.fields(fragment.selection_set, depth)
            finally:
                self.visiting.discard(name)
        return self.memo[key]


def count_values(variables: Mapping[str, Any] | None, limit: int) -> int:
    """How many values the variables hold (every list item and object field counts),
    up to ``limit + 1``: counting stops as soon as the limit is passed."""
    count = 0
    pending: list[Any] = [variables or {}]
    while pending:
        value = pending.pop()
        if isinstance(value, dict | list):
            count += len(value)
            if count > limit:
                break
            pending.extend(value.values() if isinstance(value, dict) else value)
    return count


def variables_error(variables: Mapping[str, Any] | None, limit: int) -> GraphQLError | None:
    found = count_values(variables, limit)
    if found <= limit:
        return None
    return GraphQLError(
        f"The variables hold more than {limit} values; send less at once",
        extensions={"code": "VARIABLES_TOO_LARGE", "limit": limit},
    )

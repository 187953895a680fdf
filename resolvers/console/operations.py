"""The console asks the gateway's own schema, in process, as the signed-in key.

A page is an API client that skips HTTP: the same documents an operator could send to
/graphql run through the same schema, loaders, caches and field scopes, and each read
and change is audited under the key exactly as an API call is (``query:customer``,
``mutation:forgetCustomer``…). So a page never shows what the API would not, and the
two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from resolvers.console.visit import Visit
from resolvers.graphql.context import Context


@dataclass(frozen=True, slots=True)
class Problem:
    message: str
    code: str | None
    path: tuple[str | int, ...]
    extensions: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Answer:
    data: dict[str, Any]
    problems: list[Problem]

    def under(self, *prefix: str | int) -> list[Problem]:
        """The problems at or below one path, e.g. ("customers", 2)."""
        return [p for p in self.problems if p.path[: len(prefix)] == prefix]

    def codes(self) -> set[str]:
        return {p.code for p in self.problems if p.code}


async def run(visit: Visit, document: str, **variables: Any) -> Answer:
    result = await visit.parts.schema.execute(
        document, variable_values=variables, context_value=Context.of(visit.request)
    )
    problems = [
        Problem(
            error.message,
            (error.extensions or {}).get("code"),
            tuple(error.path or ()),
            dict(error.extensions or {}),
        )
        for error in result.errors or []
    ]
    return Answer(dict(result.data or {}), problems)

"""The committed schema.graphql is the schema the code serves: API changes show in review."""

from __future__ import annotations

from resolvers.graphql.schema import build_schema
from tests.conftest import REPO


def test_committed_schema_matches_the_code() -> None:
    committed = (REPO / "schema.graphql").read_text()
    assert committed == build_schema().as_str() + "\n", (
        "schema.graphql is stale: run `./dev schema` and commit the result"
    )

"""Which upstream's ids each identity source holds, and the check every entry point makes.

An identity ``(source, external_id)`` is later sent to that source's upstream (the
shop's orders of customer ``external_id``), so every way an id comes in (GraphQL
upserts and lookups, the profile URL, unmerge, webhooks, ``gateway import`` and
``gateway sync``) checks it against the upstream's row of ``adapters.external_ids``
first. A source is an upstream kind by name (``hubspot``, ``shopify``, ``segment``,
``soap_crm``) or a configured upstream of that kind (``[upstreams.shop_eu] kind =
"shopify"``); any other source (``api``, a legacy system being imported) holds text
ids. The adapters check again before sending (ids stored before this check existed).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

from adapters.config import UpstreamsConfig
from adapters.external_ids import ID_RULES, IdRule, rule_for_kind

__all__ = ["DEFAULT_SOURCE_IDS", "SourceIds"]


class SourceIds:
    """Source name -> upstream kind, and what an id of that source must look like."""

    def __init__(self, kinds: Mapping[str, str] | None = None) -> None:
        self._kinds = {**{kind: kind for kind in ID_RULES}, **(kinds or {})}

    @classmethod
    def from_upstreams(cls, config: UpstreamsConfig) -> SourceIds:
        # Disabled upstreams too: their ids are still theirs while switched off.
        return cls({name: upstream.kind for name, upstream in config.upstreams.items()})

    @classmethod
    def from_file(cls, path: Path | None) -> SourceIds:
        """Names and kinds from an upstreams file, without resolving its secrets (an
        import needs to know what ids look like, not to call anyone)."""
        if path is None:
            return cls()
        with path.open("rb") as handle:
            tables = tomllib.load(handle).get("upstreams", {})
        return cls(
            {
                name: table["kind"]
                for name, table in tables.items()
                if isinstance(table, dict) and isinstance(table.get("kind"), str)
            }
        )

    def rule(self, source: str) -> IdRule:
        return rule_for_kind(self._kinds.get(source))

    def problem(self, source: str, external_id: str) -> str | None:
        """None when ``external_id`` can be an id of ``source``; otherwise the sentence
        saying what its ids look like (never the id: it may be personal)."""
        rule = self.rule(source)
        return None if rule.problem(external_id) is None else rule.explain(source)


DEFAULT_SOURCE_IDS = SourceIds()

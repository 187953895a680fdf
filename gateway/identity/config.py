"""The identity-resolution rules and thresholds, as one pydantic model with defaults.

``Settings`` can include ``IdentityConfig`` as a field later; until then callers pass
it in (or take the defaults).  What a pair's comparison is worth is not set here: it is
estimated from the records (``gateway.identity.scoring.model`` and ``training``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class IdentityConfig(BaseModel):
    """How records are linked, merged and survive into the golden profile."""

    model_config = ConfigDict(frozen=True)

    # Deterministic keys.
    dotless_email_domains: frozenset[str] = frozenset({"gmail.com", "googlemail.com"})
    plus_tag_email_domains: frozenset[str] = frozenset(
        {"gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "icloud.com", "fastmail.com"}
    )
    email_domain_aliases: dict[str, str] = Field(
        default_factory=lambda: {"googlemail.com": "gmail.com"}
    )
    phone_default_region: str | None = Field(
        default=None, description="ISO region for numbers given without +country, e.g. 'GB'."
    )

    # Values that never link anyone (compared after lower-casing and trimming).
    placeholder_values: frozenset[str] = frozenset(
        {
            "",
            "null",
            "none",
            "nil",
            "unknown",
            "n/a",
            "na",
            "-",
            "--",
            "?",
            "x",
            "xx",
            "xxx",
            "test",
            "tbd",
            "undefined",
            "not provided",
            "no name",
            "anonymous",
        }
    )
    blocked_email_local_parts: frozenset[str] = frozenset(
        {
            "test",
            "example",
            "email",
            "noreply",
            "no-reply",
            "donotreply",
            "none",
            "null",
            "unknown",
            "na",
            "nobody",
            "user",
            "placeholder",
            "fake",
            "asdf",
        }
    )
    # RFC 2606/6761 names are placeholders by definition; example.com is left out because
    # the demo population lives there (add it in production).
    blocked_email_domains: frozenset[str] = frozenset(
        {"example.invalid", "invalid", "test", "example", "localhost", "mailinator.com"}
    )
    blocked_dates_of_birth: frozenset[str] = frozenset({"19000101", "19700101", "00000000"})

    # Probabilistic matching (m, u, λ and the probability thresholds are the linkage
    # model's: ``gateway.identity.scoring.model``, trained with ``gateway identity train``).
    join_floor_probability: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="Two clusters are not joined when any pair across them scores below this.",
    )
    max_block_candidates: int = Field(
        default=500, ge=1, description="Blocks bigger than this are skipped as uninformative."
    )

    # Merging.
    max_identities_per_customer: int = Field(default=50, ge=1)
    source_priority: tuple[str, ...] = Field(
        default=(), description="Sources in order of trust for golden values; unlisted come last."
    )


DEFAULT_CONFIG = IdentityConfig()

"""The identity-resolution rules and thresholds, as one pydantic model with defaults.

``Settings`` can include ``IdentityConfig`` as a field later; until then callers pass
it in (or take the defaults).  The m/u probabilities are priors from record-linkage
practice, not fitted to any evaluation set: m is the chance a field agrees between two
records of one person, u the chance it agrees between two different people in a block.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FieldRule(BaseModel):
    """Fellegi-Sunter weights for one field, interpolated between two similarity cut-offs."""

    model_config = ConfigDict(frozen=True)

    m: float = Field(gt=0, lt=1)
    u: float = Field(gt=0, lt=1)
    agree: float = Field(default=0.92, ge=0, le=1, description="Similarity counted as agreement.")
    disagree: float = Field(
        default=0.6, ge=0, le=1, description="Similarity at or below: disagreement."
    )


def _default_fields() -> dict[str, FieldRule]:
    return {
        "first_name": FieldRule(m=0.92, u=0.02, agree=0.93, disagree=0.75),
        "last_name": FieldRule(m=0.92, u=0.01, agree=0.93, disagree=0.75),
        "date_of_birth": FieldRule(m=0.92, u=0.002, agree=0.87, disagree=0.7),
        "address": FieldRule(m=0.88, u=0.002, agree=0.88, disagree=0.6),
        "city": FieldRule(m=0.9, u=0.1, agree=0.9, disagree=0.7),
        "postcode": FieldRule(m=0.9, u=0.05, agree=0.99, disagree=0.7),
        "email": FieldRule(m=0.9, u=0.00001, agree=1.0, disagree=0.99),
        "phone": FieldRule(m=0.85, u=0.0001, agree=1.0, disagree=0.99),
    }


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

    # Probabilistic matching.
    fields: dict[str, FieldRule] = Field(default_factory=_default_fields)
    match_threshold: float = Field(default=11.0, description="Total log2 weight that merges.")
    review_threshold: float = Field(default=6.0, description="Lower bound of the review band.")
    max_block_candidates: int = Field(
        default=500, ge=1, description="Blocks bigger than this are skipped as uninformative."
    )

    # Merging.
    max_identities_per_customer: int = Field(default=50, ge=1)
    source_priority: tuple[str, ...] = Field(
        default=(), description="Sources in order of trust for golden values; unlisted come last."
    )

    @model_validator(mode="after")
    def _bands(self) -> IdentityConfig:
        if self.review_threshold > self.match_threshold:
            raise ValueError("review_threshold must not exceed match_threshold")
        return self


DEFAULT_CONFIG = IdentityConfig()

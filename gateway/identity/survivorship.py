"""Golden values: which of the values sources reported becomes the profile's own.

The rule: the most trusted source (``IdentityConfig.source_priority``) wins; among
equals, the most recently observed value.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import NamedTuple

from gateway.db.models import as_utc
from gateway.identity.config import IdentityConfig

GOLDEN_FIELDS = ("email", "phone", "first_name", "last_name")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Observation(NamedTuple):
    """A named tuple: an import makes tens of thousands, and a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__``."""

    name: str
    value: str
    source: str
    observed_at: datetime


def golden_values(
    customer_id: uuid.UUID,
    observations: Iterable[Observation],
    config: IdentityConfig,
    email_owners: Mapping[str, uuid.UUID],
) -> dict[str, str | None]:
    """The golden value of each field; an email another customer already holds is
    skipped, since ``customers.email`` is unique."""
    ordered = list(observations)
    if ordered:
        head = ordered[0]
        source, observed_at = head.source, head.observed_at
        # One record's observations (most customers an import creates), or an import's
        # records of one customer, share a source and a time: every sort key is equal,
        # and a stable sort would leave them as they are.  Only a mix is sorted.  (Equal
        # times are the same instant: a naive time never equals an aware one.)
        if any(o.source != source or o.observed_at != observed_at for o in ordered):
            rank = {name: i for i, name in enumerate(config.source_priority)}
            unranked = len(rank)
            ordered.sort(
                key=lambda o: (
                    rank.get(o.source, unranked),
                    -(as_utc(o.observed_at) - _EPOCH).total_seconds(),
                )
            )
    chosen: dict[str, str | None] = dict.fromkeys(GOLDEN_FIELDS)
    for observation in ordered:
        if observation.name not in chosen or chosen[observation.name] is not None:
            continue
        if (
            observation.name == "email"
            and email_owners.get(observation.value, customer_id) != customer_id
        ):
            continue
        chosen[observation.name] = observation.value
    return chosen

"""ESP events' custom arguments (SendGrid's ``custom_args``, beside its own fields;
Mandrill's ``metadata``), as stored in ``properties["custom_args"]``: scalars only, at
most 32, and ``send_id`` as the send it names (gateway/experiments/attribution.py
``send_value``), so a campaign's figures and its clicks' attribution read one send id,
the same on SQLite and Postgres."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.experiments.attribution import SEND_ARGUMENT, send_value

MAX_CUSTOM_ARGS = 32
# SendGrid's fields that are not custom arguments (custom args arrive beside them).
SENDGRID_STANDARD = frozenset(
    {
        "email", "timestamp", "event", "sg_event_id", "sg_message_id", "smtp-id", "url",
        "url_offset", "useragent", "ip", "reason", "status", "response", "attempt", "type",
        "bounce_classification", "asm_group_id", "tls", "cert_err", "category", "pool",
        "sg_machine_open", "sg_content_type", "sg_template_id", "sg_template_name",
        "marketing_campaign_id", "marketing_campaign_name", "marketing_campaign_version",
        "marketing_campaign_split_id", "singlesend_id", "singlesend_name", "template_id",
        "template_version_id", "template_hash", "mc_stats", "phase_id", "send_at",
    }
)  # fmt: skip


def sendgrid_custom(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The custom arguments among a SendGrid event's fields (those it does not define)."""
    pairs = (extra or {}).items()
    return custom_args((name, value) for name, value in pairs if name not in SENDGRID_STANDARD)


def custom_args(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The first 32 scalar arguments. ``send_id`` is kept as the send it names: a boolean
    (JSON ``true`` read as text is "1" on SQLite, "true" on Postgres) or a fraction names
    none and is left out, as attribution's ``send_of`` ignores it."""
    custom: dict[str, Any] = {}
    for name, value in pairs:
        if name == SEND_ARGUMENT:
            value = send_value(value)
        if isinstance(value, str | int | float | bool) and len(custom) < MAX_CUSTOM_ARGS:
            custom[name] = value
    return custom

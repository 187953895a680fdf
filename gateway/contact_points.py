"""Normalising the contact points people are matched by: email addresses and phones."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email


# An ESP's send asks for the same addresses over and over; validating one costs about
# 0.2 ms (email-validator retries an optional import on every call).
@lru_cache(maxsize=65_536)
def normalize_email(raw: str) -> str:
    """The canonical form of an address, or ``ValueError`` saying why it is not one.

    Lower-cased whole: providers treat the local part case-insensitively in practice,
    and one person must not become two customers over a capital letter.
    """
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return result.normalized.lower()


def normalize_phone(raw: str, default_region: str | None = None) -> str:
    """The E.164 form of a phone number, or ``ValueError`` saying why it is not one."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number ({exc})") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(
            "not a valid phone number; give it in international form, e.g. +14155550123"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

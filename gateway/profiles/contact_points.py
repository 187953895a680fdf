"""Normalising the contact points people are matched by: email addresses and phones."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

# No address is longer than 254 characters once normalised; NFC can shorten text at
# most threefold (Hangul jamo), so anything longer than this is refused unread.
# email-validator reads a long input before it counts: a 600 KB variable held the
# event loop (and /healthz) for 3 s.
MAX_EMAIL_INPUT = 1000


# An ESP's send asks for the same addresses over and over; validating one costs about
# 0.2 ms (email-validator retries an optional import on every call).
@lru_cache(maxsize=65_536)
def normalize_email(raw: str) -> str:
    """The canonical form of an address, or ``ValueError`` saying why it is not one.

    Lower-cased whole: providers treat the local part case-insensitively in practice,
    and one person must not become two customers over a capital letter.
    """
    text = raw.strip()
    if len(text) > MAX_EMAIL_INPUT:
        raise ValueError("The email address is too long.")
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return result.normalized.lower()


_EXAMPLE = "in international form with its country code, e.g. +14155550123"
# The parser's reasons, said for the person who typed the number (its own messages
# are a library's: "(0) Missing or invalid default region.").
_PARSE_PROBLEMS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: (
        "not a phone number with a known country code; give it " + _EXAMPLE
    ),
    phonenumbers.NumberParseException.NOT_A_NUMBER: "not a phone number; give it " + _EXAMPLE,
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: (
        "too short to be a phone number after its international prefix; give it " + _EXAMPLE
    ),
    phonenumbers.NumberParseException.TOO_SHORT_NSN: (
        "too short to be a phone number; give it " + _EXAMPLE
    ),
    phonenumbers.NumberParseException.TOO_LONG: "too long to be a phone number; give it "
    + _EXAMPLE,
}


def phone_problem(exc: phonenumbers.NumberParseException) -> str:
    """Why a phone number did not parse, written for people."""
    return _PARSE_PROBLEMS.get(exc.error_type, "not a phone number; give it " + _EXAMPLE)


def normalize_phone(raw: str, default_region: str | None = None) -> str:
    """The E.164 form of a phone number, or ``ValueError`` saying why it is not one."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(phone_problem(exc)) from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number; give it " + _EXAMPLE)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

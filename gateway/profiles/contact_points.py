"""Normalising the contact points people are matched by: email addresses and phones."""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

# No address is longer than 254 characters once normalised; NFC can shorten text at
# most threefold (Hangul jamo), so anything longer than this is refused unread.
# email-validator reads a long input before it counts: a 600 KB variable held the
# event loop (and /healthz) for 3 s.
MAX_EMAIL_INPUT = 1000


# The most an address may hold once normalised (RFC 5321, email-validator's limit).
EMAIL_MAX_LENGTH = 254
# A plain ASCII address: a dot-atom local part (email-validator's own character set) and
# a domain of letters, digits, dots and hyphens.  Whether such an address is valid
# depends on its domain alone (and its length), so the domain is validated once for all
# of its addresses (``_plain_domain``).
_ATEXT = r"[A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@([A-Za-z0-9.-]+)")


# An ESP's send asks for the same addresses over and over; validating one costs about
# 0.2 ms (email-validator retries an optional import on every call).
@lru_cache(maxsize=65_536)
def normalize_email(raw: str) -> str:
    """The canonical form of an address, or ``ValueError`` saying why it is not one.

    Lower-cased whole: providers treat the local part case-insensitively in practice,
    and one person must not become two customers over a capital letter.

    A plain ASCII address on a valid ASCII domain is answered without email-validator
    (the answer it would give, at a fiftieth of the cost: an export hashes every stored
    address); anything else, and every refusal, goes through it.
    """
    text = raw.strip()
    if len(text) > MAX_EMAIL_INPUT:
        raise ValueError("The email address is too long.")
    plain = _PLAIN_ADDRESS.fullmatch(text)
    if plain is not None and len(text) <= EMAIL_MAX_LENGTH:
        domain = plain.group(1).lower()
        if _plain_domain(domain):
            return text.lower()
    return _validated(text)


@lru_cache(maxsize=4096)
def _plain_domain(domain: str) -> bool:
    """Whether email-validator takes this lower-case ASCII domain as it is (IDNA and
    special-use names are not: their addresses take the slow way)."""
    try:
        result = validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return False
    return bool(result.domain == domain)


# A domain's one trailing dot (its fully qualified form: ``x@example.com.``), at the
# end of the address or before its closing angle bracket.
_TRAILING_DOT = re.compile(r"(?<=[A-Za-z0-9-])\.(?=>?$)")


def normalize_recipient(raw: str) -> str:
    """``normalize_email`` of the one address a recipient field names, as ESPs report
    them: also ``Ada <x@example.com>`` (a display name), ``"x"@example.com`` (a quoted
    local part that needs no quotes) and ``x@example.com.`` (a domain's trailing dot),
    each the address ``x@example.com``. ``ValueError`` for anything else that
    ``normalize_email`` refuses: a list of addresses, a quoted part that needs its
    quotes, a display name with an at sign."""
    try:
        return normalize_email(raw)
    except ValueError as refused:
        text = _TRAILING_DOT.sub("", raw.strip())
        if len(text) > MAX_EMAIL_INPUT:
            raise
        try:
            found = validate_email(
                text,
                check_deliverability=False,
                allow_quoted_local=True,
                allow_display_name=True,
            )
        except EmailNotValidError:
            raise refused from None
        return normalize_email(found.normalized)


def _validated(text: str) -> str:
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

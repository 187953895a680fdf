"""No part of an email address reaches a log line: ASCII or not, quoted or not, with an
IDN domain, a punycode one or an address literal, whatever surrounds it."""

from __future__ import annotations

import io
import json
import logging
import string

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.observability.logs import MASKED, MASKED_PHONE, MAX_MASKED_CHARS, JsonFormatter, mask

_SPECIALS = "!#$%&'*+-/=?^_`{|}~"
_LETTERS = st.characters(categories=["L", "N", "M"]) | st.sampled_from(
    string.ascii_letters + string.digits
)
_ATOMS = st.text(_LETTERS | st.sampled_from(_SPECIALS), min_size=1, max_size=12)
_DOT_ATOM = st.lists(_ATOMS, min_size=1, max_size=3).map(".".join)
# A quoted local part: any printable character, quotes and backslashes escaped.
_QUOTED = st.text(
    st.characters(categories=["L", "N", "P", "S", "Zs"], exclude_characters="\r\n"),
    min_size=1,
    max_size=16,
).map(lambda text: '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
_LABEL = st.text(_LETTERS, min_size=1, max_size=10)
_IDN = st.lists(_LABEL, min_size=2, max_size=4).map(".".join)


def _punycode(domain: str) -> str:
    return ".".join(
        label if label.isascii() else "xn--" + label.encode("punycode").decode()
        for label in domain.split(".")
    )


_LITERAL = st.tuples(*[st.integers(0, 255)] * 4).map(lambda n: "[{}.{}.{}.{}]".format(*n))
_DOMAIN = _IDN | _IDN.map(_punycode) | _LITERAL
_COMMENTED = st.tuples(_DOT_ATOM, _LABEL).map(lambda parts: f"{parts[0]}({parts[1]})")
# An at as text carries it: plain, doubled, full-width, percent-encoded in a URL's query.
_AT = st.sampled_from(["@", "@@", "\uff20", "%40", "%2540"])
ADDRESSES = st.tuples(_DOT_ATOM | _QUOTED | _COMMENTED, _AT, _DOMAIN).map("".join)
_LONG_QUERY = "https://esp.test/v3/contacts?token=" + "a" * 300 + "&email="
BEFORE = st.sampled_from(
    ["", "refused for ", "<", "(", "[", "'", '"', "to: ", ", ", "x=", _LONG_QUERY, "a" * 300]
)
AFTER = st.sampled_from(["", " today", ">", ")", "]", "'", '"', ".", ", and", ";", "\n"])


def _only_context_left(logged: str, before: str, after: str) -> bool:
    """Whether ``logged`` is ``before`` and ``after`` around the mask, less at most
    what the mask took from them: not one character of the address is left."""
    return any(
        logged == before[:i] + MASKED + after[j:]
        for i in range(len(before) + 1)
        for j in range(len(after) + 1)
    )


def _log_line(message: str, *args: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.log_masking")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(message, *args)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue()


@settings(max_examples=500, deadline=None)
@given(ADDRESSES, BEFORE, AFTER)
def test_no_part_of_any_address_is_left_in_a_log_line(
    address: str, before: str, after: str
) -> None:
    line = _log_line("%s", before + address + after)
    logged = json.loads(line)["message"]
    assert _only_context_left(logged, before, after), (address, logged)


@pytest.mark.parametrize(
    "address",
    [
        "ada.lovelace@example.com",
        "用户@例子.广告",
        "josé.garcía@correo.españa.es",
        "дмитрий@пример.рф",
        "ada@xn--mller-kva.example",
        '"john doe"@example.com',
        '"very.(),:;<>[]\\".VERY.\\"very@\\\\ \\"very\\".unusual"@strange.example.com',
        "o'brien+news@example.co.uk",
        "ünïcödé@[192.168.0.1]",
    ],
)
def test_each_kind_of_address_is_masked_whole(address: str) -> None:
    assert mask(f"refused for {address} today") == f"refused for {MASKED} today"


@pytest.mark.logs_errors("lookup failed")
def test_an_address_in_an_exception_or_an_extra_field_is_masked() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.log_masking.exc")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("no customer 用户@例子.广告")
        except ValueError:
            logger.exception("lookup failed", extra={"detail": "for дмитрий@пример.рф"})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    entry = json.loads(stream.getvalue())
    assert "例子" not in entry["exception"]
    assert MASKED in entry["exception"]
    assert entry["detail"] == f"for {MASKED}"


def test_an_overlong_local_part_still_loses_its_domain() -> None:
    """Past 256 parts it is no address (RFC 5321: 64 octets), but its domain goes."""
    masked = mask("x" * 300 + "@secret.example now")
    assert "secret" not in masked
    assert masked.endswith("@*** now")


@pytest.mark.parametrize(
    "line",
    [
        # Glued to a run longer than any address: a URL's query after a token.
        "Client error '400 Bad Request' for url 'https://esp.test/v3/contacts?token="
        + "a" * 240
        + "&email=ada.lovelace@example.com'",
        "to ada@[IPv6:2001:0db8:85a3:0000:0000:8a2e:0370:7334:" + "f" * 70 + "]",
        "refused ada%40example.com",
        "GET /v3/contacts?email=ada%40example.com&list=7",
        "GET /v3/contacts?email=ada%2540example.com",
        "refused ada(comment)@example.com",
        "refused ada@@example.com",
        "refused ada\uff20example.com",
        "refused ada@(comment)example.com",
    ],
)
def test_no_part_of_an_address_is_left_whatever_it_is_glued_to(line: str) -> None:
    masked = mask(line)
    assert "ada" not in masked, masked
    assert "example" not in masked, masked
    assert MASKED in masked


def test_a_line_longer_than_the_cap_is_cut_with_a_marker_and_its_tail_masked() -> None:
    # A quote-dense line (the worst case of the quoted-string rule) past the cap.
    dense = 'a"' * 100_000 + "@example.com"
    masked = mask(dense)
    assert len(masked) < MAX_MASKED_CHARS + 64
    assert masked.endswith(f"{MASKED} [{len(dense) - MAX_MASKED_CHARS} characters cut]")
    # An address the cut splits leaves nothing of its local part either.
    for offset in range(0, 20, 3):
        split = "x " * ((MAX_MASKED_CHARS - offset) // 2) + "ada.lovelace@example.com rest"
        assert "ada" not in mask(split)
        quoted = "x " * ((MAX_MASKED_CHARS - offset) // 2) + '"ada lovelace"@example.com'
        assert "ada" not in mask(quoted)


class _Refusal(Exception):
    pass


@pytest.mark.parametrize(
    "extra",
    [
        {"recipients": ["ada@example.com"]},
        {"recipients": ("ada@example.com", "grace@example.com")},
        {"detail": {"to": "ada@example.com"}},
        {"detail": {"ada@example.com": 1}},
        {"detail": {7: "ada@example.com"}},
        {"body": b"to ada@example.com"},
        {"error": _Refusal("no customer ada@example.com")},
        {"errors": [_Refusal("no customer ada@example.com")]},
        {"contact": {"email": "ada@example.com", "name": "Ada"}},
    ],
)
def test_an_address_in_an_extra_field_of_any_type_is_masked(extra: dict[str, object]) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.log_masking.extra")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("sent", extra=extra)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    line = stream.getvalue()
    assert "ada" not in line.lower(), line
    assert "example" not in line, line
    assert json.loads(line)["message"] == "sent"


@settings(max_examples=300, deadline=None)
@given(
    region=st.sampled_from(["GB", "FR", "DE", "US", "IN", "BR", "JP", "AU"]),
    style=st.sampled_from(
        [phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.NATIONAL]
    ),
    before=st.sampled_from(["", "call ", "note: ", "phone=", "(", "track:Newsletter "]),
)
def test_a_phone_number_as_people_write_it_is_masked(region: str, style: int, before: str) -> None:
    # An outside check: a Segment track named "Newsletter … +33755219250" reached the
    # log with the number; only addresses were masked.
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None
    written = phonenumbers.format_number(example, style)
    masked = mask(f"{before}{written}, thanks")
    assert str(example.national_number)[-6:] not in masked.replace(" ", "").replace("-", "")
    assert MASKED_PHONE in masked


@pytest.mark.parametrize(
    "kept",
    [
        "customer 4507894691234 updated",  # an id
        "at 2026-12-06 13:45:10.123456+00:00",  # a time
        "connection to 192.168.100.200:5432 refused",  # a host
        "took 12.5 ms over 1,000,000 rows",
        "event 1733493910123",  # an epoch in milliseconds
        # A fresh review's: decimals, ranges, versions and UUIDs were masked.
        "elapsed 0.123456789 s",
        "duration=1733494704.123456",
        "range 123456789-123456799",
        "version 1.2.3.4567890",
        "customer 3f2a1c9e-1234-5678-9012-345678901234",
    ],
)
def test_ids_times_and_hosts_are_not_taken_for_phones(kept: str) -> None:
    assert mask(kept) == kept

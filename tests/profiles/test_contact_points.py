"""``normalize_email`` answers plain ASCII addresses without email-validator: for any
text it gives what email-validator gives (the same address, or the same refusal)."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.profiles.contact_points import MAX_EMAIL_INPUT, normalize_email

# Every character class the fast path decides on, and some it must leave alone.
_LOCAL = st.text(
    alphabet=st.sampled_from([*list("aZ09._-+!#$%&'*/=?^`{|}~\"(),:;<>@[\\] "), "é", "ß", "\xa0"]),
    min_size=0,
    max_size=70,
)
_LABEL = st.one_of(
    st.text(alphabet=st.sampled_from(list("aZ09-_")), min_size=0, max_size=8),
    st.sampled_from(["xn--bcher-kva", "ab--cd", "xn--", "-a", "a-", "B\u00fccher", "\uff21\uff22"]),
    st.integers(55, 70).map(lambda n: "a" * n),
)
_TLD = st.sampled_from(
    ["com", "ORG", "local", "test", "arpa", "onion", "invalid", "localhost", "123", "c0m", "x"]
)
_DOMAIN = st.builds(
    lambda labels, tld, dot: ".".join([*labels, tld]) + dot,
    st.lists(_LABEL, min_size=0, max_size=4),
    _TLD,
    st.sampled_from(["", "", ".", ".."]),
)
_ADDRESS = st.one_of(
    st.builds(
        lambda local, d, s: f"{s}{local}@{d}{s}", _LOCAL, _DOMAIN, st.sampled_from(["", " ", "\t"])
    ),
    st.builds(lambda n, d: "a" * n + "@" + d, st.integers(60, 260), _DOMAIN),
    st.text(max_size=40),
)


def _oracle(raw: str) -> str:
    """What email-validator makes of the text, as ``normalize_email`` words it."""
    text = raw.strip()
    if len(text) > MAX_EMAIL_INPUT:
        return "error: The email address is too long."
    try:
        return validate_email(text, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        return f"error: {exc}"


def _answer(raw: str) -> str:
    try:
        return normalize_email.__wrapped__(raw)
    except ValueError as exc:
        return f"error: {exc}"


@settings(max_examples=1500, deadline=None)
@given(_ADDRESS)
def test_any_text_is_normalised_or_refused_as_email_validator_does(raw: str) -> None:
    assert _answer(raw) == _oracle(raw)


def test_plain_addresses_are_lowercased_and_odd_ones_still_refused() -> None:
    assert normalize_email(" Person.One+tag@Example.COM ") == "person.one+tag@example.com"
    assert _answer("a@foo.local") == _oracle("a@foo.local")
    assert _answer("a@foo.local").startswith("error: ")
    assert _answer("A@xn--bcher-kva.ch") == "a@bücher.ch"

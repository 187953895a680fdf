"""What an id of each upstream looks like, and the only way a value enters a URL path.

An id a customer record carries ends up in a request to its upstream, often in the
path. A path is a route: ``customers/../orders.json`` is the shop's list of *every*
customer's orders. So each upstream kind says here what its ids are (the one table
the adapters and every entry point of the gateway check against), and path values are
encoded by ``expand_path`` only, which leaves nothing "safe" and refuses what no
encoding can make harmless.

=========  =========================================  ===============================
kind       a valid id (where it goes)                 why
=========  =========================================  ===============================
hubspot    contact object id: 1-19 ASCII digits       ``hs_object_id`` is a number;
           (path ``/crm/v3/objects/contacts/{id}``);  by e-mail only with
           an e-mail address with ``idProperty=email``  ``idProperty=email``
shopify    customer id: 1-19 ASCII digits             Admin REST ids are 64-bit
           (path ``/customers/{id}/orders.json``)     integers (a GraphQL
                                                      ``gid://shopify/Customer/N``
                                                      is N here)
segment    ``user_id``: any text up to 255            Segment accepts any string;
           characters, no control or format           the path carries it encoded
           characters, no surrounding blanks          inside ``user_id:…``
           (path ``…/profiles/user_id:{id}/…``)
soap_crm   ``xsd:string`` up to 255 characters that   XML 1.0 cannot carry control
           XML can carry (same text rule)             characters; the id travels in
           (SOAP body)                                the envelope, not a path
other      the same text rule                         a source with no upstream
=========  =========================================  ===============================

A number has one spelling only, without leading zeros: the upstream reads
``07300000000013`` as 7300000000013, so another spelling would be a second identity
(neither unique nor tombstoned) that reaches the same person.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from .errors import InvalidExternalId

__all__ = [
    "ID_RULES",
    "TEXT_RULE",
    "IdRule",
    "InvalidExternalId",
    "checked_email",
    "checked_id",
    "email_problem",
    "expand_path",
    "rule_for_kind",
    "text_problem",
]

MAX_ID_LENGTH = 255  # identities.external_id is String(255)
_DIGITS = re.compile(r"[0-9]{1,19}", re.ASCII)
_INT64_MAX = 2**63 - 1
# Unicode categories no id may hold: control (Cc), format (Cf: zero-width and bidi
# marks, which make two ids look alike), surrogates (Cs: not encodable), private use
# (Co), unassigned (Cn), line and paragraph separators (Zl, Zp).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def text_problem(value: str) -> str | None:
    """Why ``value`` is not a usable free-text id, or None when it is."""
    if not value:
        return "is empty"
    if len(value) > MAX_ID_LENGTH:
        return f"is longer than {MAX_ID_LENGTH} characters"
    if value != value.strip():
        return "starts or ends with a blank"
    # ``isprintable`` is False for every refused category (and for spaces other than
    # " "): only such an id needs the look at each character, a tenth of an import's
    # preparation when done for all.
    if not value.isprintable() and any(
        unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in value
    ):
        return "holds a control or invisible formatting character"
    return None


def _number_problem(value: str) -> str | None:
    if not _DIGITS.fullmatch(value):
        return "is not a number"
    if int(value) == 0 or int(value) > _INT64_MAX:
        return "is out of range"
    if value[0] == "0":
        # The upstream reads ``07300000000013`` as 7300000000013: a second spelling of
        # someone's id would be a second identity (not unique, not tombstoned) that
        # fetches their orders. Only the canonical spelling is an id.
        return "has leading zeros"
    return None


def email_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent as an e-mail address key, or None.

    Only the shape a path needs: the gateway validated the address at its border.
    """
    problem = text_problem(value)
    if problem:
        return problem
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or any(ch.isspace() for ch in value):
        return "is not an e-mail address"
    return None


@dataclass(frozen=True, slots=True)
class IdRule:
    """One row of the table: what an id of this kind looks like, in words and code."""

    kind: str
    looks_like: str  # finishes "… ids are …" in error messages
    problem: Callable[[str], str | None]

    def explain(self, source: str) -> str:
        """The sentence an entry point answers a refused id with (no id in it)."""
        return f"{source} ids are {self.looks_like}"


TEXT_RULE = IdRule(
    "text",
    f"text of 1 to {MAX_ID_LENGTH} characters without control characters or surrounding blanks",
    text_problem,
)
ID_RULES: dict[str, IdRule] = {
    "hubspot": IdRule(
        "hubspot",
        "HubSpot contact ids: a number such as 51000007 (hs_object_id)",
        _number_problem,
    ),
    "shopify": IdRule(
        "shopify",
        "Shopify customer ids: a number such as 7300000000013 "
        "(for gid://shopify/Customer/7300000000013 give 7300000000013)",
        _number_problem,
    ),
    "segment": IdRule(
        "segment",
        f"Segment user ids: text of 1 to {MAX_ID_LENGTH} characters without "
        "control characters or surrounding blanks",
        text_problem,
    ),
    "soap_crm": IdRule(
        "soap_crm",
        f"contact ids of the SOAP CRM: text of 1 to {MAX_ID_LENGTH} characters "
        "without control characters or surrounding blanks, such as C-000042",
        text_problem,
    ),
}


def rule_for_kind(kind: str | None) -> IdRule:
    """The row of an upstream kind; the text rule for a source that is no upstream."""
    return ID_RULES.get(kind or "", TEXT_RULE)


def checked_id(upstream: str, rule: IdRule, value: str) -> str:
    """``value`` when ``rule`` accepts it; otherwise ``InvalidExternalId``, no request."""
    if rule.problem(value) is not None:
        raise InvalidExternalId(
            upstream, f"id refused before sending: its ids are {rule.looks_like}"
        )
    return value


def checked_email(upstream: str, value: str) -> str:
    """``value`` when it can key a lookup by e-mail; otherwise ``InvalidExternalId``."""
    if email_problem(value) is not None:
        raise InvalidExternalId(
            upstream, "id refused before sending: an e-mail key must be an address"
        )
    return value


_DOT_SEGMENTS = frozenset({"", ".", ".."})


def expand_path(upstream: str, route: str, values: Mapping[str, str]) -> str:
    """``route`` (``/customers/{id}/orders.json``) with each value inside its own path
    segment, whatever the value holds.

    Every byte outside RFC 3986's unreserved set is percent-encoded (``/``, ``\\``,
    ``%``, ``?``, ``#``, ``:``, ``@``, blanks, non-ASCII), so a value can neither end
    its segment nor start a query. What encoding cannot help is refused: a segment that
    comes out empty or as a dot segment (``.``, ``..``), which URL libraries and servers
    resolve away (``customers/../orders.json`` *is* ``orders.json``); ``user_id:..`` is
    an ordinary segment and goes as it is.
    """
    try:
        encoded = {key: quote(value, safe="") for key, value in values.items()}
    except UnicodeEncodeError:  # a lone surrogate: no bytes to send
        raise InvalidExternalId(upstream, "id refused before sending: not encodable") from None
    segments = []
    for template in route.split("/"):
        segment = template.format_map(encoded)
        if segment != template and segment in _DOT_SEGMENTS:
            raise InvalidExternalId(upstream, "id refused before sending: empty or a dot segment")
        segments.append(segment)
    return "/".join(segments)

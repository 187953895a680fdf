"""Webhook signature schemes, one function per source, each as the source documents it.

Every check compares digests with ``hmac.compare_digest`` (constant time) and raises
``SignatureError`` with a reason safe to return to the caller: it never quotes the
secret, the expected digest or the body.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import hmac
import time
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.ingest.json_text import PayloadError

# An HMAC secret shorter than this (or empty, or blank) is refused when settings load: a
# webhook signed with key "" or "abc" proves nothing about its sender.
MIN_SECRET_LENGTH = 16

# HubSpot's v3 scheme: refuse requests whose timestamp is older than five minutes.
HUBSPOT_MAX_AGE_MS = 5 * 60 * 1000
# Form fields a Mandrill webhook may post (it posts ``mandrill_events`` alone).
MANDRILL_MAX_FIELDS = 32


class SignatureError(Exception):
    """A request that is not provably from the source; ``code`` is machine-readable."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def secret_problem(source: str, secret: str) -> str | None:
    """Why ``secret`` cannot verify ``source``'s webhooks, or None. Names the source,
    never the value. SendGrid's is a public key (ECDSA P-256); every other an HMAC key."""
    if not secret.strip():
        return f"the {source} webhook secret is empty"
    if source == "sendgrid":
        try:
            sendgrid_public_key(secret)
        except ValueError as exc:
            return f"the sendgrid webhook key: {exc}"
        return None
    if len(secret.strip()) < MIN_SECRET_LENGTH:
        return f"the {source} webhook secret is shorter than {MIN_SECRET_LENGTH} characters"
    return None


def _digits(text: str) -> bool:
    # ASCII digits only: ``str.isdigit`` also says yes to superscripts ("²"), which
    # ``int`` then refuses (a 500 instead of a 401), and to other scripts' digits.
    return text.isascii() and text.isdigit()


def _epoch(stamp: str) -> int | None:
    """The value of a digits-only timestamp, or None past 18 significant digits: no time
    near now has as many, and a longer one overflowed the float it is compared as
    (Python also refuses to parse 4,301 digits)."""
    significant = stamp.lstrip("0")
    return int(significant or "0") if len(significant) <= 18 else None


def _equal(given: str | None, expected: str) -> bool:
    if not given:
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def verify_shopify(secret: str, body: bytes, signature: str | None) -> None:
    """``X-Shopify-Hmac-Sha256``: base64(HMAC-SHA256(secret, raw body))."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    if not _equal(signature, base64.b64encode(digest).decode()):
        raise SignatureError("invalid_signature", "X-Shopify-Hmac-Sha256 does not match the body")


def verify_segment(secret: str, body: bytes, signature: str | None) -> None:
    """``X-Signature``: hex HMAC-SHA1(secret, raw body), as Segment's webhooks destination
    signs with its shared secret."""
    expected = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    if not _equal(signature.lower() if signature else None, expected):
        raise SignatureError("invalid_signature", "X-Signature does not match the body")


def hubspot_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """base64(HMAC-SHA256(client secret, method + URI + body + timestamp))."""
    message = method.upper().encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def verify_hubspot(
    secret: str,
    method: str,
    uri: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    now_ms: int | None = None,
) -> None:
    """``X-HubSpot-Signature-v3`` with ``X-HubSpot-Request-Timestamp`` (milliseconds).

    The timestamp is checked first: it is part of the signed message, so an old but
    correctly signed request is a replay and must not pass.
    """
    if not timestamp or not _digits(timestamp.strip()):
        raise SignatureError(
            "missing_timestamp", "X-HubSpot-Request-Timestamp must be epoch milliseconds"
        )
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    sent = _epoch(timestamp.strip())
    if sent is None or abs(now - sent) > HUBSPOT_MAX_AGE_MS:
        raise SignatureError(
            "stale_timestamp", "X-HubSpot-Request-Timestamp is more than 5 minutes from now"
        )
    expected = hubspot_signature(secret, method, uri, body, timestamp.strip())
    if not _equal(signature, expected):
        raise SignatureError(
            "invalid_signature", "X-HubSpot-Signature-v3 does not match the request"
        )


# SendGrid signs each delivery attempt when it makes it: an older timestamp is a replay.
SENDGRID_MAX_AGE_S = 10 * 60


def sendgrid_public_key(configured: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER SubjectPublicKeyInfo, a PEM
    block accepted too); ``ValueError`` when it is not an ECDSA P-256 public key."""
    text = configured.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm):
        raise ValueError("not a base64 DER (or PEM) public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not an ECDSA P-256 public key")
    return key


def verify_sendgrid(
    public_key: ec.EllipticCurvePublicKey,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    now_s: float | None = None,
) -> None:
    """``X-Twilio-Email-Event-Webhook-Signature``: base64 DER ECDSA (P-256, SHA-256) over
    the ``X-Twilio-Email-Event-Webhook-Timestamp`` value followed by the raw body."""
    stamp = (timestamp or "").strip()
    if not _digits(stamp):
        raise SignatureError(
            "missing_timestamp", "X-Twilio-Email-Event-Webhook-Timestamp must be epoch seconds"
        )
    now = now_s if now_s is not None else time.time()
    sent = _epoch(stamp)
    if sent is None or abs(now - sent) > SENDGRID_MAX_AGE_S:
        raise SignatureError(
            "stale_timestamp",
            "X-Twilio-Email-Event-Webhook-Timestamp is more than 10 minutes from now",
        )
    try:
        der = base64.b64decode((signature or "").strip(), validate=True)
        public_key.verify(der, stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        raise SignatureError(
            "invalid_signature",
            "X-Twilio-Email-Event-Webhook-Signature does not match the timestamp and body",
        ) from None


def mandrill_form(body: bytes) -> list[tuple[str, str]]:
    """The POST parameters as signed (``application/x-www-form-urlencoded``), decoded
    before the signature can be checked, so by anyone's body: at most
    ``MANDRILL_MAX_FIELDS`` fields (Mandrill posts ``mandrill_events`` alone; 2.8 million
    empty ones held the event loop 2.8 s), each percent-decoded in C (``_unquoted``:
    ``parse_qsl`` spent 1.2 s of the loop on an 8 MiB field of escapes, 0.05 s so)."""
    if body.count(b"&") >= MANDRILL_MAX_FIELDS:
        raise PayloadError(
            f"a Mandrill webhook posts at most {MANDRILL_MAX_FIELDS} form fields", status=400
        )
    try:
        pairs = [field.partition(b"=") for field in body.split(b"&")] if body else []
        if any(not equals for _, equals, _ in pairs):
            raise ValueError("a field without '='")
        return [(_unquoted(name), _unquoted(value)) for name, _, value in pairs]
    except ValueError:
        raise PayloadError("the body is not a URL-encoded form", status=400) from None


def _unquoted(raw: bytes) -> str:
    """``urllib.parse.unquote_plus`` of a form's name or value, in one C call: each
    ``%XX`` as the escape ``\\xXX`` (backslashes escaped first, so no other escape is
    read); invalid UTF-8 replaced, as ``parse_qsl`` does. A ``%`` without two hex digits
    after it is a ``ValueError`` (``parse_qsl`` kept it as text; no ESP sends one)."""
    escaped = raw.replace(b"\\", b"\\\\").replace(b"+", b" ").replace(b"%", b"\\x")
    return codecs.escape_decode(escaped)[0].decode("utf-8", "replace")


def mandrill_signature(key: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """base64(HMAC-SHA1(webhook key, URL + each POST key and value, sorted by key)), as
    Mailchimp Transactional documents it."""
    message = url + "".join(name + value for name, value in sorted(params))
    return base64.b64encode(
        hmac.new(key.encode(), message.encode(), hashlib.sha1).digest()
    ).decode()


def verify_mandrill(
    key: str, url: str, params: Sequence[tuple[str, str]], signature: str | None
) -> None:
    """``X-Mandrill-Signature`` over the webhook's URL as registered and its form fields."""
    if not _equal(signature, mandrill_signature(key, url, params)):
        raise SignatureError(
            "invalid_signature", "X-Mandrill-Signature does not match the URL and parameters"
        )

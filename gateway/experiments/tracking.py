"""The tracking parameter on a recommended item's link: which served list, which position,
signed so that a click an ESP reports can be trusted to name them.

``gw_rec=<28 characters>``: base64url of the list id (12 random bytes), the position
(one byte) and the first 8 bytes of an HMAC-SHA256 over both, keyed by
``GATEWAY_TRACKING_KEY`` (or a key derived from the erasure key). Short, so links stay
readable and within ESPs' URL limits; 64 bits of tag, so forging one link takes ~2^63
guesses, each an event the ESP must sign. The parameter names no customer and no
product: a forwarded link leaks nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

PARAMETER = "gw_rec"
_LIST_BYTES = 12
_TAG_BYTES = 8
_PERSONALISATION = b"gw-rec-v1"
MAX_POSITION = 255


@dataclass(frozen=True, slots=True)
class Tracked:
    """What a valid tracking parameter names."""

    list_id: str
    position: int


def new_list_id() -> str:
    """A served list's id: 16 URL-safe characters, unguessable."""
    return _encode(secrets.token_bytes(_LIST_BYTES))


class Tracker:
    """Signs items' links and reads back the clicks' ones, with one key."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the tracking key is empty")
        self._key = key

    def token(self, list_id: str, position: int) -> str:
        if not 0 <= position <= MAX_POSITION:
            raise ValueError("a position is 0 to 255")
        payload = _decode(list_id) + bytes((position,))
        return _encode(payload + self._tag(payload))

    def tag_url(self, url: str, list_id: str, position: int) -> str:
        """``url`` with the parameter added (before any fragment)."""
        base, hash_mark, fragment = url.partition("#")
        separator = "&" if "?" in base else "?"
        tagged = f"{base}{separator}{PARAMETER}={self.token(list_id, position)}"
        return f"{tagged}{hash_mark}{fragment}"

    def read(self, url: str) -> Tracked | None:
        """What the link's parameter names, or None without one or with a bad signature."""
        if PARAMETER not in url:  # most clicks: no parsing at all
            return None
        try:
            query = urlsplit(url).query
        except ValueError:
            return None
        for name, value in parse_qsl(query):
            if name == PARAMETER:
                return self._verify(value)
        return None

    def _verify(self, token: str) -> Tracked | None:
        try:
            raw = _decode(token)
        except ValueError:
            return None
        if len(raw) != _LIST_BYTES + 1 + _TAG_BYTES:
            return None
        payload, tag = raw[: _LIST_BYTES + 1], raw[_LIST_BYTES + 1 :]
        if not hmac.compare_digest(tag, self._tag(payload)):
            return None
        return Tracked(_encode(payload[:_LIST_BYTES]), payload[_LIST_BYTES])

    def _tag(self, payload: bytes) -> bytes:
        digest = hmac.new(self._key, _PERSONALISATION + payload, hashlib.sha256).digest()
        return digest[:_TAG_BYTES]


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None

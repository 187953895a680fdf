"""The tracking parameter on a recommended item's link: which served list, which position,
signed so that a click an ESP reports can be trusted to name them.

``gw_rec=<28 characters>``: base64url of the list id (12 random bytes), the position
(one byte) and an 8-byte tag, keyed by ``GATEWAY_TRACKING_KEY`` (or a key derived from
the erasure key). The tags come from one HMAC-SHA512 per eight positions of a list:
``HMAC(key, list id || position // 8)``'s 64 bytes are eight 8-byte tags, the
position's is the (position % 8)-th. A list of up to eight items costs one HMAC (the
serving hot path signs every list it serves), and each tag is still 64 bits of HMAC
output bound to its list and position: forging one link takes ~2^63 guesses, each an
event the ESP must sign. Short, so links stay readable and within ESPs' URL limits.
The parameter names no customer and no product: a forwarded link leaks nothing.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

PARAMETER = "gw_rec"
_LIST_BYTES = 12
_TAG_BYTES = 8
_PER_BLOCK = 8  # tags per HMAC-SHA512 (64 bytes)
_PERSONALISATION = b"gw-rec-v2"
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
        return self.tokens(list_id, position + 1)[position]

    def tokens(self, list_id: str, count: int) -> list[str]:
        """The parameters of positions 0 to ``count`` - 1 of one list."""
        if not 0 <= count <= MAX_POSITION + 1:
            raise ValueError("a position is 0 to 255")
        raw = _decode(list_id)
        found: list[str] = []
        for block in range(0, count, _PER_BLOCK):
            tags = self._tags(raw, block // _PER_BLOCK)
            for position in range(block, min(block + _PER_BLOCK, count)):
                tag = tags[(position % _PER_BLOCK) * _TAG_BYTES :][:_TAG_BYTES]
                # 12 bytes of list id encode alone to its 16 characters: only the rest is
                # encoded per position.
                found.append(list_id + _encode(bytes((position,)) + tag))
        return found

    def tag_url(self, url: str, list_id: str, position: int) -> str:
        """``url`` with the parameter added (before any fragment)."""
        return tagged(url, self.token(list_id, position))

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
        list_bytes, position, tag = raw[:_LIST_BYTES], raw[_LIST_BYTES], raw[_LIST_BYTES + 1 :]
        tags = self._tags(list_bytes, position // _PER_BLOCK)
        expected = tags[(position % _PER_BLOCK) * _TAG_BYTES :][:_TAG_BYTES]
        if not hmac.compare_digest(tag, expected):
            return None
        return Tracked(_encode(list_bytes), position)

    def _tags(self, list_bytes: bytes, block: int) -> bytes:
        return hmac.digest(self._key, _PERSONALISATION + list_bytes + bytes((block,)), "sha512")


def tagged(url: str, token: str) -> str:
    """``url`` with the parameter ``token`` added (before any fragment)."""
    base, hash_mark, fragment = url.partition("#")
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}{PARAMETER}={token}{hash_mark}{fragment}"


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None

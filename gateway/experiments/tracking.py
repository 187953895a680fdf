"""The tracking parameter on a recommended item's link: which served list, which position,
signed so that a click an ESP reports can be trusted to name its list.

``gw_rec=<list id, 16 characters><tag, 12 characters>.<position>``: the list id (12
bytes, base64url: the time in milliseconds and 6 random bytes), a 9-byte tag of it
(keyed BLAKE2b, BLAKE2's own MAC mode in RFC 7693, keyed by ``GATEWAY_TRACKING_KEY`` or
a key derived from the erasure key), and the item's position in the list.

The tag signs the list, not the position: a recipient who edits the position of a link
they were sent only points at another item of the same list (which they could have
clicked), and nobody can make a link to a list they were not sent (72 bits of tag: ~2^71
guesses, each an event the ESP must sign). So the serving hot path, which tracks every
list it serves, pays one MAC and one encoding per list, not per item. Short, so links
stay readable and within ESPs' URL limits; it names no customer and no product, so a
forwarded link leaks nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import random
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

PARAMETER = "gw_rec"
MAX_POSITION = 255
_LIST_CHARS = 16  # 12 bytes
_TAG_BYTES = 9  # 12 characters, no padding
_TOKEN_CHARS = _LIST_CHARS + 12
_PERSONALISATION = b"gw-rec-v3"  # BLAKE2b's personalisation: these tags and no others
# The random half of list ids: no system call per list, reseeded in every forked child
# (spawned workers seed their own on import).
_IDS = random.Random()
os.register_at_fork(after_in_child=_IDS.seed)


@dataclass(frozen=True, slots=True)
class Tracked:
    """What a valid tracking parameter names."""

    list_id: str
    position: int


def new_list_id() -> str:
    """A served list's id: 16 URL-safe characters, the time in milliseconds (6 bytes,
    so the table's key grows at one end: cheap inserts) then 6 random bytes. Nothing
    needs it unguessable: a link is trusted for its tag, not for its id."""
    moment = (time.time_ns() // 1_000_000).to_bytes(6, "big")
    return _encode(moment + _IDS.getrandbits(48).to_bytes(6, "big"))


class Tracker:
    """Signs served lists' links and reads back the clicks' ones, with one key."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the tracking key is empty")
        # BLAKE2b takes keys up to 64 bytes: any longer secret is hashed to one first.
        self._key = key if len(key) <= 64 else hashlib.blake2b(key).digest()

    def signed(self, list_id: str) -> str:
        """The list's part of its items' parameters (its id and tag), once per list."""
        return list_id + _encode(self._tag(list_id))

    def token(self, list_id: str, position: int) -> str:
        if not 0 <= position <= MAX_POSITION:
            raise ValueError("a position is 0 to 255")
        return f"{self.signed(list_id)}.{position}"

    def tag_url(self, url: str, list_id: str, position: int) -> str:
        """``url`` with the parameter added (before any fragment)."""
        return tagged(url, self.token(list_id, position))

    def read(self, url: str) -> Tracked | None:
        """What the link's parameter names, or None without one or with a bad tag."""
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
        signed, dot, position = token.partition(".")
        if not dot or len(signed) != _TOKEN_CHARS or not position.isdigit():
            return None
        if len(position) > 3 or int(position) > MAX_POSITION:
            return None
        list_id = signed[:_LIST_CHARS]
        try:
            tag = _decode(signed[_LIST_CHARS:])
        except ValueError:
            return None
        if not list_id.isascii() or not hmac.compare_digest(tag, self._tag(list_id)):
            return None
        return Tracked(list_id, int(position))

    def _tag(self, list_id: str) -> bytes:
        return hashlib.blake2b(
            list_id.encode(), key=self._key, digest_size=_TAG_BYTES, person=_PERSONALISATION
        ).digest()


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

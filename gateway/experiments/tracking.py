"""The tracking parameter on a recommended item's link: which served list, which position,
signed so that a click an ESP reports can be trusted to name its list and its item.

``gw_rec=<list id, 16 characters><tag, 12 characters>.<position>``: the list id (12
bytes, base64url: the time in milliseconds and 6 random bytes), a 9-byte tag of the list
and the position, and the position in the list.

The tags of seven positions come from one MAC: keyed BLAKE2b (BLAKE2's own MAC mode, RFC
7693, keyed by ``GATEWAY_TRACKING_KEY`` or a key derived from the erasure key) of the
block of positions and the list id, with a 63-byte output; position ``p`` is
signed by bytes ``9 * (p % 7)`` to ``9 * (p % 7) + 9`` of block ``p // 7``. A keyed
BLAKE2b is a PRF over its whole output, so one position's tag says nothing of another's:
a recipient who edits the position of a link gets a link that names nothing, and nobody
can make a link to a list they were not sent (72 bits of tag: ~2^71 guesses, each an
event the ESP must sign). So the serving hot path, which tracks every list it serves,
pays one MAC and one encoding per list of up to seven items, not per item (63 bytes
encode to 84 characters, 12 per position, cut at whole characters). Short, so links
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
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

PARAMETER = "gw_rec"
MAX_POSITION = 255
_LIST_CHARS = 16  # 12 bytes
_TAG_BYTES = 9  # 12 characters, no padding
_TAG_CHARS = 12
_PER_BLOCK = 7  # positions signed by one MAC: 63 bytes, BLAKE2b's most is 64
_BLOCK_CHARS = _TAG_CHARS * _PER_BLOCK  # 63 bytes encode to 84 characters, no padding
# Lists prepared at once (ids, their first block's tags and their parameter's head): one
# encoding of 64 ids and one of 64 MACs, not two a list. On the serving path a list then
# costs a pop and one string a link (bench/impressions: ~3.5 us of a request in all,
# against ~4.6 us when the links were cut from the tags one at a time, and ~5 us more
# when each list was made in its request).
_PREPARED = 64
_TOKEN_CHARS = _LIST_CHARS + _TAG_CHARS
# Each position of the first block: where its tag lies in the block's tags, and the
# token's end (``.<position>``).
_FIRST_BLOCK = tuple((at * _TAG_CHARS, (at + 1) * _TAG_CHARS, f".{at}") for at in range(_PER_BLOCK))
# BLAKE2b's personalisation: these tags and no others (v3 signed the list only).
_PERSONALISATION = b"gw-rec-v4"
# The random half of list ids: no system call per list, reseeded in every forked child
# (spawned workers seed their own on import).
_IDS = random.Random()
os.register_at_fork(after_in_child=_IDS.seed)
# Every tracker, so that a forked child drops the lists its parent prepared (they would
# be served twice, once by each).
_TRACKERS: weakref.WeakSet[Tracker] = weakref.WeakSet()


def _forget_prepared() -> None:
    for tracker in _TRACKERS:
        tracker._prepared.clear()


os.register_at_fork(after_in_child=_forget_prepared)


@dataclass(frozen=True, slots=True)
class Tracked:
    """What a valid tracking parameter names."""

    list_id: str
    position: int

    @property
    def made_at(self) -> datetime:
        """When the list's id was made (``new_list_id``: its first 6 bytes, in
        milliseconds), at or before the list was served: signed with the rest, so a link
        cannot claim a later one."""
        raw = base64.urlsafe_b64decode(self.list_id)
        return datetime.fromtimestamp(int.from_bytes(raw[:6], "big") / 1000, UTC)


def new_list_id() -> str:
    """A served list's id: 16 URL-safe characters, the time in milliseconds (6 bytes,
    so the table's key grows at one end: cheap inserts) then 6 random bytes. Nothing
    needs it unguessable: a link is trusted for its tag, not for its id."""
    return _encode(_new_list_bytes(1))


def _new_list_bytes(count: int) -> bytes:
    """``count`` list ids' 12 bytes each, end to end: one clock reading for all (the
    time's 6 bytes) and one draw of their random 6 each."""
    moment = (time.time_ns() // 1_000_000).to_bytes(6, "big")
    noise = _IDS.randbytes(6 * count)
    return b"".join([moment + noise[at : at + 6] for at in range(0, len(noise), 6)])


class Tracker:
    """Signs served lists' links and reads back the clicks' ones, with one key."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the tracking key is empty")
        # BLAKE2b takes keys up to 64 bytes: any longer secret is hashed to one first.
        self._key = key if len(key) <= 64 else hashlib.blake2b(key).digest()
        # Keyed once, copied per list: the key's block is compressed here, not per MAC
        # (a third of the cost of a keyed BLAKE2b made afresh).
        self._keyed = hashlib.blake2b(
            key=self._key, digest_size=_TAG_BYTES * _PER_BLOCK, person=_PERSONALISATION
        )
        self._prepared: list[tuple[str, str, str]] = []
        _TRACKERS.add(self)

    def new_list(self, urls: Sequence[str | None]) -> tuple[str, list[str | None]]:
        """A new list's id and each of its links tagged for it (``links`` of a
        ``new_list_id``), from lists prepared ahead in batches: what serving calls."""
        if not self._prepared:
            self._prepare()
        list_id, head, tags = self._prepared.pop()
        if len(urls) > _PER_BLOCK:
            return list_id, self.links(list_id, urls)
        # One string a link: the rest was made with the list, in a batch.
        return list_id, [
            (
                f"{url}{head}{tags[start:stop]}{position}"
                if "?" not in url and "#" not in url
                else tagged(url, f"{list_id}{tags[start:stop]}{position}")
            )
            if url
            else None
            for url, (start, stop, position) in zip(urls, _FIRST_BLOCK, strict=False)
        ]

    def _prepare(self) -> None:
        """``_PREPARED`` new list ids, each with the head of its links' parameter
        (``?gw_rec=<list id>``) and its first block's tags. Made together, in a loop that
        stays in the CPU's caches (made one list at a time, in a request among everything
        else, the same work cost about twice as much). Their time is when they were
        prepared (a batch lasts milliseconds under load; an idle gateway's first lists
        carry an older time, which only places their rows a little inside the key's
        order)."""
        ids = _encode(_new_list_bytes(_PREPARED))
        # As ``_block`` signs them: block 0, then the id's characters.
        signed = ids.encode()
        mac = self._keyed.copy
        tags = []
        for at in range(0, len(signed), _LIST_CHARS):
            block = mac()
            block.update(b"0:" + signed[at : at + _LIST_CHARS])
            tags.append(block.digest())
        encoded = _encode(b"".join(tags))
        self._prepared = [
            (
                ids[at : at + _LIST_CHARS],
                f"?{PARAMETER}={ids[at : at + _LIST_CHARS]}",
                encoded[block : block + _BLOCK_CHARS],
            )
            for at, block in zip(
                range(0, len(ids), _LIST_CHARS), range(0, len(encoded), _BLOCK_CHARS), strict=True
            )
        ]

    def links(self, list_id: str, urls: Sequence[str | None]) -> list[str | None]:
        """Each of a list's links in order with its position's parameter (no URL stays
        None): ``tag_url`` of each, made the way the serving hot path can afford, one MAC
        per seven links and one string a link when the URL has no query or fragment."""
        if len(urls) - 1 > MAX_POSITION:
            raise ValueError("a position is 0 to 255")
        found: list[str | None] = []
        for block in range(0, len(urls), _PER_BLOCK):
            tags = _encode(self._block(list_id, block // _PER_BLOCK))
            at = 0
            for position, url in enumerate(urls[block : block + _PER_BLOCK], block):
                tag = tags[at : at + _TAG_CHARS]
                at += _TAG_CHARS
                if not url:
                    found.append(None)
                elif "?" in url or "#" in url:
                    found.append(tagged(url, f"{list_id}{tag}.{position}"))
                else:
                    found.append(f"{url}?{PARAMETER}={list_id}{tag}.{position}")
        return found

    def token(self, list_id: str, position: int) -> str:
        if not 0 <= position <= MAX_POSITION:
            raise ValueError("a position is 0 to 255")
        return f"{list_id}{self._tag(list_id, position)}.{position}"

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
        # The last one: ours is appended after whatever the product's URL held, which
        # may be a parameter copied from an earlier tracked link (another list's).
        found = [value for name, value in parse_qsl(query) if name == PARAMETER]
        return self._verify(found[-1]) if found else None

    def _verify(self, token: str) -> Tracked | None:
        signed, dot, position = token.partition(".")
        # ASCII digits as the link was made, "1" and no other spelling: ``isdigit`` alone
        # takes "²" (which int() refuses: a ValueError failed the ESP's whole batch, on
        # every retry) and an Arabic-Indic one or "01" (read as 1).
        if (
            not dot
            or len(signed) != _TOKEN_CHARS
            or not (position.isascii() and position.isdigit())
        ):
            return None
        if len(position) > 3 or position != str(int(position)) or int(position) > MAX_POSITION:
            return None
        list_id = signed[:_LIST_CHARS]
        if not list_id.isascii() or not signed.isascii():
            return None
        expected = self._tag(list_id, int(position))
        if not hmac.compare_digest(signed[_LIST_CHARS:].encode(), expected.encode()):
            return None
        return Tracked(list_id, int(position))

    def _tag(self, list_id: str, position: int) -> str:
        block, at = divmod(position, _PER_BLOCK)
        return _encode(self._block(list_id, block))[at * _TAG_CHARS : (at + 1) * _TAG_CHARS]

    def _block(self, list_id: str, block: int) -> bytes:
        mac = self._keyed.copy()
        mac.update(b"%d:%s" % (block, list_id.encode()))  # the block first: unambiguous
        return mac.digest()


def tagged(url: str, token: str) -> str:
    """``url`` with the parameter ``token`` added (before any fragment)."""
    base, hash_mark, fragment = url.partition("#")
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}{PARAMETER}={token}{hash_mark}{fragment}"


_URL_SAFE = bytes.maketrans(b"+/", b"-_")


def _encode(raw: bytes) -> str:
    """base64url without padding (``base64.urlsafe_b64encode`` in one C call fewer)."""
    return binascii.b2a_base64(raw, newline=False).translate(_URL_SAFE).rstrip(b"=").decode()

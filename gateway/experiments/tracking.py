"""The tracking parameter on a recommended item's link: which served list, which position,
signed so that a click an ESP reports can be trusted to name its list and its item.

``gw_rec=<list id, 16 characters><tag, 12 characters>.<position>``: the list id (12
bytes, base64url: the time in milliseconds and 6 random bytes), a 9-byte tag of the list
and the position, and the position in the list.

A position's tag is the first 9 bytes of AES-256 of one block: the list id's 12 bytes,
the position's byte and ``gw5`` (the version). AES is a pseudorandom permutation, so on
distinct blocks its outputs are independent pseudorandom values, and a truncated one is
a MAC of a fixed-length message: a recipient who edits the position of a link gets a
link that names nothing, and nobody can make a link to a list they were not sent (72
bits of tag: ~2^71 guesses, each an event the ESP must sign). The key is derived from
``GATEWAY_TRACKING_KEY`` (or from the erasure key) by keyed BLAKE2b.

Why AES, one block a position: the serving hot path tracks every list it serves, and
AES signs the first eight positions of 256 lists in one call of a few microseconds
(the lists' ids, their tags and their links' parameters are prepared together, as
arrays), where the keyed BLAKE2b of v4 cost a call and ~0.5 us a list. Links signed by
v4 (``gw-rec-v4``: BLAKE2b of the list id, 63 bytes signing seven positions) are still
read, so clicks on links already sent are attributed after an upgrade.

Short, so links stay readable and within ESPs' URL limits; it names no customer and no
product, so a forwarded link leaks nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import add
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

PARAMETER = "gw_rec"
MAX_POSITION = 255
_LIST_BYTES = 12
_LIST_CHARS = 16  # 12 bytes
_TAG_BYTES = 9  # 12 characters, no padding
_TAG_CHARS = 12
_TOKEN_CHARS = _LIST_CHARS + _TAG_CHARS
_BLOCK = 16  # AES's
_VERSION = b"gw5"  # the block's last bytes: these tags and no others
_LIST_ID = re.compile(r"[A-Za-z0-9_-]{16}")
# Lists prepared at once: their ids, and the parameters of their first ``_FAST``
# positions' links, made as arrays in a few calls. Serving then pops a list and makes
# each link by one concatenation in C (bench/impressions; in isolation a 4-item list's
# id and links cost 2.7 us before, v4's BLAKE2b and one f-string a link).
_PREPARED = 256
_FAST = 8  # positions prepared: lists of up to 8 items (4 by default) take no other path
_HEAD = f"?{PARAMETER}="
_SEPARATOR = "\n"  # between a list's prepared parameters (never in one)
# A prepared parameter: "?gw_rec=", the list id, the tag, "." and the position's one digit,
# then the separator.
_PARAMETER_CHARS = len(_HEAD) + _TOKEN_CHARS + 3
_ID_AT = len(_HEAD)
_TAG_AT = _ID_AT + _LIST_CHARS


def _templates() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """What every batch's AES blocks and parameters hold whatever the lists: the blocks'
    position and version bytes, and the parameters' head, dot, digit and separator."""
    blocks = np.zeros((_PREPARED, _FAST, _BLOCK), np.uint8)
    blocks[:, :, _LIST_BYTES] = np.arange(_FAST)
    blocks[:, :, _LIST_BYTES + 1 :] = np.frombuffer(_VERSION, np.uint8)
    text = np.zeros((_PREPARED, _FAST, _PARAMETER_CHARS), np.uint8)
    text[:, :, :_ID_AT] = np.frombuffer(_HEAD.encode(), np.uint8)
    text[:, :, -3] = ord(".")
    text[:, :, -2] = np.frombuffer("".join(map(str, range(_FAST))).encode(), np.uint8)
    text[:, :, -1] = ord(_SEPARATOR)
    blocks.flags.writeable = False
    text.flags.writeable = False
    return blocks, text


_BLOCKS, _PARAMETERS = _templates()
# v4, still read: BLAKE2b's personalisation, seven positions a 63-byte MAC.
_V4_PERSONALISATION = b"gw-rec-v4"
_V4_PER_BLOCK = 7
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
        # A lock another thread held at the fork stays held in the child, by no one.
        tracker._lock = threading.Lock()


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
        short = key if len(key) <= 64 else hashlib.blake2b(key).digest()
        aes_key = hashlib.blake2b(b"gw-rec-v5 AES key", key=short, digest_size=32).digest()
        # ECB over whole blocks only: each block is one position's tag, on its own.
        # One context for the tracker's life (made per batch it cost more than the
        # batch); a lock because OpenSSL's context is not for two threads at once.
        self._aes = Cipher(algorithms.AES(aes_key), modes.ECB()).encryptor()
        self._lock = threading.Lock()
        # v4's MAC, keyed once and copied per link read.
        self._v4 = hashlib.blake2b(
            key=short, digest_size=_TAG_BYTES * _V4_PER_BLOCK, person=_V4_PERSONALISATION
        )
        self._prepared: list[tuple[str, str]] = []
        # The batch's arrays (``_prepare``): the templates, then each batch's bytes.
        self._raw = np.empty((_PREPARED, _LIST_BYTES + _FAST * _TAG_BYTES), np.uint8)
        self._raw_tags = self._raw[:, _LIST_BYTES:].reshape(_PREPARED, _FAST, _TAG_BYTES)
        if not np.shares_memory(self._raw_tags, self._raw):  # a copy would be filled in vain
            raise RuntimeError("the tags' place is not a view of the batch's bytes")
        self._blocks = _BLOCKS.copy()
        self._text = _PARAMETERS.copy()
        _TRACKERS.add(self)

    def new_list(self, urls: Sequence[str | None]) -> tuple[str, list[str | None]]:
        """A new list's id and each of its links tagged for it (``links`` of a
        ``new_list_id``), from lists prepared ahead in batches: what serving calls."""
        try:
            list_id, parameters = self._prepared.pop()
        except IndexError:  # none left (another thread may have taken the last)
            list_id, parameters = self._prepare()
        count = len(urls)
        # Links without a query or a fragment (a catalogue's usual product page), each a
        # URL and its prepared parameter joined in C. ``all``: no URL None or empty.
        if count <= _FAST and all(urls):
            joined = "".join(urls)  # type: ignore[arg-type]  # all() saw no None
            if "?" not in joined and "#" not in joined:
                return list_id, list(map(add, urls, parameters.split(_SEPARATOR, count)))
        if count - 1 > MAX_POSITION:
            raise ValueError("a position is 0 to 255")
        tokens = [text[_ID_AT:] for text in parameters.split(_SEPARATOR)[: min(count, _FAST)]]
        if count > _FAST:
            tokens += self._tokens(list_id, range(_FAST, count))
        return list_id, [
            tagged(url, token) if url else None for url, token in zip(urls, tokens, strict=True)
        ]

    def _prepare(self) -> tuple[str, str]:
        """``_PREPARED`` new list ids, each with the parameters of its first ``_FAST``
        links (``?gw_rec=<token>``, separated), made as arrays in a few calls: the AES
        blocks of every list and position signed in one, the ids and tags turned into
        base64url in another and laid into the parameters' text, the text decoded once.
        The arrays are the tracker's own, filled anew each batch where a list's bytes go
        (the rest never changes: no template copied, ~250 -> ~150 us a batch); the lock
        keeps two threads from filling them at once. Their time is when they were
        prepared (a batch lasts milliseconds under load; an idle gateway's first lists
        carry an older time, which only places their rows a little inside the key's
        order). Returns one of them, the others kept for the next lists."""
        raw, blocks, text = self._raw, self._blocks, self._text
        with self._lock:
            # As ``_new_list_bytes`` makes them: one clock reading, 6 random bytes each.
            raw[:, :6] = np.frombuffer((time.time_ns() // 1_000_000).to_bytes(6, "big"), np.uint8)
            raw[:, 6:_LIST_BYTES] = np.frombuffer(_IDS.randbytes(6 * _PREPARED), np.uint8).reshape(
                _PREPARED, 6
            )
            blocks[:, :, :_LIST_BYTES] = raw[:, None, :_LIST_BYTES]
            sealed = np.frombuffer(self._aes.update(blocks.data), np.uint8)
            # Each list's id and its tags end to end, whole 3-byte groups each, so that
            # one base64 of them all gives each its own characters.
            self._raw_tags[...] = sealed.reshape(_PREPARED, _FAST, _BLOCK)[:, :, :_TAG_BYTES]
            chars = np.frombuffer(_encode_bytes(raw.data), np.uint8).reshape(_PREPARED, -1)
            text[:, :, _ID_AT:_TAG_AT] = chars[:, None, :_LIST_CHARS]
            text[:, :, _TAG_AT : _TAG_AT + _TAG_CHARS] = chars[:, _LIST_CHARS:].reshape(
                _PREPARED, _FAST, _TAG_CHARS
            )
            parameters = str(text.data, "ascii")
            ids = chars[:, :_LIST_CHARS].tobytes()
        id_text = ids.decode("ascii")
        size = _FAST * _PARAMETER_CHARS
        prepared = [
            (id_text[at : at + _LIST_CHARS], parameters[start : start + size])
            for at, start in zip(
                range(0, len(id_text), _LIST_CHARS), range(0, len(parameters), size), strict=True
            )
        ]
        first = prepared.pop()
        self._prepared = prepared
        return first

    def links(self, list_id: str, urls: Sequence[str | None]) -> list[str | None]:
        """Each of a list's links in order with its position's parameter (no URL stays
        None): ``tag_url`` of each, the tags made in one call."""
        if len(urls) - 1 > MAX_POSITION:
            raise ValueError("a position is 0 to 255")
        tokens = self._tokens(list_id, range(len(urls)))
        return [
            tagged(url, token) if url else None for url, token in zip(urls, tokens, strict=True)
        ]

    def token(self, list_id: str, position: int) -> str:
        if not 0 <= position <= MAX_POSITION:
            raise ValueError("a position is 0 to 255")
        return self._tokens(list_id, range(position, position + 1))[0]

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
        list_id, tag = signed[:_LIST_CHARS], signed[_LIST_CHARS:]
        if not _LIST_ID.fullmatch(list_id) or not tag.isascii():
            return None
        at = int(position)
        expected = self._tags(_list_bytes(list_id), range(at, at + 1))
        if hmac.compare_digest(tag.encode(), expected.encode()) or hmac.compare_digest(
            tag.encode(), self._tag_v4(list_id, at).encode()
        ):
            return Tracked(list_id, at)
        return None

    def _tokens(self, list_id: str, positions: range) -> list[str]:
        """The tokens of ``positions`` of a list (``<list id><tag>.<position>``)."""
        tags = self._tags(_list_bytes(list_id), positions)
        return [
            f"{list_id}{tags[at : at + _TAG_CHARS]}.{position}"
            for at, position in zip(range(0, len(tags), _TAG_CHARS), positions, strict=True)
        ]

    def _tags(self, raw: bytes, positions: range) -> str:
        """The tags of ``positions`` of the list of id ``raw``, end to end (12 characters
        each)."""
        if len(raw) != _LIST_BYTES:
            # A shorter block would be held back by the cipher and shift every later
            # one: every tag this process then made would be wrong.
            raise ValueError("a list id is 12 bytes")
        blocks = b"".join([raw + bytes((position,)) + _VERSION for position in positions])
        with self._lock:
            sealed = self._aes.update(blocks)
        return _encode(
            b"".join([sealed[at : at + _TAG_BYTES] for at in range(0, len(sealed), _BLOCK)])
        )

    def _tag_v4(self, list_id: str, position: int) -> str:
        """The tag v4 gave ``position`` (links sent before v5)."""
        block, at = divmod(position, _V4_PER_BLOCK)
        mac = self._v4.copy()
        mac.update(b"%d:%s" % (block, list_id.encode()))  # the block first: unambiguous
        return _encode(mac.digest())[at * _TAG_CHARS : (at + 1) * _TAG_CHARS]


def _list_bytes(list_id: str) -> bytes:
    """A list id's 12 bytes (``list_id`` as ``new_list_id`` makes them)."""
    if not _LIST_ID.fullmatch(list_id):
        raise ValueError("a list id is 16 base64url characters")
    return base64.urlsafe_b64decode(list_id)


def tagged(url: str, token: str) -> str:
    """``url`` with the parameter ``token`` added (before any fragment)."""
    base, hash_mark, fragment = url.partition("#")
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}{PARAMETER}={token}{hash_mark}{fragment}"


_URL_SAFE = bytes.maketrans(b"+/", b"-_")


def _encode_bytes(raw: bytes | memoryview) -> bytes:
    """base64url without padding, as ASCII bytes."""
    return binascii.b2a_base64(raw, newline=False).translate(_URL_SAFE).rstrip(b"=")


def _encode(raw: bytes) -> str:
    """base64url without padding (``base64.urlsafe_b64encode`` in one C call fewer)."""
    return _encode_bytes(raw).decode()

"""A memo bounded by what it holds, not only by how many: the response cache's in-process
stores keep values whose sizes a client chooses (a URL's query string, an answer), so a
count alone would let a few thousand large ones take gigabytes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ByteMemo(Generic[K, V]):
    """Least recently used first out, once more than ``max_entries`` are kept or their
    sizes (``size_of`` each key and value) add up to more than ``max_bytes``. A pair
    larger than the whole budget is not kept."""

    def __init__(self, size_of: Callable[[K, V], int], *, max_entries: int, max_bytes: int) -> None:
        self._size_of = size_of
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._kept: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def __contains__(self, key: K) -> bool:
        return key in self._kept

    def get(self, key: K) -> V:
        """The value (now the most recently used); ``KeyError`` when not kept."""
        value, _ = self._kept[key]
        self._kept.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self.pop(key)
        size = self._size_of(key, value)
        if size > self.max_bytes:
            return
        self._kept[key] = (value, size)
        self.bytes += size
        while len(self._kept) > self.max_entries or self.bytes > self.max_bytes:
            self.pop(next(iter(self._kept)))

    def pop(self, key: K) -> None:
        found = self._kept.pop(key, None)
        if found is not None:
            self.bytes -= found[1]

    def clear(self) -> None:
        self._kept.clear()
        self.bytes = 0

"""The event ids a deduplicating sink has handled. Pure.

Ids are the source's positions (integers) for events that stayed one-to-one, and
strings (``"12.3"``, ``"12.3.0"``, ``"parse.0.end.1"``) for fan-out and `finish()`
outputs: ``"<parent>.<i>"`` is output `i` of event `parent`. Nothing is kept per id:

- integer ids arrive nearly in order, so they are kept as sorted disjoint ranges: a
  million handled events in order take one range, not a million set entries;
- fan-out ids are kept per parent: how many of its outputs, from the first, were
  handled (an int), or, once one arrives out of order (a key-routed edge spreads a
  parent's outputs over several workers), a bitmap of them (a bytearray). A parent
  with ten outputs costs about 90 bytes, where ten ids in a set cost 900;
- anything else (an id not of that form) goes in a plain set.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from sedamp.runtime.stage import MAX_OUTPUTS_PER_EVENT

# Longest index and integer parent read as numbers: outputs per event are capped at
# MAX_OUTPUTS_PER_EVENT, and a source position has fewer than 19 digits.
_INDEX_DIGITS = len(str(MAX_OUTPUTS_PER_EVENT))
_PARENT_DIGITS = 18
# The usual indexes, looked up rather than parsed (most ids of a sink are read here)
_SMALL = {str(i): i for i in range(256)}


def _index(digits: str) -> int | None:
    i = _SMALL.get(digits)
    if i is not None or len(digits) > _INDEX_DIGITS or not digits.isdecimal():
        return i
    i = int(digits)
    if i > MAX_OUTPUTS_PER_EVENT or str(i) != digits:  # "03", or digits of another script
        return None
    return i


def _parent(parent: str) -> Any:
    if len(parent) <= _PARENT_DIGITS and parent.isdecimal():
        p = int(parent)
        if str(p) == parent:
            return p
    return parent


class IdSet:
    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []  # exclusive
        # fan-out ids by parent: int n = outputs 0..n-1 seen; bytearray = a bitmap
        self._children: dict[Any, int | bytearray] = {}
        self._other: set[Any] = set()
        self._count = 0
        self._last: tuple[str, Any] = ("", None)  # the last parent read, as text and as key

    def __len__(self) -> int:
        return self._count

    @property
    def ranges(self) -> int:
        return len(self._starts)

    @property
    def parents(self) -> int:
        return len(self._children)

    def __contains__(self, eid: Any) -> bool:
        if type(eid) is int:
            i = bisect_right(self._starts, eid) - 1
            return i >= 0 and eid < self._ends[i]
        key = self._key(eid) if type(eid) is str else None
        if key is None:
            return eid in self._other
        seen = self._children.get(key[0])
        i = key[1]
        if seen is None:
            return False
        if isinstance(seen, int):
            return i < seen
        return i >> 3 < len(seen) and bool(seen[i >> 3] & (1 << (i & 7)))

    def add(self, eid: Any) -> bool:
        """Remember `eid`; False if it was already there."""
        if type(eid) is int:
            added = self._add_int(eid)
        else:
            key = self._key(eid) if type(eid) is str else None
            if key is not None:
                added = self._add_child(*key)
            elif eid in self._other:
                added = False
            else:
                self._other.add(eid)
                added = True
        self._count += added
        return added

    def _key(self, eid: str) -> tuple[Any, int] | None:
        """``"<parent>.<i>"`` -> (parent, i), the parent an int when it is one (a source
        position); None for an id of any other form. Only canonical numbers are read
        (``"12.03"`` is not output 3 of 12), so distinct ids never share a key. The
        parent of the previous id is remembered: a parent's outputs come together."""
        parent, _, last = eid.rpartition(".")
        i = _index(last)
        if i is None or not parent:
            return None
        if parent != self._last[0]:
            self._last = (parent, _parent(parent))
        return self._last[1], i

    def _add_int(self, eid: int) -> bool:
        starts, ends = self._starts, self._ends
        i = bisect_right(starts, eid) - 1
        if i >= 0 and eid < ends[i]:
            return False
        left = i >= 0 and ends[i] == eid
        right = i + 1 < len(starts) and starts[i + 1] == eid + 1
        if left and right:
            ends[i] = ends[i + 1]
            del starts[i + 1]
            del ends[i + 1]
        elif left:
            ends[i] = eid + 1
        elif right:
            starts[i + 1] = eid
        else:
            starts.insert(i + 1, eid)
            ends.insert(i + 1, eid + 1)
        return True

    def _add_child(self, parent: Any, i: int) -> bool:
        seen = self._children.get(parent, 0)
        if type(seen) is int:
            if i < seen:
                return False
            if i == seen:  # the usual case: the next output in order
                self._children[parent] = seen + 1
                return True
            seen = self._children[parent] = _bitmap(seen, i)
        assert isinstance(seen, bytearray)
        byte, bit = i >> 3, 1 << (i & 7)
        if byte >= len(seen):
            seen.extend(bytes(byte + 1 - len(seen)))
        if seen[byte] & bit:
            return False
        seen[byte] |= bit
        return True


def _bitmap(first: int, upto: int) -> bytearray:
    """A bitmap with bits 0..first-1 set, long enough to hold bit `upto`."""
    bm = bytearray(max(first, upto) // 8 + 1)
    full, rest = divmod(first, 8)
    bm[:full] = b"\xff" * full
    if rest:
        bm[full] = (1 << rest) - 1
    return bm

"""The event ids a deduplicating sink has handled. Pure.

Ids are the source's positions (integers) for events that stayed one-to-one, and
strings (``"12.3"``, ``"parse.0.end.1"``) for fan-out and `finish()` outputs. A job's
integer ids arrive nearly in order, so they are kept as sorted disjoint ranges: a
million handled events in order take one range, not a million set entries. Other ids
go in a plain set.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any


class IdSet:
    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []  # exclusive
        self._other: set[Any] = set()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def ranges(self) -> int:
        return len(self._starts)

    def __contains__(self, eid: Any) -> bool:
        if type(eid) is not int:
            return eid in self._other
        i = bisect_right(self._starts, eid) - 1
        return i >= 0 and eid < self._ends[i]

    def add(self, eid: Any) -> bool:
        """Remember `eid`; False if it was already there."""
        if type(eid) is not int:
            if eid in self._other:
                return False
            self._other.add(eid)
            self._count += 1
            return True
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
        self._count += 1
        return True

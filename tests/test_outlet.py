"""sedamp.outlet.Router and partitioning (with stand-in outlets: pure code)."""

from __future__ import annotations

from typing import Any

import pytest

from sedamp import wire
from sedamp.errors import WireError
from sedamp.outlet import Router, partition_of


class FakeOutlet:
    def __init__(self, key: str | None = None, partitions: int = 1, stage: str = "next") -> None:
        self.key, self.partitions, self.stage = key, partitions, stage
        self.items: list[tuple[int, list[Any], list[bytes], Any]] = []
        self.held: dict[Any, int] = {}

    def add(self, partition: int, ids: list[Any], packed: list[bytes], tag: Any, t_src: float = 0.0) -> None:
        self.items.append((partition, ids, packed, tag))

    def flush(self) -> list[Any]:
        return []


def test_partition_is_stable_and_spread() -> None:
    assert partition_of("apple", 4) == partition_of("apple", 4)
    assert len({partition_of(f"w{i}", 4) for i in range(100)}) == 4
    assert partition_of(1, 3) == partition_of(1, 3)


def test_ids_follow_the_parent() -> None:
    o = FakeOutlet()
    r = Router([o])  # type: ignore[list-item]
    r.route(7, ["x"])
    r.route(8, ["a", "b"])
    assert r.commit("lease") == (True, [])
    ((part, ids, packed, tag),) = o.items
    assert ids == [7, "8.0", "8.1"] and part == 0 and tag == "lease"
    assert [wire.unpack_events([p], 1)[0] for p in packed] == ["x", "a", "b"]


def test_fan_out_and_key_routing() -> None:
    plain, keyed = FakeOutlet(), FakeOutlet(key="k", partitions=3)
    r = Router([plain, keyed])  # type: ignore[list-item]
    assert r.keyed
    evs = [{"k": f"v{i}"} for i in range(30)]
    for i, e in enumerate(evs):
        r.route(i, [e])
    r.commit(None)
    assert sum(len(ids) for _, ids, _, _ in plain.items) == 30
    by_part = {part: ids for part, ids, _, _ in keyed.items}
    for part, ids in by_part.items():
        assert all(partition_of(evs[i]["k"], 3) == part for i in ids)
    assert sum(len(v) for v in by_part.values()) == 30


def test_failed_event_adds_nothing() -> None:
    keyed = FakeOutlet(key="k", partitions=2)
    r = Router([keyed])  # type: ignore[list-item]
    with pytest.raises(KeyError, match="no field 'k'"):
        r.route(1, [{"k": 1}, {"other": 2}])
    with pytest.raises(WireError):
        r.route(2, [{"k": object()}])
    assert r.commit(None) == (False, []) and keyed.items == []

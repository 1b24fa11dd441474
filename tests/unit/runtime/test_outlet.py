"""sedamp.runtime.outlet.Router and partitioning (with stand-in outlets: pure code)."""

from __future__ import annotations

from typing import Any

import pytest

from sedamp.errors import WireError
from sedamp.runtime import sockets, wire
from sedamp.runtime.outlet import Router, partition_of
from tests.conftest import socket_context


class FakeOutlet:
    def __init__(self, key: str | None = None, partitions: int = 1, stage: str = "next", when: Any = None) -> None:
        self.key, self.partitions, self.stage, self.when = key, partitions, stage, when
        self.max_bytes = 0
        self.items: list[tuple[int, list[Any], list[bytes], Any]] = []
        self.held: dict[Any, int] = {}

        self.traced: list[bool] = []

    def add(
        self, partition: int, ids: list[Any], packed: list[bytes], tag: Any, t_src: float = 0.0, traced: bool = False
    ) -> None:
        self.items.append((partition, ids, packed, tag))
        self.traced.append(traced)

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


def test_a_commit_says_whether_its_events_may_be_traced() -> None:
    o = FakeOutlet()
    r = Router([o])  # type: ignore[list-item]
    r.route(1, ["x"])
    r.commit("a", traced=True)
    r.route(2, ["y"])
    r.commit("b")
    assert o.traced == [True, False]


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


def test_a_refused_put_is_fatal_for_its_producer_and_other_refusals_are_not(tmp_path: Any) -> None:
    """A PUT the queue refused was not taken: the producer must not acknowledge its input."""
    import zmq

    from sedamp.runtime.flow import QueueCore
    from sedamp.runtime.outlet import Outlet

    ctx: zmq.Context[Any] = socket_context()
    queue_sock = sockets.Sockets(ctx=ctx).router(f"ipc://{tmp_path}/q")
    try:
        o = Outlet(sockets.Sockets(ctx=ctx), "next", f"ipc://{tmp_path}/q", "w:a:0:1", None, 1, 8)
        rid, *hello = queue_sock.recv_multipart()
        core = QueueCore(16)
        for r, frames in core.handle(rid, wire.parse(hello)):
            queue_sock.send_multipart([r, *frames])
        assert o.sock.poll(2000)
        o.on_message(o.sock.recv_multipart())  # the credit
        o.add(0, [1, 2], [wire.pack_event("a"), wire.pack_event("b")], "lease-7", 0.0)
        o.flush()
        _, *put = queue_sock.recv_multipart()
        core.close()  # the queue is closed: the PUT is refused
        [(r, err)] = core.handle(rid, wire.parse(put))
        assert wire.parse(err).kind == wire.ERR and wire.parse(err).fields[1] == 0
        queue_sock.send_multipart([r, *err])
        assert o.sock.poll(2000)
        assert o.on_message(o.sock.recv_multipart()) == []  # nothing released
        assert o.fatal is not None and "PUT 0" in o.fatal and "PUT after CLOSE" in o.fatal
        # a refusal of something else (seq -1) is only an error to log
        queue_sock.send_multipart([r, *wire.simple(wire.ERR, "garbage", -1)])
        assert o.sock.poll(2000)
        o.on_message(o.sock.recv_multipart())
        assert o.errors and "garbage" in o.errors[-1]
        o.close()
    finally:
        queue_sock.close(0)
        ctx.term()


def test_when_routes_each_output_to_the_matching_edges() -> None:
    evens = FakeOutlet(stage="evens", when=(("route", "even"),))
    odds = FakeOutlet(stage="odds", when=(("route", "odd"),))
    every = FakeOutlet(stage="all")
    r = Router([evens, odds, every])  # type: ignore[list-item]
    assert r.keyed  # outputs are looked at one by one
    r.route(1, [{"route": "even", "n": 1}])
    r.route(2, [{"route": "odd", "n": 2}])
    r.commit("t")
    assert [i[1] for i in evens.items] == [[1]] and [i[1] for i in odds.items] == [[2]]
    assert [i[1] for i in every.items] == [[1, 2]]
    # an output no conditional edge takes, where every edge is conditional, is an error
    r2 = Router([FakeOutlet(stage="evens", when=(("route", "even"),))])  # type: ignore[list-item]
    with pytest.raises(KeyError, match="matches the when: of no edge"):
        r2.route(3, [{"route": "none"}])
    with pytest.raises(KeyError):
        r2.route(4, ["not a dict"])

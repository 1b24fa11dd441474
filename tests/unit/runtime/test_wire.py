"""sedamp.runtime.wire: every message round-trips; anything else is a WireError, never a crash."""

from __future__ import annotations

import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sedamp.errors import WireError
from sedamp.runtime import wire

events = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(st.lists(events, min_size=1, max_size=20))
def test_events_round_trip_through_put_and_batch(evs: list) -> None:
    body, ends = wire.pack_events(evs)
    msg = wire.parse(wire.put(3, 0, list(range(len(evs))), ends, body))
    assert msg.kind == wire.PUT and msg.fields[0] == 3
    assert wire.unpack_events(msg.bodies, len(evs)) == evs
    # a queue may split a body at any event boundary and send the pieces as one batch
    k = len(evs) // 2
    if k:
        pieces = [body[: ends[k - 1]], body[ends[k - 1] :]]
        b = wire.parse(wire.batch(7, list(range(len(evs))), [k, len(evs) - k], pieces))
        assert wire.unpack_events(b.bodies, len(evs)) == evs


def test_put_and_batch_carry_whether_they_may_hold_a_traced_event() -> None:
    body, ends = wire.pack_events(["x", "y"])
    assert wire.parse(wire.put(0, 0, [1, 2], ends, body)).fields[5] == 0
    assert wire.parse(wire.put(0, 0, [1, 2], ends, body, traced=True)).fields[5] == 1
    assert wire.parse(wire.batch(3, [1, 2], [2], [body], traced=True)).fields[4] == 1
    assert wire.parse(wire.batch(3, [1, 2], [2], [body])).fields[4] == 0
    for traced in (2, -1, "yes", None, True, 1.0):  # only the ints 0 or 1
        with pytest.raises(WireError):
            wire.parse([msgpack.packb([wire.VERSION, wire.PUT, 0, 0, [1, 2], ends, 0.0, traced, []]), body])


def test_every_kind_round_trips() -> None:
    cases = [
        wire.hello(wire.WORKER, 2, 0),
        wire.get(16),
        wire.get(16, [3, 4]),
        wire.ack(5),
        wire.credit(64, 9, 1 << 20),
        wire.simple(wire.EOS),
        wire.simple(wire.BYE),
        wire.simple(wire.END),
        wire.simple(wire.ERR, "why", -1),
        wire.simple(wire.REGISTER, wire.QUEUE, "stage", 0, 123, "tcp://127.0.0.1:5555"),
        wire.simple(wire.STATS, {"in": 1}),
        wire.simple(wire.DONE, {"in": 1}),
        wire.simple(wire.FATAL, {"message": "x"}),
        wire.simple(wire.CLOSE),
        wire.simple(wire.STOP, 0),
        wire.simple(wire.GONE, "w:a:0:1", "was killed by SIGKILL", 3, 0),
    ]
    for frames in cases:
        m = wire.parse(frames)
        assert m.kind in wire.KIND_NAMES


@given(st.lists(st.binary(max_size=64), min_size=0, max_size=4))
@settings(max_examples=500)
def test_garbage_is_refused_never_raised_otherwise(frames: list[bytes]) -> None:
    try:
        wire.parse(frames)
    except WireError:
        pass


@given(
    st.lists(
        st.one_of(st.integers(-(2**63), 2**63), st.text(), st.none(), st.lists(st.integers(-9, 2**40)), st.binary()),
        max_size=7,
    )
)
@settings(max_examples=500)
def test_well_formed_msgpack_with_wrong_shapes_is_refused(fields: list) -> None:
    for kind in list(wire.KIND_NAMES) + [99, -1]:
        header = msgpack.packb([wire.VERSION, kind, *fields])
        for bodies in ([], [b"\x01"], [b"\x01", b"\x02"]):
            try:
                wire.parse([header, *bodies])
            except WireError:
                pass


def test_specific_refusals() -> None:
    body, ends = wire.pack_events([1, 2, 3])
    with pytest.raises(WireError, match="version"):
        wire.parse([msgpack.packb([99, wire.GET, 1])])
    with pytest.raises(WireError, match="unknown message kind"):
        wire.parse([msgpack.packb([wire.VERSION, 77])])
    with pytest.raises(WireError, match="malformed"):
        wire.parse(wire.put(0, 0, [1, 2, 3], [ends[0], ends[0], ends[2]], body))  # not increasing
    with pytest.raises(WireError, match="malformed"):
        wire.parse(wire.put(0, 0, [1, 2, 3], ends, body + b"x"))  # ends disagree with body
    with pytest.raises(WireError, match="malformed"):
        wire.parse(wire.put(0, 0, [1, 2, 3], [1.0, 2.0, 3.0], body))  # type: ignore[list-item]
    with pytest.raises(WireError, match="malformed"):
        wire.parse(wire.get(0))
    for acks in ([1.0], ["1"], 3, [True]):  # a GET acknowledges leases by their int ids
        with pytest.raises(WireError, match="malformed"):
            wire.parse([wire.header(wire.GET, 4, acks)])
    with pytest.raises(WireError, match="body frames"):
        wire.parse([wire.header(wire.PUT, 0, 0, [1], [1], 0.0, 0, [])])
    with pytest.raises(WireError, match="exceeds"):
        wire.parse([b"\x00" * (wire.MAX_FRAME_BYTES + 1)])
    with pytest.raises(WireError, match="not MessagePack"):
        wire.parse([b"\xc1"])
    # a header declaring a huge array but carrying nothing
    with pytest.raises(WireError):
        wire.parse([b"\xdd\xff\xff\xff\xff"])


def test_unpack_refuses_truncated_and_miscounted_bodies() -> None:
    body, _ = wire.pack_events(["a", "bb", {"c": 1}])
    with pytest.raises(WireError, match="ends inside|holds 2 events"):
        wire.unpack_events([body[:-1]], 3)
    with pytest.raises(WireError, match="holds 3 events, header says 2"):
        wire.unpack_events([body], 2)
    assert wire.unpack_events([body], 3) == ["a", "bb", {"c": 1}]


def test_pack_event_names_the_python_type() -> None:
    with pytest.raises(WireError, match="builtins.object"):
        wire.pack_event({"ok": 1, "bad": [1, object()]})
    with pytest.raises(WireError, match="builtins.set"):
        wire.pack_event({1, 2})
    with pytest.raises(WireError, match="builtins.int"):
        wire.pack_event(2**70)
    assert wire.pack_all([1, object()]) is None
    assert wire.pack_all([1, "x"]) == [wire.pack_event(1), wire.pack_event("x")]


def test_int_keys_and_bytes_survive() -> None:
    body, _ = wire.pack_events([{1: b"\x00\xff", "k": (1, 2)}])
    assert wire.unpack_events([body], 1) == [{1: b"\x00\xff", "k": [1, 2]}]


def test_oversized_events_are_refused_at_packing() -> None:
    big = "x" * (wire.MAX_EVENT_BYTES + 1)  # a string travels inside the packed event
    with pytest.raises(WireError, match="exceeds the limit"):
        wire.pack_event(big)
    assert wire.pack_all([b"ok", big]) is None


def _peak_bytes(f: Any) -> int:
    """The most memory Python allocated while `f` ran (tracemalloc), beyond what it held."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        f()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_a_batch_is_not_packed_whole_before_its_sizes_are_checked() -> None:
    mib = 2**20
    batch = [{"n": i, "blob": "x" * (8 * mib)} for i in range(6)]  # each over the limit (strings stay inline)
    peak = _peak_bytes(lambda: wire.pack_all(batch, limit=mib))
    # packing the first takes its copy and, at most, a new packer buffer of twice its
    # size (3 x 8 MiB); packing all six before looking at their sizes took 6 x 8 MiB
    assert peak < 4 * 8 * mib


def test_an_estimated_event_over_the_limit_is_refused_before_it_is_packed() -> None:
    mib = 2**20
    event = {"name": "x.bin", "data": "y" * (32 * mib)}

    def pack() -> None:
        with pytest.raises(WireError, match=r"at least 33,554,4\d\d bytes exceeds the limit of 1,048,576 bytes"):
            wire.pack_event(event, limit=mib, estimate=True)

    assert _peak_bytes(pack) < mib


@given(events)
def test_size_floor_is_a_lower_bound_of_the_packed_size(ev: Any) -> None:
    assert wire.size_floor(ev) <= len(msgpack.packb(ev, use_bin_type=True))


def test_a_batch_packs_as_its_events_one_by_one_whatever_comes_after_a_small_first() -> None:
    """pack_all packs a batch of small events at C speed and looks at the sizes after;
    a large event later in the batch (its bytes go out of band) or one over the limit
    must come out as packing each event alone gives, or refuse the batch."""
    big = b"z" * (wire.OOB_BYTES + 1)
    for batch in ([{"n": 1}, {"n": 2}], [{"n": 1}, big, {"n": 3}], [big, {"n": 2}], [{"n": 0}] * 3 + [{"b": big}]):
        got = wire.pack_all(batch)
        one_by_one = [wire.pack_event(e) for e in batch]
        assert got == one_by_one
        assert [getattr(p, "bufs", None) for p in got or []] == [getattr(p, "bufs", None) for p in one_by_one]
    assert wire.pack_all([{"n": 1}, {"s": "x" * 2000}], limit=1000) is None
    assert wire.pack_all([{"n": 1}, object()]) is None and wire.pack_all([object()]) is None
    assert wire.pack_all([]) == []

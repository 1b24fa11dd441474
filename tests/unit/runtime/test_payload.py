"""Large values beside events: arrays and byte strings as frames of their own."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from sedamp.errors import WireError
from sedamp.runtime import payload, wire
from sedamp.runtime.flow import Chunk, QueueCore, take_chunks
from sedamp.runtime.payload import OOB_BYTES, Packed

np = pytest.importorskip("numpy")


def through_the_wire(events: list[Any]) -> list[Any]:
    """Pack events as an outlet does, parse the PUT as a queue does, decode as a worker."""
    packed = [wire.pack_event(e) for e in events]
    body, ends = wire.join_packed(packed)
    frames = wire.put(
        0, 0, list(range(len(events))), ends, body, 0.0, payload.nbufs_of(packed), payload.all_bufs(packed)
    )
    frames = [bytes(memoryview(f)) if i else f for i, f in enumerate(frames)]  # as received: separate memory
    msg = wire.parse(frames)
    return wire.unpack_events(msg.bodies, len(events), msg.fields[-1], msg.bufs)


@pytest.mark.parametrize(
    "a",
    [
        np.arange(300_000, dtype=np.float32).reshape(300, 1000),
        np.zeros((2, 3, 4), dtype=np.uint8),  # small: inline
        np.array(7.5),  # 0-d
        np.zeros((0, 5), dtype=np.int64),  # empty
        np.arange(200_000, dtype=np.int16).reshape(400, 500).T,  # strided: sent as C order
        np.asfortranarray(np.ones((300, 300))),
        np.array([(1, 2.0)] * 10_000, dtype=[("a", "<i4"), ("b", "<f8")]),  # structured
        np.arange(100_000, dtype=">u4"),  # big-endian
    ],
)
def test_arrays_arrive_equal_and_read_only(a: Any) -> None:
    event = {"name": "x", "pixels": a, "n": 1}
    [back] = through_the_wire([event])
    assert back["name"] == "x" and back["n"] == 1
    got = back["pixels"]
    assert type(got) is np.ndarray and got.dtype == a.dtype and got.shape == a.shape
    assert np.array_equal(got, a)
    assert not got.flags.writeable  # a received array is read-only, as in Ray's object store


def test_a_large_array_is_read_in_place_from_its_frame() -> None:
    a = np.arange(1_000_000, dtype=np.float64)
    packed = wire.pack_event({"a": a})
    assert type(packed) is Packed and len(packed) < 100  # the packed event holds only a header
    [buf] = packed.bufs
    assert np.shares_memory(np.frombuffer(buf, dtype=np.uint8), a)  # sent from the array's memory
    frame = bytearray(memoryview(buf))  # what the receiver's frame holds
    back = wire.unpack_events([bytes(packed)], 1, [1], [frame])[0]["a"]
    assert np.shares_memory(back, np.frombuffer(frame, dtype=np.uint8))  # no copy on receipt


def test_large_byte_strings_travel_as_frames_and_keep_their_type() -> None:
    big = b"x" * (OOB_BYTES + 1)
    events = [{"raw": big, "arr": bytearray(big), "view": memoryview(big)}, b"small", big]
    packed = [wire.pack_event(e) for e in events]
    assert [len(payload.bufs_of(p)) for p in packed] == [3, 0, 1]
    assert all(len(p) < 100 for p in packed)
    back = through_the_wire(events)
    # every byte string arrives as bytes, large or small (as MessagePack gives them)
    assert back == [{"raw": big, "arr": big, "view": big}, b"small", big]


def test_numpy_scalars_travel_as_numbers() -> None:
    assert through_the_wire([{"n": np.int64(3), "x": np.float32(0.5)}]) == [{"n": 3, "x": 0.5}]


def test_object_arrays_are_refused_with_a_clear_error() -> None:
    with pytest.raises(WireError, match="array of Python objects cannot be sent"):
        wire.pack_event({"o": np.array([{"a": 1}, None], dtype=object)})
    assert wire.pack_all([1, np.array([object()])]) is None


def _ext(code: int, fields: list[Any]) -> bytes:
    return msgpack.packb(msgpack.ExtType(code, msgpack.packb(fields)), use_bin_type=True)


@pytest.mark.parametrize(
    ("body", "bufs", "nbufs", "match"),
    [
        (_ext(payload.EXT_ARRAY, ["|O", [2], 0]), [b"\x00" * 16], [1], "holds Python objects"),
        (_ext(payload.EXT_ARRAY, [[["a", "|O"]], [1], 0]), [b"\x00" * 8], [1], "holds Python objects"),
        (_ext(payload.EXT_ARRAY, [[["a"]], [1], 0]), [b"\x00" * 8], [1], "unknown dtype"),
        (_ext(payload.EXT_ARRAY, [{"a": 1}, [1], 0]), [b"\x00" * 8], [1], "malformed array header"),
        (_ext(payload.EXT_ARRAY, ["<f8", [3], 0]), [b"\x00" * 16], [1], "needs 24 bytes, got 16"),
        (_ext(payload.EXT_ARRAY, ["<f8", [-1], 0]), [b""], [1], "malformed array header"),
        (_ext(payload.EXT_ARRAY, ["nonsense", [1], 0]), [b"\x00"], [1], "unknown dtype"),
        (_ext(payload.EXT_ARRAY, ["<f8", [1], 1]), [b"\x00" * 8], [1], "not among the 1 sent"),
        (_ext(payload.EXT_BYTES, [0]), [], [], "not among the 0 sent"),
        (_ext(payload.EXT_SMALL_ARRAY, ["|O", [1], b"\x00" * 8]), [], [], "holds Python objects"),
        (_ext(payload.EXT_BYTES, "x"), [], [], "malformed buffer reference"),
    ],
)
def test_hostile_extensions_are_refused(body: bytes, bufs: list[bytes], nbufs: list[int], match: str) -> None:
    with pytest.raises(WireError, match=match):
        wire.unpack_events([body], 1, nbufs, bufs)


def test_an_event_cannot_take_the_buffer_of_another() -> None:
    first = _ext(payload.EXT_BYTES, [0])
    second = _ext(payload.EXT_BYTES, [1])  # the second event has one buffer: index 1 is not its own
    with pytest.raises(WireError, match="not among the 1 sent"):
        wire.unpack_events([first + second], 2, [1, 1], [b"a", b"b"])
    assert wire.unpack_events([first + _ext(payload.EXT_BYTES, [0])], 2, [1, 1], [b"a", b"b"]) == [b"a", b"b"]


def test_a_put_with_buffers_must_carry_them_all() -> None:
    packed = wire.pack_event(np.zeros(OOB_BYTES))
    frames = wire.put(0, 0, ["e"], [len(packed)], bytes(packed), 0.0, [1], packed.bufs)
    assert len(wire.parse(frames).bufs) == 1
    with pytest.raises(WireError, match="body frames for 1 buffers"):
        wire.parse(frames[:-1])
    with pytest.raises(WireError, match="malformed"):
        wire.parse([wire.header(wire.PUT, 0, 0, ["e"], [len(packed)], 0.0, 0, [1, 0]), bytes(packed), b""])


def test_the_fused_crossing_hands_on_a_read_only_view_without_a_copy() -> None:
    a = np.arange(OOB_BYTES, dtype=np.float64)
    [crossed] = wire.roundtrip([{"a": a, "t": (1, 2)}])
    assert crossed["t"] == [1, 2] and np.shares_memory(crossed["a"], a) and not crossed["a"].flags.writeable


def test_an_event_over_its_queues_bytes_is_refused_at_packing() -> None:
    a = np.zeros(1_000_000, dtype=np.uint8)
    with pytest.raises(WireError, match="exceeds its queue's max_bytes of 999,999"):
        wire.pack_event(a, max_bytes=999_999)
    assert wire.pack_all([a], max_bytes=999_999) is None
    assert wire.pack_all([a], max_bytes=1_000_100) is not None


# --- the queue: buffers follow their events, and bytes are bounded ------------------------


def _chunk(sizes: list[int], with_bufs: bool = True) -> Chunk:
    """A chunk of one-byte packed events, each with one buffer of the given size."""
    ends = list(range(1, len(sizes) + 1))
    bufs = [bytes(s) for s in sizes] if with_bufs else []
    return Chunk(
        list(range(len(sizes))),
        ends,
        memoryview(bytes(len(sizes))),
        nbufs=[1] * len(sizes) if with_bufs else [],
        bufs=bufs,
    )


def test_split_and_singles_keep_each_events_buffers() -> None:
    c = _chunk([10, 20, 30, 40])
    assert c.nbytes == 4 + 100
    head, tail = c.split(1)
    assert [len(b) for b in head.bufs] == [10] and head.nbytes == 11
    assert [len(b) for b in tail.bufs] == [20, 30, 40] and tail.nbytes == 93 and tail.nbufs == [1, 1, 1]
    assert [s.nbytes for s in c.singles()] == [11, 21, 31, 41]
    assert [[len(b) for b in s.bufs] for s in c.singles()] == [[10], [20], [30], [40]]


def test_a_lease_is_cut_at_its_byte_share_but_takes_at_least_one_event() -> None:
    from collections import deque

    buf = deque([_chunk([100, 100, 100, 100])])
    chunks, n, nbytes = take_chunks(buf, 10, max_bytes=250)
    assert n == 2 and nbytes == 202 and buf[0].n == 2
    chunks, n, nbytes = take_chunks(deque([_chunk([1000])]), 10, max_bytes=10)
    assert n == 1 and nbytes == 1001  # one event larger than the share still goes


def _put(q: QueueCore, rid: bytes, seq: int, sizes: list[int]) -> list[Any]:
    """A PUT of events, each an array of the given number of bytes."""
    packed = [wire.pack_event(np.zeros(s, dtype=np.uint8)) for s in sizes]
    body, ends = wire.join_packed(packed)
    frames = wire.put(
        seq,
        0,
        list(range(seq * 100, seq * 100 + len(sizes))),
        ends,
        body,
        0.0,
        payload.nbufs_of(packed),
        payload.all_bufs(packed),
    )
    return q.handle(rid, wire.parse(frames))


def _credit(out: list[Any], rid: bytes) -> tuple[int, int]:
    got = [wire.parse(f) for r, f in out if r == rid and wire.parse(f).kind == wire.CREDIT]
    return sum(m.fields[0] for m in got), sum(m.fields[2] for m in got)


def test_credit_is_granted_in_bytes_and_the_bound_holds() -> None:
    mb = OOB_BYTES * 4
    q = QueueCore(capacity=100, max_bytes=4 * mb, producers=1)
    events, nbytes = _credit(q.handle(b"p", wire.parse(wire.hello(wire.PRODUCER, -1, 50))), b"p")
    assert events == 50 and nbytes == 2 * mb  # half the bytes, as half the events, for one producer
    out = _put(q, b"p", 0, [mb - 100])
    q.check_invariant()
    assert q.store.nbytes > mb - 100
    # a PUT of several events must fit the bytes held
    refused = _put(q, b"p", 1, [mb, mb])
    assert any(wire.parse(f).kind == wire.ERR for _, f in refused)
    q.check_invariant()
    del out


def test_a_lone_event_larger_than_the_window_overdraws_instead_of_waiting_forever() -> None:
    mb = OOB_BYTES * 4
    q = QueueCore(capacity=100, max_bytes=4 * mb, producers=1)
    q.handle(b"p", wire.parse(wire.hello(wire.PRODUCER, -1, 50)))  # a window of 2 mb
    q.handle(b"w", wire.parse(wire.hello(wire.WORKER, 0, 0)))
    _put(q, b"p", 0, [3 * mb // 2])
    _put(q, b"p", 1, [3 * mb // 2])  # the queue is nearly full: 1 mb of bytes held, none free
    assert q.credits.producers[b"p"].outstanding_bytes <= mb and q.free_bytes <= 100
    out = _put(q, b"p", 2, [3 * mb])  # alone, larger than what it holds and than its window
    assert not any(wire.parse(f).kind == wire.ERR for _, f in out)
    q.check_invariant()
    assert q.max_bytes < q.store.nbytes <= q.max_bytes + 3 * mb  # beyond max_bytes by less than the one event
    assert q.credits.producers[b"p"].outstanding_bytes < 0  # overdrawn: no bytes until room frees
    assert _credit(out, b"p")[1] == 0
    [(rid, batch)] = q.handle(b"w", wire.parse(wire.get(10)))
    msg = wire.parse(batch)
    assert rid == b"w" and len(msg.bufs) == 1 and len(msg.bufs[0]) == 3 * mb // 2  # one per lease: its byte share
    for size in (3 * mb // 2, 3 * mb):
        q.handle(b"w", wire.parse(wire.ack(msg.fields[0])))
        [(rid, batch)] = q.handle(b"w", wire.parse(wire.get(10)))
        msg = wire.parse(batch)
        assert len(msg.bufs) == 1 and len(msg.bufs[0]) == size
    out = q.handle(b"w", wire.parse(wire.ack(msg.fields[0])))
    q.check_invariant()
    assert _credit(out, b"p")[1] > 0  # the overdraft is paid back; bytes flow again


def test_a_small_limit_still_refuses_events_below_the_buffer_threshold() -> None:
    # a stage's max_event_bytes may be far below OOB_BYTES: packing in bulk must keep it
    assert wire.pack_all([{"blob": b"\0" * 5000}], limit=4096) is None
    assert wire.pack_all([{"blob": b"\0" * 4000}], limit=4096) is not None


def test_a_48_mb_array_crosses_a_real_socket_without_a_copy_in_python(tmp_path: Any) -> None:
    """Over real ZeroMQ sockets (ipc://), as an outlet sends and a worker receives: the
    array is sent from its own memory and read in place from the received frame. The
    memory Python allocates meanwhile (NumPy's included) stays far below the array's
    size: no copy of its bytes but the kernel's, and ZeroMQ's one receive buffer."""
    import tracemalloc

    import zmq

    from sedamp.runtime import sockets

    a = np.arange(6_000_000, dtype=np.float64)  # 48 MB
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    try:
        pull.bind(f"ipc://{tmp_path}/s")
        push.connect(f"ipc://{tmp_path}/s")
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        packed = wire.pack_event({"n": 1, "a": a})
        body, ends = wire.join_packed([packed])
        push.send_multipart(wire.put(0, 0, [1], ends, body, 0.0, payload.nbufs_of([packed]), packed.bufs), copy=False)
        assert pull.poll(10_000)
        [frames] = sockets.drain(pull)
        msg = wire.parse(frames)
        [event] = wire.unpack_events(msg.bodies, 1, msg.fields[-1], msg.bufs)
        peak = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
        got = event["a"]
        assert np.array_equal(got, a) and not got.flags.writeable
        assert np.shares_memory(got, np.frombuffer(msg.bufs[0], dtype=np.uint8))  # read in place
        assert peak < 4_000_000, peak  # the unpacker's own buffer (1 MiB), not 48 MB: no copy
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()

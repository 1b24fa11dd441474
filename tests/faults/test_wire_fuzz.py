"""Garbage on the wire, thrown at a live queue and a live worker (real processes, real
sockets): every bad frame is refused and counted, nothing crashes, and the good
traffic sent around the garbage is delivered intact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sedamp.errors import WireError
from sedamp.runtime import wire
from tests.conftest import wait_until
from tests.roles.test_queue import Harness, recv
from tests.roles.test_worker import LiveWorker, recv_ack
from tests.roles.test_worker import recv as recv_from

KINDS = sorted(wire.KIND_NAMES)
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=True), st.text(max_size=8),
    st.binary(max_size=8),
)  # fmt: skip
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


def _header(version: int, kind: Any, fields: list[Any]) -> bytes:
    return msgpack.packb([version, kind, *fields], use_bin_type=True)


# Frames a peer might send by mistake or malice.
_garbage_frames = st.one_of(
    st.binary(min_size=1, max_size=64).map(lambda b: [b]),  # noise
    # a real message of every kind, cut short
    st.tuples(st.sampled_from(KINDS), st.integers(1, 12)).map(
        lambda t: [_header(wire.VERSION, t[0], [0, 0, [1], [1], 0.0, 0])[: t[1]]]
    ),
    # right version, known or unknown kind, fields of any type and number
    st.tuples(st.sampled_from([*KINDS, 0, 99, -1, "PUT", 2**40]), st.lists(_values, max_size=6)).map(
        lambda t: [_header(wire.VERSION, t[0], t[1])]
    ),
    # a wrong protocol version
    st.integers(-5, 100).filter(lambda v: v != wire.VERSION).map(lambda v: [_header(v, wire.GET, [1])]),
    # huge declared lengths: a bin32 / array32 / map32 announcing ~4 GiB
    st.sampled_from([b"\xc6\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff"]).map(lambda b: [b]),
    # a PUT whose body does not match its header
    st.tuples(st.integers(1, 5), st.binary(max_size=16)).map(
        lambda t: [wire.header(wire.PUT, 0, 0, list(range(t[0])), list(range(1, t[0] + 1)), 0.0, 0, []), t[1]]
    ),
)


def _is_garbage(frames: list[bytes]) -> bool:
    try:
        wire.parse(frames)
    except WireError:
        return True
    return False


def test_garbage_at_a_live_queue(tmp_path: Path) -> None:
    q = Harness(tmp_path, capacity=64)
    prod = q.dealer("p")
    work = q.dealer("w")
    prod.send_multipart(wire.hello(wire.PRODUCER, -1, 8))
    assert recv(prod).kind == wire.CREDIT
    work.send_multipart(wire.hello(wire.WORKER, 0, 0))
    sent = {"garbage": 0, "seq": 0}

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(frames=_garbage_frames, event=_values)
    def one(frames: list[bytes], event: Any) -> None:
        assume(_is_garbage(frames))
        prod.send_multipart(frames)
        sent["garbage"] += 1
        reply = recv(prod)
        assert reply.kind == wire.ERR and isinstance(reply.fields[0], str)
        # the good traffic around it still flows, byte for byte
        body, ends = wire.pack_events([event])
        seq = sent["seq"]
        sent["seq"] += 1
        prod.send_multipart(wire.put(seq, 0, [seq], ends, body))
        assert recv(prod).kind == wire.CREDIT
        work.send_multipart(wire.get(1))
        batch = recv(work)
        assert batch.kind == wire.BATCH and batch.fields[1] == [seq]
        assert b"".join(batch.bodies) == body
        work.send_multipart(wire.ack(batch.fields[0]))

    try:
        one()
        assert sent["garbage"] > 0
        # (the last ACK has no reply: wait for a report that has it too)
        wait_until(
            lambda: (
                q.recv_ctl(wire.STATS)
                and q.stats.get("refused_frames") == sent["garbage"]
                and q.stats["acked"] == sent["seq"]
            ),
            10,
            "every refusal and every acknowledgement counted",
        )
        assert q.stats["arrived"] == q.stats["acked"] == sent["seq"]
        # an oversized frame is refused like the rest
        prod.send_multipart(
            [wire.header(wire.PUT, sent["seq"], 0, [0], [1], 0.0, 0, []), b"\x00" * (wire.MAX_PUT_BYTES + 1)]
        )
        assert recv(prod).kind == wire.ERR
        assert q.proc.is_alive()
    finally:
        prod.close(0)
        work.close(0)
        q.close()


def test_garbage_at_a_live_worker(tmp_path: Path) -> None:
    counts = {"garbage": 0, "lease": 0}
    with LiveWorker(tmp_path, "handler", "tests.integration.teststages:as_list", {}, batch=1) as w:
        up, down, ctl, proc = w.up, w.down, w.ctl, w.proc
        assert down is not None
        recv_from(ctl, wire.REGISTER)
        wid, _ = recv_from(up, wire.HELLO)
        recv_from(up, wire.GET)
        # the first good batch opens the downstream connection
        body, _ = wire.pack_events([{"n": -1}])
        up.send_multipart([wid, *wire.batch(0, [-1], [1], [body])])
        pid_, _ = recv_from(down, wire.HELLO)
        down.send_multipart([pid_, *wire.credit(1000, -1, 1 << 30)])
        _, first = recv_from(down, wire.PUT)
        down.send_multipart([pid_, *wire.credit(0, first.fields[0], 1 << 30)])  # taken: the worker may ACK
        assert recv_ack(up)[0] == 0  # alone, or with its next GET

        @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
        @given(frames=_garbage_frames, n=st.integers(0, 10**6))
        def one(frames: list[bytes], n: int) -> None:
            assume(_is_garbage(frames))
            up.send_multipart([wid, *frames])  # from "its queue"
            down.send_multipart([pid_, *frames])  # and from "the next queue"
            counts["garbage"] += 2
            counts["lease"] += 1
            lease = counts["lease"]
            body, _ = wire.pack_events([{"n": n}])
            up.send_multipart([wid, *wire.batch(lease, [lease], [1], [body])])
            _, put = recv_from(down, wire.PUT)
            assert put.fields[2] == [lease] and wire.unpack_events(put.bodies, 1) == [[n, n]]
            down.send_multipart([pid_, *wire.credit(1, put.fields[0], 1 << 30)])
            assert recv_ack(up)[0] == lease

        one()
        assert proc.is_alive()

        def errors() -> int:
            _, m = recv_from(ctl, wire.STATS)
            return int(m.fields[0]["protocol_errors"])

        wait_until(lambda: errors() >= counts["garbage"], 10, "every bad frame counted")

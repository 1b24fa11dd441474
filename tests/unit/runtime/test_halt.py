"""Ctrl-C in the pure pieces: a queue told HALT drops what waits in it and takes back
the batches its workers had not started; an outlet drops what waits for credit."""

from __future__ import annotations

from typing import Any

from sedamp.runtime import wire
from sedamp.runtime.flow import QueueCore, queue_stats
from sedamp.runtime.outlet import Outlet
from tests.unit.runtime.test_flow import W2, P, W, get, hello_producer, hello_worker, msgs, put


def returned(q: QueueCore, rid: bytes, leases: list[int]) -> list[tuple[bytes, list[Any]]]:
    return q.handle(rid, wire.parse(wire.returned(leases)))


def test_halt_drops_the_buffer_and_the_batches_not_started_and_the_queue_still_ends() -> None:
    q = QueueCore(100)
    hello_producer(q, P, 50)
    hello_worker(q, W)
    hello_worker(q, W2)
    put(q, P, 0, list(range(30)))
    (in_hand,) = get(q, W, 5)
    (not_started,) = get(q, W, 5)
    out = q.halt()
    # the 20 waiting are dropped (their room is free again) and every worker is told
    assert q.buffered == 0 and q.counters.discarded == 20 and q.free == 100 - 10 - q.credits.outstanding
    assert {rid for rid, frames in out if wire.parse(frames).kind == wire.HALT} == {W, W2}
    assert q.halt() == []  # once
    # the worker gives back the batch it had not started: dropped, not leased again
    returned(q, W, [not_started.fields[0]])
    assert q.counters.discarded == 25 and q.leased == 5 and q.buffered == 0
    assert get(q, W2, 10) == []  # nothing to hand out: W2 waits
    # what a producer sends now (the outputs of work in hand upstream) is leased as usual
    (after,) = [m for m in msgs(put(q, P, 1, [100]), W2) if m.kind == wire.BATCH]
    assert after.fields[1] == [100]
    q.handle(W, wire.parse(wire.ack(in_hand.fields[0])))
    q.handle(W2, wire.parse(wire.ack(after.fields[0])))
    q.close()
    assert q.ended and [m.kind for m in get(q, W2, 10)] == [wire.END]
    s = queue_stats(q)
    assert s["discarded"] == 25 and s["acked"] == 6 and s["arrived"] == 31
    q.check_invariant()


def test_a_return_names_only_its_own_leases_and_before_halt_puts_them_back() -> None:
    q = QueueCore(100)
    hello_producer(q, P, 50)
    hello_worker(q, W)
    hello_worker(q, W2)
    put(q, P, 0, ["a", "b", "c", "d"])
    (b,) = get(q, W, 2)
    returned(q, W2, [b.fields[0]])  # not W2's: ignored
    assert q.leased == 2
    returned(q, W, [b.fields[0], 999])
    assert q.leased == 0 and q.buffered == 4 and q.counters.discarded == 0
    (again,) = get(q, W2, 5)
    assert again.fields[1] == ["a", "b"]  # back at the head (W2's share: half of the four)
    q.check_invariant()


class _Sock:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send_multipart(self, frames: list[Any], *args: Any, **kwargs: Any) -> None:
        self.sent.append(frames)


class _Socks:
    def dealer(self, identity: str, endpoint: str) -> _Sock:
        return _Sock()


def test_an_outlet_drops_what_waits_for_credit() -> None:
    o = Outlet(_Socks(), "next", "ipc://x", "src", None, 1, 8)  # type: ignore[arg-type]
    packed = [wire.pack_event(i) for i in range(5)]
    o.add(0, [0, 1, 2, 3, 4], packed, None)
    o.add(0, [5], [wire.pack_event(5)], None)
    assert o.blocked  # no credit yet
    assert o.discard_backlog() == 6
    assert o.idle and not o.held

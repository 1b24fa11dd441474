"""sedamp.runtime.flow.QueueCore, driven directly: bound, credit, leases, end of stream."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sedamp.runtime import wire
from sedamp.runtime.flow import POISON_DEATHS, Chunk, QueueCore, strike

P, P2, W, W2 = b"p1", b"p2", b"w1", b"w2"


def msgs(out: list[tuple[bytes, list[Any]]], rid: bytes | None = None) -> list[wire.Message]:
    return [wire.parse([bytes(f) for f in frames]) for r, frames in out if rid is None or r == rid]


def credit_of(out: list[tuple[bytes, list[Any]]], rid: bytes) -> int:
    return sum(m.fields[0] for m in msgs(out, rid) if m.kind == wire.CREDIT)


def put(q: QueueCore, rid: bytes, seq: int, evs: list[Any], partition: int = 0) -> list[tuple[bytes, list[Any]]]:
    body, ends = wire.pack_events(evs)
    return q.handle(rid, wire.parse(wire.put(seq, partition, evs, ends, body)))


def hello_producer(q: QueueCore, rid: bytes, want: int) -> int:
    return credit_of(q.handle(rid, wire.parse(wire.hello(wire.PRODUCER, -1, want))), rid)


def hello_worker(q: QueueCore, rid: bytes, index: int = 0) -> None:
    assert q.handle(rid, wire.parse(wire.hello(wire.WORKER, index, 0))) == []


def get(q: QueueCore, rid: bytes, n: int) -> list[wire.Message]:
    return msgs(q.handle(rid, wire.parse(wire.get(n))), rid)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        QueueCore(0)


def test_credit_is_capped_by_capacity_and_producers() -> None:
    q = QueueCore(100)
    assert hello_producer(q, P, 1000) == 50  # one producer: at most half the room
    assert hello_producer(q, P2, 1000) == 25  # two: a quarter each (the first keeps its 50)
    q.check_invariant()
    assert q.free == 25


def test_put_beyond_credit_is_refused_and_counted() -> None:
    q = QueueCore(10)
    assert hello_producer(q, P, 4) == 4
    out = put(q, P, 0, [1, 2, 3, 4, 5])
    assert [m.kind for m in msgs(out)] == [wire.ERR]
    assert q.buffered == 0 and q.counters.refused_frames == 1
    out = put(q, P, 1, [1, 2, 3, 4])
    assert q.buffered == 4
    # every PUT is answered, with the seq it took
    assert [(m.kind, m.fields[1]) for m in msgs(out, P)] == [(wire.CREDIT, 1)]
    q.check_invariant()


def test_put_before_hello_and_unknown_ack_are_refused() -> None:
    q = QueueCore(10)
    assert msgs(put(q, P, 0, [1]))[0].kind == wire.ERR
    assert msgs(q.handle(W, wire.parse(wire.ack(3))))[0].kind == wire.ERR
    assert msgs(q.handle(W, wire.parse(wire.get(3))))[0].kind == wire.ERR
    assert q.counters.refused_frames == 3


def test_batches_are_split_and_merged_at_event_boundaries() -> None:
    q = QueueCore(100)
    hello_producer(q, P, 50)
    hello_worker(q, W)
    put(q, P, 0, ["a", "b", "c"])
    put(q, P, 1, ["d", "e"])
    (b1,) = get(q, W, 2)
    assert b1.kind == wire.BATCH and b1.fields[1] == ["a", "b"]
    assert wire.unpack_events(b1.bodies, 2) == ["a", "b"]
    (b2,) = get(q, W, 10)
    assert b2.fields[1] == ["c", "d", "e"] and b2.fields[2] == [1, 2]
    assert wire.unpack_events(b2.bodies, 3) == ["c", "d", "e"]
    assert q.buffered == 0 and q.leased == 5
    q.check_invariant()


def test_ack_frees_room_and_grants_credit() -> None:
    q = QueueCore(8)
    assert hello_producer(q, P, 8) == 4
    hello_worker(q, W)
    assert credit_of(put(q, P, 0, [1, 2, 3, 4]), P) == 4  # room for the next window
    assert credit_of(put(q, P, 1, [5, 6, 7, 8]), P) == 0  # full
    assert q.free == 0 and q.buffered == 8
    (b,) = get(q, W, 4)
    assert q.free == 0  # leased events keep their room
    out = q.handle(W, wire.parse(wire.ack(b.fields[0])))
    assert credit_of(out, P) == 4
    assert q.counters.acked == 4
    q.check_invariant()


def test_worker_waiting_is_served_when_work_arrives_oldest_first() -> None:
    q = QueueCore(100)
    hello_producer(q, P, 50)
    hello_worker(q, W)
    hello_worker(q, W2)
    assert get(q, W, 5) == []
    assert get(q, W2, 5) == []
    out = put(q, P, 0, list(range(7)))
    batches = [(r, wire.parse([bytes(f) for f in fr])) for r, fr in out if r in (W, W2)]
    assert [(r, m.fields[1]) for r, m in batches] == [(W, [0, 1, 2, 3, 4]), (W2, [5, 6])]


def test_gone_worker_leases_return_to_the_head() -> None:
    q = QueueCore(100)
    hello_producer(q, P, 50)
    hello_worker(q, W)
    hello_worker(q, W2)
    put(q, P, 0, [1, 2, 3, 4])
    get(q, W, 2)
    q.worker_gone(W)
    assert q.leased == 0 and q.buffered == 4 and q.counters.redelivered == 2
    (b,) = get(q, W2, 10)
    assert b.fields[1] == [1, 2, 3, 4]
    q.check_invariant()


def test_end_only_after_close_empty_and_no_lease() -> None:
    q = QueueCore(10)
    hello_producer(q, P, 10)
    hello_worker(q, W)
    put(q, P, 0, [1])
    (b,) = get(q, W, 1)
    assert get(q, W, 1) == []  # waiting
    assert q.close() == []  # a lease is out: no END yet
    out = q.handle(W, wire.parse(wire.ack(b.fields[0])))
    assert [m.kind for m in msgs(out, W)] == [wire.END]
    assert [m.kind for m in get(q, W, 1)] == [wire.END]  # a late GET is answered too
    assert q.ended
    assert msgs(put(q, P, 1, [2]))[0].kind == wire.ERR  # nothing enters after CLOSE


def test_key_partitions_serve_only_their_worker() -> None:
    q = QueueCore(100, partitions=2)
    hello_producer(q, P, 50)
    hello_worker(q, W, 0)
    hello_worker(q, W2, 1)
    put(q, P, 0, ["x"], partition=1)
    assert get(q, W, 5) == []
    (b,) = get(q, W2, 5)
    assert b.fields[1] == ["x"]
    out = q.handle(b"w3", wire.parse(wire.hello(wire.WORKER, 5, 0)))
    assert msgs(out)[0].kind == wire.ERR
    assert msgs(put(q, P, 1, ["y"], partition=2))[0].kind == wire.ERR


def test_eos_returns_unused_credit() -> None:
    q = QueueCore(100)
    assert hello_producer(q, P, 40) == 40
    q.handle(P, wire.parse(wire.simple(wire.EOS)))
    assert q.outstanding == 0 and q.free == 100


ops = st.lists(
    st.tuples(st.sampled_from(["put", "get", "ack", "gone", "eos"]), st.integers(0, 1), st.integers(1, 9)),
    max_size=120,
)


@given(st.integers(1, 24), ops)
@settings(max_examples=300, deadline=None)
def test_random_interleavings_keep_the_bound_and_lose_nothing(capacity: int, script: list) -> None:
    """Whatever producers and workers do, the bound holds, and every event accepted is,
    at the end, acknowledged once (or redelivered after its worker went away)."""
    q = QueueCore(capacity)
    producers = [b"p0", b"p1"]
    credit = {p: hello_producer(q, p, 2 * 9) for p in producers}
    workers = [b"w0", b"w1"]
    for w in workers:
        hello_worker(q, w)
    leases: dict[bytes, list[tuple[int, list[int]]]] = {w: [] for w in workers}
    next_event = 0
    seq = 0
    accepted: list[int] = []
    acked: list[int] = []

    def absorb(out: list[tuple[bytes, list[Any]]]) -> None:
        for rid, frames in out:
            m = wire.parse([bytes(f) for f in frames])
            if m.kind == wire.CREDIT:
                credit[rid] += m.fields[0]
            elif m.kind == wire.BATCH:
                leases[rid].append((m.fields[0], m.fields[1]))

    for op, who, n in script:
        if op == "put":
            p = producers[who]
            if p in q.producers and credit[p] > 0:
                k = min(n, credit[p])
                evs = list(range(next_event, next_event + k))
                next_event += k
                credit[p] -= k
                absorb(put(q, p, seq, evs))
                seq += 1
                accepted.extend(evs)
        elif op == "get":
            w = workers[who]
            if w in q.workers:
                absorb(q.handle(w, wire.parse(wire.get(n))))
        elif op == "ack":
            w = workers[who]
            if leases[w]:
                lease, ids = leases[w].pop(0)
                absorb(q.handle(w, wire.parse(wire.ack(lease))))
                acked.extend(ids)
        elif op == "gone":
            w = workers[who]
            absorb(q.worker_gone(w))
            leases[w].clear()
            hello_worker(q, w)  # a replacement with the same name
        elif op == "eos":
            p = producers[who]
            if p in q.producers:
                absorb(q.handle(p, wire.parse(wire.simple(wire.EOS))))
                credit[p] = 0
        q.check_invariant()
    # drain: close, then one worker takes and acks everything
    absorb(q.close())
    for w in workers:
        for lease, ids in leases[w]:
            absorb(q.handle(w, wire.parse(wire.ack(lease))))
            acked.extend(ids)
        leases[w].clear()
    while not q.ended:
        absorb(q.handle(b"w0", wire.parse(wire.get(9))))
        for lease, ids in leases[b"w0"]:
            absorb(q.handle(b"w0", wire.parse(wire.ack(lease))))
            acked.extend(ids)
        leases[b"w0"].clear()
    assert sorted(acked) == sorted(accepted)
    assert q.counters.acked == len(accepted)


def test_a_producer_hello_is_always_answered_even_when_full() -> None:
    q = QueueCore(2)
    assert hello_producer(q, P, 2) == 1
    out = q.handle(P2, wire.parse(wire.hello(wire.PRODUCER, -1, 2)))
    assert [(r, m.kind, m.fields[0]) for r, m in ((r, wire.parse(f)) for r, f in out)] == [(P2, wire.CREDIT, 1)]
    q3 = QueueCore(1)
    hello_producer(q3, P, 1)
    out = q3.handle(P2, wire.parse(wire.hello(wire.PRODUCER, -1, 1)))
    assert [(r, wire.parse(f).kind, wire.parse(f).fields[0]) for r, f in out] == [(P2, wire.CREDIT, 0)]


def test_gone_producer_gives_its_credit_back() -> None:
    q = QueueCore(100)
    assert hello_producer(q, P, 40) == 40
    q.producer_gone(P)
    assert q.outstanding == 0 and q.free == 100


def lease_of(m: wire.Message) -> int:
    return int(m.fields[0])


def test_a_dead_worker_requeues_in_order_with_the_culprit_alone() -> None:
    q = QueueCore(100)
    hello_producer(q, P, 50)
    put(q, P, 0, list(range(8)))
    hello_worker(q, W)
    hello_worker(q, W2)
    [held] = get(q, W, 5)
    get(q, W, 5)
    q.worker_gone(W, "was killed by SIGKILL", (lease_of(held), 2))
    got = [get(q, W2, 10)[0].fields[1] for _ in range(3)]
    assert got == [[0, 1], [2], [3, 4, 5, 6, 7]]
    q.check_invariant()


def test_an_event_that_kills_two_workers_is_poison_and_bystanders_are_not() -> None:
    q = QueueCore(100)
    hello_producer(q, P, 50)
    put(q, P, 0, ["ok", "bad", "ok2"])
    for w in (W, W2, b"w3"):
        hello_worker(q, w)
    [b1] = get(q, W, 10)
    q.worker_gone(W, "exited with code 1", (lease_of(b1), 1))  # "bad" in the handler
    [first] = get(q, W2, 10)
    assert first.fields[1] == ["ok"]  # the bystander before it, not blamed
    [b2] = get(q, b"w3", 10)
    assert b2.fields[1] == ["bad"]  # the suspect, alone
    q.worker_gone(b"w3", "was killed by SIGSEGV", (lease_of(b2), 0))
    q.check_invariant()
    assert q.counters.poisoned == 1
    [(eid, packed, reason)] = q.poisoned
    assert eid == "bad" and wire.unpack_events([packed], 1) == ["bad"] and reason == "was killed by SIGSEGV"
    assert q.stats()["poisoned"] == 1
    # "ok" died with W2? no: W2 still holds it; a worker dying outside any handler blames nobody
    q.worker_gone(W2, "was killed by SIGKILL", (-1, -1))
    assert q.counters.poisoned == 1 and q.buffered == 2  # "ok" and "ok2" are back
    q.check_invariant()


def test_unknown_position_puts_every_event_of_the_lease_alone() -> None:
    q = QueueCore(100)
    hello_producer(q, P, 50)
    put(q, P, 0, [10, 11, 12])
    hello_worker(q, W)
    hello_worker(q, W2)
    [held] = get(q, W, 10)
    q.worker_gone(W, "exited with code 9", (lease_of(held), -1))  # a class's handle_batch
    assert [get(q, W2, 10)[0].fields[1] for _ in range(3)] == [[10], [11], [12]]
    assert q.counters.poisoned == 0
    q.check_invariant()


def test_a_single_event_lease_is_blamed_even_without_a_position() -> None:
    q = QueueCore(100)
    hello_producer(q, P, 50)
    put(q, P, 0, [7])
    for w in (W, W2):
        hello_worker(q, w)
    [b1] = get(q, W, 10)
    q.worker_gone(W, "exited with code 1", (lease_of(b1), -1))
    [b2] = get(q, W2, 10)
    q.worker_gone(W2, "exited with code 1", (lease_of(b2), -1))
    assert q.counters.poisoned == 1 and q.buffered == 0
    q.check_invariant()


def test_a_dead_workers_late_hello_and_get_are_refused() -> None:
    """GONE can overtake a dying worker's last HELLO and GET: they must not register it
    again, or a lease would go to a worker that will never return it."""
    q = QueueCore(100)
    hello_producer(q, P, 50)
    put(q, P, 0, [1, 2, 3])
    q.worker_gone(W, "was killed by SIGKILL")  # before its HELLO arrived
    out = q.handle(W, wire.parse(wire.hello(wire.WORKER, 0, 0)))
    assert [m.kind for m in msgs(out)] == [wire.ERR]
    assert [m.kind for m in get(q, W, 10)] == [wire.ERR]
    assert q.leased == 0 and W not in q.workers
    hello_worker(q, W2)
    assert get(q, W2, 10)[0].fields[1] == [1, 2, 3]
    q.check_invariant()


def test_a_put_from_an_unknown_producer_is_refused_with_its_seq() -> None:
    q = QueueCore(100)
    body, ends = wire.pack_events(["x"])
    [(_, frames)] = q.handle(P, wire.parse(wire.put(7, 0, [0], ends, body)))
    err = wire.parse([bytes(f) for f in frames])
    assert err.kind == wire.ERR and err.fields[1] == 7


def chunk(ids: list[Any], strikes: int = 0) -> Chunk:
    body, ends = wire.pack_events(ids)
    return Chunk(ids, ends, memoryview(body), strikes=strikes)


def test_strike_brings_the_event_in_the_handler_back_alone_with_a_strike() -> None:
    out, poison = strike([chunk([0, 1]), chunk([2, 3, 4])], 3)
    assert poison is None
    assert [(c.ids, c.strikes, c.alone) for c in out] == [
        ([0, 1], 0, False),
        ([2], 0, False),
        ([3], 1, True),
        ([4], 0, False),
    ]
    assert wire.unpack_events([bytes(c.body) for c in out], 5) == [0, 1, 2, 3, 4]


def test_strike_takes_out_an_event_at_its_last_death_and_splits_all_when_unknown() -> None:
    out, poison = strike([chunk([7], strikes=POISON_DEATHS - 1), chunk([8])], 0)
    assert poison is not None and poison.ids == [7] and [c.ids for c in out] == [[8]]
    out, poison = strike([chunk([0, 1]), chunk([2])], -1)
    assert poison is None
    assert [(c.ids, c.alone, c.strikes) for c in out] == [([0], True, 0), ([1], True, 0), ([2], True, 0)]
    out, poison = strike([chunk([5])], -1)  # one event: it is the one
    assert poison is None and [(c.ids, c.strikes) for c in out] == [([5], 1)]


def test_a_peer_declared_dead_is_refused_and_only_the_latest_are_remembered() -> None:
    q = QueueCore(capacity=10)
    q.gone.keep = 2
    for rid in (b"a", b"b", b"c"):
        q.worker_gone(rid, "was killed")
    assert b"a" not in q.gone and b"b" in q.gone and b"c" in q.gone
    [err] = msgs(q.handle(b"c", wire.parse(wire.hello(wire.WORKER, 0, 0))))
    assert err.kind == wire.ERR and err.fields[0] == "this peer was declared dead"

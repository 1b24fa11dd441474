"""sedamp.runtime.flow.QueueCore, driven directly: bound, credit, leases, end of stream."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sedamp.runtime import wire
from sedamp.runtime.flow import (
    LEASE_MIN_S,
    LEASE_TERM_PERIODS,
    POISON_DEATHS,
    Chunk,
    QueueCore,
    lease_term_s,
    queue_stats,
    strike,
)

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


def test_the_last_of_many_idle_producers_to_say_hello_still_gets_credit() -> None:
    """Seven producers (the routes of an HTTP service answering through one sink) say
    HELLO one by one and stay idle. The cap was computed from the producers connected so
    far, so the first ones kept windows sized for fewer and the last ones got nothing,
    for good: their first event waited for ever. Told how many may connect, the queue
    sizes every window for all of them."""
    q = QueueCore(2048, producers=7)
    rids = [bytes([65 + i]) for i in range(7)]
    grants = [hello_producer(q, rid, 1024) for rid in rids]
    assert grants == [2048 // 14] * 7
    q.check_invariant()
    assert q.free >= 2048 // 2


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


def test_a_batch_says_it_may_hold_a_traced_event_when_a_put_of_it_did() -> None:
    """A traced run's workers look for traced events only in batches that say so: a
    batch with any part of a PUT that said so says so, after splits and redelivery."""
    q = QueueCore(100)
    hello_producer(q, P, 50)
    hello_worker(q, W)
    hello_worker(q, W2)
    for seq, (evs, traced) in enumerate((([0, 1, 2, 3], True), ([4, 5], False), ([6, 7], False))):
        body, ends = wire.pack_events(evs)
        q.handle(P, wire.parse(wire.put(seq, 0, evs, ends, body, traced=traced)))
    (head,) = get(q, W, 2)  # a split of the traced PUT
    (rest,) = get(q, W2, 3)  # the rest of it and part of an untraced PUT
    (plain,) = get(q, W2, 10)  # W2's share of what is left: untraced only
    assert [(b.fields[1], b.fields[4]) for b in (head, rest, plain)] == [([0, 1], 1), ([2, 3, 4], 1), ([5, 6], 0)]
    q.worker_gone(W)  # its lease comes back and is leased again: still marked
    (again,) = get(q, W2, 2)
    assert (again.fields[1], again.fields[4]) == ([0, 1], 1)
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


def test_a_get_acknowledges_what_it_carries_before_it_asks() -> None:
    """A worker's next GET carries the acknowledgement of the batch it just finished
    (one message fewer per batch): the ACK's room is granted, and the GET is served
    from the buffer as it would be after a separate ACK; an unknown lease in it is
    refused alone, and the last acknowledgement of a closed queue ends it."""
    q = QueueCore(8)
    assert hello_producer(q, P, 8) == 4
    hello_worker(q, W)
    put(q, P, 0, [1, 2, 3, 4])
    put(q, P, 1, [5, 6, 7, 8])
    (b,) = get(q, W, 4)
    assert q.free == 0
    out = q.handle(W, wire.parse(wire.get(4, [b.fields[0]])))
    assert credit_of(out, P) == 4 and q.counters.acked == 4
    [b2] = [m for m in msgs(out, W) if m.kind == wire.BATCH]
    assert b2.fields[1] == [5, 6, 7, 8]
    q.check_invariant()
    out = q.handle(W, wire.parse(wire.get(4, [99])))
    assert [m.kind for m in msgs(out, W)] == [wire.ERR] and q.counters.refused_frames == 1
    assert list(q.waiting) == [W]  # the GET itself still waits for work
    q.handle(P, wire.parse(wire.simple(wire.EOS)))
    q.close()
    out = q.handle(W, wire.parse(wire.get(4, [b2.fields[0]])))
    assert [m.kind for m in msgs(out, W)] == [wire.END, wire.END] and q.counters.acked == 8


def test_worker_waiting_is_served_when_work_arrives_oldest_first() -> None:
    q = QueueCore(100)
    hello_producer(q, P, 50)
    hello_worker(q, W)
    hello_worker(q, W2)
    assert get(q, W, 5) == []
    assert get(q, W2, 5) == []
    out = put(q, P, 0, list(range(7)))
    batches = [(r, wire.parse([bytes(f) for f in fr])) for r, fr in out if r in (W, W2)]
    # each takes its share of the buffer (not W all 5 it asked for and W2 the 2 left)
    assert [(r, m.fields[1]) for r, m in batches] == [(W, [0, 1, 2, 3]), (W2, [4, 5, 6])]


def test_an_idle_worker_is_served_before_a_busy_one_that_asked_first() -> None:
    """Workers keep two GETs out (prefetch). An HTTP route at four connections: W holds
    a request and its second GET is the oldest, W2 holds nothing. The next request went
    to W, to wait behind the first while W2 sat idle (/work at 4 clients served at 0.8x
    gunicorn's rate with both workers in the pool)."""
    q = QueueCore(100)
    hello_producer(q, P, 50)
    hello_worker(q, W)
    hello_worker(q, W2)
    assert get(q, W, 8) == [] and get(q, W, 8) == []  # W's two GETs, then W2's
    assert get(q, W2, 8) == [] and get(q, W2, 8) == []
    first = [r for r, _ in put(q, P, 0, ["r1"]) if r in (W, W2)]
    assert first == [W]  # all idle: the oldest GET is served
    second = [r for r, _ in put(q, P, 1, ["r2"]) if r in (W, W2)]
    assert second == [W2]  # W holds r1: the idle worker is served first
    third = [r for r, _ in put(q, P, 2, ["r3"]) if r in (W, W2)]
    assert third == [W]  # both busy: the oldest GET again (W's came before W2's second)
    q.check_invariant()


def test_a_worker_s_prefetched_get_waits_for_the_others_first() -> None:
    """Two requests arrive in one PUT while both workers wait with two GETs each: one
    each, not both to the worker that asked first."""
    q = QueueCore(100)
    hello_producer(q, P, 50)
    hello_worker(q, W)
    hello_worker(q, W2)
    for rid in (W, W, W2, W2):
        assert get(q, rid, 1) == []
    out = put(q, P, 0, ["r1", "r2", "r3"])
    assert [r for r, _ in out if r in (W, W2)] == [W, W2, W]
    q.check_invariant()


def test_the_first_worker_to_ask_takes_only_its_share_of_a_short_queue() -> None:
    """/work at four connections, two workers of ~5 ms requests: W finished and asked
    for a batch while W2 was still busy (no GET out) and two requests waited. W took
    both, and the second waited behind the first while W2, done a moment later, sat
    idle: a request's wait grew to three handler times (p90 1.3x gunicorn's). Each
    lease is at most the worker's share among every worker the queue serves."""
    q = QueueCore(100)
    hello_producer(q, P, 50)
    hello_worker(q, W)
    hello_worker(q, W2)
    put(q, P, 0, ["r1", "r2"])
    (mine,) = get(q, W, 8)
    assert mine.fields[1] == ["r1"]
    (theirs,) = get(q, W2, 8)
    assert theirs.fields[1] == ["r2"]
    q.check_invariant()


def test_a_lone_worker_takes_all_it_asks_for() -> None:
    """The share is of the workers there are: one worker's batches are not cut."""
    q = QueueCore(100)
    hello_producer(q, P, 50)
    hello_worker(q, W)
    put(q, P, 0, list(range(10)))
    (b,) = get(q, W, 8)
    assert b.fields[1] == list(range(8))
    q.worker_gone(W)
    hello_worker(q, W2)  # W's place taken: W2 alone again
    (b2,) = get(q, W2, 10)
    assert b2.fields[1] == list(range(10))


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
    assert q.credits.outstanding == 0 and q.free == 100


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
    seq = dict.fromkeys(producers, 0)  # each producer numbers its PUTs
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
            if p in q.credits.producers and credit[p] > 0:
                k = min(n, credit[p])
                evs = list(range(next_event, next_event + k))
                next_event += k
                credit[p] -= k
                absorb(put(q, p, seq[p], evs))
                seq[p] += 1
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
            if p in q.credits.producers:
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
    assert q.credits.outstanding == 0 and q.free == 100


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
    hello_worker(q, W)
    [b1] = get(q, W, 10)  # all three: W is the only worker yet
    for w in (W2, b"w3"):
        hello_worker(q, w)
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
    assert queue_stats(q)["poisoned"] == 1
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


# ------------------------------------------------------------------ lease terms


class Clock:
    """The queue's clock, moved by the test."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


TERM = 5.0


def leasing(capacity: int = 100, partitions: int = 1) -> tuple[QueueCore, Clock]:
    clock = Clock()
    q = QueueCore(capacity, partitions, clock=clock, lease_term_s=TERM)
    hello_producer(q, P, 50)
    hello_worker(q, W)
    hello_worker(q, W2)
    return q, clock


def renew(q: QueueCore, rid: bytes, held: list[int], gets: int) -> list[wire.Message]:
    return msgs(q.handle(rid, wire.parse(wire.renew(0, held, gets))), rid)


def test_lease_term_follows_the_period_with_a_floor() -> None:
    assert lease_term_s(0.5) == LEASE_TERM_PERIODS * 0.5
    assert lease_term_s(0.01) == LEASE_MIN_S


def test_a_lease_nobody_renews_comes_back_to_the_head_and_its_worker_is_told() -> None:
    q, clock = leasing()
    put(q, P, 0, [1, 2, 3, 4])
    (b,) = get(q, W, 2)  # its BATCH is lost on the way, say
    clock.t += TERM - 0.1
    assert q.expire() == []  # not yet
    clock.t += 0.2
    out = q.expire()
    assert [(r, m.kind, m.fields) for r, m in ((r, wire.parse(f)) for r, f in out)] == [
        (W, wire.EXPIRED, ([b.fields[0]],))
    ]
    assert q.leased == 0 and q.buffered == 4 and q.counters.expired == 2 and q.counters.redelivered == 2
    q.check_invariant()
    (b2,) = get(q, W2, 10)
    assert b2.fields[1] == [1, 2]  # at the head (W2's share: half of the four)


def test_renew_keeps_the_leases_a_worker_names_and_hold_keeps_all_of_its_leases() -> None:
    q, clock = leasing()
    put(q, P, 0, list(range(8)))
    (a,) = get(q, W, 2)
    (b,) = get(q, W, 2)
    (c,) = get(q, W2, 2)
    for _ in range(3):  # W names only `a`; W2 is inside a long handler call (HOLD)
        clock.t += TERM - 1
        renew(q, W, [a.fields[0]], 0)
        q.hold([W2])
        q.expire()
    assert sorted(q.leases.by_id) == [a.fields[0], c.fields[0]]  # `b` expired, once
    assert q.counters.expired == 2 and q.leased == 4
    q.check_invariant()


def test_the_time_the_queue_was_paused_does_not_count_against_a_lease() -> None:
    """The whole job stopped (Ctrl-Z) longer than a term: no worker could renew meanwhile."""
    q, clock = leasing()
    put(q, P, 0, [1, 2, 3, 4])
    (b,) = get(q, W, 2)
    clock.t += TERM + 5
    q.leases.pause(TERM + 5 - 0.5)  # all but the last half second
    assert q.expire() == [] and q.leased == 2
    clock.t += TERM - 0.5 - 0.1
    assert q.expire() == []
    clock.t += 0.2  # a term since the lease was issued, not counting the pause
    assert [wire.parse(frames).kind for _, frames in q.expire()] == [wire.EXPIRED]
    assert q.counters.expired == 2 and q.leased == 0
    q.check_invariant()


def test_a_late_ack_of_an_expired_lease_changes_no_count() -> None:
    """The bound and `acked` count each event once: the copy leased again is acked."""
    q, clock = leasing(capacity=8)
    put(q, P, 0, [1, 2, 3, 4])
    (b,) = get(q, W, 4)
    clock.t += TERM + 1
    q.expire()
    again = []
    while q.buffered:  # W2's share of the four at a time (W is still a worker of the queue)
        (b2,) = get(q, W2, 4)
        again += b2.fields[1]
        q.handle(W2, wire.parse(wire.ack(b2.fields[0])))
    assert again == [1, 2, 3, 4]
    assert q.handle(W, wire.parse(wire.ack(b.fields[0]))) == []  # late: no ERR either
    assert q.counters.acked == 4 and q.counters.late_acks == 1 and q.counters.refused_frames == 0
    assert q.leased == 0 and q.buffered == 0
    q.check_invariant()
    q.close()
    assert q.ended  # empty, no lease out: the late ACK held nothing up


def test_renew_tells_a_worker_which_of_its_leases_are_no_longer_its_own() -> None:
    q, clock = leasing()
    put(q, P, 0, [1, 2, 3, 4])
    (b,) = get(q, W, 2)
    clock.t += TERM + 1
    q.expire()
    (told,) = renew(q, W, [b.fields[0], 99], 0)  # it still holds b (it was stopped, say)
    assert told.kind == wire.EXPIRED and told.fields[0] == [b.fields[0], 99]


def test_renew_asks_again_for_answers_lost_on_the_way() -> None:
    """A GET the queue never saw, or a BATCH lost after its lease expired: the worker
    waits for them; RENEW says how many it awaits, and the queue asks on its behalf."""
    q, clock = leasing()
    put(q, P, 0, [1, 2, 3])
    (b,) = get(q, W, 2)  # lost on the way
    assert renew(q, W, [], 1) == []  # on its way, as far as the queue knows
    clock.t += TERM + 1
    q.expire()
    (again,) = renew(q, W, [], 1)  # still waiting: the lost GET is asked again
    assert again.kind == wire.BATCH and again.fields[1] == [1, 2]
    assert renew(q, W, [again.fields[0]], 0) == []
    q.handle(W, wire.parse(wire.ack(again.fields[0])))
    # its next GET is lost on the way: it awaits one answer, the queue knows of none
    assert [m.fields[1] for m in renew(q, W, [], 1)] == [[3]]
    assert renew(q, W, [], 0) == []  # nothing awaited, nothing asked
    q.check_invariant()


def test_renew_answers_end_for_an_end_lost_on_the_way() -> None:
    q, _ = leasing()
    assert get(q, W, 1) == []
    q.close()  # empty, no lease: END goes to W, and is lost
    assert q.ended
    assert [m.kind for m in renew(q, W, [], 1)] == [wire.END]


def test_renew_registers_a_worker_whose_hello_was_lost() -> None:
    q, _ = leasing()
    put(q, P, 0, [7])
    assert [m.kind for m in renew(q, b"w9", [], 1)] == [wire.BATCH]
    assert b"w9" in q.workers


def test_a_put_after_a_lost_put_is_refused_naming_the_lost_one() -> None:
    """A reset connection can lose a PUT; the next one's seq tells. Taking the next one
    would tell its producer (took_seq) that the lost events were taken."""
    q = QueueCore(100)
    hello_producer(q, P, 50)
    put(q, P, 0, [1])
    [err] = msgs(put(q, P, 2, [3]), P)
    assert err.kind == wire.ERR and err.fields == ("PUT 1 never arrived (lost in transit)", 1)
    assert q.buffered == 1


ops_lossy = st.lists(
    st.tuples(
        st.sampled_from(["put", "get", "ack", "lose", "renew", "late", "tick"]), st.integers(0, 1), st.integers(1, 9)
    ),
    max_size=150,
)


@given(st.integers(2, 24), ops_lossy)
@settings(max_examples=300, deadline=None)
def test_lost_messages_and_expiry_keep_the_bound_and_lose_nothing(capacity: int, script: list) -> None:
    """Batches lost on the way, leases that expire, late ACKs of expired leases, RENEWs:
    the bound holds; at the end every event accepted was acknowledged (some twice by
    workers: at least once), and the queue counted each once."""
    clock = Clock()
    q = QueueCore(capacity, clock=clock, lease_term_s=TERM)
    credit = hello_producer(q, P, 18)
    workers = [W, W2]
    for w in workers:
        hello_worker(q, w)
    held: dict[bytes, list[tuple[int, list[int]]]] = {w: [] for w in workers}
    awaited = dict.fromkeys(workers, 0)  # GETs each worker sent and has no answer to
    expired_held: list[tuple[bytes, int, list[int]]] = []
    accepted: list[int] = []
    acked: list[int] = []
    seq = next_event = 0

    def absorb(out: list[tuple[bytes, list[Any]]]) -> None:
        nonlocal credit
        for rid, frames in out:
            m = wire.parse([bytes(f) for f in frames])
            if m.kind == wire.CREDIT:
                credit += m.fields[0]
            elif m.kind == wire.BATCH:
                held[rid].append((m.fields[0], m.fields[1]))
                awaited[rid] -= 1
            elif m.kind == wire.EXPIRED:
                for lease in m.fields[0]:
                    for item in [h for h in held[rid] if h[0] == lease]:
                        held[rid].remove(item)
                        expired_held.append((rid, *item))
            elif m.kind == wire.END:
                awaited[rid] = 0

    for op, who, n in script:
        w = workers[who]
        if op == "put" and credit > 0:
            k = min(n, credit)
            evs = list(range(next_event, next_event + k))
            next_event += k
            credit -= k
            absorb(put(q, P, seq, evs))
            seq += 1
            accepted.extend(evs)
        elif op == "get" and awaited[w] < 2:
            awaited[w] += 1
            absorb(q.handle(w, wire.parse(wire.get(n))))
        elif op == "ack" and held[w]:
            lease, ids = held[w].pop(0)
            absorb(q.handle(w, wire.parse(wire.ack(lease))))
            acked.extend(ids)
        elif op == "lose" and held[w]:
            held[w].pop()  # the BATCH never arrived: the worker still awaits it
            awaited[w] += 1
        elif op == "renew":
            absorb(q.handle(w, wire.parse(wire.renew(0, [h[0] for h in held[w]], awaited[w]))))
        elif op == "late" and expired_held:
            rid, lease, ids = expired_held.pop(0)  # handled after all, acked late
            absorb(q.handle(rid, wire.parse(wire.ack(lease))))
            acked.extend(ids)
        elif op == "tick":
            clock.t += n
            absorb(q.expire())
        q.check_invariant()
    absorb(q.close())
    for _ in range(1000):  # the workers go on: renew, ack what they hold, ask while awaiting none
        if q.ended and all(not held[w] for w in workers):
            break
        clock.t += TERM / 2
        absorb(q.expire())
        for w in workers:
            absorb(q.handle(w, wire.parse(wire.renew(0, [h[0] for h in held[w]], awaited[w]))))
            while held[w]:
                lease, ids = held[w].pop(0)
                absorb(q.handle(w, wire.parse(wire.ack(lease))))
                acked.extend(ids)
            if awaited[w] == 0:
                awaited[w] += 1
                absorb(q.handle(w, wire.parse(wire.get(9))))
        q.check_invariant()
    assert q.ended
    assert set(acked) == set(accepted)
    assert q.counters.acked == len(accepted)

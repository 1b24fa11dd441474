"""The stage queue's state machine: exact bound, credits, leases, end of stream. Pure.

`QueueCore` holds no socket. The queue process (`sedamp.runtime.queue`) feeds it parsed
messages and sends the `(routing_id, frames)` pairs it returns. Keeping it pure lets the
tests drive every interleaving directly.

The bound. ``buffered + leased + outstanding_credit <= capacity`` holds at all times:
a producer may only send as many events as it holds credit for, so the queue never
accepts an event it has no room for, and events handed to workers (leases) keep
their room until acknowledged, so redelivering a dead worker's lease never overflows.

Credit. Each producer asks for a window (`want`, usually two of its batches). The
queue grants credit as room frees, least-served producer first, in chunks of at least a
quarter of the window so that a batch size of 1 does not double the message count. A
producer's window is also capped at ``capacity // (2 * producers)`` so that credit held
by idle producers can never take more than half the room: a producer with data always
gets some credit once the workers drain the buffer. `producers` is the most that may
connect (the queue is told), not those connected so far: producers say HELLO one by one,
and the first ones, granted a window sized for fewer, kept it idle while the last one to
arrive got nothing, for good (seen with seven routes answering through one sink).

Bytes. The same bound holds in bytes, buffers beside events included
(`sedamp.runtime.payload`): ``bytes buffered + leased + outstanding <= max_bytes``.
Credit is granted in bytes too, each producer's window capped at
``max_bytes // (2 * producers)``. A PUT must fit the bytes its producer holds, except a
PUT of one event, which needs only some: so an event larger than a window is never
stuck, and a queue holds at most `max_bytes` plus one event per producer (the overdraft
is paid back before that producer gets bytes again). A lease takes at most
``max_bytes // LEASE_BYTES_SHARE`` bytes (at least one event), so large events spread
over the workers.

Work. Workers ask (GET) for up to N events, and keep a second GET out while they work
(prefetch). Work is dealt in rounds, one GET of each waiting worker per round: those
that hold no lease first (a busy worker's prefetched GET must not take work an idle
worker could start now), then the oldest GET first; each lease is no more than its
worker's share of the buffer among all the workers the queue serves, waiting or not:
a worker that finishes a moment after another asked finds its share still here.
A batch may be merged from several chunks or split from one, at event boundaries,
without decoding events. Each batch is a lease until ACKed; BYE or GONE puts a
worker's leases back at the head of the buffer.

Expiry. A message can be lost between live processes (over tcp, a reset connection
drops what was in flight, and ZeroMQ reconnects with nothing said), so a lease also has
a term: a worker names the leases it holds every period (RENEW), and the controller
renews every lease of a worker that is inside user code (HOLD: its slot says so; a
long handler call is bounded by ``timeout_s`` alone). A lease renewed by neither for a
term is taken back: its events go back to the head of the buffer, and its worker is
told (EXPIRED), so that it drops the batch if it has not started it. The bound is
untouched: the events move from leased to buffered, and a late ACK of an expired lease
changes no count (`acked` counts each event once). The events may then be handled
twice (at least once: a sink with ``dedupe`` handles each id once); a worker that keeps
state stops the run rather than count them twice (`sedamp.runtime.worker`). RENEW also
says how many GETs the worker is waiting on: one the queue never saw, or whose answer
was lost, is asked again on its behalf, so a worker is never left waiting for a batch
or an END that will not come.

Poison. When a worker dies, GONE says how, and which lease and which event of it were
in the handler (the controller reads that from the worker's slot, `sedamp.runtime.slot`). The
dead worker's leases come back whole, except that the event in the handler comes back
alone with a strike. An event that reaches POISON_DEATHS strikes is not redelivered
again but handed to `poisoned` (the queue process dead-letters it with the reason), so
one event that crashes its handler cannot take down workers forever, while events that
were merely in the same batch are not blamed. When the event in the handler is not
known (a class's own handle_batch takes the whole batch in one call), every event of
that lease comes back alone, so that the next death names the culprit.

End. After CLOSE (no producer will send again), once the buffer is empty and no lease
is outstanding, every waiting worker and every later GET is answered with END.

Halt. On Ctrl-C the controller says HALT: what waits in the buffer is dropped (counted
as ``discarded``: a re-run, or ``--resume``, does it), and every worker is told HALT, to
which it answers with RETURN of the batches it holds but has not started, dropped too.
So the work left is what the workers had in hand; what they emit after it is taken and
leased as usual, so it runs through to the sinks, and the queue ends as any other.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from sedamp.observe import metrics
from sedamp.observe.words import plural
from sedamp.runtime import blocks, payload, wire

Outgoing = list[tuple[bytes, list[Any]]]

# Deaths of workers holding an event, the last one with the event alone, after which
# the event is poison: dead-lettered (or skipped, or the run fails) instead of retried.
POISON_DEATHS = 2

# A lease renewed neither by its worker (RENEW, every period) nor by the controller
# (HOLD, every period while the worker is inside user code) for this many periods, and
# at least LEASE_MIN_S, is taken back and redelivered. Longer: a batch lost on the wire
# waits longer; shorter: a worker stalled by a busy machine loses leases it still holds,
# and their events are handled twice. Below the silence bound of the controller (20
# periods, at least 3 s), so a lease lost to a live worker is back before a stalled
# worker is killed.
LEASE_TERM_PERIODS = 10
LEASE_MIN_S = 2.0


# The bytes a queue holds by default (`queue.max_bytes`), and the most of them one
# lease takes: 1/LEASE_BYTES_SHARE, so that large events spread over the workers.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
LEASE_BYTES_SHARE = 8


def _packed(chunk: Chunk) -> bytes:
    """A one-event chunk as a packed event (`sedamp.runtime.payload.Packed` if it has
    buffers), for the dead letters."""
    body = bytes(chunk.body)
    if not chunk.bufs:
        return body
    packed = payload.Packed(body)
    packed.bufs = list(chunk.bufs)
    return packed


def lease_term_s(period_s: float) -> float:
    """The term of a lease in a run whose processes report every `period_s`."""
    return max(LEASE_MIN_S, LEASE_TERM_PERIODS * period_s)


@dataclass(slots=True)
class Chunk:
    """Events that arrived in one message, kept as their packed bytes and the offsets between them."""

    ids: list[Any]
    ends: list[int]  # cumulative end offset of each event in `body`
    body: memoryview
    t_src: float = 0.0  # source time of its oldest event (unix s; 0.0 = unknown)
    t_enq: float = 0.0  # when the queue accepted it (the queue's clock)
    strikes: int = 0  # deaths of workers that had it in the handler
    alone: bool = False  # lease it alone (a suspect)
    nbufs: list[int] = field(default_factory=list)  # buffers of each event ([]: none has any)
    bufs: list[Any] = field(default_factory=list)  # those buffers, in order (frames, sent as they came)
    nbytes: int = -1  # body and buffers (computed when -1)
    traced: bool = False  # an event of it may be traced (its PUT said so)

    def __post_init__(self) -> None:
        if self.nbytes < 0:
            self.nbytes = len(self.body) + payload.bufs_nbytes(self.bufs)

    @property
    def n(self) -> int:
        return len(self.ids)

    def bytes_of(self, k: int) -> int:
        """The size of its first k events, buffers included."""
        cut = self.ends[k - 1]
        return cut + payload.bufs_nbytes(self.bufs[: sum(self.nbufs[:k])]) if self.nbufs else cut

    def split(self, k: int) -> tuple[Chunk, Chunk]:
        """The first k events and the rest, at an event boundary."""
        cut = self.ends[k - 1]
        nb = sum(self.nbufs[:k])
        head_bytes = self.bytes_of(k)
        same = (self.t_src, self.t_enq, self.strikes, self.alone)
        traced = self.traced  # each part may hold the traced event: the worker looks
        head = Chunk(
            self.ids[:k], self.ends[:k], self.body[:cut], *same, self.nbufs[:k], self.bufs[:nb], head_bytes, traced
        )
        tail = Chunk(
            self.ids[k:], [e - cut for e in self.ends[k:]], self.body[cut:], *same,
            self.nbufs[k:], self.bufs[nb:], self.nbytes - head_bytes, traced,
        )  # fmt: skip
        return head, tail

    def singles(self) -> list[Chunk]:
        """One chunk per event."""
        out = []
        start = 0
        first = 0
        for i, (eid, end) in enumerate(zip(self.ids, self.ends, strict=True)):
            nb = self.nbufs[i] if self.nbufs else 0
            bufs = self.bufs[first : first + nb]
            body = self.body[start:end]
            nbufs = [nb] if nb else []
            same = (self.t_src, self.t_enq, self.strikes, True)
            out.append(Chunk([eid], [end - start], body, *same, nbufs, bufs, traced=self.traced))
            start, first = end, first + nb
        return out

    def struck(self) -> Chunk:
        """This one-event chunk with one more strike, to be leased alone."""
        same = (self.ids, self.ends, self.body, self.t_src, self.t_enq)
        return Chunk(*same, self.strikes + 1, True, self.nbufs, self.bufs, self.nbytes, self.traced)


def strike(chunks: list[Chunk], position: int) -> tuple[list[Chunk], Chunk | None]:
    """Split the chunks of a lease whose worker died with the event at `position` in
    the handler: that event comes back alone with one more strike, or, at
    POISON_DEATHS strikes, is returned apart as poison. An unknown position (-1, or
    outside the lease) brings every event back alone; a one-event lease blames it."""
    n = sum(c.n for c in chunks)
    if n == 1:
        position = 0
    if not 0 <= position < n:
        return [single for c in chunks for single in c.singles()], None  # unknown: all alone
    out: list[Chunk] = []
    poison: Chunk | None = None
    offset = 0
    for c in chunks:
        if not offset <= position < offset + c.n:
            out.append(c)
            offset += c.n
            continue
        k = position - offset
        head, rest = c.split(k) if k else (None, c)
        culprit, tail = rest.split(1) if rest.n > 1 else (rest, None)
        if head is not None:
            out.append(head)
        if culprit.strikes + 1 >= POISON_DEATHS:
            poison = culprit
        else:
            out.append(culprit.struck())
        if tail is not None:
            out.append(tail)
        offset += c.n
    return out, poison


def take_chunks(buf: deque[Chunk], max_events: int, max_bytes: int = 1 << 62) -> tuple[list[Chunk], int, int]:
    """Take up to `max_events` events and `max_bytes` bytes (at least one event) from
    the head of `buf`, splitting its first chunk at an event boundary if need be; return
    them, their count and their bytes. A suspect event comes alone."""
    chunks: list[Chunk] = []
    n = 0
    nbytes = 0
    while buf and n < max_events:
        c = buf[0]
        if c.alone and chunks:
            break  # a suspect event is leased alone
        k = min(c.n, max_events - n)
        if nbytes + (c.nbytes if k == c.n else c.bytes_of(k)) > max_bytes:
            k = _fit_bytes(c, k, max_bytes - nbytes)
            if k == 0 and chunks:
                break
            k = max(k, 1)
        if k == c.n:
            buf.popleft()
        else:
            c, rest = c.split(k)
            buf[0] = rest
        chunks.append(c)
        n += c.n
        nbytes += c.nbytes
        if c.alone or nbytes >= max_bytes:
            break
    return chunks, n, nbytes


def _fit_bytes(c: Chunk, k: int, room: int) -> int:
    """How many of the first `k` events of `c` fit in `room` bytes (maybe 0)."""
    lo, hi = 0, k  # bytes_of grows with k: the largest k with bytes_of(k) <= room
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if c.bytes_of(mid) <= room:
            lo = mid
        else:
            hi = mid - 1
    return lo


class Store:
    """The events a queue holds and has not leased: one buffer of chunks per partition,
    counted in events and in bytes."""

    def __init__(self, partitions: int) -> None:
        self.buffers: list[deque[Chunk]] = [deque() for _ in range(partitions)]
        self.events = 0
        self.nbytes = 0

    def append(self, partition: int, chunk: Chunk) -> None:
        self.buffers[partition].append(chunk)
        self.events += chunk.n
        self.nbytes += chunk.nbytes

    def requeue(self, partition: int, chunks: list[Chunk]) -> int:
        """Put chunks back at the head of their buffer, in order; returns their events."""
        self.buffers[partition].extendleft(reversed(chunks))
        n = sum(c.n for c in chunks)
        self.events += n
        self.nbytes += sum(c.nbytes for c in chunks)
        return n

    def take(self, partition: int, max_events: int, max_bytes: int) -> tuple[list[Chunk], int, int]:
        chunks, n, nbytes = take_chunks(self.buffers[partition], max_events, max_bytes)
        self.events -= n
        self.nbytes -= nbytes
        return chunks, n, nbytes

    def clear(self) -> int:
        """Drop every event held; returns how many."""
        n = self.events
        self.buffers = [deque() for _ in self.buffers]
        self.events = self.nbytes = 0
        return n

    def check(self) -> None:
        assert self.events == sum(c.n for b in self.buffers for c in b)
        assert self.nbytes == sum(c.nbytes for b in self.buffers for c in b)


@dataclass(slots=True)
class _Producer:
    """A producer's credit at this queue: what it asked for, what is granted and unused."""

    want: int
    outstanding: int = 0  # credit granted and not yet used
    outstanding_bytes: int = 0  # bytes of it (negative: a lone event overdrew it)
    last_seq: int = -1  # of the latest PUT taken
    seen_seq: int = -1  # of the latest PUT that arrived (taken or refused)


@dataclass(slots=True)
class _Worker:
    """A worker connected to this queue and its requests for work not yet answered."""

    index: int
    rid: bytes  # its routing id
    gets: deque[int] = field(default_factory=deque)  # max_events of each pending GET
    last_max: int = 1  # max_events of its latest GET (a GET asked again on its behalf)


@dataclass(slots=True)
class _Lease:
    """Events handed to one worker and not yet acknowledged."""

    worker: bytes
    chunks: list[Chunk]
    partition: int
    n: int
    nbytes: int
    expires: float  # the queue's clock; inf when leases do not expire


class CreditBook:
    """The credit granted to producers and not yet used (see Credit above), in events
    and in bytes. A producer may send a lone event larger than the bytes it holds, as
    long as it holds some: its credit goes negative, and it gets no more until the
    queue has room for what it overdrew. So an event larger than a window cannot
    deadlock, and the bytes a queue holds stay within `max_bytes` plus one event per
    producer."""

    def __init__(self, capacity: int, expected: int = 1, max_bytes: int = 1 << 62) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.expected = max(1, expected)  # how many producers may connect
        self.producers: dict[bytes, _Producer] = {}
        self.outstanding = 0
        self.outstanding_bytes = 0

    def hello(self, rid: bytes, want: int) -> None:
        if rid not in self.producers:
            self.producers[rid] = _Producer(want=max(1, want))
        else:
            self.producers[rid].want = max(1, want)

    def allows(self, prod: _Producer, n: int, nbytes: int) -> bool:
        """May `prod` send `n` events of `nbytes`?"""
        if n > prod.outstanding:
            return False
        return nbytes <= prod.outstanding_bytes or (n == 1 and prod.outstanding_bytes > 0)

    def spend(self, prod: _Producer, n: int, seq: int, nbytes: int = 0) -> None:
        prod.outstanding -= n
        self.outstanding -= n
        prod.outstanding_bytes -= nbytes
        self.outstanding_bytes -= nbytes
        prod.last_seq = seq

    def drop(self, rid: bytes) -> None:
        """The producer is done (EOS) or gone: its unused credit is room again."""
        prod = self.producers.pop(rid, None)
        if prod is not None:
            self.outstanding -= prod.outstanding
            self.outstanding_bytes -= prod.outstanding_bytes

    def grant(self, free: int, free_bytes: int) -> Outgoing:
        """Grant up to `free` events and `free_bytes` bytes of credit, least-served
        producer first."""
        if (free <= 0 and free_bytes <= 0) or not self.producers:
            return []
        out: Outgoing = []
        share = 2 * max(len(self.producers), self.expected)
        cap = max(1, self.capacity // share)
        cap_bytes = max(1, self.max_bytes // share)
        for rid, p in sorted(self.producers.items(), key=lambda kv: kv[1].outstanding):
            window = min(p.want, cap)
            deficit = window - p.outstanding
            deficit_b = cap_bytes - p.outstanding_bytes
            # still holds plenty of both: wait to grant a worthwhile chunk
            if (deficit <= 0 or (p.outstanding > 0 and deficit < max(1, window // 4))) and (
                deficit_b <= 0 or (p.outstanding_bytes > 0 and deficit_b < cap_bytes // 4)
            ):
                continue
            g = max(0, min(deficit, free))
            gb = max(0, min(deficit_b, free_bytes))
            if not g and not gb:
                continue
            p.outstanding += g
            self.outstanding += g
            p.outstanding_bytes += gb
            self.outstanding_bytes += gb
            free -= g
            free_bytes -= gb
            out.append((rid, wire.credit(g, p.last_seq, gb)))
        return out


class LeaseBook:
    """The leases out, by id and by worker: which worker holds which chunks, and until
    when. A lease lives `term_s` from its issue or its last renewal (None: for ever).
    The ids of the latest expired leases are remembered, so that a late ACK or RENEW
    naming one is known for what it is."""

    def __init__(self, term_s: float | None, clock: Callable[[], float]) -> None:
        self.term = term_s if term_s is not None else float("inf")
        self.clock = clock
        self.by_id: dict[int, _Lease] = {}
        self.by_worker: dict[bytes, set[int]] = {}
        self.next_id = 0
        self.events = 0  # events leased
        self.nbytes = 0  # their bytes
        self.expired = _Recent(1000)
        # the buffers of acknowledged leases' events, for the queue process to free
        # (shared blocks: `sedamp.runtime.blocks`); None: not kept. `unsafe`: the
        # references of expired leases, never to be freed (their first worker may still
        # read the blocks; the run's end removes them).
        self.done_bufs: list[Any] | None = None
        self.unsafe: set[bytes] = set()

    def issue(self, worker: bytes, chunks: list[Chunk], partition: int, n: int, nbytes: int, now: float) -> int:
        lease_id = self.next_id
        self.next_id += 1
        self.by_id[lease_id] = _Lease(worker, chunks, partition, n, nbytes, now + self.term)
        self.by_worker.setdefault(worker, set()).add(lease_id)
        self.events += n
        self.nbytes += nbytes
        return lease_id

    def held(self, lease_id: int, worker: bytes) -> _Lease | None:
        """The lease, if `worker` holds it."""
        lease = self.by_id.get(lease_id)
        return lease if lease is not None and lease.worker == worker else None

    def of(self, worker: bytes) -> list[int]:
        """The leases `worker` holds, newest first."""
        return sorted(self.by_worker.get(worker, ()), reverse=True)

    def give_back(self, worker: bytes, lease_ids: Iterable[int]) -> list[_Lease]:
        """Take the leases of `lease_ids` that `worker` holds (the others are not its own
        to give: expired meanwhile, their events already back)."""
        return [self.take(i) for i in lease_ids if self.held(i, worker) is not None]

    def take(self, lease_id: int) -> _Lease:
        lease = self.by_id.pop(lease_id)
        mine = self.by_worker[lease.worker]
        mine.discard(lease_id)
        if not mine:
            del self.by_worker[lease.worker]
        self.events -= lease.n
        self.nbytes -= lease.nbytes
        return lease

    def done(self, lease_id: int) -> None:
        """Take an acknowledged lease: its events are done (their buffers to `done_bufs`)."""
        lease = self.take(lease_id)
        if self.done_bufs is not None:
            self.done_bufs.extend(b for c in lease.chunks for b in c.bufs)

    def renew(self, worker: bytes, named: Iterable[int] | None = None) -> tuple[list[int], int]:
        """Renew the leases of `worker` it `named` (None: all of them). Returns the
        named ones it does not hold (expired, or never its own), and how many of its
        leases it did not name (their BATCH is on its way to it, or was lost)."""
        mine = self.by_worker.get(worker, set())
        named = set(mine if named is None else named)
        expires = self.clock() + self.term
        for lease_id in mine & named:
            self.by_id[lease_id].expires = expires
        return sorted(named - mine), len(mine - named)

    def pause(self, seconds: float) -> None:
        """The queue was not running for `seconds` (`sedamp.runtime.pauses`): no worker
        could renew a lease with it meanwhile, so every term moves on by as much."""
        for lease in self.by_id.values():
            lease.expires += seconds

    def due(self) -> list[int]:
        """The leases past their term, newest first; each is remembered as expired."""
        now = self.clock()
        due = sorted((i for i, lease in self.by_id.items() if lease.expires <= now), reverse=True)
        for lease_id in due:
            self.expired.add(lease_id)
            if self.done_bufs is not None:
                refs = (b for c in self.by_id[lease_id].chunks for b in c.bufs if blocks.is_ref(b))
                self.unsafe.update(bytes(b) for b in refs)
        return due


class _Recent:
    """The last `keep` ids added (routing ids, lease ids), for membership tests (oldest
    forgotten first)."""

    def __init__(self, keep: int = 10_000) -> None:
        self.keep = keep
        self._ids: set[Any] = set()
        self._order: deque[Any] = deque()

    def __contains__(self, rid: object) -> bool:
        return rid in self._ids

    def add(self, rid: Any) -> None:
        if rid not in self._ids:
            self._ids.add(rid)
            self._order.append(rid)
            if len(self._order) > self.keep:
                self._ids.discard(self._order.popleft())


@dataclass
class QueueCounters:
    """A queue's counters since it started, reported in its STATS."""

    arrived: int = 0  # events accepted from producers
    leased: int = 0  # events handed to workers (redeliveries included)
    acked: int = 0  # events whose lease was acknowledged
    redelivered: int = 0  # events put back after a worker left or died, or their lease expired
    expired: int = 0  # events whose lease expired (renewed by nobody for a term)
    late_acks: int = 0  # ACKs of leases that had expired (their events were already back)
    poisoned: int = 0  # events taken out after killing POISON_DEATHS workers
    discarded: int = 0  # events dropped on HALT (Ctrl-C): waiting here, or leased and not started
    refused_frames: int = 0  # malformed or out-of-protocol messages refused

    def report(self) -> dict[str, int]:
        """The counters a queue reports in its STATS (all but `leased`)."""
        return {k: v for k, v in asdict(self).items() if k != "leased"}


class QueueCore:
    """`lease_term_s`: a lease's life unrenewed (None: for ever); `producers`: CreditBook;
    `max_bytes`: the bound in bytes (see Bytes above)."""

    def __init__(
        self,
        capacity: int,
        partitions: int = 1,
        clock: Callable[[], float] = time.monotonic,
        lease_term_s: float | None = None,
        producers: int = 1,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.partitions = partitions
        self.store = Store(partitions)
        self.credits = CreditBook(capacity, producers, max_bytes)
        self.workers: dict[bytes, _Worker] = {}
        self.waiting: deque[bytes] = deque()  # workers with a pending GET, oldest first
        self.leases = LeaseBook(lease_term_s, clock)
        self.closed = False
        self.ended = False
        self.halted = False  # Ctrl-C: what waited here was dropped
        self.counters = QueueCounters()
        self.clock = clock
        # (seconds waited, events) of each chunk leased since the last stats
        self.waits: list[tuple[float, int]] = []
        # routing ids of workers and producers the controller declared dead: a HELLO or GET
        # of theirs still in flight must not register them again (a lease to a dead
        # worker would never come back). Ids carry the pid, so they are never reused.
        self.gone = _Recent()
        # (event id, packed event, reason) of poison events, for the caller to take
        self.poisoned: list[tuple[Any, bytes, str]] = []
        self.last_poison: dict[str, Any] | None = None  # the latest, for the controller

    # ------------------------------------------------------------ properties

    @property
    def buffered(self) -> int:
        return self.store.events

    @property
    def leased(self) -> int:
        return self.leases.events

    @property
    def free(self) -> int:
        return self.capacity - self.buffered - self.leased - self.credits.outstanding

    @property
    def free_bytes(self) -> int:
        return self.max_bytes - self.store.nbytes - self.leases.nbytes - self.credits.outstanding_bytes

    def check_invariant(self) -> None:
        check_invariant(self)

    # ------------------------------------------------------------ messages

    def handle(self, rid: bytes, msg: wire.Message) -> Outgoing:
        """Apply one parsed data-plane message from `rid`; return messages to send."""
        k = msg.kind
        if rid in self.gone:
            return self.refuse(rid, "this peer was declared dead")
        if k == wire.PUT:
            seq, partition, ids, ends, t_src, traced, nbufs = msg.fields
            body = memoryview(msg.bodies[0])
            bufs, when = list(msg.bufs), self.clock()
            chunk = Chunk(ids, ends, body, float(t_src), when, nbufs=nbufs, bufs=bufs, traced=traced == 1)
            return self._put(rid, seq, partition, chunk)
        if k == wire.GET:  # its acknowledgements first: they may free room and end the input
            return [m for lease in msg.fields[1] for m in self._ack(rid, lease)] + self._get(rid, msg.fields[0])
        if k == wire.ACK:
            return self._ack(rid, msg.fields[0])
        if k == wire.HELLO:
            return self._hello(rid, *msg.fields)
        if k == wire.EOS:
            return self._eos(rid)
        if k == wire.RENEW:
            return self._renew(rid, *msg.fields)
        if k == wire.BYE:
            return self.worker_gone(rid)
        if k == wire.RETURN:
            return give_back(self, rid, msg.fields[0])
        return self.refuse(rid, f"{wire.KIND_NAMES.get(k, k)} is not a data-plane request")

    def refuse(self, rid: bytes, reason: str, seq: int = -1) -> Outgoing:
        """Count a refused frame and tell its sender why (with the seq of a refused PUT,
        so that its producer knows those events were not taken)."""
        self.counters.refused_frames += 1
        return [(rid, wire.simple(wire.ERR, reason, seq))]

    def _hello(self, rid: bytes, role: int, index: int, want: int) -> Outgoing:
        if role == wire.PRODUCER:
            self.credits.hello(rid, want)
            out = self._grant()
            if not any(r == rid for r, _ in out):
                # always answer: a producer that shed under on_full must know the queue
                # has spoken (and is full), not wait for credit that may never come
                out.append((rid, wire.credit(0, -1, 0)))
            return out
        if not 0 <= index < self.partitions and self.partitions > 1:
            return self.refuse(rid, f"worker index {index} outside 0..{self.partitions - 1}")
        if rid not in self.workers:
            self.workers[rid] = _Worker(index=index if self.partitions > 1 else 0, rid=rid)
        return []

    def _put(self, rid: bytes, seq: int, partition: int, chunk: Chunk) -> Outgoing:
        prod = self.credits.producers.get(rid)
        if prod is None:
            return self.refuse(rid, "PUT before HELLO", seq)
        lost, prod.seen_seq = prod.seen_seq + 1, max(seq, prod.seen_seq)
        if seq > lost:  # a reset connection lost the PUTs before it: say so rather than lose them
            return self.refuse(rid, f"PUT {lost} never arrived (lost in transit)", lost)
        n = chunk.n
        if not self.credits.allows(prod, n, chunk.nbytes):
            held = f"{plural(prod.outstanding, 'event')} and {prod.outstanding_bytes} bytes of credit"
            return self.refuse(rid, f"PUT of {plural(n, 'event')} of {chunk.nbytes} bytes with only {held}", seq)
        if not 0 <= partition < self.partitions:
            return self.refuse(rid, f"partition {partition} outside 0..{self.partitions - 1}", seq)
        if self.closed:
            return self.refuse(rid, "PUT after CLOSE", seq)
        self.credits.spend(prod, n, seq, chunk.nbytes)
        self.store.append(partition, chunk)
        self.counters.arrived += n
        out = self._dispatch()
        granted = self._grant()
        if not any(r == rid for r, _ in granted):
            granted.append((rid, wire.credit(0, seq, 0)))
        return out + granted

    def _eos(self, rid: bytes) -> Outgoing:
        self.credits.drop(rid)
        return self._grant()

    def _get(self, rid: bytes, max_events: int) -> Outgoing:
        w = self.workers.get(rid)
        if w is None:
            return self.refuse(rid, "GET before HELLO")
        if self.ended:
            return [(rid, wire.simple(wire.END))]
        w.gets.append(max_events)
        w.last_max = max_events
        if len(w.gets) == 1:
            self.waiting.append(rid)
        return self._dispatch() + self._grant()

    def _ack(self, rid: bytes, lease_id: int) -> Outgoing:
        lease = self.leases.held(lease_id, rid)
        if lease is None and lease_id in self.leases.expired:
            self.counters.late_acks += 1  # its events are back in the buffer; its worker was told
            return []
        if lease is None:
            return self.refuse(rid, f"ACK of unknown lease {lease_id}")
        self.leases.done(lease_id)
        self.counters.acked += lease.n
        return self._grant() + self._check_end()

    def worker_gone(self, rid: bytes, died: str | None = None, in_hand: tuple[int, int] = (-1, -1)) -> Outgoing:
        """The worker left (BYE) or died (GONE from the controller, `died` the reason,
        `in_hand` the lease and event position it was handling, -1 if unknown):
        requeue its leases, blaming only the event in the handler."""
        if died is not None:
            self.gone.add(rid)
        w = self.workers.pop(rid, None)
        if w is None:
            return []
        if w.gets:
            self.waiting = deque(r for r in self.waiting if r != rid)
        for lease_id in self.leases.of(rid):
            lease = self.leases.take(lease_id)
            chunks = lease.chunks
            if died is not None and lease_id == in_hand[0]:  # strike the culprit; poison is out
                chunks, poison = strike(chunks, in_hand[1])
                if poison is not None:
                    self.poisoned.append((poison.ids[0], _packed(poison), died))
                    self.counters.poisoned += 1
            self._requeue(lease.partition, chunks)
        return self._dispatch() + self._grant() + self._check_end()

    def _requeue(self, partition: int, chunks: list[Chunk]) -> None:
        """Put the chunks of a lease back at the head of their buffer, in order."""
        self.counters.redelivered += self.store.requeue(partition, chunks)

    # ------------------------------------------------------------ lease terms

    def _renew(self, rid: bytes, index: int, held: list[int], gets: int) -> Outgoing:
        """RENEW from a worker: it holds the leases `held` and waits for `gets` answers
        to its GETs. Renew those leases; tell it which of them are no longer its own
        (EXPIRED); ask again on its behalf for the answers it will otherwise never get."""
        out: Outgoing = []
        if rid not in self.workers:
            out = self._hello(rid, wire.WORKER, index, 0)  # its HELLO was lost on the way
            if rid not in self.workers:
                return out
        stale, on_the_way = self.leases.renew(rid, held)
        if stale:
            out.append((rid, wire.expired(stale)))
        # Answers it waits for beyond its pending GETs and the batches on their way to
        # it were lost (a GET, a BATCH whose lease has expired since, an END): ask
        # again. A lost ACK makes this count low, never high, until its lease expires.
        w = self.workers[rid]
        for _ in range(gets - len(w.gets) - on_the_way):
            out.extend(self._get(rid, w.last_max))
        return out

    def hold(self, rids: list[bytes]) -> None:
        """HOLD from the controller: these workers are inside user code (a handler
        call, maybe long): every lease they hold is renewed."""
        for rid in rids:
            self.leases.renew(rid)

    def expire(self) -> Outgoing:
        """Take back every lease past its term: its events go back to the head of
        their buffer (to be leased again), and its worker is told (EXPIRED)."""
        due = self.leases.due()
        if not due:
            return []
        told: dict[bytes, list[int]] = {}
        for lease_id in due:
            lease = self.leases.take(lease_id)
            self._requeue(lease.partition, lease.chunks)
            self.counters.expired += lease.n
            told.setdefault(lease.worker, []).append(lease_id)
        out: Outgoing = [(rid, wire.expired(sorted(ids))) for rid, ids in told.items()]
        return out + self._dispatch()

    def producer_gone(self, rid: bytes) -> Outgoing:
        return self._eos(rid)

    def halt(self) -> Outgoing:
        """Ctrl-C (see Halt above): drop what waits in the buffer, tell every worker HALT."""
        if self.halted:
            return []
        self.halted = True
        self.counters.discarded += self.store.clear()
        return [(rid, wire.simple(wire.HALT)) for rid in self.workers] + self._grant() + self._check_end()

    def close(self) -> Outgoing:
        """No producer will send again (the controller saw every upstream finish)."""
        self.closed = True
        return self._check_end()

    # ------------------------------------------------------------ internals

    def _dispatch(self) -> Outgoing:  # as "Work" in the module's docstring says
        out: Outgoing = []
        if not self.buffered or not self.waiting:
            return out
        ways = max(len(self.workers), 1) if self.partitions == 1 else 1  # all, not only those waiting
        share = -(-self.buffered // ways)
        share_bytes = min(self.max_bytes // LEASE_BYTES_SHARE, -(-self.store.nbytes // ways))
        buffers, ready = self.store.buffers, [self.workers[r] for r in self.waiting]
        while ready:  # a round serves one GET of each worker, those that hold no lease first, then the oldest
            if len(ready) > 1:
                ready.sort(key=lambda w: w.rid in self.leases.by_worker)  # stable
            for w in ready:
                if buffers[w.index]:
                    out.append((w.rid, self._lease(w.rid, w.index, min(share, w.gets.popleft()), share_bytes)))
            ready = [w for w in ready if w.gets and buffers[w.index]]
        if out:
            self.waiting = deque(r for r in self.waiting if self.workers[r].gets)
        return out

    def _lease(self, rid: bytes, partition: int, max_events: int, max_bytes: int) -> list[Any]:
        chunks, n, nbytes = self.store.take(partition, max_events, max(1, max_bytes))
        now = self.clock()
        lease_id = self.leases.issue(rid, chunks, partition, n, nbytes, now)
        self.counters.leased += n
        ids: list[Any] = []
        for c in chunks:
            ids.extend(c.ids)
            self.waits.append((now - c.t_enq, c.n))
        bodies: list[Any] = [c.body for c in chunks]  # memoryviews: sent without a copy
        t_srcs = [c.t_src for c in chunks]
        traced = any(c.traced for c in chunks)
        if not any(c.nbufs for c in chunks):
            return wire.batch(lease_id, ids, [c.n for c in chunks], bodies, t_srcs, traced=traced)
        nbufs = [k for c in chunks for k in (c.nbufs or [0] * c.n)]
        bufs = [b for c in chunks for b in c.bufs]
        return wire.batch(lease_id, ids, [c.n for c in chunks], bodies, t_srcs, nbufs, bufs, traced)

    def _grant(self) -> Outgoing:
        return self.credits.grant(self.free, self.free_bytes)

    def _check_end(self) -> Outgoing:
        if self.ended or not self.closed or self.buffered or self.leased:
            return []
        self.ended = True
        out: Outgoing = []
        for rid in self.waiting:
            w = self.workers[rid]
            out.extend((rid, wire.simple(wire.END)) for _ in w.gets)
            w.gets.clear()
        self.waiting.clear()
        return out


def queue_stats(core: QueueCore) -> dict[str, Any]:
    """What a queue reports (STATS, DONE): its counters, and the queue waits sampled
    since the last call (then reset)."""
    waits, core.waits = metrics.thin(core.waits), []
    return {
        "wait": [[round(w * 1000, 3), n] for w, n in waits],  # [ms, events]
        "length": core.buffered,
        "bytes": core.store.nbytes + core.leases.nbytes,
        "capacity": core.capacity,
        "leased": core.leased,
        "credit": core.credits.outstanding,
        "producers": len(core.credits.producers),
        "workers": len(core.workers),
        "waiting": len(core.waiting),
        **core.counters.report(),
        "last_poison": core.last_poison,
        "closed": core.closed,
        "ended": core.ended,
    }


def check_invariant(core: QueueCore) -> None:
    """Assert the bounds in events and bytes, and that every count matches what is held."""
    assert core.free >= 0, (core.buffered, core.leased, core.credits.outstanding, core.capacity)
    assert core.free_bytes >= 0, (core.store.nbytes, core.leases.nbytes, core.credits.outstanding_bytes)
    core.store.check()
    assert core.leased == sum(lease.n for lease in core.leases.by_id.values())
    assert core.leases.nbytes == sum(lease.nbytes for lease in core.leases.by_id.values())
    assert core.credits.outstanding == sum(p.outstanding for p in core.credits.producers.values())
    assert core.credits.outstanding_bytes == sum(p.outstanding_bytes for p in core.credits.producers.values())


def give_back(core: QueueCore, rid: bytes, lease_ids: list[int]) -> Outgoing:
    """RETURN: leases `rid` holds and will not start: dropped after HALT, else put back."""
    for lease in core.leases.give_back(rid, lease_ids):
        if core.halted:
            core.counters.discarded += lease.n
        else:
            core._requeue(lease.partition, lease.chunks)
    return core._dispatch() + core._grant() + core._check_end()

"""The producer side of an edge: sends events to a downstream stage queue under credit.

Used inside worker and source processes (not a process role itself). An `Outlet` owns
one DEALER to one downstream queue. Events are put in its backlog already packed; it
sends them as PUTs of at most the credit it holds, and learns from each CREDIT reply
which PUTs the queue has taken (``took_seq``). Each backlog item carries a tag (the
upstream lease it came from): `on_message` returns the tags whose events have all been
taken, so the worker acknowledges a lease only once its outputs are safe downstream.

`take_replies` and `wait_taken` are the one loop by which a worker or a source serves
its outlets: apply the queues' replies, dead-letter what a full ``on_full: reject``
queue refused, log refusals, and say which tags were released and whether a PUT of
ours was refused (the owner must then stop).
"""

from __future__ import annotations

import logging
import zlib
from collections import deque
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from typing import Any

from sedamp.errors import WireError
from sedamp.runtime import lifeline, sockets, wire
from sedamp.runtime.configs import MAX_BATCH_EVENTS, OutputConfig
from sedamp.runtime.deadletter import DeadLetters
from sedamp.runtime.payload import all_bufs, nbufs_of, share, size_of

log = logging.getLogger(__name__)

# Most events one PUT carries: a worker's largest batch, so that a batch of near-free
# events leaves in one message. The queue splits a PUT for workers that ask for fewer,
# at event boundaries and without copying. (At 512, a batch of 2048 outputs went out as
# four PUTs, and tiny (1M events) took 1.19x as long, interleaved pairs of whole runs.)
MAX_PUT_EVENTS = MAX_BATCH_EVENTS


def _fit(packed: list[bytes], k: int, room: int) -> tuple[int, int]:
    """How many of the first `k` packed events fit in `room` bytes, buffers included
    (at least one), and their bytes."""
    size = 0
    for i in range(k):
        s = size_of(packed[i])
        if size + s > room and i > 0:
            return i, size
        size += s
    return k, size


def partition_of(key_value: Any, partitions: int) -> int:
    """The stable partition of a routing key (same in every process and run)."""
    return zlib.crc32(wire.pack_event(key_value)) % partitions


class Outlet:
    def __init__(
        self,
        socks: sockets.Sockets,
        stage: str,
        endpoint: str,
        identity: str,
        key: str | None,
        partitions: int,
        want: int,
        on_full: str = "block",
        when: list[list[Any]] | None = None,
        max_bytes: int = 0,
    ) -> None:
        self.stage = stage
        self.max_bytes = max_bytes  # its queue's bound in bytes (0: unknown)
        self.when: tuple[tuple[str, Any], ...] | None = tuple((k, v) for k, v in when) if when else None
        self.on_full = on_full
        self.key = key
        self.partitions = partitions
        self.sock = socks.dealer(identity, endpoint)
        self.credit = 0
        self.credit_bytes = 0  # may go negative: a lone event may overdraw (sedamp.runtime.flow)
        self.seq = 0
        # (partition, ids, packed, tag, t_src, traced): events waiting for credit
        self.backlog: deque[tuple[int, list[Any], list[bytes], Any, float, bool]] = deque()
        self.sent: deque[tuple[int, Any]] = deque()  # (seq, tag) not yet taken
        self.held: dict[Any, int] = {}  # tag -> backlog items + PUTs not yet taken
        self.events_sent = 0
        self.answered = False  # the queue has replied at least once
        self.dropped = 0  # events shed under on_full: drop
        self.rejected_count = 0  # events shed under on_full: reject
        self.rejected: list[tuple[list[Any], list[bytes]]] = []  # for the owner to dead-letter
        self.errors: list[str] = []
        self.fatal: str | None = None  # a PUT of ours was refused: the owner cannot go on
        self.sock.send_multipart(wire.hello(wire.PRODUCER, -1, want))

    @property
    def blocked(self) -> bool:
        """Events are waiting for credit."""
        return bool(self.backlog)

    @property
    def idle(self) -> bool:
        """Everything given to this outlet has been taken by the queue."""
        return not self.backlog and not self.sent

    def add(
        self, partition: int, ids: list[Any], packed: list[bytes], tag: Any, t_src: float = 0.0, traced: bool = False
    ) -> None:
        """`traced`: one of the events may be traced (the PUTs of them say so)."""
        if not ids:
            return
        self.backlog.append((partition, ids, packed, tag, t_src, traced))
        self.held[tag] = self.held.get(tag, 0) + 1

    def flush(self) -> list[Any]:
        """Send as much of the backlog as the credit allows. With ``on_full: drop`` or
        ``reject``, a backlog the queue has no room for is shed instead of waiting.
        Returns the tags whose events have all been taken or shed."""
        while self.backlog and self.credit > 0 and self.credit_bytes > 0:
            partition, ids, packed, tag, t_src, traced = self.backlog[0]
            k = min(len(ids), self.credit, MAX_PUT_EVENTS)
            room = min(wire.MAX_PUT_BYTES, self.credit_bytes)
            head = packed if k == len(packed) else packed[:k]
            nbytes = sum(map(len, head))
            nbufs = nbufs_of(head)
            if nbufs or nbytes > room:
                k, nbytes = _fit(head, k, room)  # rare: walk the events when buffers or too many bytes
                nbufs = nbufs[:k]
            if k < len(ids):
                self.backlog[0] = (partition, ids[k:], packed[k:], tag, t_src, traced)
                self.held[tag] += 1
                ids, packed = ids[:k], packed[:k]
            else:
                self.backlog.popleft()
            body, ends = wire.join_packed(packed)
            bufs = share(all_bufs(packed)) if nbufs else []  # large ones through shared blocks
            put = wire.put(self.seq, partition, ids, ends, body, t_src, nbufs, bufs, traced)
            self.sock.send_multipart(put, copy=False)
            self.sent.append((self.seq, tag))
            self.seq += 1
            self.credit -= k
            self.credit_bytes -= nbytes
            self.events_sent += k
        if self.backlog and self.on_full != "block" and self._full():
            return self._shed()
        return []

    def _full(self) -> bool:
        """The queue is full for this producer: it has answered every PUT and still
        granted no credit (credit merely in flight is not fullness)."""
        return self.answered and not self.sent and (self.credit == 0 or self.credit_bytes <= 0)

    def _shed(self) -> list[Any]:
        released = []
        while self.backlog:
            _, ids, packed, tag, _t, _traced = self.backlog.popleft()
            if self.on_full == "drop":
                self.dropped += len(ids)
            else:
                self.rejected.append((ids, packed))
                self.rejected_count += len(ids)
            released.extend(self._release(tag))
        return released

    def discard_backlog(self) -> int:
        """Drop the events waiting for credit, unsent (Ctrl-C: a source's reads that the
        queue had no room for yet); how many."""
        n = 0
        while self.backlog:
            _, ids, _packed, tag, _t, _traced = self.backlog.popleft()
            n += len(ids)
            self._release(tag)
        return n

    def _release(self, tag: Any) -> list[Any]:
        left = self.held[tag] - 1
        if left:
            self.held[tag] = left
            return []
        del self.held[tag]
        return [tag]

    def on_message(self, frames: list[bytes]) -> list[Any]:
        """Apply a message from the queue and send what its credit allows; return the
        tags whose events have all been taken (or shed)."""
        try:
            msg = wire.parse(frames)
        except WireError as exc:
            self.errors.append(f"bad frame from queue {self.stage}: {exc}")
            return []
        if msg.kind == wire.ERR:
            reason, seq = msg.fields
            if seq >= 0 and any(s == seq for s, _ in self.sent):
                # events this process handed over were not taken: acknowledging their
                # input would lose them, so the owner must stop (see `fatal`)
                self.fatal = f"queue {self.stage!r} refused {self.stage!r}-bound events (PUT {seq}): {reason}"
            else:
                self.errors.append(f"queue {self.stage} refused a message: {reason}")
            return []
        if msg.kind != wire.CREDIT:
            self.errors.append(f"unexpected {wire.KIND_NAMES[msg.kind]} from queue {self.stage}")
            return []
        grant, took, grant_bytes = msg.fields
        self.answered = True
        self.credit += grant
        self.credit_bytes += grant_bytes
        done: list[Any] = []
        while self.sent and self.sent[0][0] <= took:
            _, tag = self.sent.popleft()
            done.extend(self._release(tag))
        return done + self.flush()

    def detach(self) -> None:
        self.sock.send_multipart(wire.simple(wire.EOS))

    def close(self) -> None:
        # Everything this outlet sent was confirmed; only the EOS may still be on its
        # way, and a short linger lets it out (the queue copes if it never arrives).
        self.sock.close(linger=500)


def outlets_for(socks: sockets.Sockets, outputs: Iterable[OutputConfig], identity: str, want: int) -> list[Outlet]:
    """One outlet per downstream edge of a process."""
    return [
        Outlet(socks, o.stage, o.endpoint, identity, o.key, o.partitions, want, o.on_full, o.when, o.max_bytes)
        for o in outputs
    ]


class Router:
    """Packs a handler's outputs and spreads them over the outlets of a process.

    `route(parent_id, outputs, tag)` packs each output once, names it (the parent's id
    for a single output, ``"<parent>.<i>"`` for several) and adds it to every outlet,
    into the partition of its key for key-routed edges. Raises WireError (an output
    MessagePack cannot carry, or one over the size limit: the outputs after it are not
    packed) or KeyError (an output lacks the routing key) before adding anything, so a
    failed event leaves no partial output behind."""

    def __init__(self, outlets: list[Outlet], max_event_bytes: int = wire.MAX_EVENT_BYTES) -> None:
        self.outlets = outlets
        self.limit = max_event_bytes
        # the smallest bound in bytes of the queues it feeds: a larger event cannot go
        self.max_bytes = min((o.max_bytes for o in outlets if o.max_bytes), default=0)
        self._pending: list[dict[int, tuple[list[Any], list[bytes]]]] = [{} for _ in outlets]
        # True when some edge routes by key or by `when`: outputs must then be looked at
        # one by one
        self.keyed = any((o.key is not None and o.partitions > 1) or o.when for o in outlets)

    def route_packed(self, ids: list[Any], packed: list[bytes]) -> None:
        """Add events already named and packed, on edges that do not route by key."""
        assert not self.keyed
        for pending in self._pending:
            slot = pending.get(0)
            if slot is None:
                pending[0] = (list(ids), list(packed))
            else:
                slot[0].extend(ids)
                slot[1].extend(packed)

    def route(self, parent_id: Any, outputs: list[Any], estimate: bool = False, first: int = 0) -> None:
        """`estimate`: look at each output's size before packing it (`wire.pack_event`);
        `first`: how many outputs of this parent were routed before (a generator's,
        sent as it ran): these are named after them."""
        if not outputs:
            return
        packed = [wire.pack_event(o, self.limit, estimate, self.max_bytes) for o in outputs]
        if len(outputs) == 1 and not first:
            ids: list[Any] = [parent_id]
        else:
            ids = [f"{parent_id}.{first + i}" for i in range(len(outputs))]
        placements: list[list[int | None]] = []  # per outlet, the partition of each output (None: not here)
        matched = [False] * len(outputs)
        for o in self.outlets:
            parts: list[int | None] = []
            for j, ev in enumerate(outputs):
                if o.when is not None and not _matches(ev, o.when):
                    parts.append(None)
                    continue
                matched[j] = True
                if o.key is None or o.partitions == 1:
                    parts.append(0)
                    continue
                if not isinstance(ev, dict) or o.key not in ev:
                    raise KeyError(f"an output has no field {o.key!r} to route it to stage {o.stage!r} by")
                parts.append(partition_of(ev[o.key], o.partitions))
            placements.append(parts)
        if self.outlets and not all(matched):
            conds = "; ".join(f"{o.stage}: {dict(o.when)}" for o in self.outlets if o.when)
            raise KeyError(f"an output matches the when: of no edge ({conds})")
        for pending, parts in zip(self._pending, placements, strict=True):
            for eid, p, part in zip(ids, packed, parts, strict=True):
                if part is None:
                    continue
                slot = pending.get(part)
                if slot is None:
                    slot = pending[part] = ([], [])
                slot[0].append(eid)
                slot[1].append(p)

    def commit(self, tag: Any, t_src: float = 0.0, traced: bool = False) -> tuple[bool, list[Any]]:
        """Hand what `route` gathered to the outlets under `tag` (`traced`: one of the
        events may be traced). Returns whether anything was handed over, and the tags
        released meanwhile (taken or shed)."""
        any_out = False
        released: list[Any] = []
        for o, pending in zip(self.outlets, self._pending, strict=True):
            for part, (ids, packed) in pending.items():
                o.add(part, ids, packed, tag, t_src, traced)
                any_out = True
            pending.clear()
            released.extend(o.flush())
        return any_out, released


def _matches(event: Any, when: tuple[tuple[str, Any], ...]) -> bool:
    return isinstance(event, dict) and all(k in event and event[k] == v for k, v in when)


def dead_letter_rejected(outlets: list[Outlet], dead: DeadLetters) -> None:
    """Write what a full ``on_full: reject`` queue could not take to the dead letters."""
    for o in outlets:
        while o.rejected:
            ids, packed = o.rejected.pop()
            for eid, p in zip(ids, packed, strict=True):
                dead.write_packed(
                    stage=o.stage,
                    event_id=eid,
                    error_type="Rejected",
                    message=f"the queue of stage {o.stage!r} was full (on_full: reject)",
                    packed=p,
                )


@dataclass(frozen=True)
class Replies:
    """What the replies of the downstream queues meant to the process that owns the outlets."""

    released: list[Any]  # tags whose events have all been taken (or shed)
    errors: int  # refusals and bad frames, logged
    fatal: str | None = None  # a PUT of ours was refused: stop rather than lose its events


def take_replies(outlets: list[Outlet], ready: Container[Any], dead: DeadLetters, who: str) -> Replies:
    """Apply every message waiting on the outlets whose sockets are in `ready`. `who`
    names the owner in the log ("worker w:...", "source s"). Stops at the first
    outlet whose queue refused a PUT of ours."""
    released: list[Any] = []
    errors = 0
    for o in outlets:
        if o.sock not in ready:
            continue
        for frames in sockets.drain(o.sock):
            released.extend(o.on_message(frames))
        dead_letter_rejected([o], dead)
        while o.errors:
            log.error("%s: %s", who, o.errors.pop())
            errors += 1
        if o.fatal:
            return Replies(released, errors, o.fatal)
    return Replies(released, errors)


def wait_room(outlets: list[Outlet], poll: Callable[[int], None], parent_pid: int) -> None:
    """Call the owner's `poll(timeout_ms)` until no outlet holds events waiting for
    credit (what was sent may still be unconfirmed); exit if the parent dies."""
    while any(o.blocked for o in outlets):
        poll(int(lifeline.PARENT_CHECK_PERIOD_S * 1000))
        lifeline.exit_if_orphaned(parent_pid)


def wait_taken(outlets: list[Outlet], poll: Callable[[int], None], parent_pid: int) -> None:
    """Call the owner's `poll(timeout_ms)` until the queues have taken everything given
    to the outlets (each poll serves them with `take_replies`); exit if the parent dies."""
    while not all(o.idle for o in outlets):
        poll(int(lifeline.PARENT_CHECK_PERIOD_S * 1000))
        lifeline.exit_if_orphaned(parent_pid)

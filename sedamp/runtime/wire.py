"""MessagePack frames and protocol constants: the only module that makes or parses bytes.

Every message is a ZeroMQ multipart message. Its first frame is the header, a
MessagePack array ``[VERSION, KIND, field...]``; data messages carry event bodies in
further frames. A body is the concatenation of individually packed events, so a queue
can split a batch at an event boundary (``ends`` gives the cumulative byte offset where
each event ends) and merge batches by sending several bodies, without ever decoding an
event.

Data plane (a stage queue's ROUTER; producers and workers connect with DEALERs)::

    producer -> queue   HELLO(role=PRODUCER, index=-1, want)     register, ask for credit
                        PUT(seq, partition, ids, ends, t_src,    at most `credit` events and
                            traced, nbufs)                       bytes; t_src: source time (s)
                          + body + buffers                       traced: 1 when an event may
                                                                 be traced (else 0: none is;
                                                                 see sedamp.runtime.tracing);
                                                                 nbufs: buffers per event ([]:
                                                                 none; see sedamp.runtime.payload)
                        EOS()                                    detach, give credit back
    queue -> producer   CREDIT(grant, took_seq, grant_bytes)     reply to every PUT and
                                                                 unsolicited as room frees
    worker -> queue     HELLO(role=WORKER, index, 0)             index = key partition
                        GET(max_events, acks)                    ask for one batch; acks: leases
                                                                 acknowledged with it (an ACK
                                                                 each, one message fewer)
                        ACK(lease)                               outputs delivered downstream
                        RENEW(index, leases, gets)               every period: the leases it
                                                                 holds, the GETs it awaits
                        BYE()                                    leaving: unacked leases return
                        RETURN(leases)                           after HALT: batches it had
                                                                 not started (dropped)
    queue -> worker     BATCH(lease, ids, counts, t_srcs,        one body per merged chunk
                              traced, nbufs)                     (traced, nbufs: as in PUT)
                          + bodies + buffers
                        END()                                    input is over for good
                        EXPIRED(leases)                          these leases were taken back
                                                                 (not renewed for a term)
                        HALT()                                   the run was interrupted:
                                                                 RETURN what is not started
    queue -> anyone     ERR(message, seq)                        a frame was refused (seq:
                                                                 the refused PUT's, else -1)

Control plane (the controller's ROUTER; every runtime process connects a DEALER)::

    process -> controller   REGISTER(role, stage, index, pid, endpoint)   endpoint: where a
                                                                 queue's data socket is bound
                            STATS(map)                           cumulative counters
                            DONE(map)                            final counters, exiting 0
                            FATAL(map)                           cannot go on (e.g. setup
                                                                 raised), exiting non-zero
    controller -> process   CLOSE()                              to a queue: no producer
                                                                 will send again
                            STOP(grace_s)                        finish what is held, exit
                            GONE(routing_id, reason, lease, pos) to a queue: that worker is
                                                                 dead (reason: how; lease and
                                                                 position of the event in its
                                                                 handler, -1 if none): requeue
                                                                 its leases, strike that event
                            RETIRE()                             to a worker: finish what you
                                                                 hold, say BYE, exit (pool shrinks)
                            HOLD(routing_ids)                    to a queue: those workers are
                                                                 inside user code: renew their leases
                            HALT()                               Ctrl-C: to a queue, drop what it
                                                                 holds and HALT its workers; to a
                                                                 source, stop reading and drop
                                                                 what it has not sent
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import msgpack

from sedamp.errors import WireError
from sedamp.runtime import payload
from sedamp.runtime.payload import OOB_BYTES, Packed

VERSION = 7  # 7: GET carries acknowledgements; 6: PUT and BATCH say whether they may hold a traced event

# Largest frame a queue or worker accepts; anything larger is refused with ERR rather
# than allowed to exhaust memory. Producers keep under it: no event may pack to more
# than MAX_EVENT_BYTES (such an event is a failure, dead-lettered with its size), and a
# PUT is cut at MAX_PUT_BYTES of events.
MAX_FRAME_BYTES = 64 * 1024 * 1024
MAX_EVENT_BYTES = 16 * 1024 * 1024
# `pack_all` packs a batch whose first event packs to at most this many bytes in one
# pass at C speed, and looks at the sizes afterwards; a batch of larger events is
# packed one event at a time, so that a large one is never packed twice.
SMALL_EVENT_BYTES = 4096
MAX_PUT_BYTES = 32 * 1024 * 1024
# Buffers travelling beside events (`sedamp.runtime.payload`) are bounded by the byte
# bounds of queues (`queue.max_bytes`), and each frame of one by this.
MAX_BUFFER_BYTES = 1024 * 1024 * 1024

# roles in HELLO and REGISTER
PRODUCER = 0
WORKER = 1
QUEUE = 2
SOURCE = 3

# data-plane kinds
HELLO = 1
PUT = 2
EOS = 3
GET = 4
ACK = 5
BYE = 6
RENEW = 7
RETURN = 8
CREDIT = 10
BATCH = 11
END = 12
ERR = 13
EXPIRED = 14
# control-plane kinds
REGISTER = 20
STATS = 21
DONE = 22
FATAL = 23
CLOSE = 30
STOP = 31
GONE = 32
RETIRE = 33
HOLD = 34
HALT = 35
REPORT = 36  # send STATS now: the controller's record is due
# command plane (`sedamp status`, `sedamp scale`): a map each way
COMMAND = 40
REPLY = 41

KIND_NAMES = {
    HELLO: "HELLO", PUT: "PUT", EOS: "EOS", GET: "GET", ACK: "ACK", BYE: "BYE", RENEW: "RENEW", RETURN: "RETURN",
    CREDIT: "CREDIT", BATCH: "BATCH", END: "END", ERR: "ERR", EXPIRED: "EXPIRED", REGISTER: "REGISTER",
    STATS: "STATS", DONE: "DONE", FATAL: "FATAL", CLOSE: "CLOSE", STOP: "STOP", GONE: "GONE", RETIRE: "RETIRE",
    HOLD: "HOLD", HALT: "HALT", REPORT: "REPORT",
    COMMAND: "COMMAND", REPLY: "REPLY",
}  # fmt: skip

# kind -> (number of header fields after VERSION and KIND, number of body frames:
# 0 = none, 1 = exactly one, -1 = one or more)
_SHAPES: dict[int, tuple[int, int]] = {
    HELLO: (3, 0), PUT: (7, -1), EOS: (0, 0), GET: (2, 0), ACK: (1, 0), BYE: (0, 0), RENEW: (3, 0), RETURN: (1, 0),
    CREDIT: (3, 0), BATCH: (6, -1), END: (0, 0), ERR: (2, 0), EXPIRED: (1, 0),
    REGISTER: (5, 0), STATS: (1, 0), DONE: (1, 0), FATAL: (1, 0),
    CLOSE: (0, 0), STOP: (1, 0), GONE: (4, 0), RETIRE: (0, 0), HOLD: (1, 0), HALT: (0, 0), REPORT: (0, 0),
    COMMAND: (1, 0), REPLY: (1, 0),
}  # fmt: skip

# A packer's buffer grows to the largest event it has packed and never shrinks: after
# packing one 500 MB event a process would hold 500 MB more for good. Past this many
# bytes the packer is replaced by a fresh one, which frees the buffer; a packer costs a
# microsecond to make, nothing next to packing that much.
PACKER_KEEP_BYTES = 4 * 1024 * 1024


# Collects the large buffers of the event being packed (`sedamp.runtime.payload`).
_collector = payload.Collector()


def _new_packer() -> Callable[[Any], bytes]:
    pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True, autoreset=True, default=_collector).pack
    return pack


_packb = _new_packer()


def _shrink_packer() -> None:
    global _packb
    _packb = _new_packer()


class Message(NamedTuple):
    """A parsed message: its kind, header fields (already type-checked), body frames and
    the buffer frames that travel beside its events."""

    kind: int
    fields: tuple[Any, ...]
    bodies: tuple[bytes, ...] = ()
    bufs: tuple[Any, ...] = ()


# ---------------------------------------------------------------- building


def header(kind: int, *fields: Any) -> bytes:
    return _packb([VERSION, kind, *fields])


def hello(role: int, index: int, want: int) -> list[bytes]:
    return [header(HELLO, role, index, want)]


def put(
    seq: int,
    partition: int,
    ids: Sequence[Any],
    ends: Sequence[int],
    body: bytes,
    t_src: float = 0.0,
    nbufs: Sequence[int] = (),
    bufs: Sequence[Any] = (),
    traced: bool = False,
) -> list[Any]:
    """`t_src`: when the oldest of these events was read by its source (unix seconds);
    `nbufs`: how many of `bufs` each event has (empty when none has any); `traced`:
    whether one of the events may be traced (a traced run's processes look for traced
    events only in messages that say so)."""
    head = header(PUT, seq, partition, list(ids), list(ends), t_src, 1 if traced else 0, list(nbufs))
    return [head, body, *bufs]


def credit(grant: int, took_seq: int, grant_bytes: int) -> list[bytes]:
    return [header(CREDIT, grant, took_seq, grant_bytes)]


def get(max_events: int, acks: Sequence[int] = ()) -> list[bytes]:
    """Ask for a batch of up to `max_events`, acknowledging the leases `acks` first."""
    return [header(GET, max_events, list(acks))]


def ack(lease: int) -> list[bytes]:
    return [header(ACK, lease)]


def renew(index: int, leases: Sequence[int], gets: int) -> list[bytes]:
    return [header(RENEW, index, list(leases), gets)]


def expired(leases: Sequence[int]) -> list[bytes]:
    return [header(EXPIRED, list(leases))]


def returned(leases: Sequence[int]) -> list[bytes]:
    return [header(RETURN, list(leases))]


def batch(
    lease: int,
    ids: Sequence[Any],
    counts: Sequence[int],
    bodies: Sequence[bytes],
    t_srcs: Sequence[float] = (),
    nbufs: Sequence[int] = (),
    bufs: Sequence[Any] = (),
    traced: bool = False,
) -> list[Any]:
    """`t_srcs`: the source time of each body's oldest event (0.0 where unknown);
    `nbufs`, `bufs`, `traced`: as in `put`, for all the events of the bodies in order."""
    t = list(t_srcs) or [0.0] * len(counts)
    return [header(BATCH, lease, list(ids), list(counts), t, 1 if traced else 0, list(nbufs)), *bodies, *bufs]


def simple(kind: int, *fields: Any) -> list[bytes]:
    """A message with no body (EOS, BYE, END, ERR, CLOSE, STOP, GONE, STATS, ...)."""
    return [header(kind, *fields)]


def pack_event(event: Any, limit: int = MAX_EVENT_BYTES, estimate: bool = False, max_bytes: int = 0) -> bytes:
    """Pack one event: bytes, or a `Packed` whose large buffers travel beside it
    (`sedamp.runtime.payload`). Raises WireError naming the Python type MessagePack
    cannot carry, or the size of an event whose packed bytes are over `limit` or whose
    whole size (buffers included) is over `max_bytes` (0: no bound). With `estimate`, an
    event whose strings alone exceed the limit (`size_floor`) is refused before it is
    packed, so a huge value is not copied only to be refused: callers ask for it when a
    bulk pack has just failed (the estimate costs about as much as packing a small event)."""
    if estimate:
        floor = size_floor(event)
        if floor > limit:
            raise WireError(f"an event of at least {floor:,} bytes exceeds the limit of {limit:,} bytes")
    _collector.bufs = []
    try:
        packed: bytes = _packb(event)
        if len(packed) >= OOB_BYTES or _collector.bufs:
            packed = _with_buffers(event, packed)
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"cannot serialize {_describe(event)}: {exc}") from None
    if len(packed) > limit:
        raise WireError(f"an event of {len(packed):,} bytes exceeds the limit of {limit:,} bytes")
    if max_bytes and type(packed) is Packed and packed.nbytes > max_bytes:
        raise WireError(f"an event of {packed.nbytes:,} bytes exceeds its queue's max_bytes of {max_bytes:,}")
    return packed


def _with_buffers(event: Any, packed: bytes) -> bytes:
    """The packed form of a large event (or one holding arrays): its byte strings of
    OOB_BYTES or more moved out to buffers, as a `Packed` when it has any buffer."""
    if len(packed) > PACKER_KEEP_BYTES:
        _shrink_packer()  # it packed this event's bytes once: free the buffer that grew so
    if len(packed) >= OOB_BYTES:
        marked, found = payload.mark_big(event)
        if found:
            _collector.bufs = []
            packed = _packb(marked)
    bufs, _collector.bufs = _collector.bufs, []
    if not bufs:
        return packed
    out = Packed(packed)
    out.bufs = bufs
    return out


def pack_all(events: Sequence[Any], limit: int = MAX_EVENT_BYTES, max_bytes: int = 0) -> list[bytes] | None:
    """Pack every event, or return None as soon as one cannot be packed or is over
    `limit` bytes packed (or `max_bytes` whole, see `pack_event`): the events after it
    are not packed, and no oversized copy is kept (the caller then packs one by one
    with `pack_event` to tell which)."""
    if not events:
        return []
    col = _collector
    col.bufs = []
    large = min(limit, OOB_BYTES - 1)
    try:
        head: bytes = _packb(events[0])
        if len(head) > SMALL_EVENT_BYTES or col.bufs:
            return _pack_each(events, head, limit, max_bytes)
        # small events, the common case: packed at C speed, then looked at once; a large
        # one or one with buffers sends the whole batch through `_pack_each` again
        packed = [head, *map(_packb, events[1:])]
    except (TypeError, ValueError, OverflowError):
        col.bufs = []
        return None
    if not col.bufs and max(map(len, packed)) <= large:
        return packed
    col.bufs = []
    return _pack_each(events, None, limit, max_bytes)


def _pack_each(events: Sequence[Any], first: bytes | None, limit: int, max_bytes: int) -> list[bytes] | None:
    """`pack_all` one event at a time, each looked at as it is packed; `first`: the
    first event already packed (the collector holding its buffers), or None."""
    col = _collector
    large = min(limit, OOB_BYTES - 1)
    packed: list[bytes] = []
    keep = packed.append
    try:
        for i, e in enumerate(events):
            p = first if i == 0 and first is not None else _packb(e)
            if len(p) > large or col.bufs:
                if len(p) >= OOB_BYTES or col.bufs:
                    p = _with_buffers(e, p)
                if len(p) > limit or (max_bytes and type(p) is Packed and p.nbytes > max_bytes):
                    col.bufs = []
                    return None
            keep(p)
    except (TypeError, ValueError, OverflowError):
        col.bufs = []
        return None
    return packed


def roundtrip(events: list[Any]) -> list[Any] | None:
    """The events as a receiver decodes them (a tuple becomes a list, an array becomes
    read-only, ...), at C speed: what a fused stage boundary hands on
    (`sedamp.spec.fusion`). An array crosses as a read-only view of the same memory,
    as it would cross a real boundary without a copy. None if any event cannot be
    packed or is over MAX_EVENT_BYTES (`pack_event` then tells which)."""
    _collector.bufs = []
    try:
        packed = _packb(events)
    except (TypeError, ValueError, OverflowError):
        _collector.bufs = []
        return None
    bufs, _collector.bufs = _collector.bufs, []
    if len(packed) > PACKER_KEEP_BYTES:
        _shrink_packer()
        if len(packed) > MAX_EVENT_BYTES and pack_all(events) is None:
            return None
    hook = payload.ext_hook(bufs, [0, len(bufs)])
    decoded: list[Any] = msgpack.unpackb(packed, raw=False, strict_map_key=False, ext_hook=hook)
    return decoded


def unpack_event(packed: bytes) -> Any:
    """One event packed by `pack_event`, decoded (its buffers with it)."""
    return unpack_events([packed], 1, payload.nbufs_of([packed]), payload.bufs_of(packed))[0]


# How far `size_floor` looks into containers: the values of a dict, list or tuple of
# at most this many items, and theirs, SIZE_FLOOR_DEPTH levels down. Enough for the
# usual event (a dict with a large string or bytes in it) at the cost of a few loops;
# larger containers count one byte per item.
SIZE_FLOOR_ITEMS = 64
SIZE_FLOOR_DEPTH = 2


def size_floor(value: Any, depth: int = SIZE_FLOOR_DEPTH) -> int:
    """A cheap lower bound of `value`'s packed size: the length of its strings and bytes
    (UTF-8 takes at least a byte per character) plus a byte per item, looking only a
    little way into containers."""
    t = type(value)
    if t is str or t is bytes or t is bytearray:
        return len(value)
    if t is not dict and t is not list and t is not tuple:
        return 0
    n = len(value)
    if not depth or n > SIZE_FLOOR_ITEMS:
        return n
    for v in value.values() if t is dict else value:
        tv = type(v)
        if tv is str or tv is bytes or tv is bytearray:
            n += len(v)
        elif tv is dict or tv is list or tv is tuple:
            n += size_floor(v, depth - 1)
    return n


def pack_events(events: Iterable[Any]) -> tuple[bytes, list[int]]:
    """Pack events into one body; returns the body and the cumulative end offsets."""
    return join_packed([pack_event(e) for e in events])


def join_packed(parts: Sequence[bytes]) -> tuple[bytes, list[int]]:
    """Join already packed events into one body with its end offsets."""
    return b"".join(parts), list(itertools.accumulate(map(len, parts)))


def _describe(value: Any) -> str:
    """Name the first value inside `value` that MessagePack cannot carry, by type."""
    bad = _find_unpackable(value)
    return f"a value of Python type {type(bad).__module__}.{type(bad).__qualname__}"


def _find_unpackable(value: Any) -> Any:
    if isinstance(value, dict):
        for k, v in value.items():
            for x in (k, v):
                found = _find_unpackable(x)
                if found is not None:
                    return found
        return None
    if isinstance(value, list | tuple):
        for x in value:
            found = _find_unpackable(x)
            if found is not None:
                return found
        return None
    if value is None or isinstance(value, bool | int | float | str | bytes | bytearray | memoryview):
        if isinstance(value, int) and not -(2**63) <= value < 2**64:
            return value
        return None
    return None if payload.carries(value) else value


# ---------------------------------------------------------------- parsing


def parse(frames: Sequence[bytes]) -> Message:
    """Parse and check a message. Raises WireError for anything malformed: bad
    MessagePack, wrong version, unknown kind, wrong field count or types, wrong number
    of body frames, oversized frames."""
    if not frames:
        raise WireError("empty message")
    for f in frames:
        if len(f) > MAX_FRAME_BYTES and (len(f) > MAX_BUFFER_BYTES or f is frames[0]):
            raise WireError(f"frame of {len(f)} bytes exceeds the limit of {MAX_FRAME_BYTES}")
    try:
        head = msgpack.unpackb(frames[0], raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:
        raise WireError(f"header is not MessagePack: {type(exc).__name__}") from None
    if not isinstance(head, list) or len(head) < 2:
        raise WireError("header is not an array [version, kind, ...]")
    version, kind = head[0], head[1]
    if version != VERSION:
        raise WireError(f"protocol version {version!r}, expected {VERSION}")
    shape = _SHAPES.get(kind) if isinstance(kind, int) and not isinstance(kind, bool) else None
    if shape is None:
        raise WireError(f"unknown message kind {kind!r}")
    n_fields, n_bodies = shape
    fields = tuple(head[2:])
    if len(fields) != n_fields:
        raise WireError(f"{KIND_NAMES[kind]} has {len(fields)} fields, expected {n_fields}")
    bodies = tuple(frames[1:])
    bufs: tuple[Any, ...] = ()
    if kind == PUT or kind == BATCH:
        bodies, bufs = _split_buffers(kind, fields, bodies)
    elif (n_bodies >= 0 and len(bodies) != n_bodies) or (n_bodies < 0 and not bodies):
        raise WireError(f"{KIND_NAMES[kind]} has {len(bodies)} body frames")
    _check_fields(kind, fields, bodies)
    return Message(kind, fields, bodies, bufs)


def _split_buffers(kind: int, fields: tuple[Any, ...], frames: tuple[Any, ...]) -> tuple[tuple[Any, ...], ...]:
    """The body frames and the buffer frames of a PUT or BATCH (its last field,
    `nbufs`, says how many buffers each event has; the bodies come first)."""
    nbufs, ids = fields[-1], fields[2 if kind == PUT else 1]
    n_events = len(ids) if isinstance(ids, list) else -1
    if not isinstance(nbufs, list):
        raise WireError(f"{KIND_NAMES[kind]} has malformed fields")
    if nbufs and (len(nbufs) != n_events or not all(_is_int(n) and n >= 0 for n in nbufs)):
        raise WireError(f"{KIND_NAMES[kind]} has malformed fields")
    n_bodies = 1 if kind == PUT else len(frames) - sum(nbufs)
    if n_bodies < 1 or len(frames) != n_bodies + sum(nbufs):
        raise WireError(f"{KIND_NAMES[kind]} has {len(frames)} body frames for {sum(nbufs)} buffers")
    for f in frames[:n_bodies]:
        if len(f) > MAX_FRAME_BYTES:
            raise WireError(f"frame of {len(f)} bytes exceeds the limit of {MAX_FRAME_BYTES}")
    return frames[:n_bodies], frames[n_bodies:]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _increasing_ints(xs: list[Any]) -> bool:
    """True if `xs` are strictly increasing integers (checked at C speed: this runs on
    every PUT a queue receives)."""
    try:
        total = sum(xs)
    except TypeError:
        return False
    if type(total) is not int:
        return False  # a float (or an int subclass other than bool) hid in the list
    return len(set(xs)) == len(xs) and xs == sorted(xs)


def _int_list(xs: Any) -> bool:
    return isinstance(xs, list) and all(_is_int(x) for x in xs)


def _check_fields(kind: int, f: tuple[Any, ...], bodies: tuple[bytes, ...]) -> None:
    ok = True
    if kind == HELLO:
        ok = _is_int(f[0]) and f[0] in (PRODUCER, WORKER) and _is_int(f[1]) and _is_int(f[2])
    elif kind == PUT:
        seq, part, ids, ends, t_src, traced, _nbufs = f
        ok = (
            _is_number(t_src)
            and _is_int(traced)
            and traced in (0, 1)
            and _is_int(seq)
            and _is_int(part)
            and isinstance(ids, list)
            and isinstance(ends, list)
            and len(ids) == len(ends)
            and len(ids) > 0
            and _increasing_ints(ends)
            and ends[0] > 0
            and ends[-1] == len(bodies[0])
        )
    elif kind == GET:
        ok = _is_int(f[0]) and f[0] >= 1 and _int_list(f[1])
    elif kind == ACK:
        ok = _is_int(f[0]) and f[0] >= 0
    elif kind == CREDIT:
        ok = _is_int(f[0]) and f[0] >= 0 and _is_int(f[1]) and _is_int(f[2]) and f[2] >= 0
    elif kind == BATCH:
        lease, ids, counts, t_srcs, traced, _nbufs = f
        ok = (
            _is_int(lease)
            and _is_int(traced)
            and traced in (0, 1)
            and isinstance(ids, list)
            and isinstance(counts, list)
            and isinstance(t_srcs, list)
            and len(t_srcs) == len(counts)
            and all(_is_number(t) for t in t_srcs)
            and len(counts) == len(bodies)
            and all(_is_int(c) and c > 0 for c in counts)
            and sum(counts) == len(ids)
        )
    elif kind == ERR:
        ok = isinstance(f[0], str | bytes) and _is_int(f[1])
    elif kind == RENEW:
        ok = _is_int(f[0]) and _int_list(f[1]) and _is_int(f[2])
    elif kind in (EXPIRED, RETURN):
        ok = _int_list(f[0])
    elif kind == HOLD:
        ok = isinstance(f[0], list) and all(isinstance(r, str | bytes) for r in f[0])
    elif kind == GONE:
        ok = isinstance(f[0], str | bytes) and isinstance(f[1], str) and _is_int(f[2]) and _is_int(f[3])
    elif kind == REGISTER:
        ok = _is_int(f[0]) and isinstance(f[1], str) and _is_int(f[2]) and _is_int(f[3]) and isinstance(f[4], str)
    elif kind in (STATS, DONE, FATAL, COMMAND, REPLY):
        ok = isinstance(f[0], dict)
    elif kind == STOP:
        ok = isinstance(f[0], int | float) and not isinstance(f[0], bool)
    if not ok:
        raise WireError(f"{KIND_NAMES[kind]} has malformed fields")


def unpack_events(
    bodies: Iterable[bytes], expected: int, nbufs: Sequence[int] = (), bufs: Sequence[Any] = ()
) -> list[Any]:
    """Decode the events of one or more bodies, each event's buffers (`nbufs` of them,
    in order, from `bufs`) with it; raises WireError unless exactly `expected`
    well-formed events are found, each using only its own buffers."""
    events: list[Any] = []
    base = [0, 0]
    hook = payload.ext_hook(bufs, base)
    for body in bodies:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=MAX_FRAME_BYTES, ext_hook=hook)
        unpacker.feed(body)
        try:
            if not nbufs:
                events.extend(unpacker)
            else:
                _unpack_with_buffers(unpacker, events, nbufs, base)
        except payload.PayloadError as exc:
            raise WireError(f"event {len(events)}: {exc}") from None
        except Exception as exc:
            raise WireError(f"body is not a sequence of MessagePack events: {type(exc).__name__}") from None
        if unpacker.tell() != len(body):
            raise WireError("body ends inside an event")
    if len(events) != expected:
        raise WireError(f"body holds {len(events)} events, header says {expected}")
    return events


def _unpack_with_buffers(unpacker: Any, events: list[Any], nbufs: Sequence[int], base: list[int]) -> None:
    """Decode the events of one body, telling the ext hook (through `base`) where the
    buffers of each event start and how many it has."""
    while True:
        k = len(events)
        base[1] = nbufs[k] if k < len(nbufs) else 0
        try:
            event = unpacker.unpack()
        except msgpack.OutOfData:
            return
        events.append(event)
        base[0] += base[1]

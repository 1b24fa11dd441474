"""Runs in every runtime process of a traced run (`sedamp run --trace`): decides which
events are sampled and keeps the times of their hops through this process.

Reads:  nothing (the decision is a pure function of the event id).
Writes: ``<trace_dir>/<role>-<stage>-<index>-<pid>.trace`` in the run directory: a
        stream of MessagePack objects, a header map, then an array of records per
        flush (when the buffer fills and when the process ends): records are kept as
        tuples and encoded in one call each flush, which costs a fraction of encoding
        each on its own (and MessagePack a third of JSON, to write and to read).

Sampling is decided from the event id alone, so every process agrees on it: the source
positions (int ids) are cut in blocks of `period` (1 / sample) x RUN positions, and in
each block a run of RUN positions in a row is sampled, at an offset a multiplicative
hash of the block number picks. A fan-out child ``"<id>.<i>"`` follows its root. Ids
made at the end of input (``"<stage>.<index>.end.<k>"``) are not sampled.

Finding the sampled ids of a batch costs a pass over its ids (`pick`: a sort, one C
pass for ascending ids, then a lookup per sampled position). In a busy process that
pass cost 6-12 us a batch of 512 (the ids are cold), against 2 us in a loop alone, and
every queue and worker made it for every batch: most of what tracing cost. So each PUT
and BATCH carries one flag, set when an event of it may be traced: a source sets it
when its read holds a sampled position, a worker when the lease its outputs come from
held a traced event (an output is named after its input), a queue when a PUT of the
batch's events had it. Only flagged messages are looked through; unflagged ones cost a
test of the flag.

Why runs: the events of a batch make every hop together, so what a trace costs (a
record per batch and hop, in every process, then the merge of them all) grows with the
batches that hold a sampled event, not with the sampled events. One position in every
100 put a sampled event in every batch of 512; runs of 32 in every 3,200 put one in
about one batch in six, for the same 1% of the events.

Records (times are ``time.monotonic_ns()``, system-wide on Linux, so comparable between
the processes of one host; the header keeps this process's ``time.time_ns()`` minus
``time.monotonic_ns()``, so that the files of several hosts can be put on one clock)::

    ["hops", HOP, stage, [event ids], t_ns, batch]   the sampled events of a batch that
                                                  made hop HOP at t_ns; HOP: read sent
                                                  queued leased start end put acked sink
    ["slices", TEXT]                              the handler calls (worker) or reads
                                                  (source) since the last flush, sampled
                                                  or not, as the document's slices: JSON
                                                  text, a comma between slices

A process formats its own slices (`call_slices`): thousands of calls per process, each
formatted beside the run's work in its own process, rather than all of them one after
the other in the merge at the end of the run, where the user waits for them. Their
``ts`` is the monotonic clock's, in microseconds: the same in every process of a host.

Nothing here runs unless tracing is on: the processes hold ``tracer = None`` otherwise
and test it once per batch.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import time
from bisect import bisect_left
from pathlib import Path
from typing import Any

import msgpack

# Knuth's multiplicative hash (2^32 / golden ratio): spreads the blocks' runs over the
# positions of their blocks, so a sample is not aligned with whatever period the input
# itself has.
_MIX = 2654435761
_MASK = 0xFFFFFFFF

# Records (about one per batch and hop) a process keeps before appending them to its
# file: a few hundred KB at most, and one write per this many records.
FLUSH_RECORDS = 4096
# Calls a process keeps before it formats them as slices and appends them: a few at a
# time, so that the formatting is done while the run goes on, not as the process ends
# (where the last of them holds up the end of the run).
FLUSH_CALLS = 256

# The run directory's subdirectory the processes write their trace records to, and
# the suffix of each process's file there.
TRACE_DIR = "traces"
RECORDS_SUFFIX = ".trace"

HOPS = ("read", "sent", "queued", "leased", "start", "end", "put", "acked", "sink")

# Sampled source positions come in runs of this many in a row (see above): long enough
# that a batch holds a run or none, short enough that a trace of a few thousand events
# still sees several batches.
RUN = 32


def period_of(sample: float) -> int:
    """One event in how many is sampled (at least 1: every event)."""
    if not 0 < sample <= 1:
        raise ValueError(f"trace sample must be in (0, 1], got {sample}")
    return max(1, round(1 / sample))


def root_of(eid: Any) -> int | None:
    """The source position an event id descends from, or None (not a source event)."""
    if isinstance(eid, int):
        return eid
    if isinstance(eid, str):
        head = eid.split(".", 1)[0]
        return int(head) if head.isdigit() else None
    return None


def _offset(block: int, size: int) -> int:
    """Where the sampled run starts in a block of `size` source positions."""
    return ((block * _MIX) & _MASK) % (size - RUN + 1)


def is_sampled(eid: Any, period: int) -> bool:
    """Whether the event `eid` (or the event it was made from) is traced."""
    root = eid if isinstance(eid, int) else root_of(eid)
    if root is None:
        return False
    if period == 1:
        return True
    size = period * RUN
    block, at = divmod(root, size)
    start = _offset(block, size)
    return start <= at < start + RUN


def sampled_between(lo: int, hi: int, period: int) -> list[int]:
    """The sampled source positions from `lo` to `hi`, both included, ascending."""
    if period == 1:
        return list(range(lo, hi + 1))
    size = period * RUN
    found: list[int] = []
    for block in range(lo // size, hi // size + 1):
        start = block * size + _offset(block, size)
        first, last = max(lo, start), min(hi, start + RUN - 1)
        if first <= last:
            found += range(first, last + 1)
    return found


class Tracer:
    """The trace records of one process, buffered and appended to its own file."""

    def __init__(self, trace_dir: str, sample: float, role: str, stage: str, index: int = 0) -> None:
        self.period = period_of(sample)
        self.pid = os.getpid()
        Path(trace_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(trace_dir) / f"{role}-{stage}-{index}-{self.pid}{RECORDS_SUFFIX}"
        header = {
            "role": role,
            "stage": stage,
            "index": index,
            "pid": self.pid,
            "host": socket.gethostname(),
            "wall_minus_monotonic_ns": time.time_ns() - time.monotonic_ns(),
        }
        self.stage = stage
        self.header: bytes | None = msgpack.packb(header)
        self.role = role
        self.records: list[tuple[Any, ...]] = []
        self.calls: list[tuple[Any, ...]] = []  # (stage, batch, t0_ns, t1_ns, events, sampled)
        self.leases: dict[Any, list[Any]] = {}  # lease -> its sampled ids (workers)
        atexit.register(self.flush)

    def pick(self, ids: list[Any]) -> list[Any]:
        """The sampled ones among `ids`."""
        p = self.period
        if p == 1:
            return [e for e in ids if root_of(e) is not None]
        if not ids:
            return []
        # One sort finds the ends of any list of positions: a pass in C for the usual
        # batch, ascending already, and a merge of a few ascending runs for a lease of
        # the PUTs of several producers. Between the ends lie the sampled positions to
        # look up, none in most batches. (Checking that the list is ascending and taking
        # its first and last costs a second pass; taking min and max, a Python
        # comparison per id. Checking only the ends, the sum and the traced positions
        # was tried too: a fan-in batch such as [1000, 0, 2003, 1003] passes it and
        # loses its traced event 0.)
        try:
            ordered = sorted(ids)
        except TypeError:  # ints and strings mixed
            ordered = []
        if ordered and type(ordered[0]) is int and type(ordered[-1]) is int:
            lo, hi = ordered[0], ordered[-1]
            if (hi - lo) // p <= len(ids):
                return [x for x in sampled_between(lo, hi, p) if ordered[bisect_left(ordered, x)] == x]
        return [e for e in ids if is_sampled(e, p)]  # fan-out children, or ids far apart

    def hops(self, hop: str, stage: str, ids: list[Any], t_ns: int, batch: Any = None) -> None:
        if not ids:  # a hop of no traced event says nothing
            return
        self.records.append(("hops", hop, stage, ids, t_ns, batch))
        if len(self.records) >= FLUSH_RECORDS:
            self.flush()

    def call(self, stage: str, batch: Any, t0_ns: int, t1_ns: int, n: int, sampled: list[Any]) -> None:
        self.calls.append((stage, batch, t0_ns, t1_ns, n, sampled))
        if len(self.calls) >= FLUSH_CALLS:
            self.flush()

    # ---------------------------------------------------------------- by role

    def read(self, stage: str, ids: list[Any], t0_ns: int) -> bool:
        """A source read `ids` from `t0_ns` on and hands them to its outlets now;
        whether one of them is traced."""
        if not ids:
            return False
        t1_ns = time.monotonic_ns()
        lo, hi = ids[0], ids[-1]
        if hi - lo == len(ids) - 1 and self.period > 1:  # ascending positions, none skipped
            sampled: list[Any] = sampled_between(lo, hi, self.period)
        else:
            sampled = self.pick(ids)
        self.call(stage, ids[0], t0_ns, t1_ns, len(ids), sampled)
        if sampled:
            self.hops("read", stage, sampled, t0_ns)
            self.hops("sent", stage, sampled, t1_ns)
        return bool(sampled)

    def queued(self, ids: list[Any]) -> None:
        """A queue received a PUT of `ids`."""
        sampled = self.pick(ids)
        if sampled:
            self.hops("queued", self.stage, sampled, time.monotonic_ns())

    def leased(self, stage: str, lease: Any, ids: list[Any]) -> None:
        """A worker received the batch `lease` of `ids`."""
        sampled = self.pick(ids)
        if sampled:
            self.leases[lease] = sampled
            self.hops("leased", stage, sampled, time.monotonic_ns(), lease)

    def handled(self, stage: str, lease: Any, n: int, t0_ns: int, sink: bool, outputs: bool = False) -> None:
        """A worker's handler call on the batch `lease` ran from `t0_ns` until now (and
        with `outputs`, they are handed to the outlets now)."""
        t1_ns = time.monotonic_ns()
        sampled = self.leases.get(lease, [])
        self.call(stage, lease, t0_ns, t1_ns, n, sampled)
        if sampled:
            self.hops("start", stage, sampled, t0_ns, lease)
            self.hops("end", stage, sampled, t1_ns, lease)
            if sink:
                self.hops("sink", stage, sampled, t1_ns, lease)
            if outputs:
                self.hops("put", stage, sampled, time.monotonic_ns(), lease)

    def acked(self, stage: str, lease: Any) -> None:
        """A worker acknowledges `lease`: every downstream queue took its outputs."""
        sampled = self.leases.pop(lease, None)
        if sampled:
            self.hops("acked", stage, sampled, time.monotonic_ns(), lease)

    def flush(self) -> None:
        if not self.records and not self.calls and self.header is None:
            return
        if self.calls:
            self.records.append(("slices", call_slices(self.pid, self.role, self.stage, self.calls)))
        blob = self.header or b""
        if self.records:
            blob += msgpack.packb(self.records)
        self.header, self.records, self.calls = None, [], []
        try:
            with open(self.path, "ab") as f:
                f.write(blob)
        except OSError:  # a trace is advisory: a full disk must not stop the run
            pass


def ids_json(ids: list[Any] | tuple[Any, ...]) -> str:
    """Event ids as a JSON array of strings."""
    if not ids:
        return "[]"
    if set(map(type, ids)) == {int}:  # source positions: nothing to escape
        return '["' + '","'.join(map(str, ids)) + '"]'
    return json.dumps([str(e) for e in ids])


def call_slices(pid: int, role: str, own_stage: str, calls: list[Any], shift_ns: int = 0) -> str:
    """The complete ("X") slices of a process's calls, (stage, batch, t0_ns, t1_ns,
    events, sampled ids) each, as the trace document's JSON text (slices joined by
    commas), at `shift_ns` plus their times in microseconds."""
    name = json.dumps("read" if role == "source" else own_stage)
    # thousands of slices: what is the same for all is written once
    head = f'{{"ph":"X","name":{name},"cat":"{role}","pid":{pid},"tid":{pid},"ts":'
    tails: dict[str, str] = {}
    out = []
    for stage, batch, c0, c1, n, sampled in calls:
        if stage not in tails:
            tails[stage] = f',"args":{{"stage":{json.dumps(stage)},"batch":'
        out.append(
            f'{head}{(c0 + shift_ns) / 1000!r},"dur":{(c1 - c0) / 1000!r}{tails[stage]}'
            f'{batch if type(batch) is int else json.dumps(batch)},"events":{n},'
            f'"sampled":{ids_json(sampled) if sampled else "[]"}}}}}'
        )
    return ",".join(out)


def tracer_of(trace_dir: str, sample: float, role: str, stage: str, index: int = 0) -> Tracer | None:
    """The process's tracer, or None when the run is not traced."""
    return Tracer(trace_dir, sample, role, stage, index) if trace_dir and sample > 0 else None

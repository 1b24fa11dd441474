"""Pure: event traces, from the records the processes of a traced run wrote
(`sedamp.runtime.tracing`) to a Chrome trace-event JSON document (read by Perfetto and
chrome://tracing), and from that document to a summary (`sedamp trace FILE`).

The document (docs/traces.md) has one track per process (``src:STAGE``, ``q:STAGE``,
``sdw:STAGE:INDEX``): a complete ("X") slice per handler call on a worker's track, per
read on a source's, and one per sampled event waiting in a queue (on lanes of the
queue's track, so that waits never overlap on one lane); flow arrows ("s", "t", "f")
follow each sampled event from slice to slice, one arrow per path that events took
together. The raw hop times ride along under the document's ``sedamp`` key, which
viewers ignore and the summary reads.

Times: ``time.monotonic_ns()`` is one clock for every process of a host. When the
records come from several hosts each host's records are moved to the wall clock by
the offset its processes measured, so between hosts times are only as exact as the
hosts' clocks agree (NTP: typically within a millisecond); the document says which.
"""

from __future__ import annotations

import gc
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import msgpack

from sedamp.observe.words import plural
from sedamp.runtime.tracing import RECORDS_SUFFIX, call_slices, ids_json

# The ``sedamp`` section's form. 3: ``cohorts`` (the sets of sampled event ids that made
# a hop together) and ``hops``, [hop, stage, cohort, ns from the document's zero];
# 2: [hop, stage, [event ids], us]; 1: one event at a time, [event id, stage, hop, us].
FORMAT_VERSION = 3
READS_VERSIONS = (1, 2, 3)

# A queue's waits are drawn on at most this many lanes (beyond, they share the last).
MAX_LANES = 64

# The segments of an event's path, named by the hop that ends them.
SEGMENT_OF = {
    "sent": "read",
    "queued": "transit",
    "leased": "queue",
    "start": "inbox",
    "end": "service",
    "put": "emit",
}


@dataclass
class ProcRecords:
    """The records one process wrote (its file under the run's traces/)."""

    role: str
    stage: str
    index: int
    pid: int
    host: str
    offset_ns: int  # wall clock minus monotonic clock, measured by the process
    hops: list[Sequence[Any]] = field(default_factory=list)  # [hop, stage, [event ids], t_ns, batch]
    calls: list[Sequence[Any]] = field(default_factory=list)  # [stage, batch, t0_ns, t1_ns, n, sampled]
    slices: list[str] = field(default_factory=list)  # its calls as the process formatted them

    @property
    def label(self) -> str:
        if self.role == "worker":
            return f"sdw:{self.stage}:{self.index}"
        return f"{'src' if self.role == 'source' else 'q'}:{self.stage}"


def parse_records(data: bytes) -> ProcRecords | None:
    """One process's file; None when it has no header. A cut last flush is skipped."""
    unpacker = msgpack.Unpacker(use_list=False, raw=False, strict_map_key=False, max_buffer_size=len(data) + 1)
    unpacker.feed(data)
    try:
        head = next(unpacker)
        proc = ProcRecords(
            head["role"], head["stage"], head["index"], head["pid"], head["host"], head["wall_minus_monotonic_ns"]
        )
    except (StopIteration, ValueError, TypeError, KeyError, msgpack.UnpackException):
        return None
    try:
        for records in unpacker:  # one flush: an array of records
            proc.hops += [rec[1:] for rec in records if rec and rec[0] == "hops"]
            proc.slices += [rec[1] for rec in records if rec and rec[0] == "slices" and rec[1]]
    except (ValueError, TypeError, msgpack.UnpackException):  # a damaged file: what came before it stands
        pass
    return proc


def read_dir(trace_dir: Path) -> list[ProcRecords]:
    """Every process's records under a run's traces/ directory."""
    procs = []
    for path in sorted(trace_dir.glob(f"*{RECORDS_SUFFIX}")):
        proc = parse_records(path.read_bytes())
        if proc is not None:
            procs.append(proc)
    return procs


def clock_shifts(procs: list[ProcRecords]) -> tuple[dict[int, int], str]:
    """What to add to each process's times (by pid) to put all on one clock, and how
    exact that clock is."""
    hosts: dict[str, list[int]] = defaultdict(list)
    for p in procs:
        hosts[p.host].append(p.offset_ns)
    if len(hosts) <= 1:
        return {p.pid: 0 for p in procs}, "monotonic clock of one host (exact)"
    from statistics import median  # several hosts only: not on every traced run's path

    offset = {h: int(median(v)) for h, v in hosts.items()}
    note = (
        f"wall clock of {len(hosts)} hosts (each host's monotonic clock moved by its measured offset): "
        "between hosts as exact as their clocks agree"
    )
    return {p.pid: offset[p.host] for p in procs}, note


def _lanes(waits: list[tuple[int, int, Any]]) -> list[int]:
    """The lane of each (start, end, _) interval: the first whose last wait ended."""
    ends: list[int] = []
    lanes = []
    for t0, t1, _ in waits:
        for k, end in enumerate(ends):
            if end <= t0:
                ends[k] = t1
                lanes.append(k)
                break
        else:
            if len(ends) < MAX_LANES:
                ends.append(t1)
            lanes.append(len(ends) - 1)
    return lanes


def lane_tid(pid: int, lane: int) -> int:
    """A thread id for a queue's lane, distinct from every pid (pids are < 2^22)."""
    return ((lane + 1) << 22) | pid


# The document is written as text, one encoded trace event per item: for the tens of
# thousands of slices and flow steps of a large trace, formatting each from a template
# costs a fraction of building a dict for it and encoding that. A flow's first step
# names its events; the steps after it belong to the same arrow (its id).
_SLICE = '{"ph":"X","name":%s,"cat":"%s","pid":%d,"tid":%d,"ts":%r,"dur":%r,"args":%s}'
_FLOW_START = '{"ph":"s","id":%d,"name":"event","cat":"event","pid":%d,"tid":%d,"ts":%r,"bp":"e","args":{"events":%s}}'
_FLOW_STEP = '{"ph":"%s","id":%d,"name":"event","cat":"event","pid":%d,"tid":%d,"ts":%r,"bp":"e"}'
_META = '{"ph":"M","pid":%d,"tid":%d,"name":"%s","args":%s}'

Wait = tuple[int, int, str]  # (queued, leased, stage) in a queue


def _shifted(text: str, shift_ns: int) -> list[str]:
    """Slices a process formatted on its own clock, moved by `shift_ns` (records of
    several hosts: the rare case, so parsed and written again)."""
    out = []
    for e in json.loads(f"[{text}]"):
        e["ts"] += shift_ns / 1000
        out.append(json.dumps(e, separators=(",", ":")))
    return out


class _Builder:
    """Builds the Chrome trace-event document, as JSON text, from every process's records.

    The sampled events of a batch make their hops together, and most travel the whole
    way together: the work here is done once per path that events took (the hop records
    they share), not once per event, and each path gets one flow arrow that names the
    events that took it (arrows of events on one path would be drawn on top of each
    other anyway). The slices' ``ts`` are the (one) clock's, in microseconds; the hops
    of the ``sedamp`` section count from the first of them (``zero_ns``)."""

    def __init__(self, procs: list[ProcRecords], stages: list[str], name: str) -> None:
        self.procs = procs
        self.stages = stages
        self.name = name
        self.shift, self.clock = clock_shifts(procs)
        starts = [min(map(itemgetter(3), p.hops)) + self.shift[p.pid] for p in procs if p.hops]
        self.t0 = min(starts) if starts else 0
        self.events: list[str] = []
        # every hop record, (t_ns on the one clock, stage, hop, pid); each set of event
        # ids that made hops together (a batch's sampled events make every hop of it
        # together: a cohort), numbered, with the indices of its records
        self.at: list[tuple[int, str, str, int]] = []
        self.cohorts: dict[tuple[Any, ...], int] = {}
        self.cohort_records: list[list[int]] = []
        # [hop, stage, cohort, ns]: the hops as recorded, a batch's sampled events at once
        self.batches: list[list[Any]] = []
        self.count = 0  # sampled events
        self.children = False  # whether any is a fan-out child "<id>.<i>"
        self._own: dict[Any, list[int]] | None = None
        self._waits_at: dict[tuple[int, ...], list[tuple[int, Wait]]] = {}

    def build(self) -> str:
        for p in self.procs:
            self._process(p)
        together = self._together()
        self._flows(self._paths(together), self._waits(together))
        self.batches.sort(key=itemgetter(3))
        meta = {"version": FORMAT_VERSION, "name": self.name, "stages": self.stages, "clock": self.clock}
        meta["zero_ns"] = self.t0
        meta["cohorts"] = list(self.cohorts)
        meta["hops"] = self.batches
        return f'{{"traceEvents":[{",".join(self.events)}],"displayTimeUnit":"ms","sedamp":{json.dumps(meta)}}}'

    def _meta(self, pid: int, tid: int, what: str, args: dict[str, Any]) -> None:
        self.events.append(_META % (pid, tid, what, json.dumps(args)))

    def _process(self, p: ProcRecords) -> None:
        pid, shift, t0, out = p.pid, self.shift[p.pid], self.t0, self.events
        self._meta(pid, pid, "process_name", {"name": p.label})
        self._meta(pid, pid, "thread_name", {"name": p.label})
        order = self.stages.index(p.stage) if p.stage in self.stages else len(self.stages)
        self._meta(pid, pid, "process_sort_index", {"sort_index": 3 * order + {"source": 0, "queue": 1}.get(p.role, 2)})
        for text in p.slices:
            if shift:
                out += _shifted(text, shift)
            else:
                out.append(text)
        if p.calls:
            out.append(call_slices(pid, p.role, p.stage, p.calls, shift))
        at, cohorts, records, batches = self.at, self.cohorts, self.cohort_records, self.batches
        for hop, stage, ids, t, _batch in p.hops:
            c = cohorts.setdefault(tuple(ids), len(records))
            if c == len(records):
                records.append([])
            records[c].append(len(at))
            at.append((t + shift, stage, hop, pid))
            batches.append([hop, stage, c, t + shift - t0])

    def _own_records(self) -> dict[Any, list[int]]:
        """Per sampled event, the indices of the hop records it is in."""
        if self._own is None:
            self._own = defaultdict(list)
            for ids, records in zip(self.cohorts, self.cohort_records, strict=True):
                for eid in ids:
                    self._own[eid] += records
        return self._own

    def _together(self) -> dict[tuple[int, ...], list[Any]]:
        """The sampled events by the hop records they share."""
        cohorts = [c for c in self.cohorts if c]  # records of no event (files of before) add nothing
        ids: set[Any] = set().union(*cohorts)
        self.count = len(ids)
        self.children = str in set(map(type, ids)) and any(type(e) is str and "." in e for e in ids)
        if sum(map(len, cohorts)) == len(ids):  # each event in one cohort: the usual case
            return {tuple(self.cohort_records[self.cohorts[c]]): list(c) for c in cohorts}
        together: dict[tuple[int, ...], list[Any]] = defaultdict(list)
        for eid, records in self._own_records().items():
            together[tuple(records)].append(eid)
        return together

    def _paths(self, together: dict[tuple[int, ...], list[Any]]) -> dict[tuple[int, ...], list[Any]]:
        """The events by the path they took: the records of their own hops and, for a
        fan-out child ``"<id>.<i>"``, of its parents' as well."""
        if not self.children:
            return together
        own = self._own_records()
        paths: dict[tuple[int, ...], list[Any]] = defaultdict(list)
        for records, eids in together.items():
            for eid in eids:
                if type(eid) is not str or "." not in eid:
                    paths[records].append(eid)
                    continue
                path, parent = set(records), eid
                while "." in parent:
                    parent = parent.rsplit(".", 1)[0]
                    path.update(own.get(parent) or own.get(int(parent) if parent.isdigit() else parent) or ())
                paths[tuple(sorted(path))].append(eid)
        return paths

    def _waits(self, together: dict[tuple[int, ...], list[Any]]) -> dict[tuple[int, int, int, str], int]:
        """A slice per wait in a queue (queued -> leased) of the sampled events that
        arrived and left together, on lanes so that slices never overlap on one; the
        lane (thread id) of each wait, by (queue pid, queued, leased, stage)."""
        by_queue: dict[int, dict[Wait, list[Any]]] = defaultdict(lambda: defaultdict(list))
        for records, eids in together.items():
            for pid, wait in self._waits_of(records):
                by_queue[pid][wait].extend(eids)
        tids: dict[tuple[int, int, int, str], int] = {}
        names = {stage: json.dumps(f"wait {stage}") for stage in {w[2] for g in by_queue.values() for w in g}}
        for pid, groups in by_queue.items():
            waits = sorted(groups)
            lanes = _lanes(waits)
            for wait, lane in zip(waits, lanes, strict=True):
                (t0, t1, stage), tid = wait, lane_tid(pid, lane)
                tids[(pid, *wait)] = tid
                args = f'{{"events":{ids_json(_in_order(groups[wait]))}}}'
                self.events.append(_SLICE % (names[stage], "queue", pid, tid, t0 / 1000, (t1 - t0) / 1000, args))
            for lane in sorted(set(lanes)):
                self._meta(pid, lane_tid(pid, lane), "thread_name", {"name": f"waiting {lane + 1}"})
        return tids

    def _waits_of(self, records: tuple[int, ...]) -> list[tuple[int, Wait]]:
        """The queue waits of events whose hops are `records`: per "queued" record, (the
        queue's pid, (queued, leased, stage)), leased being their last lease there. The
        events of one PUT leased in different batches have different waits."""
        found = self._waits_at.get(records)
        if found is not None:
            return found
        at = self.at
        leased: dict[str, int] = {}
        for i in records:
            t, stage, hop, _ = at[i]
            if hop == "leased" and (stage not in leased or t > leased[stage]):
                leased[stage] = t
        found = []
        for i in records:
            t, stage, hop, pid = at[i]
            if hop == "queued" and stage in leased and leased[stage] >= t:
                found.append((pid, (t, leased[stage], stage)))
        self._waits_at[records] = found
        return found

    def _flows(self, paths: dict[tuple[int, ...], list[Any]], lanes: dict[tuple[int, int, int, str], int]) -> None:
        """An arrow per path from slice to slice: from the read, through each queue
        wait, to each handler call, naming the events that took it."""
        at, out = self.at, self.events
        named = sorted(((_in_order(eids), path) for path, eids in paths.items()), key=_first_id)
        for flow_id, (eids, path) in enumerate(named, start=1):
            anchors = [(at[i][0], at[i][3], at[i][3]) for i in path if at[i][2] in ("read", "start")]
            for pid, wait in self._waits_of(path):
                if (pid, *wait) in lanes:
                    anchors.append((wait[0], pid, lanes[(pid, *wait)]))
            if len(anchors) < 2:
                continue
            anchors.sort()
            (t, pid, tid), last = anchors[0], anchors[-1]
            out.append(_FLOW_START % (flow_id, pid, tid, t / 1000, ids_json(eids)))
            for t, pid, tid in anchors[1:-1]:
                out.append(_FLOW_STEP % ("t", flow_id, pid, tid, t / 1000))
            out.append(_FLOW_STEP % ("f", flow_id, last[1], last[2], last[0] / 1000))


def _in_order(eids: list[Any]) -> list[Any]:
    """Event ids in the order of their source positions (children after their parent)."""
    if set(map(type, eids)) == {int}:
        return sorted(eids)
    return sorted(eids, key=_id_order)


def _first_id(named: tuple[list[Any], Any]) -> tuple[int, str]:
    return _id_order(named[0][0])


def _id_order(eid: Any) -> tuple[int, str]:
    if type(eid) is int:
        return (eid, "")
    eid = str(eid)
    head = eid.split(".", 1)[0]
    return (int(head) if head.isdigit() else -1, eid)


def path_of(eid: str, hops: dict[str, list[Any]]) -> list[Any]:
    """The hops of an event and of the events it was made from (a fan-out child
    ``"<id>.<i>"`` carries on its parent's path), in time order."""
    path = list(hops.get(eid, []))
    parent = eid
    while "." in parent:
        parent = parent.rsplit(".", 1)[0]
        path.extend(hops.get(parent, []))
    return sorted(path)


def chrome_trace_text(procs: list[ProcRecords], stages: list[str], name: str) -> tuple[str, int]:
    """The Chrome trace-event document of a run's records, as JSON text, and how many
    events it follows."""
    builder = _Builder(procs, stages, name)
    return builder.build(), builder.count


def chrome_trace(procs: list[ProcRecords], stages: list[str], name: str) -> dict[str, Any]:
    """The Chrome trace-event document of a run's records."""
    doc: dict[str, Any] = json.loads(chrome_trace_text(procs, stages, name)[0])
    return doc


def write_trace(trace_dir: Path, out: Path, stages: list[str], name: str) -> int:
    """Merge a run's records into `out`; how many events were sampled."""
    collecting = gc.isenabled()
    gc.disable()  # tens of thousands of tuples, none in a cycle: the collector's passes cost a tenth
    try:
        text, events = chrome_trace_text(read_dir(trace_dir), stages, name)
    finally:
        if collecting:
            gc.enable()
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    return events


# ---------------------------------------------------------------- summary


@dataclass(frozen=True)
class StageTimes:
    """Per stage, over its sampled events: (median, p90) in ms of each part of its
    time, None where no event shows it."""

    stage: str
    events: int
    queue_ms: tuple[float, float] | None  # queued -> leased: waiting in the stage's queue
    service_ms: tuple[float, float] | None  # the handler call (the read, for a source)
    transit_ms: tuple[float, float] | None  # upstream put -> queued, plus leased -> handler start
    blocked_ms: tuple[float, float] | None  # handler end -> acked: outputs waiting for room downstream


@dataclass(frozen=True)
class SlowEvent:
    """One of the slowest sampled events: its time from read to the end of its last
    handler call, and the segments of its path, in order: (what, stage, ms)."""

    eid: str
    total_ms: float
    segments: tuple[tuple[str, str, float], ...]


@dataclass(frozen=True)
class HeldBack:
    """The stage where the slowest sampled events (the slowest tenth, at least one) spent
    the most of their time: its share of their time, and the part of it that was most."""

    stage: str
    share: float  # of the slow events' time, 0..1
    part: str  # "service", "queue", "transit", ...: the most of its time there
    events: int  # how many slow events this is drawn from


@dataclass(frozen=True)
class TraceSummary:
    name: str
    clock: str
    events: int
    stages: tuple[StageTimes, ...]
    slowest: tuple[SlowEvent, ...]
    held_back: HeldBack | None = None


def percentiles(values: list[float]) -> tuple[float, float] | None:
    """(median, p90 by nearest rank) of `values`, None for none."""
    if not values:
        return None
    ordered = sorted(values)
    p90 = ordered[max(0, -(-len(ordered) * 9 // 10) - 1)]
    n = len(ordered)
    median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    return (median, p90)


def _stage_parts(path: list[tuple[float, str, str]], stage: str) -> dict[str, float]:
    """The parts of an event's time spent at `stage` (ms), from its path."""
    at: dict[str, float] = {}
    for t, s, hop in path:
        if s == stage and (hop != "queued" or hop not in at):
            at[hop] = t
    parts: dict[str, float] = {}
    if "read" in at and "sent" in at:
        parts["service"] = at["sent"] - at["read"]
    if "queued" in at and "leased" in at:
        parts["queue"] = at["leased"] - at["queued"]
    if "start" in at and "end" in at:
        parts["service"] = at["end"] - at["start"]
    if "end" in at and "acked" in at:
        parts["blocked"] = at["acked"] - at["end"]
    if "queued" in at and "leased" in at and "start" in at:
        ups = [t for t, s, hop in path if s != stage and hop in ("sent", "put") and t <= at["queued"]]
        if ups:
            parts["transit"] = at["queued"] - max(ups) + at["start"] - at["leased"]
    return {k: v / 1000 for k, v in parts.items()}


def _slow_event(eid: str, path: list[tuple[float, str, str]]) -> SlowEvent:
    """An event's critical path: the hops in time order (the ACKs, which overlap what
    happens downstream, left out), each segment named by the hop that ends it."""
    hops = [h for h in path if h[2] in SEGMENT_OF or h[2] == "read"]
    segments = tuple(
        (SEGMENT_OF[hop], stage, round((t - prev) / 1000, 3))
        for (prev, _, _), (t, stage, hop) in zip(hops, hops[1:], strict=False)
    )
    total = (hops[-1][0] - hops[0][0]) / 1000 if hops else 0.0
    return SlowEvent(eid, round(total, 3), segments)


def hops_by_event(meta: dict[str, Any]) -> dict[str, list[tuple[float, str, str]]]:
    """Each sampled event's hops, (us, stage, hop), from a document's ``sedamp`` section."""
    own: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
    if meta["version"] == 1:
        for eid, stage, hop, ts in meta["hops"]:
            own[str(eid)].append((float(ts), stage, hop))
        return own
    if meta["version"] == 3:
        cohorts = [[str(e) for e in ids] for ids in meta["cohorts"]]
        for hop, stage, c, ns in meta["hops"]:
            at = (ns / 1000, stage, hop)
            for eid in cohorts[c]:
                own[eid].append(at)
        return own
    for hop, stage, ids, ts in meta["hops"]:
        at = (float(ts), stage, hop)
        for eid in ids:
            own[str(eid)].append(at)
    return own


def summarize(doc: dict[str, Any], slowest: int = 3) -> TraceSummary:
    """Per stage, the median and p90 of each part of the sampled events' time, and the
    critical path of the `slowest` events. Raises ValueError for a document that is not
    a sedamp trace."""
    meta = doc.get("sedamp") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or meta.get("version") not in READS_VERSIONS:
        raise ValueError("not a trace written by `sedamp run --trace` (no 'sedamp' section this sedamp reads)")
    own = hops_by_event(meta)
    parts: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    counted: dict[str, set[str]] = defaultdict(set)
    parents = {e.rsplit(".", k)[0] for e in own for k in range(1, e.count(".") + 1)}
    leaves = [e for e in own if e not in parents]
    for eid in own:
        path = path_of(eid, own)
        for stage in {s for _, s, _ in own[eid]}:
            counted[stage].add(eid)
            for part, ms in _stage_parts(path, stage).items():
                parts[stage][part].append(ms)
    stages = [s for s in meta["stages"] if s in counted] + sorted(s for s in counted if s not in meta["stages"])
    times = tuple(
        StageTimes(
            s,
            len(counted[s]),
            percentiles(parts[s]["queue"]),
            percentiles(parts[s]["service"]),
            percentiles(parts[s]["transit"]),
            percentiles(parts[s]["blocked"]),
        )
        for s in stages
    )
    ranked = sorted((_slow_event(e, path_of(e, own)) for e in leaves), key=lambda x: -x.total_ms)
    name, clock = meta.get("name", "?"), meta.get("clock", "?")
    return TraceSummary(name, clock, len(own), times, tuple(ranked[:slowest]), held_back(ranked))


def held_back(ranked: list[SlowEvent]) -> HeldBack | None:
    """Where the slowest tenth of `ranked` (slowest first; at least one) spent the most
    of its time, by stage; None when they show no time at all."""
    tail = ranked[: max(1, -(-len(ranked) // 10))]
    at: dict[str, float] = defaultdict(float)
    parts: dict[tuple[str, str], float] = defaultdict(float)
    for ev in tail:
        for what, stage, ms in ev.segments:
            at[stage] += ms
            parts[(stage, what)] += ms
    total = sum(at.values())
    if total <= 0:
        return None
    stage = max(at, key=lambda s: at[s])
    part = max((p for p in parts if p[0] == stage), key=lambda p: parts[p])[1]
    return HeldBack(stage, at[stage] / total, part, len(tail))


def _pair(v: tuple[float, float] | None) -> str:
    return "-" if v is None else f"{v[0]:.3f} / {v[1]:.3f}"


def render(s: TraceSummary) -> list[str]:
    """The summary as lines of text for a terminal."""
    lines = [f"trace of {s.name}: {plural(s.events, 'sampled event')}; clock: {s.clock}", ""]
    header = ("stage", "events", "queue wait", "service", "transit", "blocked")
    rows = [header, ("", "", "p50 / p90 ms", "p50 / p90 ms", "p50 / p90 ms", "p50 / p90 ms")]
    for st in s.stages:
        rows.append(
            (st.stage, str(st.events), _pair(st.queue_ms), _pair(st.service_ms), _pair(st.transit_ms),
             _pair(st.blocked_ms))
        )  # fmt: skip
    widths = [max(len(r[k]) for r in rows) for k in range(len(header))]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    if s.held_back is not None:
        hb = s.held_back
        lines += [
            "",
            f"slowest stage: {hb.stage}: {hb.share:.0%} of the time of the slowest "
            f"{plural(hb.events, 'sampled event')}, most of it {hb.part}",
        ]
    if s.slowest:
        lines += ["", f"critical path of the {plural(len(s.slowest), 'slowest sampled event')} (ms):"]
    for ev in s.slowest:
        worst = max(ev.segments, key=lambda seg: seg[2], default=None)
        path = " > ".join(f"{what} {stage} {ms:.3f}" for what, stage, ms in ev.segments)
        most = f" (most: {worst[0]} {worst[1]})" if worst is not None else ""
        lines.append(f"  event {ev.eid}: {ev.total_ms:.3f}{most}: {path}")
    return lines

"""Pure: event traces, from the records the processes of a traced run wrote
(`sedamp.runtime.tracing`) to a Chrome trace-event JSON document (read by Perfetto and
chrome://tracing), and from that document to a summary (`sedamp trace FILE`).

The document (docs/traces.md) has one track per process (``src:STAGE``, ``q:STAGE``,
``sdw:STAGE:INDEX``): a complete ("X") slice per handler call on a worker's track, per
read on a source's, and one per sampled event waiting in a queue (on lanes of the
queue's track, so that waits never overlap on one lane); flow arrows ("s", "t", "f")
follow each sampled event from slice to slice. The raw hop times ride along under the
document's ``sedamp`` key, which viewers ignore and the summary reads.

Times: ``time.monotonic_ns()`` is one clock for every process of a host. When the
records come from several hosts each host's records are moved to the wall clock by
the offset its processes measured, so between hosts times are only as exact as the
hosts' clocks agree (NTP: typically within a millisecond); the document says which.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sedamp.observe.words import plural

FORMAT_VERSION = 1

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
    hops: list[list[Any]] = field(default_factory=list)  # [hop, stage, eid, t_ns, batch]
    calls: list[list[Any]] = field(default_factory=list)  # [stage, batch, t0_ns, t1_ns, n, sampled]

    @property
    def label(self) -> str:
        if self.role == "worker":
            return f"sdw:{self.stage}:{self.index}"
        return f"{'src' if self.role == 'source' else 'q'}:{self.stage}"


def parse_records(lines: Iterable[str]) -> ProcRecords | None:
    """One process's file; None when it has no header. A cut last line is skipped."""
    it = iter(lines)
    try:
        head = json.loads(next(it))
    except (StopIteration, ValueError):
        return None
    proc = ProcRecords(
        head["role"], head["stage"], head["index"], head["pid"], head["host"], head["wall_minus_monotonic_ns"]
    )
    for line in it:
        try:
            records = json.loads(line)  # one flush: an array of records
        except ValueError:
            continue
        for rec in records:
            if rec and rec[0] == "hops":
                _, hop, stage, ids, t_ns, batch = rec
                proc.hops.extend([hop, stage, eid, t_ns, batch] for eid in ids)
            elif rec and rec[0] == "call":
                proc.calls.append(rec[1:])
    return proc


def read_dir(trace_dir: Path) -> list[ProcRecords]:
    """Every process's records under a run's traces/ directory."""
    procs = []
    for path in sorted(trace_dir.glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            proc = parse_records(f)
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
    offset = {h: int(statistics.median(v)) for h, v in hosts.items()}
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


class _Builder:
    """Builds the Chrome trace-event document from every process's records."""

    def __init__(self, procs: list[ProcRecords], stages: list[str], name: str) -> None:
        self.procs = procs
        self.stages = stages
        self.name = name
        self.shift, self.clock = clock_shifts(procs)
        times = [h[3] + self.shift[p.pid] for p in procs for h in p.hops]
        times += [c[2] + self.shift[p.pid] for p in procs for c in p.calls]
        self.t0 = min(times) if times else 0
        self.events: list[dict[str, Any]] = []
        # event id -> [(t_ns, stage, hop, pid, tid)], on the one clock
        self.hops: dict[str, list[tuple[int, str, str, int, int]]] = defaultdict(list)

    def us(self, t_ns: int) -> float:
        return round((t_ns - self.t0) / 1000, 3)

    def build(self) -> dict[str, Any]:
        for p in self.procs:
            self._process(p)
        self._waits()
        self._flows()
        hops = [[eid, stage, hop, self.us(t)] for eid, hs in self.hops.items() for t, stage, hop, _, _ in sorted(hs)]
        meta = {"version": FORMAT_VERSION, "name": self.name, "stages": self.stages, "clock": self.clock, "hops": hops}
        return {"traceEvents": self.events, "displayTimeUnit": "ms", "sedamp": meta}

    def _meta(self, pid: int, tid: int, what: str, name: str) -> None:
        self.events.append({"ph": "M", "pid": pid, "tid": tid, "name": what, "args": {"name": name}})

    def _process(self, p: ProcRecords) -> None:
        shift = self.shift[p.pid]
        self._meta(p.pid, p.pid, "process_name", p.label)
        self._meta(p.pid, p.pid, "thread_name", p.label)
        order = self.stages.index(p.stage) if p.stage in self.stages else len(self.stages)
        sort = {"sort_index": 3 * order + {"source": 0, "queue": 1}.get(p.role, 2)}
        self.events.append({"ph": "M", "pid": p.pid, "tid": p.pid, "name": "process_sort_index", "args": sort})
        name = "read" if p.role == "source" else p.stage
        for stage, batch, t0, t1, n, sampled in p.calls:
            args = {"stage": stage, "batch": batch, "events": n, "sampled": [str(e) for e in sampled]}
            self.events.append(
                {
                    "ph": "X",
                    "name": name,
                    "cat": p.role,
                    "pid": p.pid,
                    "tid": p.pid,
                    "ts": self.us(t0 + shift),
                    "dur": round((t1 - t0) / 1000, 3),
                    "args": args,
                }
            )
        for hop, stage, eid, t, _batch in p.hops:
            self.hops[str(eid)].append((t + shift, stage, hop, p.pid, p.pid))

    def _waits(self) -> None:
        """A slice per wait in a queue (queued -> leased) of the sampled events that
        arrived and left together, on lanes so that slices never overlap on one."""
        by_queue: dict[int, dict[tuple[int, int, str], list[str]]] = defaultdict(lambda: defaultdict(list))
        for eid, hs in self.hops.items():
            leased = {stage: t for t, stage, hop, _, _ in hs if hop == "leased"}
            for t, stage, hop, pid, _ in hs:
                if hop == "queued" and stage in leased and leased[stage] >= t:
                    by_queue[pid][(t, leased[stage], stage)].append(eid)
        for pid, groups in by_queue.items():
            waits = sorted(groups)
            lanes = _lanes(waits)
            for (t0, t1, stage), lane in zip(waits, lanes, strict=True):
                tid = lane_tid(pid, lane)
                eids = groups[(t0, t1, stage)]
                self.events.append(
                    {
                        "ph": "X",
                        "name": f"wait {stage}",
                        "cat": "queue",
                        "pid": pid,
                        "tid": tid,
                        "ts": self.us(t0),
                        "dur": round((t1 - t0) / 1000, 3),
                        "args": {"events": eids},
                    }
                )
                for eid in eids:
                    hs = self.hops[eid]
                    hs[hs.index((t0, stage, "queued", pid, pid))] = (t0, stage, "queued", pid, tid)
            for lane in sorted(set(lanes)):
                self._meta(pid, lane_tid(pid, lane), "thread_name", f"waiting {lane + 1}")

    def _flows(self) -> None:
        """Arrows following each sampled event from slice to slice: from the read, through
        each queue wait, to each handler call."""
        for flow_id, eid in enumerate(sorted(self.hops, key=_id_order), start=1):
            anchors = sorted(
                (t, pid, tid) for t, _, hop, pid, tid in path_of(eid, self.hops) if _anchored(hop, pid, tid)
            )
            if len(anchors) < 2:
                continue
            for k, (t, pid, tid) in enumerate(anchors):
                ph = "s" if k == 0 else "f" if k == len(anchors) - 1 else "t"
                self.events.append(
                    {"ph": ph, "id": flow_id, "name": "event", "cat": "event", "pid": pid, "tid": tid,
                     "ts": self.us(t), "bp": "e", "args": {"event": eid}}
                )  # fmt: skip


def _anchored(hop: str, pid: int, tid: int) -> bool:
    """Whether a hop starts a slice a flow arrow can bind to."""
    return hop in ("read", "start") or (hop == "queued" and tid != pid)


def _id_order(eid: str) -> tuple[int, str]:
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


def chrome_trace(procs: list[ProcRecords], stages: list[str], name: str) -> dict[str, Any]:
    """The Chrome trace-event document of a run's records."""
    return _Builder(procs, stages, name).build()


def write_trace(trace_dir: Path, out: Path, stages: list[str], name: str) -> int:
    """Merge a run's records into `out`; how many events were sampled."""
    doc = chrome_trace(read_dir(trace_dir), stages, name)
    text = json.dumps(doc, separators=(",", ":"))  # json.dump would encode in Python, 10x slower
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    return len({h[0] for h in doc["sedamp"]["hops"]})


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
class TraceSummary:
    name: str
    clock: str
    events: int
    stages: tuple[StageTimes, ...]
    slowest: tuple[SlowEvent, ...]


def percentiles(values: list[float]) -> tuple[float, float] | None:
    """(median, p90 by nearest rank) of `values`, None for none."""
    if not values:
        return None
    ordered = sorted(values)
    p90 = ordered[max(0, -(-len(ordered) * 9 // 10) - 1)]
    return (statistics.median(ordered), p90)


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


def summarize(doc: dict[str, Any], slowest: int = 3) -> TraceSummary:
    """Per stage, the median and p90 of each part of the sampled events' time, and the
    critical path of the `slowest` events. Raises ValueError for a document that is not
    a sedamp trace."""
    meta = doc.get("sedamp") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or meta.get("version") != FORMAT_VERSION:
        raise ValueError("not a trace written by `sedamp run --trace` (no 'sedamp' section of version 1)")
    own: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
    for eid, stage, hop, ts in meta["hops"]:
        own[str(eid)].append((float(ts), stage, hop))
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
    slow = sorted((_slow_event(e, path_of(e, own)) for e in leaves), key=lambda x: -x.total_ms)[:slowest]
    return TraceSummary(meta.get("name", "?"), meta.get("clock", "?"), len(own), times, tuple(slow))


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
    if s.slowest:
        lines += ["", f"critical path of the {plural(len(s.slowest), 'slowest sampled event')} (ms):"]
    for ev in s.slowest:
        worst = max(ev.segments, key=lambda seg: seg[2], default=None)
        path = " > ".join(f"{what} {stage} {ms:.3f}" for what, stage, ms in ev.segments)
        most = f" (most: {worst[0]} {worst[1]})" if worst is not None else ""
        lines.append(f"  event {ev.eid}: {ev.total_ms:.3f}{most}: {path}")
    return lines

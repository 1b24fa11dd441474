"""Runs in the controller process: what the run measures, once per period.

Reads:  what every child last reported (through the roster), the latency samples
        queues and workers send with their STATS, the slots of workers and sources (the
        batch in hand, the time blocked and waiting as it accrues), and psutil (CPU and
        memory of each local worker, the machine's CPU and load).
Writes: nothing; it returns typed records. `StageCounts` is one stage's counters now
        (the snapshot); `StageRecord` adds this period's rates, latencies, workers and
        time blocked; `Period` adds the stage that held the others back (the bottleneck).
        From these come the metrics line (`Period.as_dict`, docs/controller.md, "Metrics stream"),
        the pool controller's views (`views`) and the run's `Summary` (`summary`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from sedamp.control import policy
from sedamp.control.cpumeter import CpuMeter
from sedamp.control.roster import Child, Roster, Stage, member_counts
from sedamp.control.summary import StageSummary, Summary
from sedamp.observe import metrics, progress
from sedamp.runtime import wire
from sedamp.runtime.deadletter import count_dead_letters
from sedamp.spec import Topology


@dataclass(frozen=True)
class StageCounts:
    """One stage's counters as the controller knows them now."""

    kind: str
    group: str | None
    workers: int  # its pool's (the group's first stage's) live workers
    target: int
    queue: dict[str, Any] | None  # its pool queue's last stats
    counts: dict[str, Any]  # in, out, failed, ... as its processes reported them
    dropped: int
    rejected: int
    poisoned: int
    timeouts: int
    recycled: int
    restarts: int
    ready: int = 0  # of its pool's workers, those whose setup() is done (they reported)
    discarded: int = 0  # events dropped on Ctrl-C: waiting in its queue, or read and unsent (a source)

    def count(self, key: str, default: Any = 0) -> Any:
        return self.counts.get(key, default)


@dataclass(frozen=True)
class WorkerSample:
    """One worker's readings in a record: psutil's CPU and memory, and its busy and waiting time."""

    index: int
    pid: int
    cpu_percent: float | None  # None: not measurable (another host, or gone)
    rss_mb: float | None
    busy: float  # fraction of the period spent handling events
    blocked: float = 0.0  # fraction of the period its outputs waited for credit downstream
    waiting: float = 0.0  # fraction of the period it had nothing to handle

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pid": self.pid,
            "cpu_percent": self.cpu_percent,
            "rss_mb": self.rss_mb,
            "busy": self.busy,
            "blocked": self.blocked,
            "waiting": self.waiting,
        }


@dataclass(frozen=True)
class StageRecord:
    """One stage in one period: its counts, rates, latencies and workers."""

    counts: StageCounts
    bounds: tuple[int, int]
    arrivals_per_s: float
    completions_per_s: float
    latency_ms: dict[str, dict[str, float] | None]  # queue_wait, service, path percentiles
    batch_size: float | None  # what its workers ask for, on average
    events_per_batch: float | None  # what their batches carried this period
    worker_detail: tuple[WorkerSample, ...]  # only on a pool's first stage
    # seconds per second its processes (a source's one, a pool's workers) spent blocked
    # and waiting, summed over them; None on a group's stages after the first
    blocked_s_per_s: float | None = None
    waiting_s_per_s: float | None = None

    @property
    def blocked(self) -> float | None:
        """The share of the period its processes spent blocked (the mean one's)."""
        return metrics.fraction_of(self.blocked_s_per_s, len(self.worker_detail))

    def as_dict(self) -> dict[str, Any]:
        """The stage's entry in the metrics line (keys and their order are documented)."""
        c = self.counts
        q = c.queue
        return {
            "kind": c.kind,
            "group": c.group,
            "workers": c.workers,
            "ready": c.ready,
            "target": c.target,
            "bounds": list(self.bounds),
            "queue": {k: q.get(k) for k in ("length", "capacity", "leased", "credit", "expired")} if q else None,
            "events_in": c.count("in"),
            "events_out": c.count("out"),
            "failed": c.count("failed"),
            "dropped": c.dropped,
            "rejected": c.rejected,
            "retried": c.count("retried"),
            "skipped": c.count("skipped"),
            "duplicates": c.count("duplicates"),
            "poisoned": c.poisoned,
            "discarded": c.discarded,
            "timeouts": c.timeouts,
            "recycled": c.recycled,
            "restarts": c.restarts,
            **({"total": c.count("total", None)} if c.kind == "source" else {}),
            **({"stats": c.count("stats")} if isinstance(c.count("stats", None), dict) else {}),
            "arrivals_per_s": self.arrivals_per_s,
            "completions_per_s": self.completions_per_s,
            "latency_ms": self.latency_ms,
            "batch_size": self.batch_size,
            "events_per_batch": self.events_per_batch,
            "blocked_s_per_s": self.blocked_s_per_s,
            "waiting_s_per_s": self.waiting_s_per_s,
            "worker_detail": [w.as_dict() for w in self.worker_detail],
        }


@dataclass(frozen=True)
class Period:
    """The record of one period (or the final one): the metrics line."""

    t: float  # wall clock, s
    elapsed_s: float
    final: bool
    cores: int
    cpu_percent: float
    load1: float
    stages: dict[str, StageRecord]
    decisions: list[dict[str, Any]]
    fusion: list[dict[str, str]] = field(default_factory=list)  # the first record's: spec.fusion
    own_cores: float = 0.0  # CPU the run's processes used (psutil), in cores
    other_cores: float = 0.0  # CPU other programs used on the machine, in cores
    budget: float = 0.0  # the cores the pools may use: policy.machine_budget less runtime_cores
    runtime_cores: float = 0.0  # the run's CPU outside workers: controller, queues, sources
    bottleneck: dict[str, str] | None = None  # the stage that held the others back, and why
    warnings: list[str] = field(default_factory=list)  # what workers warned of first in this period

    def as_dict(self) -> dict[str, Any]:
        record = {
            "t": self.t,
            "elapsed_s": self.elapsed_s,
            "final": self.final,
            "system": {
                "cores": self.cores,
                "cpu_percent": self.cpu_percent,
                "load1": self.load1,
                "own_cores": self.own_cores,
                "other_cores": self.other_cores,
                "budget": self.budget,
                "runtime_cores": self.runtime_cores,
            },
            "stages": {name: r.as_dict() for name, r in self.stages.items()},
            "bottleneck": self.bottleneck,
            "decisions": self.decisions,
        }
        if self.fusion:
            record["fusion"] = self.fusion
        if self.warnings:
            record["warnings"] = self.warnings
        return record


class Warnings:
    """What workers warned of (a handler turning dict events into lists, ...): each
    text once in a run, in the first record after it came."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.new: list[str] = []

    def note(self, texts: Iterable[Any]) -> None:
        for text in texts:
            if text not in self.seen:
                self.seen.add(text)
                self.new.append(str(text))

    def take(self) -> list[str]:
        new, self.new = self.new, []
        return new


class Recorder:
    """Keeps what a period's record needs from the last: counters, samples, psutil."""

    def __init__(self, top: Topology, roster: Roster, fusion: list[dict[str, str]] | None = None) -> None:
        self.top = top
        self.roster = roster
        self.fusion = fusion or []  # the fuse decisions, for the first record
        self.samples: dict[str, dict[str, list[Any]]] = {}
        self.ps: dict[int, psutil.Process] = {}
        self.last_counts: dict[str, dict[str, int]] = {}
        # each worker's cumulative counters as of the last record ("busy:ID", "in:ID", ...)
        self.last_seen: dict[str, float] = {}
        self.t0 = time.monotonic()
        self.last_record_t = self.t0
        self.others_seen: float | None = None  # other programs' CPU, smoothed (policy.machine_budget)
        self.machine_cores = max(1, psutil.cpu_count() or 1)
        self.cpu_now: dict[int, float] = {}  # each process's CPU % since the last record
        self.cpu_meter = CpuMeter(running=[os.getpid()])
        self.warnings = Warnings()
        self.copies = progress.copies_events(top)  # events are copied to several stages: done is not known

    def gather(self, child: Child, stats: dict[str, Any]) -> None:
        """Keep the latency samples a process sent, per stage, until the next record, and
        the warnings no process of the run gave before (each is shown once)."""
        self.warnings.note(stats.get("warnings") or ())
        if child.role == wire.QUEUE:
            self.samples.setdefault(child.stage, {}).setdefault("queue_wait", []).extend(stats.get("wait", ()))
        elif child.role == wire.WORKER:
            if not child.stats:  # its first STATS: its setup is done, it is ready from now
                self.last_seen[f"ready:{child.identity}"] = time.monotonic()
            # a group's service times describe the whole chain: filed under its first
            # stage; the path from the source is measured where it ends, at the sink
            self.samples.setdefault(child.stage, {}).setdefault("service", []).extend(stats.get("service", ()))
            path = stats.get("path")
            if path:
                tail = self.top.chain_of(child.stage)[-1].name
                self.samples.setdefault(tail, {}).setdefault("path", []).extend(path)

    def forget(self, child: Child) -> None:
        """A worker has exited: drop what was kept to measure it."""
        self.ps.pop(child.pid, None)
        for stat in ("busy", "batches", "in", "blocked", "waiting", "ready"):
            self.last_seen.pop(f"{stat}:{child.identity}", None)

    # ---------------------------------------------------------------- counts

    def counts(self) -> dict[str, StageCounts]:
        """Every stage's counters now (also what progress displays show)."""
        stages = self.roster.stages
        shed = self.roster.shed()
        out = {}
        for name, st in stages.items():
            pool = stages[self.top.head_of(name)]
            head = name == pool.spec.name
            out[name] = StageCounts(
                kind=st.spec.kind,
                group=st.spec.group,
                workers=len(pool.workers),
                target=pool.target,
                queue=dict(pool.queue.stats) if pool.queue is not None else None,
                counts=_stage_counts(name, st, pool),
                dropped=shed.get(name, [0, 0])[0],
                rejected=shed.get(name, [0, 0])[1],
                poisoned=int(pool.queue.stats.get("poisoned", 0)) if head and pool.queue is not None else 0,
                timeouts=pool.timeouts if head else 0,
                recycled=pool.recycled if head else 0,
                restarts=pool.restarts if head else 0,
                ready=sum(1 for w in pool.workers.values() if w.stats),
                discarded=_discarded(st, pool, head),
            )
        return out

    # ---------------------------------------------------------------- the record of a period

    def period(self, cores: int, decisions: list[dict[str, Any]], final: bool = False) -> Period:
        """This period's record: the counts of every stage plus rates, latency
        percentiles, per-worker CPU and memory, and the decisions taken."""
        now = time.monotonic()
        dt = max(1e-6, now - self.last_record_t)
        counts = self.counts()
        t = round(time.time(), 3)
        cpu = psutil.cpu_percent(None)
        own = self._own_cores(dt)  # samples every process once: the workers' figures below read it
        load1 = round(os.getloadavg()[0], 2)
        per_batch: dict[str, float | None] = {}  # events per batch, per pool (a group's members share it)
        records = {}
        for name, st in self.roster.stages.items():
            pool = self.roster.stages[self.top.head_of(name)]
            if pool.spec.name not in per_batch:
                per_batch[pool.spec.name] = self._events_per_batch(pool)
            records[name] = self._stage_record(name, st, pool, counts[name], cores, dt, per_batch[pool.spec.name])
        self.last_record_t = now
        fusion, self.fusion = self.fusion, []
        warnings = self.warnings.take()
        others = max(0.0, cpu / 100 * self.machine_cores - own)
        budget, self.others_seen = policy.machine_budget(cores, self.machine_cores, others, self.others_seen)
        runtime = runtime_cores(self.cpu_now, self.roster)  # counted against the budget
        return Period(
            t, round(now - self.t0, 3), final, cores, cpu, load1, records, decisions, fusion,
            round(own, 2), round(others, 2), round(max(policy.MIN_BUDGET, budget - runtime), 2), round(runtime, 2),
            bottleneck_of(self.top, records),
            warnings,
        )  # fmt: skip

    def _own_cores(self, dt: float) -> float:
        """The CPU the run's processes on this machine used since the last record, in
        cores (psutil; `_run_pids`)."""
        self.cpu_now = self.cpu_meter.sample(_run_pids(self.roster), dt)
        return (sum(self.cpu_now.values()) + self.cpu_meter.gone_percent) / 100

    def _stage_record(
        self, name: str, st: Stage, pool: Stage, c: StageCounts, cores: int, dt: float, per_batch: float | None
    ) -> StageRecord:
        prev = self.last_counts.get(name, {})
        q = c.queue or {}
        arrived = q.get("arrived", c.count("out") if c.kind == "source" else 0)
        handled = c.count("in")
        self.last_counts[name] = {"arrived": arrived, "in": handled}
        bucket = self.samples.pop(name, {})
        head = name == pool.spec.name
        workers = sorted(pool.workers.values(), key=lambda w: w.index)
        sizes = [w.stats["batch_size"] for w in workers if "batch_size" in w.stats]
        detail = self._sample_workers(pool, dt) if head else ()
        waits: tuple[float | None, float | None] = (None, None)  # a group's member: its head's
        if c.kind == "source":
            waits = self._waits_since_last(st.source, dt) if st.source is not None else (0.0, 0.0)
        elif head:
            waits = (round(sum(w.blocked for w in detail) + 0.0, 3), round(sum(w.waiting for w in detail) + 0.0, 3))
        return StageRecord(
            counts=c,
            bounds=policy.worker_bounds(st.spec, cores) if c.kind != "source" else (1, 1),
            arrivals_per_s=round((arrived - prev.get("arrived", 0)) / dt, 2),
            completions_per_s=round((handled - prev.get("in", 0)) / dt, 2),
            latency_ms={k: metrics.percentiles(bucket.get(k, ())) for k in ("queue_wait", "service", "path")},
            batch_size=round(sum(sizes) / len(sizes), 1) if sizes else None,
            events_per_batch=per_batch,
            worker_detail=detail,
            blocked_s_per_s=waits[0],
            waiting_s_per_s=waits[1],
        )

    def _sample_workers(self, pool: Stage, dt: float) -> tuple[WorkerSample, ...]:
        """CPU and memory (psutil, local workers only) and busy fraction of each worker."""
        out = []
        for w in sorted(pool.workers.values(), key=lambda c: c.index):
            p = self._ps(w.pid) if w.proc.local and w.pid else None
            cpu = rss = None
            if p is not None:
                try:
                    cpu = round(self.cpu_now.get(w.pid, 0.0), 1)
                    rss = round(p.memory_info().rss / 2**20, 1)
                except psutil.Error:
                    pass
            busy = round(min(1.0, max(0.0, self._busy_since_last(w) / self._ready_for(w, dt))), 3)
            out.append(WorkerSample(w.index, w.pid, cpu, rss, busy, *self._waits_since_last(w, dt)))
        return tuple(out)

    def _ps(self, pid: int) -> psutil.Process | None:
        """One psutil.Process per pid, kept (its memory is read every period)."""
        p = self.ps.get(pid)
        if p is None:
            try:
                p = self.ps[pid] = psutil.Process(pid)
            except psutil.Error:
                return None
        return p

    def _events_per_batch(self, pool: Stage) -> float | None:
        """The events a batch of the pool's workers carried this period: events taken in
        over batches handled, both counted since the last record (None without a batch).
        What ``batch_size`` asks for is an upper bound; a queue holding fewer hands over
        what it has."""
        batches = events = 0.0
        for w in pool.workers.values():
            batches += max(0.0, self._since_last(w, "batches"))
            events += max(0.0, self._since_last(w, "in"))
        return round(events / batches, 2) if batches else None

    def _busy_since_last(self, w: Child) -> float:
        """Worker `w`'s busy seconds since the last record: the batches done, from its
        slot (else what its last STATS said), plus the time into the batch in hand, so
        that a batch longer than a period counts as busy while it runs instead of
        arriving all at once when it is done (which made a slow stage read idle in most
        periods). STATS come once a period: read from them alone, a pool's first
        period read nearly idle and the pool grew a period late."""
        key = f"busy:{w.identity}"
        in_hand = w.slot.in_batch_s() if w.slot is not None else 0.0
        done = w.slot.busy_s() if w.slot is not None else None
        now = (float(w.stats.get("busy_s", 0.0)) if done is None else done) + in_hand
        before = self.last_seen.get(key, 0.0)
        self.last_seen[key] = now
        return now - before

    def _ready_for(self, w: Child, dt: float) -> float:
        """The part of the last `dt` seconds worker `w` has been ready (its setup done):
        one that became ready during them could only be busy for that part. At least a
        fifth of `dt`, so that a batch or two on a worker just ready do not read as a
        period's work."""
        ready = self.last_seen.get(f"ready:{w.identity}")
        if ready is None:
            return dt
        return max(dt / 5, min(dt, time.monotonic() - ready))

    def _waits_since_last(self, child: Child, dt: float) -> tuple[float, float]:
        """The shares of the last `dt` seconds that `child` (a worker or a source) spent
        blocked and waiting. From its slot when it has one, which counts a wait in
        progress up to now: a worker held back for longer than a period reads blocked in
        every period, not in the one where its wait ends. Without a slot (a worker on
        another host), from the totals of its last STATS."""
        live = child.slot.waits() if child.slot is not None else None
        if live is None:
            live = (float(child.stats.get("blocked_s", 0.0)), float(child.stats.get("waiting_s", 0.0)))
        shares = []
        for stat, total in zip(("blocked", "waiting"), live, strict=True):
            key = f"{stat}:{child.identity}"
            before = self.last_seen.get(key, 0.0)
            self.last_seen[key] = total
            shares.append(round(min(1.0, max(0.0, (total - before) / dt)), 3))
        return shares[0], shares[1]

    def _since_last(self, w: Child, stat: str) -> float:
        """How much worker `w`'s cumulative counter `stat` grew since the last record."""
        key = f"{stat}:{w.identity}"
        now = float(w.stats.get(stat, 0.0))
        before = self.last_seen.get(key, 0.0)
        self.last_seen[key] = now
        return now - before

    # ---------------------------------------------------------------- what the policy sees

    def views(self, period: Period, cores: int, pinned: set[str]) -> list[policy.StageView]:
        """The pool controller's view of every pool it may resize, from a period's record."""
        views = []
        visits = _visits(self.top, period)
        finishing = _finishing(self.top, self.roster, period)
        for name, st in self.roster.stages.items():
            if st.spec.kind == "source" or self.top.is_member(name) or st.ended or name in pinned:
                continue
            r = period.stages[name]
            lo, hi = policy.worker_bounds(st.spec, cores)
            busy = [w.busy for w in r.worker_detail] or [0.0]
            q = r.counts.queue or {}
            views.append(
                policy.StageView(
                    name=name,
                    target=st.target,
                    lo=lo,
                    hi=hi,
                    queue_length=int(q.get("length") or 0),
                    capacity=int(q.get("capacity") or st.spec.queue.capacity),
                    batch_size=float(r.batch_size or 1),
                    busy=sum(busy) / len(busy),
                    completions_per_s=float(r.completions_per_s),
                    resizable=policy.resizable(self.top, name, cores, st.stateful),
                    arrivals_per_s=float(r.arrivals_per_s),
                    downstream_fill=_downstream_fill(self.top, name, period),
                    downstream=_downstream(self.top, name),
                    starting=sum(1 for w in st.workers.values() if not w.stats and not w.retiring),
                    cpu=_mean_cpu(r.worker_detail),
                    visits=visits.get(name),
                    finishing=name in finishing,
                )
            )
        return views

    # ---------------------------------------------------------------- the summary

    def summary(
        self, run_dir: Path, dead_letters: Path, wall_s: float, interrupted: bool, error: str | None
    ) -> Summary:
        """The run's summary from every stage's counts now. `failed` is at least the
        records in the dead-letter file: a worker that died (a full disk, a kill) took
        with it the count of what it dead-lettered since its last report."""
        counts = self.counts()
        stages: list[StageSummary] = []
        events = failed = 0
        for name, st in self.roster.stages.items():
            c = counts[name]
            stages.append(_stage_summary(name, st, c, self.roster.stages[self.top.head_of(name)]))
            failed += int(c.count("failed")) + int(c.rejected)
            if st.spec.on_error.then != "skip":
                failed += int(c.poisoned)
            if st.spec.kind == "source":
                events += int(c.count("in"))
        done, _, counting, _ = progress.count({"stages": {s.name: vars(s) for s in stages}}, self.copies)
        return Summary(
            name=self.top.name,
            run_dir=run_dir,
            dead_letters=dead_letters,
            stages=tuple(stages),
            wall_s=wall_s,
            events=events,
            failed=max(failed, count_dead_letters(dead_letters)),
            interrupted=interrupted,
            error=error,
            done=done if counting == "done" else None,
            discarded=sum(s.discarded for s in stages),
        )


def runtime_cores(cpu_now: dict[int, float], roster: Roster) -> float:
    """The CPU the run's processes other than workers (the controller, its queues and
    sources on this machine) used in the last period, in cores, from each one's CPU
    (`cpu_now`, pid -> %). Taken as the run's CPU less its workers', it also held the
    last rate of workers that had just exited (`CpuMeter.gone_percent`): 2 cores in the
    period a pool of two ended, and the budget fell by as much. The launcher is left
    out: it works when processes start (its own start filled the first record, 0.1 s
    long), not as the run goes on."""
    pids = [os.getpid()] + [
        c.pid for c in roster.children.values() if c.pid and c.proc.local and c.role != wire.WORKER
    ]
    return sum(cpu_now.get(pid, 0.0) for pid in pids) / 100


def _run_pids(roster: Roster) -> list[int]:
    """The run's processes on this machine: the controller, the executor's own (the
    launcher) and every local queue, source and worker. Left out, the launcher's start
    (0.1 s of CPU in the first record, a tenth of a second long) read as another
    program using half a core, and the first decision found a budget of one core."""
    helpers = roster.executor.helper_pids() if roster.executor is not None else []
    return [os.getpid(), *helpers] + [c.pid for c in roster.children.values() if c.pid and c.proc.local]


def _discarded(st: Stage, pool: Stage, head: bool) -> int:
    """Events a stage dropped on Ctrl-C: its queue's (a pool's first stage), or a source's."""
    if st.spec.kind == "source":
        return int((st.source.stats if st.source is not None else st.retired).get("discarded", 0))
    return int(pool.queue.stats.get("discarded", 0)) if head and pool.queue is not None else 0


def _mean_cpu(workers: tuple[WorkerSample, ...]) -> float | None:
    """The mean CPU fraction of the workers psutil measured (None: none was)."""
    cpus = [w.cpu_percent / 100 for w in workers if w.cpu_percent is not None]
    return sum(cpus) / len(cpus) if cpus else None


def _stage_counts(name: str, st: Stage, pool: Stage) -> dict[str, Any]:
    """A stage's counters: a source's as it reports them; a pool stage's summed over its
    exited workers and its live ones (including recycled ones on their way out)."""
    if st.source is not None:
        return dict(st.source.stats)
    if st.spec.kind == "source":
        return dict(st.retired)
    counts = dict(st.retired)
    for w in [*pool.workers.values(), *pool.leaving.values()]:
        for k, v in member_counts(w).get(name, {}).items():
            counts[k] = counts.get(k, 0) + v
    return counts


def _stage_summary(name: str, st: Stage, c: StageCounts, pool: Stage) -> StageSummary:
    return StageSummary(
        name=name,
        kind=st.spec.kind,
        events_in=int(c.count("in")),
        events_out=int(c.count("out")),
        failed=int(c.count("failed")),
        workers=pool.peak_workers if st.spec.kind != "source" else 1,
        restarts=st.restarts,
        dropped=int(c.dropped),
        rejected=int(c.rejected),
        retried=int(c.count("retried")),
        skipped=int(c.count("skipped")),
        duplicates=int(c.count("duplicates")),
        poisoned=int(c.poisoned),
        discarded=int(c.discarded),
        timeouts=int(c.timeouts),
        recycled=int(c.recycled),
        stats=c.count("stats") if isinstance(c.count("stats", None), dict) else None,
    )


def bottleneck_of(top: Topology, records: dict[str, StageRecord]) -> dict[str, str] | None:
    """The stage that held the others back this period (`metrics.bottleneck`), from
    the blocked time of the sources and pools and how full their queues were."""
    blocked: dict[str, float | None] = {}
    downstream: dict[str, list[str]] = {}
    fill: dict[str, float] = {}
    for name, r in records.items():
        if top.is_member(name):
            continue  # its group's pool is its head's
        blocked[name] = r.blocked
        downstream[name] = [top.head_of(e.stage) for e in top.chain_of(name)[-1].to]
        q = r.counts.queue or {}
        fill[name] = (q.get("length") or 0) / q["capacity"] if q.get("capacity") else 0.0
    return metrics.bottleneck(blocked, downstream, fill)


def _visits(top: Topology, period: Period) -> dict[str, float]:
    """Events each pool handles per event the sources read, this period (`policy.visits_of`)."""
    sources = [s.name for s in top.sources()]
    feeds = _feeds(top, period)
    rate = {n: r.completions_per_s for n, r in period.stages.items() if n not in sources}
    rate.update({n: period.stages[n].arrivals_per_s for n in sources if n in period.stages})
    arrivals = {n: r.arrivals_per_s for n, r in period.stages.items()}
    return policy.visits_of(feeds, arrivals, rate, sources)


def _finishing(top: Topology, roster: Roster, period: Period) -> set[str]:
    """The pools that end their work within a few periods (`policy.finishing`); none
    while a source still reads."""
    sources = [roster.stages[s.name].source for s in top.sources()]
    if not all(src is None or src.done for src in sources):
        return set()
    queues = {name: r.counts.queue or {} for name, r in period.stages.items()}
    backlog = {name: float(q.get("length") or 0) + float(q.get("leased") or 0) for name, q in queues.items()}
    rates = {name: r.completions_per_s for name, r in period.stages.items()}
    arrivals = {name: r.arrivals_per_s for name, r in period.stages.items()}
    return policy.finishing(_feeds(top, period), backlog, rates, arrivals, top.controller.period_s)


def _feeds(top: Topology, period: Period) -> dict[str, set[str]]:
    """Each pool's producers: the pools (by their first stage) and sources it receives from."""
    return {
        name: {top.head_of(u) for u in top.upstream(name)}
        for name, spec in top.stages.items()
        if spec.kind != "source" and not top.is_member(name) and name in period.stages
    }


def _downstream(top: Topology, name: str) -> tuple[str, ...]:
    """The pools (by their first stage) that `name`'s group sends to."""
    return tuple(top.head_of(e.stage) for e in top.chain_of(name)[-1].to)


def _downstream_fill(top: Topology, name: str, period: Period) -> float:
    """How full the fullest queue is that `name`'s group sends to (0..1)."""
    fill = 0.0
    for head in _downstream(top, name):
        q = period.stages[head].counts.queue or {}
        if q.get("capacity"):
            fill = max(fill, (q.get("length") or 0) / q["capacity"])
    return fill

"""Runs in the controller process (the process that called `sedamp run`).

Reads:  its control ROUTER (REGISTER/STATS/DONE/FATAL from every queue, worker and
        source), the sentinels of every process it started (a death is seen at once),
        and SIGINT/SIGTERM.
Writes: CLOSE to a queue once every stage feeding it has finished, STOP to a finished
        process (the acknowledgement of its DONE) or to a source on Ctrl-C, GONE to a
        queue whose worker died; processes through the executor; the summary.

It is the supervisor: it starts the queues, the workers (one reconcile step spawns
until each pool matches its target) and the sources; it restarts a worker that dies;
it ends the run in order. No payload ever passes through it.

End of a batch job, stage by stage in topological order: a source is finished when its
process reported DONE (everything it sent was taken downstream) and exited. A stage
with a queue is finished when its queue has ENDed (closed, empty, no lease out) and
every worker reported DONE and exited. When every stage feeding a queue is finished,
the controller sends it CLOSE. A finished stage's queue is told STOP.

Ctrl-C or SIGTERM: the sources are told STOP (they deliver what they read and finish),
so the run drains within `drain_timeout_s`; past the deadline, or on a second Ctrl-C,
every process is killed. In every case no process of the run is left: children also
die with the controller (PR_SET_PDEATHSIG) and check their parent.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
import zmq

from sedamp.control import policy
from sedamp.errors import WireError
from sedamp.executor.base import Executor, Proc
from sedamp.executor.local import LocalExecutor
from sedamp.observe import metrics
from sedamp.runtime import journal, security, sockets, wire
from sedamp.runtime.deadletter import DEAD_LETTERS_FILE
from sedamp.runtime.flow import POISON_DEATHS
from sedamp.runtime.outlet import OutputConfig
from sedamp.runtime.queue import QueueConfig, queue_identity
from sedamp.runtime.slot import Slot
from sedamp.runtime.source import SourceConfig, source_identity
from sedamp.runtime.worker import MAX_BATCH_EVENTS, WorkerConfig, worker_identity
from sedamp.spec import StageSpec, Topology

log = logging.getLogger(__name__)

# Events a source reads per PUT: large enough to amortise the per-message cost for
# near-free events, small enough that a slow first stage still gets work to all its
# workers at once (the queue splits batches for workers that ask for fewer).
SOURCE_BATCH_EVENTS = 256
# A stage whose workers die this many times in a row with no event of the stage
# acknowledged in between is failing (e.g. crashing in setup), not unlucky.
MAX_BARREN_DEATHS = 10
# Every queue and worker reports every period (its heartbeat). One silent for this many
# periods (at least SILENT_MIN_S) is wedged: a queue fails the run, a worker that is not
# inside a handler call is killed and replaced. A worker inside a handler call is only
# bounded by its stage's timeout_s, since user code may legitimately run long.
SILENT_PERIODS = 20
SILENT_MIN_S = 3.0
# Exit codes of `sedamp run` (documented in the README).
EXIT_OK = 0
EXIT_FAILED_EVENTS = 1
EXIT_INVALID = 2
EXIT_RUN_ERROR = 3
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class RunOptions:
    workdir: Path = Path(".sedamp")
    cores: int | None = None  # overrides the topology's controller.cores
    drain_timeout_s: float | None = None  # overrides controller.drain_timeout_s
    executor: Executor | None = None
    on_tick: Callable[[dict[str, Any]], None] | None = None  # called every period (and at the end) with the record
    handle_signals: bool = True
    metrics_path: Path | None = None  # write one JSON line per period (see README, "Metrics")
    resume: bool = False  # skip the source positions every sink journaled in earlier runs


@dataclass(frozen=True)
class StageSummary:
    name: str
    kind: str
    events_in: int
    events_out: int
    failed: int
    workers: int  # largest pool size during the run
    restarts: int
    dropped: int = 0  # events its full queue made producers drop (on_full: drop)
    rejected: int = 0  # events its full queue refused (on_full: reject), dead-lettered
    retried: int = 0  # handler calls made again after a failure (on_error: retry)
    skipped: int = 0  # events that failed and were dropped (on_error: skip)
    duplicates: int = 0  # redelivered events a dedupe sink did not handle again
    poisoned: int = 0  # events that killed POISON_DEATHS workers (dead-lettered unless skip)
    timeouts: int = 0  # workers killed because a handler call passed timeout_s
    recycled: int = 0  # workers replaced after max_events or max_rss_mb


@dataclass(frozen=True)
class Summary:
    name: str
    run_dir: Path
    dead_letters: Path
    stages: tuple[StageSummary, ...]
    wall_s: float
    events: int  # events read by the sources
    failed: int  # events sent to the dead-letter file (handler failures and rejections)
    interrupted: bool
    error: str | None

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.error is not None:
            return EXIT_RUN_ERROR
        if self.failed:
            return EXIT_FAILED_EVENTS
        return EXIT_OK

    def stage(self, name: str) -> StageSummary:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "run_dir": str(self.run_dir),
            "dead_letters": str(self.dead_letters),
            "wall_s": round(self.wall_s, 4),
            "events": self.events,
            "events_per_s": round(self.events_per_s, 1),
            "failed": self.failed,
            "interrupted": self.interrupted,
            "error": self.error,
            "exit_code": self.exit_code,
            "stages": [s.__dict__ for s in self.stages],
        }


@dataclass(eq=False)
class _Child:
    proc: Proc
    role: int
    stage: str
    index: int
    identity: str
    done: bool = False
    stopped: bool = False  # we told it to stop (a queue) or acknowledged its DONE
    fatal: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    retiring: bool = False  # told to leave because its pool shrank
    slot: Slot | None = None  # a worker's: which event is in its handler, and the deadline
    killed: str | None = None  # why the controller killed it
    pid: int = 0  # as the process reported it when it registered (a cluster executor learns it late)
    last_heard: float = field(default_factory=time.monotonic)  # its last message (heartbeat)
    endpoint: str = ""  # a queue's bound data endpoint, from its REGISTER
    in_hand: tuple[int, int] | None = None  # (lease, position) read when the controller killed it


@dataclass(eq=False)
class _Stage:
    spec: StageSpec
    target: int = 0
    queue: _Child | None = None
    source: _Child | None = None
    workers: dict[int, _Child] = field(default_factory=dict)
    retired: dict[str, float] = field(default_factory=dict)  # counters of exited workers
    closed: bool = False
    ended: bool = False
    complete: bool = False
    restarts: int = 0
    peak_workers: int = 0
    leaving: dict[str, _Child] = field(default_factory=dict)  # recycled workers on their way out, by identity
    barren_deaths: int = 0  # worker deaths in a row with nothing acknowledged between
    acked_at_death: int = -1
    timeouts: int = 0
    recycled: int = 0


def run_topology(topology: Topology, options: RunOptions | None = None) -> Summary:
    """Run a topology to completion in this process (the controller) and summarise it."""
    return _Controller(topology, options or RunOptions()).run()


class _Controller:
    def __init__(self, topology: Topology, options: RunOptions) -> None:
        self.top = topology
        self.opt = options
        self.executor: Executor | None = options.executor  # started in run(), inside its try
        self.cores = options.cores or topology.controller.cores or 0  # 0: the executor's (in run())
        self.period_s = topology.controller.period_s
        self.drain_timeout_s = (
            options.drain_timeout_s if options.drain_timeout_s is not None else topology.controller.drain_timeout_s
        )
        stamp = time.strftime("%Y%m%d-%H%M%S")
        runs = Path(options.workdir) / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        # unique even for runs of one topology started in the same second (mode 0700)
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"{topology.name}-{stamp}-", dir=runs)).resolve()
        self.dead_path = self.run_dir / DEAD_LETTERS_FILE
        self.sock_dir: Path | None = None
        self.slot_seq = 0
        self.spawn_seq = 0  # workers started: each one's token (its identity) is unique in the run
        self.transport = topology.controller.transport
        self.curve: security.Keys | None = None
        self.names = list(topology.stages)
        self.stages = {n: _Stage(spec=s) for n, s in topology.stages.items()}
        self.children: dict[str, _Child] = {}  # by identity
        self.retired_shed: dict[str, list[int]] = {}  # target stage -> [dropped, rejected]
        self.by_sentinel: dict[int, _Child] = {}
        self.registered: set[bytes] = set()
        self.pending: dict[bytes, list[list[bytes]]] = {}
        self.error: str | None = None
        self.interrupted = False
        self.draining = False
        self.drain_deadline: float | None = None
        self.hard_stop = False
        self.import_paths = (str(topology.base_dir), os.getcwd())
        self.samples: dict[str, dict[str, list[Any]]] = {}
        self.ps: dict[int, psutil.Process] = {}
        self.decisions: list[dict[str, Any]] = []
        self.last_counts: dict[str, dict[str, int]] = {}
        # each worker's cumulative counters as of the last record ("busy_s:ID", "in:ID", ...)
        self.last_seen: dict[str, float] = {}
        self.t0 = time.monotonic()
        self.last_record_t = self.t0
        self.metrics_file: IO[str] | None = None
        self.policy_state = policy.PolicyState()
        self.pinned: set[str] = set()  # stages whose size `sedamp scale` set
        self.last_record: dict[str, Any] | None = None

    # ---------------------------------------------------------------- run

    def run(self) -> Summary:
        t0 = time.monotonic()
        self.socks = sockets.Sockets()
        self.ctx: zmq.Context[Any] = self.socks.ctx
        restore: Callable[[], None] = lambda: None  # noqa: E731
        try:
            if self.executor is None:
                self.executor = LocalExecutor()
            if not self.cores:
                self.cores = self.executor.cores()
            self.sock_dir = _socket_dir(self.run_dir)
            net = self.top.controller
            # processes on other hosts reach the queues over tcp whatever the topology says
            self.transport = "tcp" if self.executor.remote else net.transport
            if self.transport == "tcp":
                # queues bind a port the OS picks and report it when they register
                if net.curve:
                    try:
                        self.curve = security.Keys.load(net.keys) if net.keys else security.Keys.generate()
                    except (OSError, ValueError) as exc:
                        self.error = f"controller.keys: {exc}"
                self.socks.curve = self.curve
                host = f"[{net.host}]" if ":" in net.host else net.host
                self.endpoints = {n: f"tcp://{host}:*" for n in self.names}
                self.ctl = self.socks.router(f"tcp://{host}:*")
                self.ctl_endpoint = sockets.bound_endpoint(self.ctl, net.advertise)
            else:
                self.ctl_endpoint = f"ipc://{self.sock_dir}/ctl"
                self.endpoints = {n: f"ipc://{self.sock_dir}/q{i}" for i, n in enumerate(self.names)}
                self.ctl = self.socks.router(self.ctl_endpoint)
            if self.opt.metrics_path is not None:
                Path(self.opt.metrics_path).parent.mkdir(parents=True, exist_ok=True)
                self.metrics_file = open(self.opt.metrics_path, "w", encoding="utf-8")  # noqa: SIM115
            self.cmd = self.socks.router(f"ipc://{self.sock_dir}/cmd")
            self.poller = zmq.Poller()
            self.poller.register(self.ctl, zmq.POLLIN)
            self.poller.register(self.cmd, zmq.POLLIN)
            self._write_run_file(ended=False)
            self.journal = journal.journal_dir(self.opt.workdir, self.top.name)
            journal.start(self.journal, self.opt.resume)
            if self.opt.resume:
                done = journal.done_ids(self.journal, self.top)
                journal.write_skip(self.run_dir / "skip.ids", done)
                log.info("resuming: %d events are already written by every sink", len(done))
            restore = self._install_signals()
            self._start()
            self._loop()
        finally:
            self._reap_all()
            if self.executor is not None:
                self.executor.close()
            restore()
            if self.metrics_file is not None or self.opt.on_tick is not None:
                final = self.record(final=True)
                if self.metrics_file is not None:
                    self.metrics_file.write(json.dumps(final) + "\n")
                    self.metrics_file.close()
                if self.opt.on_tick is not None:
                    try:
                        self.opt.on_tick(final)
                    except Exception:  # a display must not turn a finished run into a failed one
                        log.exception("controller: the progress callback failed on the final record")
            if hasattr(self, "ctl"):
                self.ctl.close(linger=0)
            if hasattr(self, "cmd"):
                self.cmd.close(linger=0)
                self._write_run_file(ended=True)
            self.socks.close()
            if self.sock_dir is not None:
                shutil.rmtree(self.sock_dir, ignore_errors=True)
        return self._summary(time.monotonic() - t0)

    def _start(self) -> None:
        if self.error is not None:
            return
        problems = policy.capacity_problems(self.top, self.cores)
        if problems:
            self.error = "; ".join(problems)
            return
        targets = policy.initial_targets(self.top, self.cores)
        slots = self._exec().worker_slots()
        floor = sum(
            policy.worker_bounds(st.spec, self.cores)[0]
            for n, st in self.stages.items()
            if st.spec.kind != "source" and not self.top.is_member(n)
        )
        if slots is not None and floor > slots:
            self.error = (
                f"the topology needs at least {floor} workers at once (one CPU each) but the cluster has {slots} "
                "CPUs: add nodes (or CPUs), or lower the stages' workers"
            )
            return
        for name, st in self.stages.items():
            if st.spec.kind == "source" or self.top.is_member(name):
                continue  # a grouped stage after the first is served by the first's queue
            cfg = QueueConfig(
                stage=name,
                endpoint=self.endpoints[name],
                control_endpoint=self.ctl_endpoint,
                capacity=st.spec.queue.capacity,
                partitions=self._partitions(name),
                period_s=self.period_s,
                parent_pid=os.getpid(),
                dead_letters=str(self.dead_path),
                on_poison=st.spec.on_error.then,
                curve=self._curve_dict(),
                advertise=self.top.controller.advertise,
            )
            proc = self._exec().start(f"sdq:{name}", "queue", cfg)
            st.queue = self._adopt(proc, wire.QUEUE, name, 0, queue_identity(name))
            st.target = targets[name]
        if self.transport == "tcp" and not self._await_queue_endpoints():
            return
        self._reconcile()
        for name, st in self.stages.items():
            if st.spec.kind == "source":
                cfg_s = SourceConfig(
                    stage=name,
                    ref=st.spec.ref,
                    params=dict(st.spec.params),
                    outputs=self._outputs(st.spec),
                    control_endpoint=self.ctl_endpoint,
                    batch=st.spec.batch or SOURCE_BATCH_EVENTS,
                    dead_letters=str(self.dead_path),
                    import_paths=self.import_paths,
                    period_s=self.period_s,
                    parent_pid=os.getpid(),
                    max_event_bytes=st.spec.max_event_bytes or wire.MAX_EVENT_BYTES,
                    skip=str(self.run_dir / "skip.ids") if self.opt.resume else "",
                    curve=self._curve_dict(),
                )
                proc = self._exec().start(f"sds:{name}", "source", cfg_s)
                st.source = self._adopt(proc, wire.SOURCE, name, 0, source_identity(name, proc.pid))
        if self.draining:  # interrupted while starting: the sources stop at once
            self._stop_sources()
        log.info("run %s started: %d cores, targets %s, run dir %s", self.top.name, self.cores, targets, self.run_dir)

    def _curve_dict(self) -> dict[str, str] | None:
        return dataclasses.asdict(self.curve) if self.curve is not None else None

    def _await_queue_endpoints(self, timeout_s: float = 15.0) -> bool:
        """With tcp, a queue's port is known once it registers: wait for every queue."""
        deadline = time.monotonic() + timeout_s
        while True:
            queues = [st.queue for st in self.stages.values() if st.queue is not None]
            if all(q.endpoint for q in queues):
                break
            if self.error is not None:
                return False
            if time.monotonic() >= deadline:
                missing = [q.stage for q in queues if not q.endpoint]
                self.error = f"the queues of {missing} did not report their endpoints within {timeout_s:.0f} s"
                return False
            for fd in dict(self.poller.poll(100)):
                if fd is self.ctl:
                    for frames in sockets.drain(self.ctl):
                        self._on_control(frames)
                elif isinstance(fd, int) and fd in self.by_sentinel:
                    self._on_exit(self.by_sentinel[fd])
        for st in self.stages.values():
            if st.queue is not None:
                self.endpoints[st.spec.name] = st.queue.endpoint
        log.info("queue endpoints: %s", self.endpoints)
        self._write_run_file(ended=False)
        return True

    def _exec(self) -> Executor:
        assert self.executor is not None, "run() starts the executor"
        return self.executor

    def _partitions(self, name: str) -> int:
        if self.top.route_key(name) is None:
            return 1
        return self.stages[name].spec.workers.min

    def _outputs(self, spec: StageSpec) -> tuple[OutputConfig, ...]:
        return tuple(
            OutputConfig(
                e.stage,
                self.endpoints[e.stage],
                e.key,
                self._partitions(e.stage),
                self.top.stages[e.stage].queue.on_full,
                [list(p) for p in e.when] if e.when else None,
            )
            for e in spec.to
        )

    def _adopt(self, proc: Proc, role: int, stage: str, index: int, identity: str) -> _Child:
        child = _Child(proc=proc, role=role, stage=stage, index=index, identity=identity, pid=proc.pid)
        self.children[identity] = child
        self.by_sentinel[proc.sentinel] = child
        self.poller.register(proc.sentinel, zmq.POLLIN)
        return child

    def _reconcile(self) -> None:
        """Spawn workers until every unfinished pool matches its target."""
        if self.error is not None or self.hard_stop:
            return
        for name, st in self.stages.items():
            if st.spec.kind == "source" or st.ended or self.top.is_member(name):
                continue
            active = [w for w in st.workers.values() if not w.retiring]
            for _ in range(st.target - len(active)):
                index = next(i for i in range(st.target + len(st.workers) + 1) if i not in st.workers)
                self._spawn_worker(st, index)
            for w in sorted(active, key=lambda c: c.index, reverse=True)[: max(0, len(active) - st.target)]:
                w.retiring = True
                self._send(w.identity.encode(), wire.simple(wire.RETIRE))
            st.peak_workers = max(st.peak_workers, len([w for w in st.workers.values() if not w.retiring]))

    def _spawn_worker(self, st: _Stage, index: int) -> None:
        spec = st.spec
        chain = self.top.chain_of(spec.name)
        slot = None
        slot_path = ""
        if self.sock_dir is not None:
            self.slot_seq += 1
            slot_path = str(self.sock_dir / f"slot{self.slot_seq}")
            slot = Slot(slot_path, create=True)
        self.spawn_seq += 1
        cfg = WorkerConfig(
            token=self.spawn_seq,
            stage=spec.name,
            kind=spec.kind,
            index=index,
            ref=spec.ref,
            params=dict(spec.params),
            input_endpoint=self.endpoints[spec.name],
            outputs=self._outputs(chain[-1]),
            control_endpoint=self.ctl_endpoint,
            batch=spec.batch,
            dead_letters=str(self.dead_path),
            import_paths=self.import_paths,
            period_s=self.period_s,
            parent_pid=os.getpid(),
            batch_min=spec.batch_bounds[0] if spec.batch_bounds else 1,
            batch_max=spec.batch_bounds[1] if spec.batch_bounds else MAX_BATCH_EVENTS,
            chain_rest=tuple(
                {
                    "stage": m.name,
                    "kind": m.kind,
                    "ref": m.ref,
                    "params": dict(m.params),
                    "on_error": (m.on_error.retry, m.on_error.backoff_s, m.on_error.then),
                }
                for m in chain[1:]
            ),
            on_error=(spec.on_error.retry, spec.on_error.backoff_s, spec.on_error.then),
            timeout_s=spec.timeout_s,
            slot_path=slot_path,
            max_events=spec.max_events,
            max_rss_mb=spec.max_rss_mb,
            dedupe=chain[-1].dedupe,
            max_event_bytes=chain[-1].max_event_bytes or wire.MAX_EVENT_BYTES,
            journal=str(self.journal),
            curve=self._curve_dict(),
        )
        proc = self._exec().start(f"sdw:{spec.name}:{index}", "worker", cfg)
        child = self._adopt(proc, wire.WORKER, spec.name, index, worker_identity(spec.name, index, self.spawn_seq))
        child.slot = slot
        st.workers[index] = child

    # ---------------------------------------------------------------- loop

    def _loop(self) -> None:
        next_tick = time.monotonic() + self.period_s
        while True:
            if self.hard_stop:
                return
            if self.error is not None:
                log.error("stopping the run: %s", self.error)
                return
            if all(st.complete for st in self.stages.values()) and not self.by_sentinel:
                return
            now = time.monotonic()
            if self.drain_deadline is not None and now >= self.drain_deadline:
                log.error("drain deadline of %.1f s passed: stopping every process", self.drain_timeout_s)
                return
            timeout = min(next_tick - now, 0.1 if self.draining else self.period_s)
            ready = dict(self.poller.poll(max(0, int(timeout * 1000))))
            if self.ctl in ready:
                for frames in sockets.drain(self.ctl):
                    self._on_control(frames)
            if self.cmd in ready:
                for frames in sockets.drain(self.cmd):
                    self._on_command(frames)
            for fd in [fd for fd in ready if isinstance(fd, int) and fd in self.by_sentinel]:
                self._on_exit(self.by_sentinel[fd])
            self._advance()
            self._reconcile()
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + self.period_s
                self._tick()

    # ---------------------------------------------------------------- measurements

    def _gather_samples(self, child: _Child, stats: dict[str, Any]) -> None:
        """Keep the latency samples a process sent, per stage, until the next record."""
        if child.role == wire.QUEUE:
            self.samples.setdefault(child.stage, {}).setdefault("queue_wait", []).extend(stats.get("wait", ()))
        elif child.role == wire.WORKER:
            # a group's samples describe the whole chain; file them under its first stage
            bucket = self.samples.setdefault(child.stage, {})
            bucket.setdefault("service", []).extend(stats.get("service", ()))
            bucket.setdefault("path", []).extend(stats.get("path", ()))

    def _watch_deadlines(self) -> None:
        """Kill every worker whose handler call ran past its stage's timeout_s."""
        now = time.monotonic()
        for st in self.stages.values():
            for w in list(st.workers.values()):
                if w.slot is None or w.killed is not None or st.spec.timeout_s is None:
                    continue
                late = w.slot.overdue(now)
                if late > 0:
                    limit = st.spec.timeout_s
                    w.killed = f"was killed: a handler call ran past timeout_s ({limit:g} s, overdue by {late:.1f} s)"
                    st.timeouts += 1
                    w.in_hand = w.slot.read()[1:]  # now, before the handler can move on
                    log.error("worker %s[%d] (pid %d) %s", w.stage, w.index, w.pid, w.killed)
                    w.proc.kill()

    def _watch_silence(self) -> None:
        """Heartbeats: every queue and worker sends STATS each period."""
        now = time.monotonic()
        bound = max(SILENT_MIN_S, SILENT_PERIODS * self.period_s)
        for st in self.stages.values():
            q = st.queue
            if q is not None and not q.stopped and now - q.last_heard > bound and self.error is None:
                self.error = (
                    f"the queue of stage {q.stage!r} (pid {q.proc.pid}) has been silent for {now - q.last_heard:.1f} s"
                )
            for w in list(st.workers.values()):
                if w.killed is not None or w.done or now - w.last_heard <= bound:
                    continue
                if w.proc.pending:
                    continue  # still being placed by a cluster executor, which bounds that itself
                if not w.proc.local:
                    continue  # on another host its slot is not shared: it may be inside a handler call
                if w.slot is not None and w.slot.read()[1] != -1:
                    continue  # inside user code (a batch, setup, finish): it may run long; see timeout_s
                w.killed = f"was killed: silent for {now - w.last_heard:.1f} s outside any handler call"
                log.error("worker %s[%d] (pid %d) %s", w.stage, w.index, w.pid, w.killed)
                w.proc.kill()

    def _tick(self) -> None:
        self._watch_deadlines()
        self._watch_silence()
        record = self.record()
        if self.top.controller.policy == "adaptive" and not self.draining:
            record["decisions"] = record["decisions"] + [d.as_dict() for d in self._control(record)]
        self.last_record = record
        if self.metrics_file is not None:
            self.metrics_file.write(json.dumps(record) + "\n")
            self.metrics_file.flush()
        if self.opt.on_tick is not None:
            try:
                self.opt.on_tick(record)
            except Exception:  # a display or exporter failing must not stop the run
                log.exception("controller: the progress callback failed")

    def _control(self, record: dict[str, Any]) -> list[policy.Decision]:
        """The pool controller: decide from this period's record, then set targets (the
        reconcile step spawns or retires workers to match)."""
        views = []
        for name, st in self.stages.items():
            if st.spec.kind == "source" or self.top.is_member(name) or st.ended or name in self.pinned:
                continue
            r = record["stages"][name]
            lo, hi = policy.worker_bounds(st.spec, self.cores)
            stateful = any(w.stats.get("stateful") for w in st.workers.values())
            busy = [w["busy"] for w in r["worker_detail"]] or [0.0]
            q = r["queue"] or {}
            views.append(
                policy.StageView(
                    name=name,
                    target=st.target,
                    lo=lo,
                    hi=hi,
                    queue_length=int(q.get("length") or 0),
                    capacity=int(q.get("capacity") or st.spec.queue.capacity),
                    batch_size=float(r["batch_size"] or 1),
                    busy=sum(busy) / len(busy),
                    completions_per_s=float(r["completions_per_s"]),
                    resizable=lo != hi and not stateful and self.top.route_key(name) is None,
                    arrivals_per_s=float(r["arrivals_per_s"]),
                    downstream_fill=self._downstream_fill(name, record),
                )
            )
        decisions = policy.decide(views, self.cores, time.monotonic(), self.policy_state)
        for d in decisions:
            st = self.stages[d.stage]
            lo, hi = policy.worker_bounds(st.spec, self.cores)
            st.target = max(lo, min(hi, d.new))
            log.info("stage %s: %d -> %d workers: %s", d.stage, d.old, st.target, d.reason)
        return decisions

    # ---------------------------------------------------------------- commands

    def _write_run_file(self, ended: bool) -> None:
        """run.json in the run directory: how `sedamp status`, `scale` and `top` find
        and reach this run."""
        info = {
            "name": self.top.name,
            "pid": os.getpid(),
            "command": f"ipc://{self.sock_dir}/cmd",
            "topology": str(self.top.path) if self.top.path else None,
            "started": time.time() - (time.monotonic() - self.t0),
            "period_s": self.period_s,
            "ended": ended,
            # where the control and queue sockets listen (public; keys are never written)
            "endpoints": {"control": getattr(self, "ctl_endpoint", None), **getattr(self, "endpoints", {})},
            "curve_server_key": self.curve.server_public if self.curve is not None else None,
        }
        tmp = self.run_dir / "run.json.tmp"
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self.run_dir / "run.json")

    def _on_command(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            return
        rid = frames[0]
        try:
            msg = wire.parse(frames[1:])
            if msg.kind != wire.COMMAND:
                raise WireError("expected COMMAND")
            reply = self._command(msg.fields[0])
        except WireError as exc:
            reply = {"ok": False, "error": f"bad command: {exc}"}
        try:
            self.cmd.send_multipart([rid, *wire.simple(wire.REPLY, reply)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("command client went away: %s", exc)

    def _command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd.get("op")
        if op == "status":
            if self.last_record is None:
                return {"ok": False, "error": "no measurement yet: try again after one period"}
            return {"ok": True, "record": self.last_record}
        if op == "scale":
            name, n = cmd.get("stage"), cmd.get("workers")
            if not isinstance(name, str) or name not in self.stages:
                return {"ok": False, "error": f"no stage {name!r} (stages: {', '.join(self.stages)})"}
            st = self.stages[name]
            if st.spec.kind == "source":
                return {"ok": False, "error": f"{name!r} is a source: it runs in one process"}
            if self.top.is_member(name):
                return {"ok": False, "error": f"{name!r} is inside a group: scale {self.top.head_of(name)!r}"}
            if self.top.route_key(name) is not None:
                return {"ok": False, "error": f"{name!r} is key-routed: its worker count is fixed"}
            if st.ended:
                return {"ok": False, "error": f"{name!r} has finished"}
            if any(w.stats.get("stateful") for w in st.workers.values()):
                return {"ok": False, "error": f"{name!r} keeps state until its input ends (finish()): fixed size"}
            lo, hi = policy.worker_bounds(st.spec, self.cores)
            if not isinstance(n, int) or isinstance(n, bool) or not lo <= n <= hi:
                return {"ok": False, "error": f"workers for {name!r} must be within {lo}..{hi}, got {n!r}"}
            old, st.target = st.target, n
            self.pinned.add(name)  # the pool controller leaves it alone from now on
            d = policy.Decision(name, old, n, "set by sedamp scale (the controller no longer resizes it)")
            self.decisions.append(d.as_dict())
            log.info("stage %s: %d -> %d workers: %s", name, old, n, d.reason)
            return {"ok": True, "stage": name, "from": old, "to": n}
        return {"ok": False, "error": f"unknown command {op!r}"}

    def _downstream_fill(self, name: str, record: dict[str, Any]) -> float:
        """How full the fullest queue is that `name`'s group sends to (0..1)."""
        tail = self.top.chain_of(name)[-1]
        fill = 0.0
        for e in tail.to:
            q = record["stages"][self.top.head_of(e.stage)]["queue"] or {}
            if q.get("capacity"):
                fill = max(fill, (q.get("length") or 0) / q["capacity"])
        return fill

    def _ps(self, pid: int) -> psutil.Process | None:
        """One psutil.Process per pid, kept, so that cpu_percent measures since the last call."""
        p = self.ps.get(pid)
        if p is None:
            try:
                p = self.ps[pid] = psutil.Process(pid)
                p.cpu_percent(None)
            except psutil.Error:
                return None
        return p

    def record(self, final: bool = False) -> dict[str, Any]:
        """The metrics record of this period: the snapshot of every stage plus rates,
        latency percentiles, per-worker CPU and memory, and the decisions taken."""
        now = time.monotonic()
        dt = max(1e-6, now - self.last_record_t)
        snap = self.snapshot()
        out: dict[str, Any] = {
            "t": round(time.time(), 3),
            "elapsed_s": round(now - self.t0, 3),
            "final": final,
            "system": {
                "cores": self.cores,
                "cpu_percent": psutil.cpu_percent(None),
                "load1": round(os.getloadavg()[0], 2),
            },
            "stages": {},
            "decisions": self.decisions,
        }
        self.decisions = []
        per_batch: dict[str, float | None] = {}  # events per batch, per pool (a group's members share it)
        for name, st in self.stages.items():
            s = snap["stages"][name]
            prev = self.last_counts.get(name, {})
            q = s.get("queue") or {}
            arrived = q.get("arrived", s.get("out", 0) if st.spec.kind == "source" else 0)
            handled = s.get("in", 0)
            rec: dict[str, Any] = {
                "kind": st.spec.kind,
                "group": st.spec.group,
                "workers": s["workers"],
                "target": s["target"],
                "bounds": list(policy.worker_bounds(st.spec, self.cores)) if st.spec.kind != "source" else [1, 1],
                "queue": {k: q.get(k) for k in ("length", "capacity", "leased", "credit")} if q else None,
                "events_in": handled,
                "events_out": s.get("out", 0),
                "failed": s.get("failed", 0),
                "dropped": s.get("dropped", 0),
                "rejected": s.get("rejected", 0),
                **{k: s.get(k, 0) for k in ("retried", "skipped", "duplicates", "poisoned", "timeouts", "recycled")},
                "restarts": s.get("restarts", 0),
                **({"total": s.get("total")} if st.spec.kind == "source" else {}),
                "arrivals_per_s": round((arrived - prev.get("arrived", 0)) / dt, 2),
                "completions_per_s": round((handled - prev.get("in", 0)) / dt, 2),
            }
            self.last_counts[name] = {"arrived": arrived, "in": handled}
            bucket = self.samples.pop(name, {})
            rec["latency_ms"] = {
                "queue_wait": metrics.percentiles(bucket.get("queue_wait", ())),
                "service": metrics.percentiles(bucket.get("service", ())),
                "path": metrics.percentiles(bucket.get("path", ())),
            }
            pool = self.stages[self.top.head_of(name)]
            workers = []
            sizes = []
            for w in sorted(pool.workers.values(), key=lambda c: c.index):
                p = self._ps(w.pid) if w.proc.local and w.pid else None
                cpu = rss = None
                if p is not None:
                    try:
                        cpu = round(p.cpu_percent(None), 1)
                        rss = round(p.memory_info().rss / 2**20, 1)
                    except psutil.Error:
                        pass
                busy_frac = self._since_last(w, "busy_s") / dt
                if "batch_size" in w.stats:
                    sizes.append(w.stats["batch_size"])
                workers.append(
                    {
                        "index": w.index,
                        "pid": w.pid,
                        "cpu_percent": cpu,
                        "rss_mb": rss,
                        "busy": round(min(1.0, max(0.0, busy_frac)), 3),
                    }
                )
            rec["batch_size"] = round(sum(sizes) / len(sizes), 1) if sizes else None
            if pool.spec.name not in per_batch:
                per_batch[pool.spec.name] = self._events_per_batch(pool)
            rec["events_per_batch"] = per_batch[pool.spec.name]
            rec["worker_detail"] = workers if name == pool.spec.name else []
            out["stages"][name] = rec
        self.last_record_t = now
        return out

    def _events_per_batch(self, pool: _Stage) -> float | None:
        """The events a batch of the pool's workers carried this period: events taken in
        over batches handled, both counted since the last record (None without a batch).
        What ``batch_size`` asks for is an upper bound; a queue holding fewer hands over
        what it has."""
        batches = events = 0.0
        for w in pool.workers.values():
            batches += max(0.0, self._since_last(w, "batches"))
            events += max(0.0, self._since_last(w, "in"))
        return round(events / batches, 2) if batches else None

    def _since_last(self, w: _Child, stat: str) -> float:
        """How much worker `w`'s cumulative counter `stat` grew since the last record."""
        key = f"{stat}:{w.identity}"
        now = float(w.stats.get(stat, 0.0))
        before = self.last_seen.get(key, 0.0)
        self.last_seen[key] = now
        return now - before

    def _on_control(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            return
        rid, payload = frames[0], frames[1:]
        try:
            msg = wire.parse(payload)
        except WireError as exc:
            log.warning("controller: refused a control frame from %r: %s", rid, exc)
            return
        child = self.children.get(rid.decode(errors="replace"))
        if child is not None:
            child.last_heard = time.monotonic()
        if msg.kind == wire.REGISTER:
            self.registered.add(rid)
            if child is not None:
                child.endpoint = msg.fields[4]
                if isinstance(msg.fields[3], int) and msg.fields[3] > 0:
                    child.pid = msg.fields[3]
            for frames_ in self.pending.pop(rid, []):
                self._send(rid, frames_)
            return
        if child is None:
            # e.g. a queue's DONE arriving just after its exit was seen: harmless
            log.debug("controller: message from a process no longer tracked: %r", rid)
            return
        if msg.kind in (wire.STATS, wire.DONE):
            self._gather_samples(child, msg.fields[0])
        if msg.kind == wire.STATS:
            child.stats = msg.fields[0]
            if child.role == wire.QUEUE and child.stats.get("ended"):
                self.stages[child.stage].ended = True
            poison = child.stats.get("last_poison") if child.role == wire.QUEUE else None
            if poison and self.stages[child.stage].spec.on_error.then == "fail" and self.error is None:
                self.error = (
                    f"stage {child.stage!r}: event {poison['event_id']!r} killed {POISON_DEATHS} workers "
                    f"(the last {poison['reason']}); on_error: fail (the event is in the dead-letter file)"
                )
        elif msg.kind == wire.DONE:
            child.stats = msg.fields[0]
            child.done = True
            if child.role == wire.QUEUE:
                if child.stats.get("ended"):
                    self.stages[child.stage].ended = True
            else:
                child.stopped = True
                if child.role == wire.WORKER and not child.stats.get("retired"):
                    # A worker finishes only after its queue said END (or when retired):
                    # the stage's input is over, so no worker of it may start again.
                    self.stages[child.stage].ended = True
                elif child.role == wire.WORKER and child.stats.get("recycled") and not child.retiring:
                    # it replaced itself (max_events/max_rss_mb): free its index (a keyed
                    # stage's replacement needs that very partition) and start a fresh one
                    child.retiring = True
                    st_ = self.stages[child.stage]
                    st_.recycled += 1
                    if st_.workers.get(child.index) is child:
                        del st_.workers[child.index]
                        st_.leaving[child.identity] = child
                self._send(rid, wire.simple(wire.STOP, 0))  # acknowledge: it may exit
        elif msg.kind == wire.FATAL:
            info = msg.fields[0]
            child.fatal = str(info.get("message"))
            log.error("%s", child.fatal)
            tb = info.get("traceback")
            if tb:
                log.error("traceback from pid %s:\n%s", info.get("pid"), tb)

    def _on_exit(self, child: _Child) -> None:
        proc = child.proc
        fd = proc.sentinel
        self.poller.unregister(fd)
        del self.by_sentinel[fd]
        proc.join(5.0)  # it has ended (the sentinel fired); this waits for the launcher's report
        code = proc.exitcode
        in_hand = (-1, -1)
        if child.slot is not None:
            in_hand = child.in_hand or child.slot.read()[1:]
            child.slot.close()
            Path(child.slot.path).unlink(missing_ok=True)
        self.children.pop(child.identity, None)
        self.registered.discard(child.identity.encode())
        st = self.stages[child.stage]
        how = child.killed or proc.reason or _describe_exit(code)
        if proc.unplaceable and not self.draining:
            self.error = self.error or f"worker {child.stage}[{child.index}] {how}"
        if child.role == wire.QUEUE:
            if not child.stopped:
                self.error = f"the queue of stage {child.stage!r} (pid {proc.pid}) {how}"
            return
        if child.role == wire.SOURCE:
            st.source = None
            if child.fatal:
                self.error = self.error or child.fatal
            elif not child.done:
                self.error = self.error or f"source {child.stage!r} (pid {proc.pid}) {how} before it finished"
            st.complete = True
            st.retired = {k: v for k, v in child.stats.items() if isinstance(v, int | float)}
            self._retire_shed(child)
            log.info("source %s finished (%s events)", child.stage, child.stats.get("in"))
            return
        # a worker
        if st.workers.get(child.index) is child:
            del st.workers[child.index]
        st.leaving.pop(child.identity, None)
        self.ps.pop(child.pid, None)
        for stat in ("busy_s", "batches", "in"):
            self.last_seen.pop(f"{stat}:{child.identity}", None)
        for member, counts in _member_counts(child).items():
            retired = self.stages[member].retired
            for k, v in counts.items():
                retired[k] = retired.get(k, 0) + v
        self._retire_shed(child)
        if child.done and code == 0:
            return
        if child.fatal:
            self.error = child.fatal
            return
        if child.stats.get("stateful") and not self.draining:
            # its state (what finish() would emit) died with it: the output would be wrong
            self.error = (
                f"worker {child.stage}[{child.index}] (pid {child.pid}) {how}; stage {child.stage!r} keeps state "
                "(finish()) that died with it, so the run cannot finish correctly"
            )
            return
        log.warning(
            "worker %s[%d] (pid %d) %s; its leases return to the queue", child.stage, child.index, child.pid, how
        )
        # its leases go back to its own queue, and the credit it held in every queue it
        # sent to is freed (it was a producer there under the same identity)
        tail = self.top.chain_of(child.stage)[-1]
        for q_stage in [child.stage, *(self.top.head_of(e.stage) for e in tail.to)]:
            q = self.stages[q_stage].queue
            if q is not None:
                # only its own queue's lease numbers mean anything in `in_hand`
                blame = in_hand if q_stage == child.stage else (-1, -1)
                self._send(q.identity.encode(), wire.simple(wire.GONE, child.identity, how, *blame))
        st.restarts += 1
        acked = int(st.queue.stats.get("acked", 0)) if st.queue is not None else 0
        st.barren_deaths = st.barren_deaths + 1 if acked <= st.acked_at_death else 1
        st.acked_at_death = acked
        if st.barren_deaths >= MAX_BARREN_DEATHS:
            self.error = (
                f"workers of stage {child.stage!r} died {st.barren_deaths} times in a row without finishing "
                f"an event; last one {how}"
            )

    def _retire_shed(self, child: _Child) -> None:
        for target, (dropped, rejected) in child.stats.get("shed", {}).items():
            acc = self.retired_shed.setdefault(target, [0, 0])
            acc[0] += dropped
            acc[1] += rejected

    def _shed(self) -> dict[str, list[int]]:
        """Events each stage's full queue made its producers drop or reject."""
        total = {k: list(v) for k, v in self.retired_shed.items()}
        for child in self.children.values():
            if child.role in (wire.WORKER, wire.SOURCE):
                for target, (dropped, rejected) in child.stats.get("shed", {}).items():
                    acc = total.setdefault(target, [0, 0])
                    acc[0] += dropped
                    acc[1] += rejected
        return total

    def _advance(self) -> None:
        """Move finished stages forward: CLOSE queues whose producers are all done,
        mark stages complete, STOP queues of complete stages."""
        for name, st in self.stages.items():
            if st.spec.kind == "source" or st.complete:
                continue
            if self.top.is_member(name):
                st.complete = self.stages[self.top.head_of(name)].complete
                continue
            if not st.closed and all(self.stages[u].complete for u in self.top.upstream(name)):
                st.closed = True
                assert st.queue is not None
                self._send(st.queue.identity.encode(), wire.simple(wire.CLOSE))
                log.info("stage %s: every producer finished; queue closed", name)
            if st.ended and not st.workers:
                st.complete = True
                if st.queue is not None:
                    st.queue.stopped = True
                    self._send(st.queue.identity.encode(), wire.simple(wire.STOP, 0))
                log.info("stage %s finished", name)

    def _send(self, rid: bytes, frames: list[bytes]) -> None:
        if rid not in self.registered:
            self.pending.setdefault(rid, []).append(frames)
            return
        try:
            self.ctl.send_multipart([rid, *frames], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("controller: cannot send to %r: %s", rid, exc)

    # ---------------------------------------------------------------- signals

    def _install_signals(self) -> Callable[[], None]:
        if not self.opt.handle_signals or threading.current_thread() is not threading.main_thread():
            return lambda: None
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def on_signal(signum: int, _frame: Any) -> None:
            self.interrupted = True
            if self.draining:
                log.error("second interrupt: stopping every process now")
                self.hard_stop = True
                return
            self.draining = True
            self.drain_deadline = time.monotonic() + self.drain_timeout_s
            log.warning(
                "%s: stopping the sources and draining in-flight work (up to %.0f s); interrupt again to stop at once",
                signal.Signals(signum).name,
                self.drain_timeout_s,
            )
            self._stop_sources()

        for s in old:
            signal.signal(s, on_signal)

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)

        return restore

    def _stop_sources(self) -> None:
        for st in self.stages.values():
            if st.source is not None:
                self._send(st.source.identity.encode(), wire.simple(wire.STOP, 0))

    # ---------------------------------------------------------------- end

    def _reap_all(self) -> None:
        """Make sure no process of this run is left: wait briefly for the ones that are
        finishing on their own, then kill the rest."""
        clean = self.error is None and not self.hard_stop and all(st.complete for st in self.stages.values())
        deadline = time.monotonic() + (2.0 if clean else 0.0)
        for fd, child in list(self.by_sentinel.items()):
            self.poller.unregister(fd)
            left = deadline - time.monotonic()
            if left > 0:
                child.proc.join(left)
            if child.proc.is_alive():
                child.proc.kill()
            child.proc.join(5)
            if child.slot is not None:
                child.slot.close()
                child.slot = None
        self.by_sentinel.clear()

    def snapshot(self) -> dict[str, Any]:
        """The controller's current view (also what progress displays show)."""
        out: dict[str, Any] = {"name": self.top.name, "stages": {}}
        shed = self._shed()
        for name, st in self.stages.items():
            counts = dict(st.retired) if st.spec.kind != "source" else {}
            pool = self.stages[self.top.head_of(name)]
            for w in [*pool.workers.values(), *pool.leaving.values()]:
                for k, v in _member_counts(w).get(name, {}).items():
                    counts[k] = counts.get(k, 0) + v
            if st.source is not None:
                counts = dict(st.source.stats)
            elif st.spec.kind == "source":
                counts = dict(st.retired)
            head = name == pool.spec.name
            out["stages"][name] = {
                "kind": st.spec.kind,
                "workers": len(pool.workers),
                "target": pool.target,
                "group": st.spec.group,
                "queue": dict(pool.queue.stats) if pool.queue is not None else None,
                **counts,
                "dropped": shed.get(name, [0, 0])[0],
                "rejected": shed.get(name, [0, 0])[1],
                "poisoned": int(pool.queue.stats.get("poisoned", 0)) if head and pool.queue is not None else 0,
                "timeouts": pool.timeouts if head else 0,
                "recycled": pool.recycled if head else 0,
                "restarts": pool.restarts if head else 0,
            }
        return out

    def _summary(self, wall_s: float) -> Summary:
        snap = self.snapshot()
        stages = []
        events = 0
        failed = 0
        for name, st in self.stages.items():
            s = snap["stages"][name]
            stages.append(
                StageSummary(
                    name=name,
                    kind=st.spec.kind,
                    events_in=int(s.get("in", 0)),
                    events_out=int(s.get("out", 0)),
                    failed=int(s.get("failed", 0)),
                    workers=self.stages[self.top.head_of(name)].peak_workers if st.spec.kind != "source" else 1,
                    restarts=st.restarts,
                    dropped=int(s["dropped"]),
                    rejected=int(s["rejected"]),
                    retried=int(s.get("retried", 0)),
                    skipped=int(s.get("skipped", 0)),
                    duplicates=int(s.get("duplicates", 0)),
                    poisoned=int(s["poisoned"]),
                    timeouts=int(s["timeouts"]),
                    recycled=int(s["recycled"]),
                )
            )
            failed += int(s.get("failed", 0)) + int(s["rejected"])
            if st.spec.on_error.then != "skip":
                failed += int(s["poisoned"])
            if st.spec.kind == "source":
                events += int(s.get("in", 0))
        error = self.error  # an interrupt alone is reported by `interrupted`
        if error is None and not self.interrupted and not all(st.complete for st in self.stages.values()):
            error = "the run stopped before every stage finished"
        if self.interrupted and self.drain_deadline is not None and time.monotonic() >= self.drain_deadline:
            error = error or f"in-flight work did not drain within {self.drain_timeout_s:.0f} s"
        return Summary(
            name=self.top.name,
            run_dir=self.run_dir,
            dead_letters=self.dead_path,
            stages=tuple(stages),
            wall_s=wall_s,
            events=events,
            failed=failed,
            interrupted=self.interrupted,
            error=error,
        )


def _member_counts(child: _Child) -> dict[str, dict[str, int]]:
    """A worker's counters per stage it runs (several for a group)."""
    members = child.stats.get("members")
    if not members:
        return {child.stage: {k: child.stats.get(k, 0) for k in ("in", "out", "failed")}}
    keys = ("in", "out", "failed", "retried", "skipped")
    out = {name: dict(zip(keys, c, strict=False)) for name, c in members.items()}
    out[list(members)[-1]]["duplicates"] = child.stats.get("duplicates", 0)
    return out


# ipc:// paths must fit in a sockaddr_un (108 bytes on Linux, less elsewhere).
_MAX_IPC_PATH = 90


def _socket_dir(run_dir: Path) -> Path:
    """Where the run's ipc sockets live: inside the private run directory when its path
    is short enough, else a private temporary directory (mode 0700 either way)."""
    d = run_dir / "sock"
    if len(str(d)) + len("/q999") <= _MAX_IPC_PATH:
        d.mkdir(mode=0o700)
        return d
    return Path(tempfile.mkdtemp(prefix="sedamp-"))


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"

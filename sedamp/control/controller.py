"""Runs in the controller process (the process that called `sedamp run`).

Reads:  its control ROUTER (REGISTER/STATS/DONE/FATAL from every queue, worker and
        source), the sentinels of every process it started (a death is seen at once),
        its command ROUTER, and SIGINT/SIGTERM.
Writes: CLOSE to a queue once every stage feeding it has finished, STOP to a finished
        process (the acknowledgement of its DONE) or to a source on Ctrl-C, GONE to a
        queue whose worker died, RETIRE to a worker its pool no longer needs, REPORT to
        every queue and worker just before a record (each answers with STATS at once);
        processes through the executor; run.json, the metrics lines, the summary.

It is the supervisor: it starts the queues, the workers and the sources; it restarts a
worker that dies; it ends the run in order. No payload ever passes through it. Who
sends what to whom (ROUTER/DEALER over ipc, or tcp with CURVE):

    sources  --REGISTER/STATS/DONE/FATAL-->  +-------------- controller --------------+
    queues   --REGISTER/STATS/DONE/FATAL-->  | control ROUTER --> _on_control          |
    workers  --REGISTER/STATS/DONE/FATAL-->  |   STATS, DONE: Recorder.gather (latency |
                                             |     samples), Roster.on_stats/on_done   |
    sources  <--STOP, HALT (Ctrl-C)--------  |   FATAL: Roster.on_fatal (its traceback)|
    queues   <--CLOSE, STOP, GONE, HALT,---  | ControlLinks: held until REGISTER       |
                REPORT                       |                                         |
    workers  <--STOP (DONE acked), RETIRE,-  |                                         |
                REPORT                       |                                         |
                                             | sentinels --> Roster.on_exit            |
    executor <--start(role, config)--------  |   (a death is seen at once)             |
    processes <--kill (deadline, silence)--  | period tick --> Recorder.period -> the  |
                                             |   metrics line, on_tick, policy.decide  |
    sedamp status/scale/top --COMMAND--->    | command ROUTER --> commands.serve       |
                            <--REPLY-----    |                                         |
    SIGINT/SIGTERM ------------------------> | drain, or stop at once (a second one)   |
                                             +-----------------------------------------+

- `sedamp.control.roster`: the children and stages; spawning through the executor,
  reconcile to target (spawn until a pool matches it, RETIRE the extra), exits and
  restarts (GONE to the queues a dead worker held leases or credit in), the watchdogs.
- `sedamp.control.recorder`: psutil and the children's counters, into typed records:
  the metrics line, the pool controller's views, the summary.
- `sedamp.control.policy`: the pure pool controller (`decide`), run every period when
  `controller.policy` is adaptive; `sedamp.control.commands`: one function per verb.
- `sedamp.control.ports`: the control and command sockets, the queue endpoints, the
  `Wiring` children start with; `sedamp.control.rundir`: the run directory, run.json.

End of a batch job, stage by stage in topological order: a source is finished when its
process reported DONE (everything it sent was taken downstream). A stage with a queue
is finished when its queue has ENDed (closed, empty, no lease out) and every worker
reported DONE (its finish() outputs taken, its teardown run). When every stage feeding
a queue is finished, the controller sends it CLOSE. A finished stage's queue is told
STOP. The exits are not waited for in turn: a process that said DONE only closes its
sockets, and the run's end joins them all (`roster.reap_all`).

Ctrl-C or SIGTERM: the sources and the queues are told HALT (`roster.interrupt`): the
sources stop reading, each queue drops what waits in it (a re-run or --resume does it)
and its workers give back the batches they have not started, so what is left is what
the workers hold, and the run ends in order within `drain_timeout_s`. Past the
deadline, or on a second Ctrl-C, the workers are interrupted (user code unwinds, its
cleanup runs) and every process is killed. In every case no process of the run is
left: children also die with the controller (PR_SET_PDEATHSIG) and check their parent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from sedamp.control import commands, policy
from sedamp.control.ports import ControlLinks, Ports
from sedamp.control.recorder import Period, Recorder
from sedamp.control.roster import (
    Child,
    Roster,
    RunState,
    ask_for_reports,
    excuse_pause,
    hold_leases,
    interrupt,
    reached_from,
    reap_all,
    watch_deadlines,
    watch_silence,
)
from sedamp.control.rundir import KEEP_RUNS, make_run_dir, prune_runs, workdir_of
from sedamp.control.summary import RunOptions, Summary
from sedamp.control.wiring import Wiring
from sedamp.errors import JournalError, LaunchError, StorageError, WireError
from sedamp.executor.local import LocalExecutor
from sedamp.observe.failures import FailureDigest, budget_message, over_budget
from sedamp.observe.words import plural
from sedamp.runtime import blocks, journal, lifeline, sockets, wire
from sedamp.runtime import stage as stage_mod
from sedamp.runtime.deadletter import DEAD_LETTERS_FILE, DeadLetterTail
from sedamp.runtime.pauses import Pauses
from sedamp.spec import Topology, fusion, paths

__all__ = ["run_topology"]

log = logging.getLogger(__name__)


def run_topology(topology: Topology, options: RunOptions | None = None) -> Summary:
    """Run a topology to completion in this process (the controller) and summarise it.
    Under ``policy: adaptive`` the chains that can be fused run fused (`spec.fusion`).
    Raises StorageError, having started nothing, when no run directory can be made."""
    options = options or RunOptions()
    to_run, fused = fusion.plan(topology)
    for f in fused:
        log.info("stages %s -> %s: %s: %s", f.upstream, f.downstream, f.action, f.reason)
    try:
        controller = _Controller(to_run, options, [f.as_dict() for f in fused])
    except BaseException:
        if options.executor is not None:
            options.executor.close()
        raise
    summary = controller.run()
    return dataclasses.replace(summary, fusion=tuple(f.as_dict() for f in fused), outputs=paths.outputs(topology))


class _Controller:
    def __init__(self, topology: Topology, options: RunOptions, fused: list[dict[str, str]]) -> None:
        self.top = topology
        self.opt = options
        self.cores = options.cores or topology.controller.cores or 0  # 0: the executor's (in run())
        self.period_s = topology.controller.period_s
        self.drain_timeout_s = (
            options.drain_timeout_s if options.drain_timeout_s is not None else topology.controller.drain_timeout_s
        )
        self.run_dir = make_run_dir(workdir := workdir_of(topology.base_dir, options.workdir), topology.name)
        prune_runs(workdir, topology.name, KEEP_RUNS)  # this run has no run.json yet: kept
        self.dead_path = self.run_dir / DEAD_LETTERS_FILE
        self.import_paths = (str(topology.base_dir), os.getcwd())
        self.journal = Path()
        self.journal_lock: int | None = None  # the journal lock held for the run (journal.start)
        self.state = RunState()
        self.failures = FailureWatch(topology, self.dead_path, self.state)
        self.links = ControlLinks()
        self.roster = Roster(topology, self.state, self.links, options.executor)  # executor started in run()
        stage_mod.add_import_paths(self.import_paths)
        draining = [s.name for s in topology.sources() if stage_mod.drains_on_interrupt(s.ref)]
        self.roster.drained = reached_from(topology, draining)
        self.recorder = Recorder(topology, self.roster, fused)
        self.t0 = self.recorder.t0
        self.metrics_file: MetricsFile | None = None
        self.policy_state = policy.PolicyState()
        self.pinned: set[str] = set()  # stages whose size `sedamp scale` set
        self.decisions: list[dict[str, Any]] = []  # for the next record
        self.last_record: dict[str, Any] | None = None
        self.pauses = Pauses(time.monotonic())

    # ---------------------------------------------------------------- run

    def run(self) -> Summary:
        t0 = time.monotonic()
        self.ports = Ports(self.top, self.run_dir, self.t0, self.links)
        restore: Callable[[], None] = lambda: None  # noqa: E731
        try:
            self._open()
            if self.opt.handle_signals and threading.current_thread() is threading.main_thread():
                restore = _install_signals(self.state, self.roster, self.drain_timeout_s)
            self._start()
            self._loop()
        except (LaunchError, StorageError) as exc:  # no process can start, a file the run keeps cannot be written
            self.state.error = self.state.error or str(exc)
        finally:
            self._close(restore)
        summary = self.recorder.summary(
            self.run_dir,
            self.dead_path,
            time.monotonic() - t0,
            self.state.interrupted,
            _outcome_error(self.state, self.roster.complete, self.drain_timeout_s),
        )
        return self.failures.into(summary)

    def _open(self) -> None:
        """Start the executor, bind the sockets, write run.json, open the journal."""
        if self.roster.executor is None:
            self.roster.executor = LocalExecutor()
        if not self.cores:
            self.cores = self.roster.executor.cores()
        error = self.ports.open(self.roster.executor.remote)
        if error is not None:
            self.state.error = error
        if self.opt.metrics_path is not None:
            self.metrics_file = MetricsFile(self.opt.metrics_path)
        self.ports.open_commands()
        self.ports.write_run_file(ended=False)
        self.journal = journal.journal_dir(workdir_of(self.top.base_dir, self.opt.workdir), self.top.name)
        try:
            self.journal_lock = journal.start(self.journal, self.opt.resume, journal.fingerprint(self.top))
        except JournalError as exc:
            self.state.error = self.state.error or str(exc)
            return
        if self.opt.resume:
            done = journal.done_ids(self.journal, self.top)
            journal.write_skip(self.run_dir / "skip.ids", done)
            log.info("resuming: %s already written by every sink", plural(len(done), "event"))

    def _close(self, restore: Callable[[], None]) -> None:
        """Leave no process, socket or socket directory behind; write the final record."""
        reap_all(self.roster)
        if self.roster.executor is not None:
            self.roster.executor.close()
        restore()
        final = self._record(final=True).as_dict()
        self.failures.note(final, final=True)
        if self.metrics_file is not None:
            try:
                self.metrics_file.write(final)
            except StorageError as exc:
                self.state.error = self.state.error or str(exc)
            self.metrics_file.close()
        if self.opt.on_tick is not None:
            try:
                self.opt.on_tick(final)
            except Exception:  # a display must not turn a finished run into a failed one
                log.exception("controller: the progress callback failed on the final record")
        self.ports.close()
        if self.journal_lock is not None:
            os.close(self.journal_lock)  # another run of the topology may take the journal now
            self.journal_lock = None

    def _wiring(self) -> Wiring:
        w = self.ports.wiring(self.dead_path, self.import_paths, self.journal, self.opt)
        producers = {n: policy.producers_of(self.top, n, self.cores) for n in self.top.stages}
        return dataclasses.replace(w, producers=producers)

    def _start(self) -> None:
        if self.state.error is not None:
            return
        problems = policy.capacity_problems(self.top, self.cores)
        if problems:
            self.state.error = "; ".join(problems)
            return
        targets = policy.initial_targets(self.top, self.cores)
        self.state.error = _cluster_too_small(self.top, self.roster, self.cores)
        if self.state.error is not None:
            return
        self.roster.wiring = self._wiring()
        self.roster.start_queues(targets)
        if self.ports.transport == "tcp" and not self._await_queue_endpoints():
            return
        self.roster.reconcile()
        self.roster.start_sources()
        if self.state.draining:  # interrupted while starting: the sources stop at once
            interrupt(self.roster)
        log.info("run %s started: %d cores, targets %s, run dir %s", self.top.name, self.cores, targets, self.run_dir)

    def _await_queue_endpoints(self, timeout_s: float = 15.0) -> bool:
        """With tcp, a queue's port is known once it registers: wait for every queue."""
        deadline = time.monotonic() + timeout_s
        while True:
            queues = [st.queue for st in self.roster.stages.values() if st.queue is not None]
            if all(q.endpoint for q in queues):
                break
            if self.state.error is not None:
                return False
            if time.monotonic() >= deadline:
                missing = [q.stage for q in queues if not q.endpoint]
                self.state.error = f"the queues of {missing} did not report their endpoints within {timeout_s:.0f} s"
                return False
            for fd in dict(self.links.poller.poll(100)):
                if fd is self.links.ctl:
                    for frames in sockets.drain(self.links.ctl):
                        self._on_control(frames)
                elif isinstance(fd, int) and fd in self.roster.by_sentinel:
                    self._on_exit(fd)
        for st in self.roster.stages.values():
            if st.queue is not None:
                self.ports.endpoints[st.spec.name] = st.queue.endpoint
        log.info("queue endpoints: %s", self.ports.endpoints)
        self.roster.wiring = self._wiring()
        self.ports.write_run_file(ended=False)
        return True

    # ---------------------------------------------------------------- loop

    def _loop(self) -> None:
        state, ctl, cmd = self.state, self.links.ctl, self.ports.cmd
        assert ctl is not None and cmd is not None, "_open binds the sockets"
        records = 0  # taken so far
        next_tick, ask_at = record_due(time.monotonic(), policy.record_gap(0, self.period_s), self.period_s)
        self.pauses = Pauses(time.monotonic())  # from here on the loop comes round often
        while True:
            if state.hard_stop or (self.roster.complete and not self.roster.by_sentinel):
                return
            if state.error is not None:
                log.info("stopping the run: %s", state.error)  # the summary's error says it
                return
            self._excuse_pause(0.0)
            now = time.monotonic()
            if state.drain_deadline is not None and now >= state.drain_deadline:
                log.error("drain deadline of %.1f s passed: stopping every process", self.drain_timeout_s)
                return
            if now >= ask_at:  # the record is due: its counts are read now, not up to a period ago
                ask_for_reports(self.roster.stages.values(), self.links)
                ask_at = math.inf
            timeout = min(next_tick - now, ask_at - now, 0.1 if state.draining else self.period_s)
            ready = dict(self.links.poller.poll(max(0, int(timeout * 1000))))
            if ctl in ready:
                for frames in sockets.drain(ctl):
                    self._on_control(frames)
            if cmd in ready:
                for frames in sockets.drain(cmd):
                    self._on_command(frames)
            for fd in [fd for fd in ready if isinstance(fd, int) and fd in self.roster.by_sentinel]:
                self._on_exit(fd)
            self._excuse_pause(timeout)  # before the watchdogs of the tick
            now = time.monotonic()
            if now >= next_tick:
                records += 1
                next_tick, ask_at = record_due(now, policy.record_gap(records, self.period_s), self.period_s)
                self._tick()
            if self.roster.advance() and resizing_goes_on(self.roster, self.cores):
                # a pool ended: its cores are idle until another grows, so record soon
                now, gap = time.monotonic(), policy.END_RECORD * self.period_s
                if now + gap < next_tick:
                    next_tick, ask_at = record_due(now, gap, self.period_s)
            self.roster.reconcile()  # after the tick: what it decided starts now, not after the next poll

    def _excuse_pause(self, allowed_s: float) -> None:
        """Deadlines move on by the time this loop was not running beyond `allowed_s`
        since it last looked (`sedamp.runtime.pauses`)."""
        if paused := self.pauses.observe(time.monotonic(), allowed_s):
            excuse_pause(self.roster, self.state, paused)

    def _on_control(self, frames: list[bytes]) -> None:
        """A message from a queue, worker or source."""
        if len(frames) < 2:
            return
        rid, payload = frames[0], frames[1:]
        try:
            msg = wire.parse(payload)
        except WireError as exc:
            log.warning("controller: refused a control frame from %r: %s", rid, exc)
            return
        child = self.roster.children.get(rid.decode(errors="replace"))
        if child is not None:
            child.last_heard = time.monotonic()
        if msg.kind == wire.REGISTER:
            if child is not None:
                child.endpoint = msg.fields[4]
                if isinstance(msg.fields[3], int) and msg.fields[3] > 0:
                    child.pid = msg.fields[3]
            self.links.register(rid)
            return
        if child is None:
            # e.g. a queue's DONE arriving just after its exit was seen: harmless
            log.debug("controller: message from a process no longer tracked: %r", rid)
            return
        if msg.kind in (wire.STATS, wire.DONE):
            self.recorder.gather(child, msg.fields[0])
        if msg.kind == wire.STATS:
            self.roster.on_stats(child, msg.fields[0])
        elif msg.kind == wire.DONE:
            self.roster.on_done(child, msg.fields[0])
        elif msg.kind == wire.FATAL:
            self.roster.on_fatal(child, msg.fields[0])

    def _on_exit(self, fd: int) -> None:
        child = self.roster.by_sentinel[fd]
        assert self.links.ctl is not None, "_open binds the control socket"
        _await_last_words(child, self.links.ctl, self._on_control)
        self.roster.on_exit(child)
        if child.role == wire.WORKER:
            self.recorder.forget(child)
            if self.ports.blocks:  # the blocks it kept died with its arrays
                blocks.drop_kept(self.ports.blocks, child.proc.pid)

    def _on_command(self, frames: list[bytes]) -> None:
        """A command from `sedamp status`, `scale` or `top`, answered at once."""
        assert self.ports.cmd is not None
        ctx = commands.CommandContext(self.roster, self.cores, self.last_record, self.pinned, self.decisions)
        commands.serve(self.ports.cmd, frames, ctx)

    # ---------------------------------------------------------------- every period

    def _tick(self) -> None:
        watch_deadlines(self.roster.stages.values(), time.monotonic(), self.pauses.since)
        watch_silence(self.roster.stages.values(), self.state, self.period_s, time.monotonic())
        hold_leases(self.roster.stages.values(), self.links)
        period = self._record()
        record = period.as_dict()
        self.failures.note(record)
        if self.top.controller.policy == "adaptive" and not self.state.draining:
            record["decisions"] = record["decisions"] + [d.as_dict() for d in self._control(period)]
        self.last_record = record
        if self.metrics_file is not None:
            self.metrics_file.write(record)
        if self.opt.on_tick is not None:
            try:
                self.opt.on_tick(record)
            except Exception:  # a display or exporter failing must not stop the run
                log.exception("controller: the progress callback failed")

    def _record(self, final: bool = False) -> Period:
        """This period's record, with the decisions `sedamp scale` took since the last."""
        period = self.recorder.period(self.cores, self.decisions, final)
        self.decisions = []
        return period

    def _control(self, period: Period) -> list[policy.Decision]:
        """The pool controller: decide from this period's record, then set targets (the
        reconcile step spawns or retires workers to match)."""
        views = self.recorder.views(period, self.cores, self.pinned)
        budget = max(1, round(period.budget)) if period.budget else self.cores  # the machine's share for us
        decisions = policy.decide(views, budget, time.monotonic(), self.policy_state, self.recorder.others_seen or 0.0)
        for d in decisions:
            st = self.roster.stages[d.stage]
            lo, hi = policy.worker_bounds(st.spec, self.cores)
            st.target = max(lo, min(hi, d.new))
            log.info("stage %s: %d -> %d workers: %s", d.stage, d.old, st.target, d.reason)
        return decisions


def _cluster_too_small(top: Topology, roster: Roster, cores: int) -> str | None:
    """Why the executor's cluster cannot hold the topology's least workers, or None."""
    assert roster.executor is not None, "_open starts the executor"
    slots = roster.executor.worker_slots()
    floor = sum(
        policy.worker_bounds(st.spec, cores)[0]
        for n, st in roster.stages.items()
        if st.spec.kind != "source" and not top.is_member(n)
    )
    if slots is None or floor <= slots:
        return None
    return (
        f"the topology needs at least {plural(floor, 'worker')} at once (one CPU each) but the cluster has "
        f"{plural(slots, 'CPU')}: add nodes (or CPUs), or lower the stages' workers"
    )


def _outcome_error(state: RunState, complete: bool, drain_timeout_s: float) -> str | None:
    """The run's error for its summary (an interrupt alone is reported by `interrupted`)."""
    error = state.error
    if error is None and not state.interrupted and not complete:
        error = "the run stopped before every stage finished"
    if state.interrupted and state.drain_deadline is not None and time.monotonic() >= state.drain_deadline:
        error = error or f"in-flight work did not drain within {drain_timeout_s:.0f} s"
    return error


# How long the controller waits for the FATAL of a child that exited with
# EXIT_CHILD_FAILED, which sends it just before exiting: long enough for the message to
# cross the control socket on a loaded machine; paid only when the message is lost.
# How long before a record is due, as a share of the period, the queues and workers
# are asked for their STATS (REPORT): their own come a period apart, each at times of
# its own, so a record read counts up to a period old (a queue's length from before its
# stage was backed up). A worker answers between batches, which take about 50 ms
# (`sedamp.runtime.pace`): at 30 ms ahead, one in three answers missed the record.
REPORT_AHEAD = 0.2
LAST_WORDS_S = 1.0


def resizing_goes_on(roster: Roster, cores: int) -> bool:
    """Whether a pool the controller may resize is still running (`policy.END_RECORD`)."""
    top = roster.top
    return any(
        policy.resizable(top, name, cores, st.stateful)
        for name, st in roster.stages.items()
        if not st.complete and st.spec.kind != "source" and not top.is_member(name)
    )


def record_due(now: float, gap_s: float, period_s: float) -> tuple[float, float]:
    """When the next record is due (`gap_s` from `now`, `policy.record_gap`) and when to
    ask for the reports it reads: REPORT_AHEAD of a period before it, but not before
    half-way through the gap. Asked at the start, as REPORT_AHEAD of the 0.1 s first
    gap would be, the queues reported nothing yet: a stage backed up from the start
    read an empty queue and could not grow."""
    return now + gap_s, now + max(gap_s / 2, gap_s - REPORT_AHEAD * period_s)


def _await_last_words(child: Child, ctl: zmq.Socket[Any], on_control: Callable[[list[bytes]], None]) -> None:
    """A child that exits with EXIT_CHILD_FAILED told the controller why (FATAL) just
    before, but its sentinel may fire before that message is read: read it first, so the
    exit is accounted for with its reason (a full disk, a setup that raised) and not as
    a crash to recover from."""
    deadline = time.monotonic() + LAST_WORDS_S
    while child.fatal is None and not child.done and time.monotonic() < deadline:
        code = child.proc.exitcode
        if code is not None and code != lifeline.EXIT_CHILD_FAILED:
            return
        if ctl.poll(20):
            for frames in sockets.drain(ctl):
                on_control(frames)


class FailureWatch:
    """Follows the run's dead-letter file while the processes write it: a period's record
    gets the kinds of failure first seen in it (``"failures"``), and a stage past its
    error budget (``on_error.budget``) stops the run; the summary gets every kind."""

    # How much of the dead-letter file is read a period, at most: bounds the controller's
    # work in a period when failures come faster (the rest is read in later periods,
    # and all of it at the end).
    READ_BYTES = 16 << 20

    def __init__(self, top: Topology, dead_path: Path, state: RunState) -> None:
        self.tail = DeadLetterTail(dead_path)
        self.digest = FailureDigest()
        self.state = state
        self.budgets = {n: s.on_error.budget for n, s in top.stages.items() if s.kind != "source"}

    def note(self, record: dict[str, Any], final: bool = False) -> None:
        """Read what was dead-lettered since the last record into `record`; stop the run
        (its error) if a stage is over its budget, judged on `record`'s counters."""
        new = [self.digest.add(r) for r in self.tail.read(1 << 62 if final else self.READ_BYTES)]
        kinds = [k.as_dict() for k in new if k is not None]
        if kinds:
            record["failures"] = kinds
        over = over_budget(record, self.budgets)
        if over is not None and self.state.error is None:
            stage, failed, handled = over
            first = self.digest.first_of(stage)
            self.state.error = budget_message(stage, failed, handled, self.budgets[stage], first)

    def into(self, summary: Summary) -> Summary:
        return dataclasses.replace(summary, failures=tuple(self.digest.kinds()), other_failures=self.digest.unlisted)


class MetricsFile:
    """The metrics stream (`metrics_path`): one JSON line per period, flushed at once.
    StorageError when it cannot be made or written."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = self.path.open("w", encoding="utf-8")
        except OSError as exc:
            raise StorageError.of("the metrics file", self.path, exc) from exc

    def write(self, record: dict[str, Any]) -> None:
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as exc:
            raise StorageError.of("the metrics file", self.path, exc) from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):  # what it could not flush, write() reported
            self.file.close()


def _install_signals(state: RunState, roster: Roster, drain_timeout_s: float) -> Callable[[], None]:
    """SIGINT/SIGTERM: the first one drains (`roster.interrupt`: the sources stop, the
    queues drop what waits in them, the workers finish what they hold), a second one
    stops every process now. Returns what puts the old handlers back."""
    old: dict[int, Any] = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, _frame: Any) -> None:
        state.interrupted = True
        if state.draining:
            log.error("second interrupt: stopping every process now")
            state.hard_stop = True
            return
        state.draining = True
        state.drain_deadline = time.monotonic() + drain_timeout_s
        what = (
            "stopping the sources and draining in-flight work (up to %.0f s)"
            if set(roster.stages) <= roster.drained
            else "draining (up to %.0f s): the workers finish the batches they hold; what waits in queues is "
            "dropped, for a re-run to do"
        )
        log.warning("%s: " + what + "; interrupt again to stop at once", signal.Signals(signum).name, drain_timeout_s)
        interrupt(roster)

    for s in old:
        signal.signal(s, on_signal)
    old.update(_job_control(roster))

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore


def _job_control(roster: Roster) -> dict[int, Any]:
    """Ctrl-Z (SIGTSTP) stops every process of the run with the command line, and `fg`
    or `bg` (SIGCONT) goes on with them all: the run's processes are in a process group
    of their own, which the terminal does not signal. The time they were stopped is not
    held against them (`sedamp.runtime.pauses`). Returns the handlers it replaced."""
    group = getattr(roster.executor, "signal_all", None)
    if group is None or not hasattr(signal, "SIGTSTP"):
        return {}

    def on_stop(_signum: int, _frame: Any) -> None:
        group(signal.SIGSTOP)
        os.kill(os.getpid(), signal.SIGSTOP)  # what SIGTSTP would have done

    def on_continue(_signum: int, _frame: Any) -> None:
        group(signal.SIGCONT)

    old: dict[int, Any] = {s: signal.getsignal(s) for s in (signal.SIGTSTP, signal.SIGCONT)}
    signal.signal(signal.SIGTSTP, on_stop)
    signal.signal(signal.SIGCONT, on_continue)
    return old

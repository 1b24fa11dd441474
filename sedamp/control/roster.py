"""Runs in the controller process: the roster of a run's children and stages.

Reads:  the executor's process handles (exit codes, why a process ended), what every
        child last reported (its STATS or DONE), the workers' slots (which event is in
        the handler, the deadline of the current call; for a worker on another host, as
        its executor last heard them) and their heartbeats.
Writes: processes, through the executor: the queues, the sources, and the workers of
        each pool (one reconcile step spawns until a pool matches its target and retires
        the extra); RETIRE to a worker its pool no longer needs; GONE to the queues a
        dead worker held leases or credit in; CLOSE to a queue once every stage feeding
        it has finished and STOP to the queue of a finished stage; STOP to a finished
        process (the acknowledgement of its DONE) and to the sources on an interrupt;
        HOLD to a queue for its workers inside user code (their leases must not expire);
        kills a worker past its handler deadline or silent outside user code, wherever
        it runs; and `RunState.error` when the run cannot go on.

Messages leave through `Links` (the controller's control socket) and processes come
from an `Executor`: a unit test drives a roster with fakes of both.
"""

from __future__ import annotations

import itertools
import logging
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sedamp.control.wiring import Wiring, queue_config, source_config, worker_config
from sedamp.executor.base import Executor, Proc, SlotView
from sedamp.observe.failures import user_place
from sedamp.runtime import wire
from sedamp.runtime.configs import queue_identity, source_identity, worker_identity
from sedamp.runtime.guard import hard_limit_mb
from sedamp.runtime.lifeline import EXIT_MEMORY
from sedamp.runtime.slot import Slot
from sedamp.spec import StageSpec, Topology

log = logging.getLogger(__name__)

# A stage whose workers die this many times in a row with no event of the stage
# acknowledged in between is failing (e.g. crashing in setup), not unlucky.
MAX_BARREN_DEATHS = 10
# Every queue and worker reports every period (its heartbeat). One silent for this many
# periods (at least SILENT_MIN_S) is wedged: a queue fails the run, a worker that is not
# inside a handler call is killed and replaced. A worker inside a handler call is only
# bounded by its stage's timeout_s, since user code may legitimately run long.
SILENT_PERIODS = 20
SILENT_MIN_S = 3.0
# When a run stops at once (a second Ctrl-C, the drain deadline, an error), its workers
# are first interrupted (`Proc.interrupt`: user code unwinds, so a file half written is
# removed by its writer) and killed if still there after this long. Python code unwinds
# in milliseconds; longer waits only on a call in C code that does not return.
INTERRUPT_GRACE_S = 1.0


class Links(Protocol):
    """How the roster reaches its children: messages by identity (held until the child
    has registered), and the process sentinels the controller waits on."""

    def send(self, identity: str, frames: list[bytes]) -> None: ...
    def forget(self, identity: str) -> None: ...
    def watch(self, fd: int) -> None: ...
    def unwatch(self, fd: int) -> None: ...


@dataclass
class RunState:
    """How the run as a whole is going: read and set by the loop, the roster, the
    signal handler and the watchdogs."""

    error: str | None = None  # why the run must stop (the first reason, mostly)
    interrupted: bool = False  # Ctrl-C or SIGTERM
    draining: bool = False  # the sources were told to stop; in-flight work finishes
    drain_deadline: float | None = None  # monotonic time the drain must end by
    hard_stop: bool = False  # a second interrupt: stop every process now


@dataclass(eq=False)
class Child:
    """One process of the run as the controller knows it: its handle, role, last counters and state."""

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
    slot: SlotView | None = None  # a worker's: the event in its handler, the deadline; and its waits (a source's too)
    killed: str | None = None  # why the controller killed it
    pid: int = 0  # as the process reported it when it registered (a cluster executor learns it late)
    last_heard: float = field(default_factory=time.monotonic)  # its last message (heartbeat)
    endpoint: str = ""  # a queue's bound data endpoint, from its REGISTER
    in_hand: tuple[int, int] | None = None  # (lease, position) read when the controller killed it
    # the descriptor watched for its exit, as it was at the start: joining a local
    # process closes its pidfd, after which `proc.sentinel` reads -1
    sentinel: int = -1


@dataclass(eq=False)
class Stage:
    """One stage as the controller runs it: its pool's target, its queue, source or
    workers, and how far it is."""

    spec: StageSpec
    target: int = 0
    queue: Child | None = None
    source: Child | None = None
    workers: dict[int, Child] = field(default_factory=dict)
    retired: dict[str, Any] = field(default_factory=dict)  # counters of exited workers (a source: its stats too)
    closed: bool = False
    ended: bool = False
    complete: bool = False
    restarts: int = 0
    peak_workers: int = 0
    leaving: dict[str, Child] = field(default_factory=dict)  # recycled workers on their way out, by identity
    barren_deaths: int = 0  # worker deaths in a row with nothing acknowledged between
    acked_at_death: int = -1
    timeouts: int = 0
    recycled: int = 0

    @property
    def stateful(self) -> bool:
        """Its workers keep state until the input ends (finish()): a fixed pool."""
        return any(w.stats.get("stateful") for w in self.workers.values())


class Roster:
    """The run's children by identity and by sentinel, and its stages by name."""

    def __init__(self, top: Topology, state: RunState, links: Links, executor: Executor | None = None) -> None:
        self.top = top
        self.state = state
        self.links = links
        self.executor = executor  # the controller starts one inside its try when none is given
        self.wiring: Wiring | None = None  # set once the run's sockets are bound
        self.stages = {n: Stage(spec=s) for n, s in top.stages.items()}
        self.children: dict[str, Child] = {}  # by identity
        self.by_sentinel: dict[int, Child] = {}
        self.retired_shed: dict[str, list[int]] = {}  # target stage -> [dropped, rejected]
        # the stages Ctrl-C drains rather than halts (see `interrupt`), set by the controller
        self.drained: set[str] = set()
        self.slot_seq = 0
        self.spawn_seq = 0  # workers started: each one's token (its identity) is unique in the run

    def _exec(self) -> Executor:
        assert self.executor is not None, "the controller starts the executor"
        return self.executor

    def _wiring(self) -> Wiring:
        assert self.wiring is not None, "the controller wires the run before it starts children"
        return self.wiring

    @property
    def complete(self) -> bool:
        return all(st.complete for st in self.stages.values())

    # ---------------------------------------------------------------- spawning

    def adopt(self, proc: Proc, role: int, stage: str, index: int, identity: str) -> Child:
        child = Child(proc=proc, role=role, stage=stage, index=index, identity=identity, pid=proc.pid)
        child.sentinel = proc.sentinel
        self.children[identity] = child
        self.by_sentinel[child.sentinel] = child
        self.links.watch(child.sentinel)
        return child

    def start_queues(self, targets: Mapping[str, int]) -> None:
        """One queue per pool (a grouped stage after the first is served by the first's)."""
        names = [n for n, st in self.stages.items() if st.spec.kind != "source" and not self.top.is_member(n)]
        requests = [(f"sdq:{n}", "queue", queue_config(self.top, n, self._wiring())) for n in names]
        for name, proc in zip(names, self._exec().start_many(requests), strict=True):
            self.stages[name].queue = self.adopt(proc, wire.QUEUE, name, 0, queue_identity(name))
            self.stages[name].target = targets[name]

    def start_sources(self) -> None:
        """One process per source, with a slot for its blocked and waiting time."""
        for name, st in self.stages.items():
            if st.spec.kind == "source":
                slot, slot_path = self._new_slot()
                cfg = source_config(self.top, st.spec, self._wiring(), slot_path)
                proc = self._exec().start(f"sds:{name}", "source", cfg)
                st.source = self.adopt(proc, wire.SOURCE, name, 0, source_identity(name, proc.pid))
                st.source.slot = slot

    def reconcile(self) -> None:
        """Spawn workers until every unfinished pool matches its target."""
        if self.state.error is not None or self.state.hard_stop:
            return
        wanted: list[tuple[Stage, int]] = []
        pools = [
            st for n, st in self.stages.items() if st.spec.kind != "source" and not (st.ended or self.top.is_member(n))
        ]
        for st in pools:
            active = [w for w in st.workers.values() if not w.retiring]
            free = (i for i in itertools.count() if i not in st.workers)
            wanted += [(st, next(free)) for _ in range(st.target - len(active))]
            for w in sorted(active, key=lambda c: c.index, reverse=True)[: max(0, len(active) - st.target)]:
                w.retiring = True
                self.links.send(w.identity, wire.simple(wire.RETIRE))
        self._spawn_workers(wanted)
        for st in pools:
            st.peak_workers = max(st.peak_workers, len([w for w in st.workers.values() if not w.retiring]))

    def _new_slot(self) -> tuple[Slot | None, str]:
        """A new slot file for a child to be started, and its path (none without a slot_dir)."""
        slot_dir = self._wiring().slot_dir
        if slot_dir is None:
            return None, ""
        self.slot_seq += 1
        slot_path = str(slot_dir / f"slot{self.slot_seq}")
        return Slot(slot_path, create=True), slot_path

    def _spawn_workers(self, wanted: list[tuple[Stage, int]]) -> None:
        """Start a worker for each (stage, index), all in one request to the executor."""
        w = self._wiring()
        made: list[tuple[Stage, int, Slot | None, str]] = []
        requests = []
        for st, index in wanted:
            slot, slot_path = self._new_slot()
            self.spawn_seq += 1
            cfg = worker_config(self.top, st.spec, index, self.spawn_seq, slot_path, w)
            made.append((st, index, slot, worker_identity(st.spec.name, index, self.spawn_seq)))
            requests.append((f"sdw:{st.spec.name}:{index}", "worker", cfg))
        procs = self._exec().start_many(requests) if requests else []
        for (st, index, slot, identity), proc in zip(made, procs, strict=True):
            child = self.adopt(proc, wire.WORKER, st.spec.name, index, identity)
            child.slot = slot
            if proc.slot is not None:  # the worker runs elsewhere: its executor reads its slot there
                child.slot = proc.slot
                if slot is not None:
                    slot.discard()
            st.workers[index] = child

    # ---------------------------------------------------------------- what children report

    def on_stats(self, child: Child, stats: dict[str, Any]) -> None:
        child.stats = stats
        if child.role == wire.QUEUE and stats.get("ended"):
            self.stages[child.stage].ended = True
        poison = stats.get("last_poison") if child.role == wire.QUEUE else None
        if poison and self.stages[child.stage].spec.on_error.then == "fail" and self.state.error is None:
            self.state.error = (
                f"stage {child.stage!r}: event {poison['event_id']!r} killed {poison['deaths']} workers "
                f"(the last {poison['reason']}); on_error: fail (the event is in the dead-letter file)"
            )

    def on_done(self, child: Child, stats: dict[str, Any]) -> None:
        child.stats = stats
        child.done = True
        if child.role == wire.QUEUE:
            if stats.get("ended"):
                self.stages[child.stage].ended = True
            return
        child.stopped = True
        if child.role == wire.SOURCE:
            # everything it sent is in its queues: the stages after it need not wait
            # for its exit to be closed (`_source_exited` accounts for the exit)
            self._source_finished(child)
        elif child.role == wire.WORKER and not stats.get("retired"):
            # A worker finishes only after its queue said END (or when retired):
            # the stage's input is over, so no worker of it may start again.
            self.stages[child.stage].ended = True
        elif child.role == wire.WORKER and stats.get("recycled") and not child.retiring:
            # it replaced itself (max_events/max_rss_mb): free its index (a keyed
            # stage's replacement needs that very partition) and start a fresh one
            child.retiring = True
            st = self.stages[child.stage]
            st.recycled += 1
            if st.workers.get(child.index) is child:
                del st.workers[child.index]
                st.leaving[child.identity] = child
        self.links.send(child.identity, wire.simple(wire.STOP, 0))  # acknowledge: it may exit

    def on_fatal(self, child: Child, info: dict[str, Any]) -> None:
        # the first becomes the run's error, which the summary reports (with the user's
        # file:line); the traceback is for -v. After the first, FATALs are mostly the same
        # cause (a full disk fails every worker that writes): not news
        tb = info.get("traceback")
        place = user_place(tb) if isinstance(tb, str) else None
        child.fatal = str(info.get("message")) + (f" (at {place})" if place else "")
        log.info("%s", child.fatal)
        if tb:
            log.info("traceback from pid %s:\n%s", info.get("pid"), tb)

    # ---------------------------------------------------------------- exits

    def on_exit(self, child: Child) -> None:
        """A child's sentinel fired: account for it, and tell its queues if it died."""
        proc = child.proc
        self.links.unwatch(child.sentinel)
        del self.by_sentinel[child.sentinel]
        proc.join(5.0)  # it has ended (the sentinel fired); this waits for the launcher's report
        code = proc.exitcode
        in_hand = (-1, -1)
        if child.slot is not None:
            in_hand = child.in_hand or child.slot.read()[1:]
            child.slot.discard()
        self.children.pop(child.identity, None)
        self.links.forget(child.identity)
        how = child.killed or proc.reason or describe_exit(code, self.stages[child.stage].spec.max_rss_mb)
        if proc.unplaceable and not self.state.draining:
            self.state.error = self.state.error or f"worker {child.stage}[{child.index}] {how}"
        if child.role == wire.QUEUE:
            if not child.stopped:
                self.state.error = child.fatal or f"the queue of stage {child.stage!r} (pid {proc.pid}) {how}"
        elif child.role == wire.SOURCE:
            self._source_exited(child, how)
        else:
            self._worker_exited(child, how, code, in_hand)

    def _source_exited(self, child: Child, how: str) -> None:
        st = self.stages[child.stage]
        st.source = None
        if child.fatal:
            self.state.error = self.state.error or child.fatal
        elif not child.done:
            self.state.error = self.state.error or (
                f"source {child.stage!r} (pid {child.proc.pid}) {how} before it finished"
            )
        self._source_finished(child)
        st.retired = {k: v for k, v in child.stats.items() if isinstance(v, int | float) or k == "stats"}
        self._retire_shed(child)

    def _source_finished(self, child: Child) -> None:
        st = self.stages[child.stage]
        if not st.complete:
            st.complete = True
            log.info("source %s finished (%s events)", child.stage, child.stats.get("in"))

    def _worker_exited(self, child: Child, how: str, code: int | None, in_hand: tuple[int, int]) -> None:
        st = self.stages[child.stage]
        if st.workers.get(child.index) is child:
            del st.workers[child.index]
        st.leaving.pop(child.identity, None)
        for member, counts in member_counts(child).items():
            retired = self.stages[member].retired
            for k, v in counts.items():
                retired[k] = retired.get(k, 0) + v
        self._retire_shed(child)
        if child.done and code == 0:
            return
        if child.fatal:
            self.state.error = child.fatal
            return
        if child.stats.get("stateful") and not self.state.draining:
            # its state (what finish() would emit) died with it: the output would be wrong
            self.state.error = (
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
                self.links.send(q.identity, wire.simple(wire.GONE, child.identity, how, *blame))
        st.restarts += 1
        if in_hand[0] < 0:  # in setup, between batches, or not known: nothing to blame but the stage
            self._count_barren_death(st, how)

    def _count_barren_death(self, st: Stage, how: str) -> None:
        """Fail the stage when its workers keep dying with nothing acknowledged between.
        Only deaths with no event in a handler count: one inside a handler call is that
        event's doing, and the queue strikes the event (poison after POISON_DEATHS), so
        a few poison events close together never fail a job, however fast it is."""
        acked = int(st.queue.stats.get("acked", 0)) if st.queue is not None else 0
        st.barren_deaths = st.barren_deaths + 1 if acked <= st.acked_at_death else 1
        st.acked_at_death = acked
        if st.barren_deaths >= MAX_BARREN_DEATHS:
            self.state.error = (
                f"workers of stage {st.spec.name!r} died {st.barren_deaths} times in a row without finishing "
                f"an event; last one {how}"
            )

    def _retire_shed(self, child: Child) -> None:
        for target, (dropped, rejected) in child.stats.get("shed", {}).items():
            acc = self.retired_shed.setdefault(target, [0, 0])
            acc[0] += dropped
            acc[1] += rejected

    def shed(self) -> dict[str, list[int]]:
        """Events each stage's full queue made its producers drop or reject."""
        total = {k: list(v) for k, v in self.retired_shed.items()}
        for child in self.children.values():
            if child.role in (wire.WORKER, wire.SOURCE):
                for target, (dropped, rejected) in child.stats.get("shed", {}).items():
                    acc = total.setdefault(target, [0, 0])
                    acc[0] += dropped
                    acc[1] += rejected
        return total

    # ---------------------------------------------------------------- the end of stages

    def advance(self) -> list[str]:
        """Move finished stages forward: CLOSE queues whose producers are all done,
        mark stages complete, STOP queues of complete stages. Returns the pools that
        ended now (their first stage's name)."""
        ended: list[str] = []
        for name, st in self.stages.items():
            if st.spec.kind == "source" or st.complete:
                continue
            if self.top.is_member(name):
                st.complete = self.stages[self.top.head_of(name)].complete
                continue
            if not st.closed and all(self.stages[u].complete for u in self.top.upstream(name)):
                st.closed = True
                assert st.queue is not None
                self.links.send(st.queue.identity, wire.simple(wire.CLOSE))
                log.info("stage %s: every producer finished; queue closed", name)
            if st.ended and all(w.done for w in st.workers.values()):
                st.complete = True
                ended.append(name)
                if st.queue is not None:
                    st.queue.stopped = True
                    self.links.send(st.queue.identity, wire.simple(wire.STOP, 0))
                log.info("stage %s finished", name)
        return ended


def reap_all(roster: Roster) -> None:
    """Make sure no process of this run is left: wait briefly for the ones that are
    finishing on their own, then kill the rest."""
    clean = roster.state.error is None and not roster.state.hard_stop and roster.complete
    now = time.monotonic()
    deadline = now + 2.0
    if not clean:
        deadline = now + INTERRUPT_GRACE_S
        for child in roster.by_sentinel.values():
            if child.role == wire.WORKER:
                child.proc.interrupt()
    for fd, child in list(roster.by_sentinel.items()):
        left = deadline - time.monotonic()
        if left > 0 and (clean or child.role == wire.WORKER):
            child.proc.join(left)
        if child.done and child.proc.exitcode == 0:  # it finished, and left after the run ended
            roster.on_exit(child)
            continue
        roster.links.unwatch(fd)
        if child.proc.is_alive():
            child.proc.kill()
        child.proc.join(5)
        if child.slot is not None:
            child.slot.close()
            child.slot = None
    roster.by_sentinel.clear()


# ---------------------------------------------------------------- watchdogs


def watch_deadlines(stages: Iterable[Stage], now: float, paused_since: Callable[[float], float]) -> None:
    """Kill every worker whose handler call ran past its stage's timeout_s, not
    counting the time the controller was paused (`paused_since(t)`: the seconds it was
    since t), in which the worker was paused too or could not be watched."""
    for st in stages:
        for w in list(st.workers.values()):
            if w.slot is None or w.killed is not None or st.spec.timeout_s is None:
                continue
            late = w.slot.overdue(now)
            if late > 0:  # the call began by its deadline less timeout_s (a batch call: x n) ...
                began = w.slot.read()[0] - st.spec.timeout_s
                in_batch = w.slot.in_batch_s(now)
                if in_batch > 0.0:  # ... and no sooner than its batch
                    began = min(began, now - in_batch)
                late -= paused_since(began)
            if late > 0:
                limit = st.spec.timeout_s
                w.killed = f"was killed: a handler call ran past timeout_s ({limit:g} s, overdue by {late:.1f} s)"
                st.timeouts += 1
                w.in_hand = w.slot.read()[1:]  # now, before the handler can move on
                log.error("worker %s[%d] (pid %d) %s", w.stage, w.index, w.pid, w.killed)
                w.proc.kill()


def watch_silence(stages: Iterable[Stage], state: RunState, period_s: float, now: float) -> None:
    """Heartbeats: every queue and worker sends STATS each period. A silent queue fails
    the run; a silent worker outside user code is killed (and replaced)."""
    bound = max(SILENT_MIN_S, SILENT_PERIODS * period_s)
    for st in stages:
        q = st.queue
        if q is not None and not q.stopped and now - q.last_heard > bound and state.error is None:
            state.error = (
                f"the queue of stage {q.stage!r} (pid {q.proc.pid}) has been silent for {now - q.last_heard:.1f} s"
            )
        for w in list(st.workers.values()):
            if w.killed is not None or w.done or now - w.last_heard <= bound:
                continue
            if w.proc.pending:
                continue  # still being placed by a cluster executor, which bounds that itself
            if w.slot is not None and w.slot.read()[1] != -1:
                continue  # inside user code (a batch, setup, finish): it may run long; see timeout_s
            w.killed = f"was killed: silent for {now - w.last_heard:.1f} s outside any handler call"
            log.error("worker %s[%d] (pid %d) %s", w.stage, w.index, w.pid, w.killed)
            w.proc.kill()


def excuse_pause(roster: Roster, state: RunState, seconds: float) -> None:
    """The controller was not running for `seconds` (`sedamp.runtime.pauses`): it heard
    nobody meanwhile, so heartbeats and the drain deadline move on by as much."""
    log.warning("controller: not running for %.1f s (the job or machine paused): deadlines move on", seconds)
    for child in roster.children.values():
        child.last_heard += seconds
    if state.drain_deadline is not None:
        state.drain_deadline += seconds


def interrupt(roster: Roster) -> None:
    """Ctrl-C: the sources stop reading. Every queue drops what waits in it and tells
    its workers to give back the batches they have not started (HALT): what is left to
    do is what the workers hold, and the run ends in order. A source that asks for it
    (`drain_on_interrupt`, and so the queues its events reach: `Roster.drained`)
    delivers instead every event it read, which is handled (STOP)."""
    for name, st in roster.stages.items():
        drain = name in roster.drained
        if st.source is not None:
            roster.links.send(st.source.identity, wire.simple(wire.STOP, 0) if drain else wire.simple(wire.HALT))
        elif st.queue is not None and not drain:
            roster.links.send(st.queue.identity, wire.simple(wire.HALT))


def hold_leases(stages: Iterable[Stage], links: Links) -> None:
    """HOLD: tell each queue which of its workers are inside user code now (their slots
    say so), so that it renews their leases: such a worker sends nothing until the call
    returns, which may take long (only timeout_s bounds it)."""
    for st in stages:
        q = st.queue
        if q is None or q.stopped:
            continue
        busy = [
            w.identity
            for w in (*st.workers.values(), *st.leaving.values())
            if w.killed is None and w.slot is not None and w.slot.read()[1] != -1
        ]
        if busy:
            links.send(q.identity, wire.simple(wire.HOLD, busy))


def ask_for_reports(stages: Iterable[Stage], links: Links) -> None:
    """REPORT: ask every queue and every ready worker for its STATS now, for the record
    about to be made (a worker answers between batches; its slot tells its busy time
    meanwhile). A worker still in its setup() is not asked: it would find one REPORT
    per period waiting when done, and its first STATS says it is ready anyway."""
    pools = list(stages)
    queues = [st.queue for st in pools if st.queue is not None]
    for child in queues + [w for st in pools for w in st.workers.values() if w.stats]:
        if not child.stopped and not child.done:
            links.send(child.identity, wire.simple(wire.REPORT))


# ---------------------------------------------------------------- helpers


def reached_from(top: Topology, sources: Iterable[str]) -> set[str]:
    """`sources` and every stage their events reach."""
    seen = set(sources)
    todo = list(seen)
    while todo:
        for e in top.stages[todo.pop()].to:
            if e.stage not in seen:
                seen.add(e.stage)
                todo.append(e.stage)
    return seen


def member_counts(child: Child) -> dict[str, dict[str, int]]:
    """A worker's counters per stage it runs (several for a group)."""
    members = child.stats.get("members")
    if not members:
        return {child.stage: {k: child.stats.get(k, 0) for k in ("in", "out", "failed")}}
    keys = ("in", "out", "failed", "retried", "skipped")
    out = {name: dict(zip(keys, c, strict=False)) for name, c in members.items()}
    out[list(members)[-1]]["duplicates"] = child.stats.get("duplicates", 0)
    return out


def describe_exit(code: int | None, max_rss_mb: int | None = None) -> str:
    if code is None:
        return "did not exit"
    if code == EXIT_MEMORY and max_rss_mb:
        return (
            f"stopped itself: its memory passed {hard_limit_mb(max_rss_mb):,.0f} MiB inside a handler "
            f"(max_rss_mb: {max_rss_mb:,})"
        )
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"

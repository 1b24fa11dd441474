"""Runs in a worker process: one of the pool of a handler or sink stage.

Reads:  BATCH/END from its stage queue (DEALER, routing id ``w:<stage>:<index>:<pid>``),
        CREDIT from each downstream queue, STOP from the controller.
Writes: HELLO/GET/ACK/BYE to its stage queue, HELLO/PUT/EOS to each downstream queue,
        REGISTER/STATS/DONE/FATAL to the controller, failed events to the dead-letter file.

The loop: keep up to `prefetch` requests for work outstanding, handle one batch, give
the outputs to the outlets, and acknowledge the batch's lease only when every
downstream queue has taken its outputs (so a crash in between loses nothing). While a
downstream queue has no room for this worker's outputs, it neither handles nor asks
for more work: that is how backpressure travels upstream. When the queue says END, the
handler's `finish()` outputs are sent, `teardown()` runs, and the worker reports DONE
and waits for the controller's word before exiting.

User code never crashes the worker: an exception in `handle` follows the stage's
``on_error`` policy (retry with backoff, then dead-letter, skip, or fail the run). An
exception in `setup` (the stage cannot run at all) is reported as FATAL with its
traceback and the worker exits with code 3.

Hygiene: past ``max_events`` handled or ``max_rss_mb`` of memory, a worker leaves
between batches the way a retired one does (everything it took is handled and
acknowledged first) and the controller starts a fresh one. Before each handler call it
notes in its slot (`sedamp.runtime.slot`, shared memory) which event is in the handler and,
with ``timeout_s``, the call's deadline: the controller kills it if the call overruns,
and if it dies, only that event is blamed. A sink with ``dedupe: true`` handles each
event id once.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import zmq

from sedamp.errors import WireError
from sedamp.observe import metrics
from sedamp.runtime import lifeline, sockets, wire
from sedamp.runtime.deadletter import DeadLetters
from sedamp.runtime.dedupe import IdSet
from sedamp.runtime.journal import Journal, is_resumable
from sedamp.runtime.outlet import Outlet, OutputConfig, Router, dead_letter_rejected
from sedamp.runtime.slot import IN_USER_CODE, Slot
from sedamp.runtime.stage import Failure, HandlerRunner, add_import_paths

log = logging.getLogger(__name__)

EXIT_SETUP_FAILED = 3

# The adaptive batch size aims at batches that take about this long to handle. Every
# batch costs about ten message hand-overs across the queue and worker processes, and on
# a busy machine each wakes a process: at 20 ms those processes took 11% of all CPU in
# the heavy benchmark, at 50 ms 8%, and sedamp went from 0.91x to 1.00x of
# multiprocessing.Pool. The price is the tail: at the end of a job a worker may sit on
# up to two batches (PREFETCH_BATCHES) of this length while another is idle.
TARGET_BATCH_S = 0.05
MAX_BATCH_EVENTS = 256
INITIAL_BATCH_EVENTS = 8
# Batches a worker holds or has asked for at once: the one it handles and the next.
# With one, every batch boundary waits for a round trip to the queue, and on a machine
# whose cores are all busy that means waiting for the queue process to be scheduled:
# measured on 2 cores with a 4 ms stage, 28% of the cores sat idle. The cost of two is
# that a batch (~TARGET_BATCH_S of work) may wait in this worker while another is idle,
# which only matters at the very end of a job.
PREFETCH_BATCHES = 2
# How long a finished worker waits for the controller to acknowledge its DONE.
DONE_ACK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class WorkerConfig:
    stage: str
    kind: str  # "handler" or "sink"
    index: int
    ref: str
    params: dict[str, Any]
    input_endpoint: str
    outputs: tuple[OutputConfig, ...]
    control_endpoint: str
    batch: int | None  # fixed batch size, or None = adaptive
    dead_letters: str
    import_paths: tuple[str, ...]
    period_s: float
    parent_pid: int
    # the stages after this one in its group, each {"stage", "kind", "ref", "params"}:
    # the worker calls them directly, in order, on what the previous one returned
    chain_rest: tuple[dict[str, Any], ...] = ()
    batch_min: int = 1  # floor and ceiling of the adaptive batch size
    batch_max: int = 256
    on_error: tuple[int, float, str] = (0, 0.0, "dead_letter")  # retry, backoff_s, then
    timeout_s: float | None = None
    slot_path: str = ""  # this worker's slot (which event is in the handler, deadline)
    max_events: int | None = None
    max_rss_mb: int | None = None
    dedupe: bool = False
    max_event_bytes: int = wire.MAX_EVENT_BYTES
    journal: str = ""  # the run's journal directory (sinks marked resumable write to it)
    curve: dict[str, str] | None = None  # the run's CURVE keys (tcp endpoints)
    # names this worker to the controller (unique in the run); 0: its pid. The
    # controller gives a token so that it knows the identity before the process runs
    # (a cluster executor places the process later, on a host of its choosing).
    token: int = 0


@dataclass(eq=False)
class _Link:
    """One stage of the chain a worker runs, with its own counters."""

    stage: str
    kind: str
    runner: HandlerRunner
    retry: int = 0
    backoff_s: float = 0.0
    then: str = "dead_letter"
    n_in: int = 0
    n_out: int = 0
    n_failed: int = 0  # dead-lettered
    n_retried: int = 0  # calls made again after a failure
    n_skipped: int = 0  # failed and dropped (on_error: skip)


def worker_identity(stage: str, index: int, token: int) -> str:
    return f"w:{stage}:{index}:{token}"


def run_worker(cfg: WorkerConfig) -> None:
    """Entry function of a worker process."""
    lifeline.become_child(cfg.parent_pid)
    add_import_paths(cfg.import_paths)
    _Worker(cfg).run()


class _Worker:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.pid = os.getpid()
        self.identity = worker_identity(cfg.stage, cfg.index, cfg.token or self.pid)
        self.socks = sockets.Sockets(cfg.curve)
        self.ctx: zmq.Context[Any] = self.socks.ctx
        self.ctl = self.socks.dealer(self.identity, cfg.control_endpoint)
        self.dead = DeadLetters(cfg.dead_letters)
        no_retry = (0, 0.0, "dead_letter")
        self.links = [_Link(cfg.stage, cfg.kind, HandlerRunner(cfg.ref, cfg.params), *cfg.on_error)] + [
            _Link(d["stage"], d["kind"], HandlerRunner(d["ref"], d["params"]), *d.get("on_error", no_retry))
            for d in cfg.chain_rest
        ]
        self.tail = self.links[-1]
        self.service: list[tuple[float, int]] = []  # (ms per event, events) per batch, this period
        self.path: list[tuple[float, int]] = []  # (ms since the source read it, events), sinks only
        self.busy_s = 0.0
        self.batches = 0
        self.batch_n = cfg.batch or max(cfg.batch_min, min(cfg.batch_max, INITIAL_BATCH_EVENTS))
        self.per_event_s: float | None = None
        self.prefetch = PREFETCH_BATCHES
        self.inbox: deque[wire.Message] = deque()
        self.gets_out = 0
        self.ended = False
        self.retiring = False
        self.unacked: dict[int, int] = {}  # lease -> outlets still holding its outputs
        self.protocol_errors = 0
        self.slot = Slot(cfg.slot_path) if cfg.slot_path else None
        if self.slot is not None:
            self.slot.timeout_s = cfg.timeout_s
        self.seen = IdSet() if cfg.dedupe else None
        self.duplicates = 0
        self.recycle: str | None = None  # why this worker leaves early (max_events, max_rss_mb)
        self.proc = None
        if cfg.max_rss_mb:
            import psutil  # only workers with a memory limit pay for its import

            self.proc = psutil.Process()
        self.outlets: list[Outlet] = []
        self.journal: Journal | None = None

    # ---------------------------------------------------------------- life

    def run(self) -> None:
        cfg = self.cfg
        self.ctl.send_multipart(wire.simple(wire.REGISTER, wire.WORKER, cfg.stage, cfg.index, self.pid, ""))
        self._in_user_code()
        for link in self.links:
            try:
                link.runner.setup()
            except BaseException as exc:
                fail = Failure.from_exception(exc)
                self._fatal(
                    f"setup of stage {link.stage!r} ({link.runner.ref}) raised {fail.type}: {fail.message}", fail
                )
                sys.exit(EXIT_SETUP_FAILED)
        if self.slot is not None:
            self.slot.end()
        if cfg.journal and self.tail.kind == "sink" and is_resumable(self.tail.runner.ref):
            self.journal = Journal(cfg.journal, self.tail.stage)
        self._send_stats(wire.STATS)  # the controller learns at once whether it holds state
        self.up = self.socks.dealer(self.identity, cfg.input_endpoint)
        self.up.send_multipart(wire.hello(wire.WORKER, cfg.index, 0))
        self.outlets = [
            Outlet(
                self.socks,
                o.stage,
                o.endpoint,
                self.identity,
                o.key,
                o.partitions,
                2 * MAX_BATCH_EVENTS,
                o.on_full,
                o.when,
            )
            for o in cfg.outputs
        ]
        self.router = Router(self.outlets, cfg.max_event_bytes)
        self.poller = zmq.Poller()
        self.poller.register(self.up, zmq.POLLIN)
        self.poller.register(self.ctl, zmq.POLLIN)
        for o in self.outlets:
            self.poller.register(o.sock, zmq.POLLIN)
        self._loop()
        if self.ended:
            self._finish()
        else:
            self._retire()

    def _retire(self) -> None:
        """Leave a running stage: everything this worker took is handled and acknowledged;
        BYE makes the queue put back any batch it leased us meanwhile. No finish():
        the stage's input is not over (stateful stages are never shrunk)."""
        self._leave(None, retired=True)

    def _loop(self) -> None:
        cfg = self.cfg
        next_stats = time.monotonic() + cfg.period_s
        while True:
            blocked = any(o.blocked for o in self.outlets)
            if not blocked and not self.ended and not self.retiring:
                while self.gets_out + len(self.inbox) < self.prefetch:
                    self.up.send_multipart(wire.get(self.batch_n))
                    self.gets_out += 1
            if self.inbox and not blocked:
                self._handle(self.inbox.popleft())
                timeout_ms = 0
                if not self.retiring and (cfg.max_events or cfg.max_rss_mb):
                    self._check_hygiene()
            elif (self.ended or self.retiring) and not self.inbox and not self.unacked:
                return
            else:
                timeout_ms = int(lifeline.PARENT_CHECK_PERIOD_S * 1000)
            self._poll(timeout_ms)
            now = time.monotonic()
            if now >= next_stats:
                self._send_stats(wire.STATS)
                next_stats = now + cfg.period_s
                if not lifeline.parent_alive(cfg.parent_pid):
                    os._exit(1)

    def _poll(self, timeout_ms: int) -> None:
        ready = dict(self.poller.poll(timeout_ms))
        if not ready:
            return
        if self.up in ready:
            for frames in sockets.drain(self.up):
                self._on_upstream(frames)
        for o in self.outlets:
            if o.sock in ready:
                for frames in sockets.drain(o.sock):
                    for lease in o.on_message(frames):
                        self._released(lease)
                self._reject(o)
                while o.errors:
                    log.error("worker %s: %s", self.identity, o.errors.pop())
                    self.protocol_errors += 1
                if o.fatal:
                    fail = Failure("ProtocolError", o.fatal, "")
                    self._stop_run(f"worker {self.identity}: {o.fatal}; stopping rather than lose them", fail)
        if self.ctl in ready:
            for frames in sockets.drain(self.ctl):
                self._on_control(frames)

    def _on_upstream(self, frames: list[bytes]) -> None:
        try:
            msg = wire.parse(frames)
        except WireError as exc:
            log.error("worker %s: refused frame from its queue: %s", self.identity, exc)
            self.protocol_errors += 1
            return
        if msg.kind == wire.BATCH:
            self.gets_out -= 1
            self.inbox.append(msg)
        elif msg.kind == wire.END:
            self.ended = True
            self.gets_out = 0
        elif msg.kind == wire.ERR:
            log.error("worker %s: queue refused a message: %s", self.identity, msg.fields[0])
            self.protocol_errors += 1

    def _on_control(self, frames: list[bytes]) -> None:
        try:
            msg = wire.parse(frames)
        except WireError:
            self.protocol_errors += 1
            return
        if msg.kind == wire.STOP:
            # The controller gave up on a clean end (deadline passed): leave now.
            os._exit(0)
        if msg.kind == wire.RETIRE:
            self.retiring = True  # the pool shrinks: finish what is held, then leave

    def _released(self, lease: Any) -> None:
        if lease is None:
            return
        left = self.unacked[lease] - 1
        if left:
            self.unacked[lease] = left
        else:
            del self.unacked[lease]
            self.up.send_multipart(wire.ack(lease))

    # ---------------------------------------------------------------- work

    def _handle(self, msg: wire.Message) -> None:
        lease, ids, counts, t_srcs = msg.fields
        try:
            events = wire.unpack_events(msg.bodies, len(ids))
        except WireError as exc:
            for eid in ids:
                self._dead(
                    self.links[0],
                    eid,
                    "WireError",
                    f"stage {self.cfg.stage!r} received an undecodable event: {exc}",
                    None,
                    None,
                )
            self.up.send_multipart(wire.ack(lease))
            return
        t0 = time.perf_counter()
        if self.slot is not None:
            self.slot.begin(lease)
        self._run(0, ids, events)
        if self.slot is not None:
            self.slot.end()
        elapsed = time.perf_counter() - t0
        self.busy_s += elapsed
        self.batches += 1
        self._adapt(elapsed, len(events))
        self.service.append((elapsed * 1000 / len(events), len(events)))
        known = [t for t in t_srcs if t > 0]
        t_src = min(known) if known else 0.0
        if self.tail.kind == "sink" and known:
            now = time.time()
            self.path.extend(((now - t) * 1000, n) for t, n in zip(t_srcs, counts, strict=True) if t > 0)
        self._commit(lease, t_src)

    def _run(self, start: int, ids: list[Any], events: list[Any]) -> None:
        """Handle events from link `start` through the tail, then route the tail's
        outputs (a sink's are only counted). Inside a group, events pass from stage
        to stage as Python objects: no serialization until they leave the process."""
        # where each event sits in the lease: None = in lease order, [] = not known
        pos: list[int] | None = None if start == 0 else []
        for link in self.links[start:-1]:
            results = self._call(link, events, pos)
            link.n_in += len(events)
            next_ids: list[Any] = []
            next_events: list[Any] = []
            for eid, ev, res in zip(ids, events, results, strict=True):
                if isinstance(res, Failure):
                    self._failed(link, eid, res, ev)
                    continue
                if len(res) == 1:
                    next_ids.append(eid)
                else:
                    next_ids.extend(f"{eid}.{i}" for i in range(len(res)))
                next_events.extend(res)
                link.n_out += len(res)
            ids, events, pos = next_ids, next_events, []
            if not events:
                return
        tail = self.tail
        if self.seen is not None:
            ids, events, pos = self._unseen(ids, events, pos)
            if not events:
                return
        results = self._call(tail, events, pos)
        tail.n_in += len(events)
        if tail.kind == "sink":
            for eid, ev, res in zip(ids, events, results, strict=True):
                if isinstance(res, Failure):
                    self._failed(tail, eid, res, ev)
                else:
                    tail.n_out += 1
            if self.journal is not None:  # before the ACK: what is journaled is written
                self.journal.add(eid for eid, res in zip(ids, results, strict=True) if not isinstance(res, Failure))
        else:
            self._route(ids, events, results)

    def _route(self, ids: list[Any], events: list[Any], results: list[list[Any] | Failure]) -> None:
        """Give each event's outputs to the router. One output per event on unkeyed
        edges (the common case) is packed in bulk; anything else goes one by one."""
        fast_ids: list[Any] = []
        fast_out: list[Any] = []
        for eid, ev, res in zip(ids, events, results, strict=True):
            if type(res) is list and len(res) == 1 and not self.router.keyed:
                fast_ids.append(eid)
                fast_out.append(res[0])
                continue
            if isinstance(res, Failure):
                self._failed(self.tail, eid, res, ev)
                continue
            self._route_one(eid, ev, res)
        if fast_ids:
            packed = wire.pack_all(fast_out, self.router.limit)
            if packed is not None:
                self.router.route_packed(fast_ids, packed)
                self.tail.n_out += len(packed)
            else:
                by_id = dict(zip(ids, events, strict=True))
                for eid, out in zip(fast_ids, fast_out, strict=True):
                    self._route_one(eid, by_id[eid], [out])

    def _route_one(self, eid: Any, ev: Any, outputs: list[Any]) -> None:
        try:
            self.router.route(eid, outputs)
        except WireError as exc:
            self._dead(
                self.tail,
                eid,
                "WireError",
                f"stage {self.tail.stage!r} returned an event that cannot be sent: {exc}",
                None,
                ev,
            )
            return
        except KeyError as exc:
            self._dead(self.tail, eid, "KeyError", f"stage {self.tail.stage!r}: {exc.args[0]}", None, ev)
            return
        self.tail.n_out += len(outputs)

    def _commit(self, lease: Any, t_src: float = 0.0) -> None:
        any_out, released = self.router.commit(lease, t_src)
        for o in self.outlets:
            self._reject(o)
        for t in released:
            if t != lease:
                self._released(t)
        if any_out:
            holding = sum(1 for o in self.outlets if lease in o.held)
            if holding:
                self.unacked[lease] = holding
                return
        self.up.send_multipart(wire.ack(lease))

    def _reject(self, o: Outlet) -> None:
        dead_letter_rejected([o], self.dead)

    def _adapt(self, elapsed: float, n: int) -> None:
        if n == 0:
            return
        per_event = elapsed / n
        self.per_event_s = per_event if self.per_event_s is None else 0.7 * self.per_event_s + 0.3 * per_event
        if self.cfg.batch is None:
            want = TARGET_BATCH_S / max(self.per_event_s, 1e-7)
            self.batch_n = max(self.cfg.batch_min, min(self.cfg.batch_max, int(want)))

    def _hooks(self, pos: list[int] | None) -> tuple[Callable[[int, int], None] | None, Any]:
        """How the handler loop notes in the slot which event of the lease is in the
        handler (see `_run` for `pos`): a one-item view it writes the index to, the
        cheap common case, or a callable when there is a deadline to set or the
        index must be translated."""
        slot = self.slot
        if slot is None:
            return None, None
        if pos is None:
            return (slot.at, None) if slot.timeout_s else (None, slot.position)
        if not pos:
            slot.position[0] = -1
            return (lambda _i, n: slot.at(-1, n)) if slot.timeout_s else None, None
        return (lambda i, n: slot.at(pos[i] if i >= 0 else -1, n)), None

    def _call(self, link: _Link, events: list[Any], pos: list[int] | None) -> list[list[Any] | Failure]:
        """Handle a batch; events that failed are tried again one by one, up to the
        stage's `retry` times, `backoff_s` apart (doubling each time)."""
        results = link.runner.handle_batch(events, *self._hooks(pos))
        if self.slot is not None and self.slot.timeout_s:
            self.slot.pause()  # the deadline covers user code only, not routing or journaling
        if not link.retry:
            return results
        for i, res in enumerate(results):
            delay = link.backoff_s
            for _ in range(link.retry):
                if not isinstance(res, Failure):
                    break
                if delay > 0:
                    if self.slot is not None:
                        self.slot.pause()
                    time.sleep(delay)
                    delay *= 2
                link.n_retried += 1
                one = [i] if pos is None else [pos[i]] if pos else []
                res = link.runner.handle_batch([events[i]], *self._hooks(one))[0]
                if self.slot is not None and self.slot.timeout_s:
                    self.slot.pause()
            results[i] = res
        return results

    def _failed(self, link: _Link, eid: Any, fail: Failure, event: Any) -> None:
        """An event the handler failed on (after its retries): apply on_error.then."""
        if link.then == "skip":
            link.n_skipped += 1
            return
        self._dead(link, eid, fail.type, fail.message, fail.traceback, event)
        if link.then == "fail":
            tries = f" after {link.retry + 1} tries" if link.retry else ""
            self._stop_run(
                f"stage {link.stage!r} failed on event {eid!r}{tries}: {fail.type}: {fail.message} "
                "(on_error: fail; the event is in the dead-letter file)",
                fail,
            )

    def _stop_run(self, message: str, fail: Failure) -> NoReturn:
        """Report FATAL (the controller stops the run) and exit at once."""
        self._fatal(message, fail)
        # let the FATAL out before going: every other socket is dropped at once
        for sock in (self.up, *(o.sock for o in self.outlets)):
            sock.close(linger=0)
        self.ctx.term()  # waits for the control socket's linger (2 s at most)
        os._exit(1)

    def _unseen(
        self, ids: list[Any], events: list[Any], pos: list[int] | None
    ) -> tuple[list[Any], list[Any], list[int] | None]:
        """Drop events this deduplicating sink has already handled."""
        assert self.seen is not None
        keep_ids: list[Any] = []
        keep: list[Any] = []
        keep_pos: list[int] = []
        for i, (eid, ev) in enumerate(zip(ids, events, strict=True)):
            if self.seen.add(eid):
                keep_ids.append(eid)
                keep.append(ev)
                if pos is None:
                    keep_pos.append(i)
                elif pos:
                    keep_pos.append(pos[i])
            else:
                self.duplicates += 1
        if len(keep) == len(events):
            return ids, events, pos
        return keep_ids, keep, keep_pos

    def _check_hygiene(self) -> None:
        cfg = self.cfg
        why = None
        if cfg.max_events and self.links[0].n_in >= cfg.max_events:
            why = f"handled {self.links[0].n_in} events (max_events: {cfg.max_events})"
        elif self.proc is not None and cfg.max_rss_mb:
            rss_mb = self.proc.memory_info().rss / 2**20
            if rss_mb > cfg.max_rss_mb:
                why = f"uses {rss_mb:.0f} MiB (max_rss_mb: {cfg.max_rss_mb})"
        if why is None:
            return
        if any(link.runner.has_finish for link in self.links):
            # its state would be lost: say so once and keep going
            log.warning("worker %s %s but keeps state (finish()), so it is not replaced", self.identity, why)
            cfg_dict = dict(cfg.__dict__, max_events=None, max_rss_mb=None)
            self.cfg = WorkerConfig(**cfg_dict)
            return
        log.info("worker %s %s: replacing it", self.identity, why)
        self.recycle = why
        self.retiring = True

    def _dead(self, link: _Link, eid: Any, etype: str, message: str, tb: str | None, event: Any) -> None:
        link.n_failed += 1
        self.dead.write(stage=link.stage, event_id=eid, error_type=etype, message=message, traceback=tb, event=event)

    # ---------------------------------------------------------------- end

    def _in_user_code(self) -> None:
        """Setup, finish and teardown send no heartbeat and may run long: the slot says
        so (lease IN_USER_CODE), so the controller does not take silence for a hang."""
        if self.slot is not None:
            self.slot.begin(IN_USER_CODE)

    def _finish(self) -> None:
        self._in_user_code()
        cfg = self.cfg
        error: Failure | None = None
        last = len(self.links) - 1
        for i, link in enumerate(self.links):
            try:
                outputs = link.runner.finish()
            except Exception as exc:
                error = error or Failure.from_exception(exc)
                continue
            if not outputs:
                continue
            ids = [f"{link.stage}.{cfg.index}.end.{k}" for k in range(len(outputs))]
            if i < last:
                link.n_out += len(outputs)
                self._run(i + 1, ids, outputs)
            elif link.kind != "sink":
                for eid, ev in zip(ids, outputs, strict=True):
                    self._route_one(eid, None, [ev])
        self.router.commit(None, time.time())
        for o in self.outlets:
            self._reject(o)
        while not all(o.idle for o in self.outlets):
            self._poll(int(lifeline.PARENT_CHECK_PERIOD_S * 1000))
            if not lifeline.parent_alive(cfg.parent_pid):
                os._exit(1)
        self._leave(error, retired=False)

    def _leave(self, error: Failure | None, retired: bool) -> None:
        """Say BYE (the queue puts back anything it leased us meanwhile), tear every
        stage down, detach from the next queues, report DONE (or FATAL)."""
        self._in_user_code()
        self.up.send_multipart(wire.simple(wire.BYE))
        for link in self.links:
            try:
                link.runner.teardown()
            except Exception as exc:
                error = error or Failure.from_exception(exc)
        for o in self.outlets:
            o.detach()
        self.dead.close()
        if error is not None:
            what = "teardown" if retired else "the end of its input"
            self._fatal(f"stage {self.cfg.stage!r} failed at {what}: {error.type}: {error.message}", error)
            sys.exit(1)
        self._send_stats(wire.DONE, retired=retired)
        self._await_release()

    def _await_release(self) -> None:
        """Wait for the controller to acknowledge DONE (it replies STOP), so the final
        counters are known to have arrived; then close everything and return."""
        deadline = time.monotonic() + DONE_ACK_TIMEOUT_S
        acknowledged = False
        while not acknowledged and time.monotonic() < deadline:
            if self.ctl.poll(100):
                for frames in sockets.drain(self.ctl):
                    try:
                        acknowledged = acknowledged or wire.parse(frames).kind == wire.STOP
                    except WireError:
                        pass
        for o in self.outlets:
            o.close()
        self.up.close(linger=500)
        self.ctl.close(linger=500)
        self.ctx.term()

    def _fatal(self, message: str, fail: Failure) -> None:
        self.ctl.send_multipart(
            wire.simple(
                wire.FATAL, {"message": message, "type": fail.type, "traceback": fail.traceback, "pid": self.pid}
            )
        )
        self.ctl.close(linger=2000)

    def _send_stats(self, kind: int, retired: bool = False) -> None:
        service, self.service = metrics.thin(self.service), []
        path, self.path = metrics.thin(self.path), []
        self.ctl.send_multipart(
            wire.simple(
                kind,
                {
                    "in": self.links[0].n_in,
                    "out": self.tail.n_out,
                    "failed": sum(link.n_failed for link in self.links),
                    "retried": sum(link.n_retried for link in self.links),
                    "skipped": sum(link.n_skipped for link in self.links),
                    "duplicates": self.duplicates,
                    "recycled": self.recycle,
                    "members": {
                        link.stage: [link.n_in, link.n_out, link.n_failed, link.n_retried, link.n_skipped]
                        for link in self.links
                    },
                    "busy_s": self.busy_s,
                    "batches": self.batches,
                    "batch_size": self.batch_n,
                    "protocol_errors": self.protocol_errors,
                    "shed": {o.stage: [o.dropped, o.rejected_count] for o in self.outlets},
                    "service": [[round(v, 4), n] for v, n in service],  # [ms per event, events]
                    "path": [[round(v, 3), n] for v, n in path],  # [ms from source to here, events]
                    "pid": self.pid,
                    "retired": retired,
                    # emits at the end of input: its state would be lost if it were retired
                    "stateful": any(link.runner.has_finish for link in self.links),
                },
            )
        )

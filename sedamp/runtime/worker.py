"""Runs in a worker process: one of the pool of a handler or sink stage.

Reads:  BATCH/END/EXPIRED/HALT from its stage queue (DEALER, routing id
        ``w:<stage>:<index>:<pid>``), CREDIT from each downstream queue, STOP, RETIRE
        and REPORT from the controller.
Writes: HELLO/GET/ACK/RENEW/BYE/RETURN to its stage queue, HELLO/PUT/EOS to each downstream
        queue, REGISTER/STATS/DONE/FATAL to the controller (STATS every period and on
        REPORT), failed events to the dead-letter file, large output buffers into
        shared blocks (`sedamp.runtime.blocks`: it maps its inputs' blocks read-only
        and closes them before it acknowledges).

The loop: keep up to `prefetch` requests for work outstanding, handle one batch, give
the outputs to the outlets, and acknowledge the batch's lease only when every
downstream queue has taken its outputs (so a crash in between loses nothing). While a
downstream queue has no room for this worker's outputs, it neither handles nor asks
for more work: that is how backpressure travels upstream. The time it spends so
(blocked) and waiting for work (waiting) is counted around those waits and published
in its slot as it accrues (`sedamp.runtime.slot.Waits`). When the queue says END, the
handler's `finish()` outputs are sent, `teardown()` runs, and the worker reports DONE
and waits for the controller's word before exiting.

The handlers themselves are called by `sedamp.runtime.chain` (the stage, or its fused
group), the batch size is set by `sedamp.runtime.pace`; this module moves batches
between the sockets and those. User code never crashes the worker: an exception in
`handle` follows the stage's ``on_error`` policy (retry with backoff, then dead-letter,
skip, or fail the run). An exception in `setup` (the stage cannot run at all) is
reported as FATAL with its traceback and the worker exits with EXIT_CHILD_FAILED (3).
So does a worker that cannot write the dead-letter file or its journal (a full disk):
it stops the run rather than lose the record of a failure or of a write.

Hygiene: past ``max_events`` handled or ``max_rss_mb`` of memory, a worker leaves
between batches the way a retired one does (everything it took is handled and
acknowledged first) and the controller starts a fresh one; one whose memory runs far
past ``max_rss_mb`` inside a batch (`sedamp.runtime.guard`) exits at once with
EXIT_MEMORY, and the event in its handler is blamed. Before each handler call it
notes in its slot (`sedamp.runtime.slot`, shared memory) which event is in the handler and,
with ``timeout_s``, the call's deadline: the controller kills it if the call overruns,
and if it dies, only that event is blamed. A sink with ``dedupe: true`` handles each
event id once.

Ctrl-C: its queue says HALT, and it gives back (RETURN) the batches it holds but has not
started; the batch in hand is finished. A second Ctrl-C (or the drain deadline) brings
INTERRUPT_SIGNAL, which unwinds user code where it is (`lifeline.Interrupted`), so a
file half written is cleaned up by its writer, and the worker exits at once.

Leases: every period it tells its queue which leases it holds and how many GETs it
awaits (RENEW), which keeps its leases and recovers what a reset connection lost. A
lease the queue took back (EXPIRED: this worker did not renew it for a term) is
dropped if its batch is not started; if it was handled already, its events will be
handled again elsewhere, and a stage that keeps state (finish()) stops the run rather
than count them twice.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn

import zmq

from sedamp.errors import StorageError, WireError
from sedamp.observe.words import plural
from sedamp.runtime import lifeline, payload, sockets, wire
from sedamp.runtime.chain import Chain, links_of
from sedamp.runtime.configs import MAX_BATCH_EVENTS, WorkerConfig, worker_identity
from sedamp.runtime.deadletter import DeadLetters
from sedamp.runtime.dedupe import IdSet
from sedamp.runtime.guard import MemoryGuard
from sedamp.runtime.journal import Journal, is_resumable
from sedamp.runtime.outlet import (
    Outlet,
    Router,
    dead_letter_rejected,
    outlets_for,
    take_replies,
    wait_room,
    wait_taken,
)
from sedamp.runtime.pace import Pace
from sedamp.runtime.slot import BLOCKED, IN_USER_CODE, WAITING, Slot, Waits
from sedamp.runtime.stage import Failure, add_import_paths, enter_run, run_interrupt_cleanups
from sedamp.runtime.tracing import Tracer, tracer_of

log = logging.getLogger(__name__)

# Batches a worker holds or has asked for at once while its queue has a backlog: the one
# it handles and the next. With one, every batch boundary waits for a round trip to the
# queue, and on a machine whose cores are all busy that means waiting for the queue
# process to be scheduled: measured on 2 cores with a 4 ms stage, 28% of the cores sat
# idle. The cost of two is that a batch may wait in this worker while another is idle:
# once a batch comes back short of what was asked (the queue ran dry: the end of a job,
# or requests arriving one by one), the worker asks for one at a time until a full one
# comes. An HTTP route at 4 connections had one of its two workers busy 70% of the time,
# the other 35%: each request went to the busy worker's second request.
PREFETCH_BATCHES = 2


def recycle_reason(max_events: int | None, max_rss_mb: int | None, n_in: int, rss_mb: float | None) -> str | None:
    """Why a worker that handled `n_in` events and uses `rss_mb` MiB should be replaced
    by a fresh one, or None. Memory is only looked at below the event limit."""
    if max_events and n_in >= max_events:
        return f"handled {plural(n_in, 'event')} (max_events: {max_events})"
    if rss_mb is not None and max_rss_mb and rss_mb > max_rss_mb:
        return f"uses {rss_mb:.0f} MiB (max_rss_mb: {max_rss_mb})"
    return None


def rss_reader() -> Callable[[], float]:
    """A function reading this process's resident memory in MiB (psutil: ~12 us)."""
    import psutil  # only workers with a memory limit pay for its import

    proc = psutil.Process()
    return lambda: float(proc.memory_info().rss / 2**20)


def exit_over_memory(identity: str, why: str) -> NoReturn:
    """The memory guard's verdict inside a batch: exit at once. The controller tells the
    queue, which hands the batch to other workers and blames the event in the handler
    (the slot says which): given alone to a fresh worker, and dead-lettered if it runs
    away again. Finishing the batch first could take the machine down."""
    log.error("worker %s: %s; stopping it", identity, why)
    os._exit(lifeline.EXIT_MEMORY)


def run_worker(cfg: WorkerConfig) -> None:
    """Entry function of a worker process."""
    lifeline.become_child(cfg.parent_pid)
    lifeline.take_interrupts()
    add_import_paths(cfg.import_paths)
    enter_run(cfg.run_dir, cfg.stage_dir)
    try:
        worker = _Worker(cfg)
        try:
            worker.run()
        except StorageError as exc:  # a failure it cannot record, or a batch it cannot journal
            where = f"worker {cfg.stage}[{cfg.index}]"
            lifeline.storage_failed(worker.ctl, worker.data_sockets(), worker.ctx, where, exc)
    except lifeline.Interrupted:  # the run stops at once: user code has unwound (its cleanup ran)
        run_interrupt_cleanups()
        os._exit(lifeline.EXIT_INTERRUPTED)


class _Worker:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.pid = os.getpid()
        self.identity = worker_identity(cfg.stage, cfg.index, cfg.token or self.pid)
        self.socks = sockets.Sockets(cfg.curve)
        self.ctx: zmq.Context[Any] = self.socks.ctx
        self.ctl = self.socks.dealer(self.identity, cfg.control_endpoint)
        self.dead = DeadLetters(cfg.dead_letters)
        self.slot = Slot(cfg.slot_path) if cfg.slot_path else None
        if self.slot is not None:
            self.slot.timeout_s = cfg.timeout_s
        self.waits = Waits(self.slot)  # time blocked by the next queues, and waiting for input
        links = links_of(cfg.stage, cfg.kind, cfg.ref, cfg.params, cfg.on_error, cfg.chain_rest)
        seen = IdSet() if cfg.dedupe else None
        self.chain = Chain(links, self.dead, self._stop_run, self.slot, seen)
        self.pace = Pace(cfg.batch, cfg.batch_min, cfg.batch_max)
        self.prefetch = PREFETCH_BATCHES
        self.inbox: deque[wire.Message] = deque()
        self.gets_out = 0
        self.ended = False
        self.retiring = False
        self.unacked: dict[int, int] = {}  # lease -> outlets still holding its outputs
        self.acks: list[int] = []  # leases acknowledged but not yet said so (`_ack`)
        self.handled: deque[int] = deque(maxlen=64)  # the latest leases it started handling
        self.in_hand: int | None = None  # the lease being handled
        self.protocol_errors = 0
        self.recycle: str | None = None  # why this worker leaves early (max_events, max_rss_mb)
        self.rss_mb = rss_reader() if cfg.max_rss_mb else None  # this process's memory, MiB
        self.guard: MemoryGuard | None = None  # max_rss_mb inside a batch
        self.outlets: list[Outlet] = []
        self.tracer = tracer_of(cfg.trace_dir, cfg.trace_sample, "worker", cfg.stage, cfg.index)
        self.blocks = payload.attach(cfg.blocks)  # shared blocks its inputs are read from

    # ---------------------------------------------------------------- life

    def run(self) -> None:
        cfg = self.cfg
        self.ctl.send_multipart(wire.simple(wire.REGISTER, wire.WORKER, cfg.stage, cfg.index, self.pid, ""))
        self._in_user_code()
        failed = self.chain.setup()
        if failed is not None:
            link, fail = failed
            message = f"setup of stage {link.stage!r} ({link.runner.ref}) raised {fail.type}: {fail.message}"
            self._stop_run(message, fail)
        if self.slot is not None:
            self.slot.end()
        tail = self.chain.tail
        if cfg.journal and tail.kind == "sink" and is_resumable(tail.runner.ref):
            self.chain.journal = Journal(cfg.journal, tail.stage)
        if cfg.max_rss_mb and self.rss_mb and not self.chain.stateful:  # never stop a stateful one
            self.guard = MemoryGuard(cfg.max_rss_mb, self.rss_mb, functools.partial(exit_over_memory, self.identity))
            self.guard.arm(self.rss_mb())
            self.chain.tick = self.guard.tick
        self._send_stats(wire.STATS)  # the controller learns at once whether it holds state
        self._connect()
        self._loop()
        if self.ended:
            self._finish()
        else:
            self._retire()

    def _connect(self) -> None:
        """Say HELLO to the stage queue and to every downstream queue."""
        cfg = self.cfg
        self.up = self.socks.dealer(self.identity, cfg.input_endpoint)
        self.up.send_multipart(wire.hello(wire.WORKER, cfg.index, 0))
        want = 2 * MAX_BATCH_EVENTS
        self.outlets = outlets_for(self.socks, cfg.outputs, self.identity, want)
        self.router = Router(self.outlets, cfg.max_event_bytes)
        self.chain.router = self.router
        self.chain.on_spill = self._spill
        self.poller = zmq.Poller()
        self.poller.register(self.up, zmq.POLLIN)
        self.poller.register(self.ctl, zmq.POLLIN)
        for o in self.outlets:
            self.poller.register(o.sock, zmq.POLLIN)

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
                    self.up.send_multipart(wire.get(self.pace.batch_n, self.acks))
                    self.acks = []
                    self.gets_out += 1
            self._say_acks()  # what no request carried
            if self.inbox and not blocked:
                self._handle(self.inbox.popleft())
                timeout_ms = 0
                if not self.retiring and (cfg.max_events or cfg.max_rss_mb):
                    check_hygiene(self)
            elif (self.ended or self.retiring) and not self.inbox and not self.unacked:
                return
            else:
                timeout_ms = int(lifeline.PARENT_CHECK_PERIOD_S * 1000)
            self._poll(timeout_ms)
            now = time.monotonic()
            if now >= next_stats:
                self._send_stats(wire.STATS)
                self._renew()
                next_stats = now + cfg.period_s
                lifeline.exit_if_orphaned(cfg.parent_pid)

    def _poll(self, timeout_ms: int) -> None:
        if timeout_ms:
            self._say_acks()  # never wait with an acknowledgement unsaid
        self.waits.begin(wait_of(self, timeout_ms))
        ready = dict(self.poller.poll(timeout_ms))
        self.waits.end()
        if not ready:
            return
        if self.up in ready:
            for frames in sockets.drain(self.up):
                on_upstream(self, frames)
        replies = take_replies(self.outlets, ready, self.dead, f"worker {self.identity}")
        for lease in replies.released:
            self._released(lease)
        self.protocol_errors += replies.errors
        if replies.fatal:
            fail = Failure("ProtocolError", replies.fatal, "")
            self._stop_run(f"worker {self.identity}: {replies.fatal}; stopping rather than lose them", fail)
        if self.ctl in ready:
            for frames in sockets.drain(self.ctl):
                self._on_control(frames)

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
        elif msg.kind == wire.REPORT:
            self._send_stats(wire.STATS)  # the controller's record is due

    def _renew(self) -> None:
        """RENEW: the leases held (batches waiting, outputs not yet taken downstream)
        and the GETs not yet answered."""
        self._say_acks()
        held = [m.fields[0] for m in self.inbox] + list(self.unacked)
        self.up.send_multipart(wire.renew(self.cfg.index, held, max(0, self.gets_out)))

    def _released(self, lease: Any) -> None:
        if lease is None or lease == self.in_hand:
            return  # the lease being handled is acknowledged by _commit, once it is done
        left = self.unacked[lease] - 1
        if left:
            self.unacked[lease] = left
        else:
            del self.unacked[lease]
            self._ack(lease)

    # ---------------------------------------------------------------- work

    def _handle(self, msg: wire.Message) -> None:
        lease, ids, counts, t_srcs, _traced, nbufs = msg.fields
        try:
            events = wire.unpack_events(msg.bodies, len(ids), nbufs, msg.bufs)
        except WireError as exc:
            events = None
            self.chain.dead_input(ids, f"stage {self.cfg.stage!r} received an undecodable event: {exc}")
        if self.blocks is not None:
            self.blocks.hold(lease)  # closed before the ACK (the queue then frees the blocks)
        if events is None:
            self._ack(lease)
            return
        t0_ns = time.monotonic_ns() if self.tracer is not None else 0
        t0 = time.perf_counter()
        self.handled.append(lease)
        if self.slot is not None:
            self.slot.begin(lease)
        self.in_hand = lease
        self.chain.run(0, ids, events, self.pace.slow_events)
        self.in_hand = None
        elapsed = time.perf_counter() - t0
        n_events = len(events)
        del events  # nothing of ours holds the batch (a shared block's mapping can close)
        if self.slot is not None:
            self.slot.end(self.pace.busy_s + elapsed)
        sink = self.chain.tail.kind == "sink"
        if self.tracer is not None:
            self.tracer.handled(self.cfg.stage, lease, len(ids), t0_ns, sink, bool(self.outlets))
        now_s = time.time() if sink else None
        t_src = self.pace.record(elapsed, n_events, t_srcs, counts, now_s)
        self._commit(lease, t_src)

    def _spill(self) -> None:
        """A generator's outputs so far were routed: send them under the lease in hand,
        and wait until the queues have taken them (serving their replies)."""
        _, released = self.router.commit(self.in_hand, 0.0, _traced(self.tracer, self.in_hand))
        dead_letter_rejected(self.outlets, self.dead)
        for t in released:
            self._released(t)
        wait_room(self.outlets, self._poll, self.cfg.parent_pid)
        self._say_acks()  # the handler runs on: a worker that dies in it must not take them along

    def _commit(self, lease: Any, t_src: float = 0.0) -> None:
        any_out, released = self.router.commit(lease, t_src, _traced(self.tracer, lease))
        dead_letter_rejected(self.outlets, self.dead)
        for t in released:
            if t != lease:
                self._released(t)
        if any_out:
            holding = sum(1 for o in self.outlets if lease in o.held)
            if holding:
                self.unacked[lease] = holding
                return
        self._ack(lease)

    def _ack(self, lease: Any) -> None:
        """Acknowledge `lease` to the stage queue: its outputs are all delivered. The
        word goes with the next GET if one is sent before the worker waits or user code
        runs again (the loop sends a GET after most batches: a message fewer per batch),
        else alone."""
        if self.tracer is not None:
            self.tracer.acked(self.cfg.stage, lease)
        if self.blocks is not None:
            self.blocks.done(lease)
        self.acks.append(lease)

    def _say_acks(self) -> None:
        """Send the acknowledgements no GET carried."""
        for lease in self.acks:
            self.up.send_multipart(wire.ack(lease))
        self.acks = []

    def data_sockets(self) -> list[zmq.Socket[Any]]:
        """Its data sockets (none before it connects): what to drop when it stops at once."""
        up = getattr(self, "up", None)
        return [*([up] if up is not None else []), *(o.sock for o in self.outlets)]

    def _stop_run(self, message: str, fail: Failure) -> NoReturn:
        """Report FATAL (the controller stops the run) and exit at once, with the code for
        which the controller waits for the FATAL if it sees the exit first. (The FATAL is
        out before the process ends: a forked child ends with _exit.)"""
        lifeline.fail_now(self.ctl, self.data_sockets(), self.ctx, message, fail, self.pid, lifeline.EXIT_CHILD_FAILED)

    # ---------------------------------------------------------------- end

    def _in_user_code(self) -> None:
        """Setup, finish and teardown send no heartbeat and may run long: the slot says
        so (lease IN_USER_CODE), so the controller does not take silence for a hang."""
        if self.slot is not None:
            self.slot.begin(IN_USER_CODE)

    def _finish(self) -> None:
        self._in_user_code()
        error = self.chain.finish(self.cfg.index)
        self.router.commit(None, time.time())
        dead_letter_rejected(self.outlets, self.dead)
        wait_taken(self.outlets, self._poll, self.cfg.parent_pid)
        self._leave(error, retired=False)

    def _leave(self, error: Failure | None, retired: bool) -> None:
        """Say BYE (the queue puts back anything it leased us meanwhile), tear every
        stage down, detach from the next queues, report DONE (or FATAL)."""
        self._in_user_code()
        self._say_acks()  # before BYE, which returns every lease not acknowledged
        self.up.send_multipart(wire.simple(wire.BYE))
        error = self.chain.teardown(error)
        for o in self.outlets:
            o.detach()
        self.dead.close()
        payload.detach()
        if error is not None:
            what = "teardown" if retired else "the end of its input"
            message = f"stage {self.cfg.stage!r} failed at {what}: {error.type}: {error.message}"
            self._stop_run(message, error)
        if self.tracer is not None:
            self.tracer.flush()
        self._send_stats(wire.DONE, retired=retired)
        self._await_release()

    def _await_release(self) -> None:
        """Wait for the controller to acknowledge DONE (it replies STOP), so the final
        counters are known to have arrived; then close everything and return."""
        lifeline.wait_for_stop(self.ctl, lifeline.DONE_ACK_TIMEOUT_S)
        for o in self.outlets:
            o.close()
        self.up.close(linger=500)
        self.ctl.close(linger=500)
        self.ctx.term()

    def _send_stats(self, kind: int, retired: bool = False) -> None:
        self.ctl.send_multipart(wire.simple(kind, _stats(self, retired)))


def on_upstream(w: _Worker, frames: list[bytes]) -> None:
    """One message from the stage queue: a BATCH to the inbox, END, EXPIRED, HALT, ERR."""
    try:
        msg = wire.parse(frames)
    except WireError as exc:
        log.error("worker %s: refused frame from its queue: %s", w.identity, exc)
        w.protocol_errors += 1
        return
    if msg.kind == wire.BATCH:
        w.gets_out -= 1
        w.inbox.append(msg)
        # short of what it asked for: the queue ran dry, and a second request out would
        # only take the next event from a worker that may be free sooner
        w.prefetch = PREFETCH_BATCHES if len(msg.fields[1]) >= w.pace.batch_n else 1
        if w.tracer is not None and msg.fields[4]:  # it may hold a traced event
            w.tracer.leased(w.cfg.stage, msg.fields[0], msg.fields[1])
    elif msg.kind == wire.END:
        w.ended = True
        w.gets_out = 0
    elif msg.kind == wire.EXPIRED:
        expired(w, msg.fields[0])
    elif msg.kind == wire.HALT:
        give_back_unstarted(w)
    elif msg.kind == wire.ERR:
        log.error("worker %s: queue refused a message: %s", w.identity, msg.fields[0])
        w.protocol_errors += 1


def _stats(w: _Worker, retired: bool) -> dict[str, Any]:
    """What a worker reports each period (STATS) and when it exits (DONE)."""
    service, path = w.pace.take_samples()
    links = w.chain.links
    return {
        "in": links[0].n_in,
        "out": w.chain.tail.n_out,
        "failed": sum(link.n_failed for link in links),
        "retried": sum(link.n_retried for link in links),
        "skipped": sum(link.n_skipped for link in links),
        "duplicates": w.chain.duplicates,
        "recycled": w.recycle,
        "members": {
            link.stage: [link.n_in, link.n_out, link.n_failed, link.n_retried, link.n_skipped] for link in links
        },
        "busy_s": w.pace.busy_s,
        "blocked_s": w.waits.blocked_s,
        "waiting_s": w.waits.waiting_s,
        "batches": w.pace.batches,
        "batch_size": w.pace.batch_n,
        "protocol_errors": w.protocol_errors,
        "shed": {o.stage: [o.dropped, o.rejected_count] for o in w.outlets},
        "service": [[round(v, 4), n] for v, n in service],  # [ms per event, events]
        "path": [[round(v, 3), n] for v, n in path],  # [ms from source to here, events]
        "pid": w.pid,
        "retired": retired,
        # emits at the end of input: its state would be lost if it were retired
        "stateful": w.chain.stateful,
        "warnings": w.chain.warnings,  # one a stage at most, for the controller to show once
    }


def wait_of(w: _Worker, timeout_ms: int) -> int | None:
    """What a poll of `timeout_ms` waits for: credit downstream (BLOCKED), work while the
    input lasts (WAITING), or nothing counted (no wait; the last outputs' confirmation)."""
    if not timeout_ms:
        return None
    if any(o.blocked for o in w.outlets):
        return BLOCKED
    return None if w.ended or w.retiring else WAITING


def give_back_unstarted(w: _Worker) -> None:
    """HALT from its queue (Ctrl-C): give back the batches not started (their events are
    dropped, for a re-run or --resume to do); the one in hand is finished. Batches
    leased after this are the outputs of work in hand upstream: handled as usual."""
    leases = [m.fields[0] for m in w.inbox]
    w.inbox.clear()
    if leases:
        w.up.send_multipart(wire.returned(leases))
    log.info("worker %s: interrupted; gave back %d batches not started", w.identity, len(leases))


def check_hygiene(w: _Worker) -> None:
    """Between batches: re-arm the memory guard, and retire a worker past max_events or
    max_rss_mb (one that keeps state is only warned about, once)."""
    cfg = w.cfg
    rss_mb = w.rss_mb() if w.rss_mb is not None and cfg.max_rss_mb else None
    if w.guard is not None:
        w.guard.arm(rss_mb)
    why = recycle_reason(cfg.max_events, cfg.max_rss_mb, w.chain.links[0].n_in, rss_mb)
    if why is None:
        return
    if w.chain.stateful:
        # its state would be lost: say so once and keep going
        log.warning("worker %s %s but keeps state (finish()), so it is not replaced", w.identity, why)
        cfg_dict = dict(cfg.__dict__, max_events=None, max_rss_mb=None)
        w.cfg = WorkerConfig(**cfg_dict)
        return
    log.info("worker %s %s: replacing it", w.identity, why)
    w.recycle = why
    w.retiring = True


def expired(w: _Worker, leases: list[int]) -> None:
    """The queue took these leases back and leases their events again: drop the
    batches not started; a stage with state cannot let handled ones count twice."""
    late = set(leases)
    dropped = [m for m in w.inbox if m.fields[0] in late]
    for m in dropped:
        w.inbox.remove(m)
    handled = [lease for lease in w.handled if lease in late]
    for lease in handled:
        w.handled.remove(lease)  # once: a RENEW naming it may bring EXPIRED again
    log.warning("worker %s: the queue took back leases %s (not renewed in time)", w.identity, sorted(late))
    if handled and w.chain.stateful:
        message = (
            f"stage {w.cfg.stage!r} keeps state (finish()) and had handled lease {handled[0]} when its "
            "queue took it back (the worker did not renew it for a lease term): its events would be counted "
            "twice, so the run stops"
        )
        w._stop_run(message, Failure("LeaseExpired", message, ""))


def _traced(tracer: Tracer | None, lease: Any) -> bool:
    """Whether an output of `lease` may be traced: only one of a traced event (an output
    is named after its input, ``"<id>.<i>"`` when it has several)."""
    return tracer is not None and lease in tracer.leases

"""Runs in a source process: one per source stage.

Reads:  the user's source iterable; CREDIT from each downstream queue; from the
        controller STOP (stop reading, deliver what was read, finish: the Ctrl-C of a
        source whose events must all be answered, `drain_on_interrupt`) or HALT (Ctrl-C:
        stop reading, drop what the queues had no room for yet, finish).
Writes: HELLO/PUT/EOS to each downstream queue, REGISTER/STATS/DONE/FATAL to the
        controller, unserializable events to the dead-letter file, large buffers into
        shared blocks (`sedamp.runtime.blocks`).

Every event gets its id here: its position in the source (0, 1, 2, ...). The source
reads ahead only as far as the downstream credit allows, so a full pipeline stops the
source: backpressure reaches the input. It reports DONE only once every downstream
queue has taken every event it sent. Each read is one message: a read is sized by the
bytes of the events before it and by the source's pace, so that a slow iterator's
events go downstream as they come (`sedamp.runtime.pace.next_read`).

It counts the time it is held back so (blocked: no credit downstream) and the time
inside its iterator (waiting: for a source that is waiting for its input, which it
cannot tell from reading it), in its slot as they accrue and in its STATS.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import zmq

from sedamp.errors import StorageError, WireError
from sedamp.observe.words import plural
from sedamp.runtime import lifeline, payload, sockets, wire
from sedamp.runtime.configs import SourceConfig, source_identity
from sedamp.runtime.deadletter import DeadLetters
from sedamp.runtime.flow import DEFAULT_MAX_BYTES
from sedamp.runtime.journal import read_skip
from sedamp.runtime.outlet import Outlet, Router, dead_letter_rejected, outlets_for, take_replies, wait_taken
from sedamp.runtime.pace import next_read
from sedamp.runtime.payload import nbufs_of, size_of
from sedamp.runtime.slot import BLOCKED, WAITING, Slot, Waits
from sedamp.runtime.stage import IDLE, Failure, SourceRunner, add_import_paths, enter_run
from sedamp.runtime.tracing import tracer_of

# A source reads at most this share of the smallest downstream bound in bytes at once.
READ_BYTES_SHARE = 8

log = logging.getLogger(__name__)


def run_source(cfg: SourceConfig) -> None:
    """Entry function of a source process."""
    lifeline.become_child(cfg.parent_pid)
    add_import_paths(cfg.import_paths)
    enter_run(cfg.run_dir, cfg.stage_dir)
    payload.attach(cfg.blocks)  # its large buffers go out through shared blocks
    source = _Source(cfg)
    try:
        source.run()
    except StorageError as exc:  # an event it cannot send cannot be dead-lettered either
        others = [o.sock for o in source.outlets]
        lifeline.storage_failed(source.ctl, others, source.ctx, f"source {cfg.stage!r}", exc)


class _Source:
    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg
        self.pid = os.getpid()
        self.identity = source_identity(cfg.stage, self.pid)
        self.socks = sockets.Sockets(cfg.curve)
        self.ctx: zmq.Context[Any] = self.socks.ctx
        self.ctl = self.socks.dealer(self.identity, cfg.control_endpoint)
        self.runner = SourceRunner(cfg.ref, cfg.params)
        self.outlets: list[Outlet] = []
        self.stop_requested = False
        self.halted = False  # HALT: what was read and not sent is dropped
        self.exhausted = False
        # events per read: one at first, then as many as fit in READ_BYTES_SHARE of the
        # smallest downstream bound in bytes (at most cfg.batch), so that a source of
        # 48 MB arrays does not read 512 of them before it sends one
        self.read_n = 1
        self.error: Failure | None = None
        self.tracer = tracer_of(cfg.trace_dir, cfg.trace_sample, "source", cfg.stage)
        self.waits = Waits(Slot(cfg.slot_path) if cfg.slot_path else None)

    def run(self) -> None:
        cfg = self.cfg
        self.ctl.send_multipart(wire.simple(wire.REGISTER, wire.SOURCE, cfg.stage, 0, self.pid, ""))
        it, total = self._start()
        want = 4 * cfg.batch
        self.outlets = outlets_for(self.socks, cfg.outputs, self.identity, want)
        self.router = Router(self.outlets, cfg.max_event_bytes)
        self.dead = DeadLetters(cfg.dead_letters)
        self.poller = zmq.Poller()
        self.poller.register(self.ctl, zmq.POLLIN)
        for o in self.outlets:
            self.poller.register(o.sock, zmq.POLLIN)
        self.counters: dict[str, Any] = {
            "total": total, "in": 0, "out": 0, "failed": 0, "skipped": 0, "discarded": 0, "pid": self.pid,
        }  # fmt: skip
        self.skip = read_skip(cfg.skip) if cfg.skip else None
        self._loop(it)
        if self.halted:  # events a re-run or --resume does; what is on its way is delivered
            self.counters["discarded"] = max((o.discard_backlog() for o in self.outlets), default=0)
        wait_taken(self.outlets, self._poll, cfg.parent_pid)  # deliver what was read
        self._end()

    def _start(self) -> tuple[Iterator[Any], int | None]:
        """Set the user's source up; report FATAL and exit if it cannot start."""
        try:
            self.runner.setup()
            total = self.runner.total()
            return iter(self.runner), total
        except BaseException as exc:
            fail = Failure.from_exception(exc)
            message = f"source {self.cfg.stage!r} ({self.cfg.ref}) could not start: {fail.type}: {fail.message}"
            others = [o.sock for o in self.outlets]
            lifeline.fail_now(self.ctl, others, self.ctx, message, fail, self.pid, lifeline.EXIT_CHILD_FAILED)

    def _loop(self, it: Iterator[Any]) -> None:
        """Read and send a batch whenever the downstream queues have room, until the
        source is exhausted or the controller says STOP."""
        next_stats = 0.0
        while not self.exhausted and not self.stop_requested:
            if any(o.blocked for o in self.outlets):
                self._poll(int(lifeline.PARENT_CHECK_PERIOD_S * 1000))
            else:
                self._read(it)
                self._poll(0)
            now = time.monotonic()
            if now >= next_stats:
                self._count_waits()
                self._note_stats()
                self.ctl.send_multipart(wire.simple(wire.STATS, self.counters))
                next_stats = now + self.cfg.period_s
                lifeline.exit_if_orphaned(self.cfg.parent_pid)

    def _read(self, it: Iterator[Any]) -> None:
        """Read up to a batch of events (fewer at IDLE), name them and hand them over."""
        batch = self.read_n
        evs: list[Any] = []
        t_read = time.time()
        t_read_ns = time.monotonic_ns() if self.tracer is not None else 0
        idle = False
        self.waits.begin(WAITING)
        t0 = time.perf_counter()
        try:
            for ev in itertools.islice(it, batch):
                if ev is IDLE:  # nothing more for now: send what was read
                    idle = True
                    break
                evs.append(ev)
        except Exception as exc:  # the user's iterator failed: keep what it gave
            self.error = Failure.from_exception(exc)
            self.exhausted = True
        elapsed = time.perf_counter() - t0
        self.waits.end()
        n = len(evs)
        first = self.counters["in"]
        ids = list(range(first, first + n))
        if self.skip is not None:  # resuming: what every sink already holds is not sent again
            kept = [(i, ev) for i, ev in zip(ids, evs, strict=True) if i not in self.skip]
            self.counters["skipped"] += n - len(kept)
            ids = [i for i, _ in kept]
            evs = [ev for _, ev in kept]
        traced = self.tracer is not None and self.tracer.read(self.cfg.stage, ids, t_read_ns)
        self._route(ids, evs)
        self.read_n = min(self.read_n, next_read(batch, n, elapsed, self.cfg.batch))
        self.counters["in"] += n
        self.router.commit(None, t_read, traced)
        dead_letter_rejected(self.outlets, self.dead)
        if n < batch and not idle:
            self.exhausted = True

    def _size_reads(self, packed: list[bytes]) -> None:
        """Size the next read from the bytes of the events just packed."""
        nbytes = sum(map(size_of, packed)) if nbufs_of(packed) else sum(map(len, packed))
        budget = (self.router.max_bytes or DEFAULT_MAX_BYTES) // READ_BYTES_SHARE
        self.read_n = max(1, min(self.cfg.batch, budget * len(packed) // max(1, nbytes)))

    def _route(self, ids: list[Any], evs: list[Any]) -> None:
        router = self.router
        packed = wire.pack_all(evs, router.limit, router.max_bytes) if not router.keyed else None
        if packed is not None:
            router.route_packed(ids, packed)
            self.counters["out"] += len(ids)
            if packed:
                self._size_reads(packed)
            return
        self.read_n = self.cfg.batch if router.keyed else max(1, self.read_n // 2)
        for eid, ev in zip(ids, evs, strict=True):
            try:
                # after a failed bulk pack, sizes are looked at before packing again
                router.route(eid, [ev], estimate=not router.keyed)
                self.counters["out"] += 1
            except (WireError, KeyError) as exc:
                self.counters["failed"] += 1
                self.dead.write(
                    stage=self.cfg.stage,
                    event_id=eid,
                    error_type=type(exc).__name__,
                    message=f"source {self.cfg.stage!r} yielded an event that cannot be sent: {exc}",
                    traceback=None,
                    event=ev,  # bytes as {"$bytes": base64}, not a repr several times its size
                )

    def _poll(self, timeout_ms: int) -> None:
        """Wait up to `timeout_ms` for the queues' replies and the controller's word, and
        apply them; a wait while events wait for credit counts as blocked."""
        self.waits.begin(BLOCKED if timeout_ms > 0 and any(o.blocked for o in self.outlets) else None)
        ready = dict(self.poller.poll(timeout_ms))
        self.waits.end()
        replies = take_replies(self.outlets, ready, self.dead, f"source {self.cfg.stage}")
        if replies.fatal:
            message = f"source {self.cfg.stage!r}: {replies.fatal}; stopping rather than lose them"
            fail = Failure("ProtocolError", replies.fatal, "")
            others = [o.sock for o in self.outlets]
            lifeline.fail_now(self.ctl, others, self.ctx, message, fail, self.pid, lifeline.EXIT_CHILD_FAILED)
        if self.ctl in ready:
            for frames in sockets.drain(self.ctl):
                try:
                    msg = wire.parse(frames)
                except WireError:
                    continue
                if msg.kind in (wire.STOP, wire.HALT):
                    self.stop_requested = True
                    self.halted = self.halted or msg.kind == wire.HALT

    def _shed(self) -> dict[str, list[int]]:
        return {o.stage: [o.dropped, o.rejected_count] for o in self.outlets}

    def _count_waits(self) -> None:
        self.counters["blocked_s"] = self.waits.blocked_s
        self.counters["waiting_s"] = self.waits.waiting_s

    def _note_stats(self) -> None:
        """Refresh what the counters carry besides counts: shed events, the source's own stats."""
        self.counters["shed"] = self._shed()
        stats = self.runner.stats()
        if stats is not None:
            self.counters["stats"] = stats

    def _end(self) -> None:
        """Tear the source down, detach, report DONE (or FATAL) and wait for the
        controller's word before closing."""
        cfg = self.cfg
        try:
            self.runner.teardown()
        except Exception as exc:
            self.error = self.error or Failure.from_exception(exc)
        for o in self.outlets:
            o.detach()
        self.dead.close()
        if self.tracer is not None:
            self.tracer.flush()
        self.counters["stopped"] = self.stop_requested
        self._note_stats()
        self._count_waits()
        error = self.error
        if error is not None:
            read = plural(self.counters["in"], "event")
            message = f"source {cfg.stage!r} raised after {read}: {error.type}: {error.message}"
            others = [o.sock for o in self.outlets]
            lifeline.fail_now(self.ctl, others, self.ctx, message, error, self.pid, lifeline.EXIT_CHILD_FAILED)
        self.ctl.send_multipart(wire.simple(wire.DONE, self.counters))
        lifeline.await_answer(self.ctl, lifeline.DONE_ACK_TIMEOUT_S)
        for o in self.outlets:
            o.close()
        self.ctl.close(linger=0)
        self.ctx.term()

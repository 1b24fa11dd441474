"""Runs in a stage-queue process, one per stage that has an input.

Reads:  the data ROUTER it binds (HELLO/PUT/EOS from producers, HELLO/GET/ACK/RENEW/BYE/
        RETURN from workers) and its control DEALER to the controller (CLOSE, STOP, GONE,
        HOLD, HALT, REPORT).
Writes: CREDIT to producers, BATCH/END/EXPIRED/HALT to workers, ERR to a peer whose frame
        was refused; REGISTER, STATS every period and on REPORT, and DONE to the
        controller. Frees the shared blocks of events acknowledged or dead-lettered
        (`sedamp.runtime.blocks`).

All decisions are made by `sedamp.runtime.flow.QueueCore`; this module only moves frames
between the sockets and that state machine, and asks it every half period to take back
the leases past their term. A malformed frame is counted and answered with ERR; it
never stops the queue. A reply a live peer cannot take yet (its connection is being
re-made) waits in the `Outbox` for it. The queue exits when the controller says STOP
or when its parent is gone, and stops the run (FATAL) when it cannot write a poison
event to the dead-letter file (a full disk).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from typing import Any

import zmq

from sedamp.errors import StorageError, WireError
from sedamp.runtime import lifeline, payload, sockets, wire
from sedamp.runtime.blocks import Blocks
from sedamp.runtime.configs import QueueConfig, queue_identity
from sedamp.runtime.deadletter import DeadLetters
from sedamp.runtime.flow import POISON_DEATHS, Outgoing, QueueCore, lease_term_s, queue_stats
from sedamp.runtime.pauses import Pauses
from sedamp.runtime.tracing import Tracer, tracer_of

log = logging.getLogger(__name__)


def _core_of(cfg: QueueConfig) -> QueueCore:
    term = lease_term_s(cfg.period_s)
    core = QueueCore(cfg.capacity, cfg.partitions, lease_term_s=term, producers=cfg.producers, max_bytes=cfg.max_bytes)
    if cfg.blocks:
        core.leases.done_bufs = []  # acknowledged events' shared blocks, freed by `_free`
    return core


def run_queue(cfg: QueueConfig) -> None:
    """Entry function of a queue process."""
    lifeline.become_child(cfg.parent_pid)
    socks = sockets.Sockets(cfg.curve)
    data = socks.router(cfg.endpoint)
    ctl = socks.dealer(queue_identity(cfg.stage), cfg.control_endpoint)
    core = _core_of(cfg)
    outbox = Outbox(data, core)
    dead = DeadLetters(cfg.dead_letters) if cfg.dead_letters else None
    blocks = payload.attach(cfg.blocks)  # it frees the shared blocks of acknowledged events
    tracer = tracer_of(cfg.trace_dir, cfg.trace_sample, "queue", cfg.stage)
    ctl.send_multipart(
        wire.simple(wire.REGISTER, wire.QUEUE, cfg.stage, 0, os.getpid(), sockets.bound_endpoint(data, cfg.advertise))
    )
    poller = zmq.Poller()
    poller.register(data, zmq.POLLIN)
    poller.register(ctl, zmq.POLLIN)
    next_stats = next_expiry = time.monotonic() + cfg.period_s
    pauses = Pauses(time.monotonic())
    next_parent_check = time.monotonic() + lifeline.PARENT_CHECK_PERIOD_S
    stopping = False
    reported_end = False
    try:
        while not stopping:
            ready = dict(poller.poll(int(cfg.period_s * 1000 / 2)))
            outbox.retry()
            if data in ready:
                for frames in sockets.drain(data):
                    outbox.send(_on_data(core, frames, tracer))
            if ctl in ready:
                try:
                    for frames in sockets.drain(ctl):
                        said = _on_control(cfg, core, outbox, dead, frames)
                        stopping = stopping or said == wire.STOP
                        if said == wire.REPORT:
                            next_stats = 0.0  # STATS now, below
                except StorageError as exc:  # a poison event it cannot dead-letter
                    lifeline.storage_failed(ctl, [data], socks.ctx, f"the queue of stage {cfg.stage!r}", exc)
            if core.leases.done_bufs:
                _free(blocks, core.leases.done_bufs, core.leases.unsafe)
            _excuse_pause(cfg, core, pauses)  # here: a pause in the poll or in the work above
            now = time.monotonic()
            if now >= next_expiry:
                outbox.send(core.expire())
                next_expiry = now + cfg.period_s / 2
            if core.ended and not reported_end:
                reported_end = True
                next_stats = now  # tell the controller at once
            if now >= next_stats or stopping:
                ctl.send_multipart(wire.simple(wire.DONE if stopping else wire.STATS, queue_stats(core)))
                next_stats = now + cfg.period_s
            if now >= next_parent_check:
                _exit_if_orphaned(cfg)
                next_parent_check = now + lifeline.PARENT_CHECK_PERIOD_S
    finally:
        _close(socks, ctl, data, dead, tracer)


def _close(
    socks: sockets.Sockets, ctl: zmq.Socket[Any], data: zmq.Socket[Any], dead: DeadLetters | None, tracer: Tracer | None
) -> None:
    ctl.setsockopt(zmq.LINGER, 1000)  # let the final DONE out; counters are advisory
    ctl.close()
    data.close()
    socks.close()
    if dead is not None:
        dead.close()
    if tracer is not None:
        tracer.flush()


def _excuse_pause(cfg: QueueConfig, core: QueueCore, pauses: Pauses) -> None:
    """Move the leases' terms on by the time this queue was not running (beyond its poll
    timeout, half a period, since it last looked): no worker could renew a lease with it
    meanwhile. Called once a loop, just before the terms are checked."""
    paused = pauses.observe(time.monotonic(), cfg.period_s / 2)
    if paused:
        core.leases.pause(paused)
        log.warning("queue %s: not running for %.1f s: its leases' terms move on by as much", cfg.stage, paused)


def _exit_if_orphaned(cfg: QueueConfig) -> None:
    if not lifeline.parent_alive(cfg.parent_pid):
        log.error("queue %s: controller is gone, exiting", cfg.stage)
        os._exit(1)


def _on_control(
    cfg: QueueConfig, core: QueueCore, outbox: Outbox, dead: DeadLetters | None, frames: list[bytes]
) -> int:
    """Apply one message from the controller; its kind (0 if it could not be read)."""
    try:
        msg = wire.parse(frames)
    except WireError as exc:
        log.warning("queue %s: refused control frame: %s", cfg.stage, exc)
        return 0
    if msg.kind == wire.CLOSE:
        outbox.send(core.close())
    elif msg.kind == wire.GONE:
        rid, reason, lease, position = msg.fields
        rid = rid.encode() if isinstance(rid, str) else rid
        outbox.send(core.worker_gone(rid, reason, (lease, position)) + core.producer_gone(rid))
        _poisoned(cfg, core, dead)
    elif msg.kind == wire.HALT:
        outbox.send(core.halt())
    elif msg.kind == wire.HOLD:
        core.hold([r.encode() if isinstance(r, str) else r for r in msg.fields[0]])
    return msg.kind


def _poisoned(cfg: QueueConfig, core: QueueCore, dead: DeadLetters | None) -> None:
    """Take the events that killed their workers out of circulation: to the dead
    letters (also under on_error: fail, so the run stops without losing the event),
    or counted and dropped under on_error: skip."""
    while core.poisoned:
        eid, packed, reason = core.poisoned.pop(0)
        log.error("stage %s: event %r killed %d workers (last: %s); not retried", cfg.stage, eid, POISON_DEATHS, reason)
        core.last_poison = {"event_id": eid, "reason": reason, "deaths": POISON_DEATHS}
        if cfg.on_poison != "skip" and dead is not None:
            dead.write_packed(
                stage=cfg.stage,
                event_id=eid,
                error_type="WorkerDied",
                message=f"stage {cfg.stage!r}: the event killed {POISON_DEATHS} workers that held it; "
                f"the last {reason}",
                packed=packed,
            )
        if core.leases.done_bufs is not None:
            core.leases.done_bufs.extend(payload.bufs_of(packed))  # out of circulation: its blocks go


def _free(blocks: Blocks | None, bufs: list[Any], unsafe: set[bytes]) -> None:
    """Free the shared blocks among `bufs` (acknowledged or dead-lettered events') but
    the `unsafe` ones (of expired leases)."""
    if blocks is not None:
        blocks.settle(blocks.take_opened())  # what writing a dead letter mapped
        blocks.free(bufs, unsafe)
    bufs.clear()


def _on_data(core: QueueCore, frames: list[bytes], tracer: Tracer | None = None) -> Outgoing:
    if len(frames) < 2:
        core.counters.refused_frames += 1
        return []
    rid, payload = frames[0], frames[1:]
    try:
        msg = wire.parse(payload)
    except WireError as exc:
        return core.refuse(rid, str(exc))
    if tracer is not None and msg.kind == wire.PUT and msg.fields[5]:  # it may hold a traced event
        tracer.queued(msg.fields[2])
    return core.handle(rid, msg)


class Outbox:
    """Sends the queue's replies, and keeps those a live peer cannot take yet.

    A ROUTER send fails while the peer's connection is down (EHOSTUNREACH: over tcp a
    reset peer reconnects under the same routing id moments later) or, far past any
    protocol bound, at the safety HWM (EAGAIN). Such a message is kept for its peer, in
    order with whatever follows it, and sent again at every turn of the loop until it
    goes, or until the peer is no longer one the queue serves (BYE, EOS, GONE): a
    reconnecting producer keeps its credit and a reconnecting worker gets its batch.
    A dead worker's batch waits for the controller's GONE, which says which event was in
    its handler (returning its leases at once would blame nobody). Messages to a peer
    that already left (an END crossing its last GET) are dropped."""

    def __init__(self, sock: zmq.Socket[Any], core: QueueCore) -> None:
        self.sock = sock
        self.core = core
        self.held: dict[bytes, deque[list[Any]]] = {}

    def send(self, out: Outgoing) -> None:
        for rid, frames in out:
            waiting = self.held.get(rid)
            if waiting is not None:
                waiting.append(frames)
            elif not self._send(rid, frames) and self._serves(rid):
                self.held[rid] = deque([frames])

    def retry(self) -> None:
        """Send again what is kept, peer by peer, in order."""
        for rid in list(self.held):
            waiting = self.held[rid]
            while waiting and self._serves(rid) and self._send(rid, waiting[0]):
                waiting.popleft()
            if not waiting or not self._serves(rid):
                del self.held[rid]

    def _serves(self, rid: bytes) -> bool:
        return rid in self.core.workers or rid in self.core.credits.producers

    def _send(self, rid: bytes, frames: list[Any]) -> bool:
        try:
            self.sock.send_multipart([rid, *frames], zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            log.debug("queue: cannot send to %r yet: %s", rid, exc)
            return False
        return True

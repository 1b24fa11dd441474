"""Runs in a source process: one per source stage.

Reads:  the user's source iterable; CREDIT from each downstream queue; STOP from the
        controller (Ctrl-C: stop reading, deliver what was read, finish).
Writes: HELLO/PUT/EOS to each downstream queue, REGISTER/STATS/DONE/FATAL to the
        controller, unserializable events to the dead-letter file.

Every event gets its id here: its position in the source (0, 1, 2, ...). The source
reads ahead only as far as the downstream credit allows, so a full pipeline stops the
source: backpressure reaches the input. It reports DONE only once every downstream
queue has taken every event it sent.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import zmq

from sedamp.errors import WireError
from sedamp.runtime import lifeline, sockets, wire
from sedamp.runtime.deadletter import DeadLetters
from sedamp.runtime.journal import read_skip
from sedamp.runtime.outlet import Outlet, OutputConfig, Router, dead_letter_rejected
from sedamp.runtime.stage import IDLE, Failure, SourceRunner, add_import_paths

log = logging.getLogger(__name__)

EXIT_SOURCE_FAILED = 3
DONE_ACK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class SourceConfig:
    stage: str
    ref: str
    params: dict[str, Any]
    outputs: tuple[OutputConfig, ...]
    control_endpoint: str
    batch: int  # events read per PUT
    dead_letters: str
    import_paths: tuple[str, ...]
    period_s: float
    parent_pid: int
    max_event_bytes: int = wire.MAX_EVENT_BYTES
    skip: str = ""  # --resume: a file of the positions the sinks already hold
    curve: dict[str, str] | None = None  # the run's CURVE keys (tcp endpoints)


def source_identity(stage: str, pid: int) -> str:
    return f"s:{stage}:{pid}"


def run_source(cfg: SourceConfig) -> None:
    """Entry function of a source process."""
    lifeline.become_child(cfg.parent_pid)
    add_import_paths(cfg.import_paths)
    pid = os.getpid()
    identity = source_identity(cfg.stage, pid)
    socks = sockets.Sockets(cfg.curve)
    ctx: zmq.Context[Any] = socks.ctx
    ctl = socks.dealer(identity, cfg.control_endpoint)
    ctl.send_multipart(wire.simple(wire.REGISTER, wire.SOURCE, cfg.stage, 0, pid, ""))
    runner = SourceRunner(cfg.ref, cfg.params)
    try:
        runner.setup()
        total = runner.total()
        it = iter(runner)
    except BaseException as exc:
        fail = Failure.from_exception(exc)
        _fatal(ctl, f"source {cfg.stage!r} ({cfg.ref}) could not start: {fail.type}: {fail.message}", fail, pid)
        sys.exit(EXIT_SOURCE_FAILED)
    outlets = [
        Outlet(socks, o.stage, o.endpoint, identity, o.key, o.partitions, 4 * cfg.batch, o.on_full, o.when)
        for o in cfg.outputs
    ]
    router = Router(outlets, cfg.max_event_bytes)
    dead = DeadLetters(cfg.dead_letters)
    poller = zmq.Poller()
    poller.register(ctl, zmq.POLLIN)
    for o in outlets:
        poller.register(o.sock, zmq.POLLIN)

    counters: dict[str, Any] = {"total": total, "in": 0, "out": 0, "failed": 0, "skipped": 0, "pid": pid}
    skip = read_skip(cfg.skip) if cfg.skip else None
    stop_requested = False
    error: Failure | None = None
    next_stats = 0.0

    def reject(o: Outlet) -> None:
        dead_letter_rejected([o], dead)

    def poll(timeout_ms: int) -> None:
        nonlocal stop_requested
        ready = dict(poller.poll(timeout_ms))
        for o in outlets:
            if o.sock in ready:
                for frames in sockets.drain(o.sock):
                    o.on_message(frames)
                reject(o)
                while o.errors:
                    log.error("source %s: %s", cfg.stage, o.errors.pop())
                if o.fatal:
                    _fatal(
                        ctl,
                        f"source {cfg.stage!r}: {o.fatal}; stopping rather than lose them",
                        Failure("ProtocolError", o.fatal, ""),
                        pid,
                    )
                    for other in outlets:
                        other.sock.close(linger=0)
                    ctx.term()  # lets the FATAL out (the control socket lingers)
                    os._exit(EXIT_SOURCE_FAILED)
        if ctl in ready:
            for frames in sockets.drain(ctl):
                try:
                    msg = wire.parse(frames)
                except WireError:
                    continue
                if msg.kind == wire.STOP:
                    stop_requested = True

    exhausted = False
    while not exhausted and not stop_requested:
        if any(o.blocked for o in outlets):
            poll(int(lifeline.PARENT_CHECK_PERIOD_S * 1000))
        else:
            evs: list[Any] = []
            t_read = time.time()
            idle = False
            try:
                for ev in itertools.islice(it, cfg.batch):
                    if ev is IDLE:  # nothing more for now: send what was read
                        idle = True
                        break
                    evs.append(ev)
            except Exception as exc:  # the user's iterator failed: keep what it gave
                error = Failure.from_exception(exc)
                exhausted = True
            n = len(evs)
            first = counters["in"]
            ids = list(range(first, first + n))
            if skip is not None:  # resuming: what every sink already holds is not sent again
                kept = [(i, ev) for i, ev in zip(ids, evs, strict=True) if i not in skip]
                counters["skipped"] += n - len(kept)
                ids = [i for i, _ in kept]
                evs = [ev for _, ev in kept]
            packed = wire.pack_all(evs, router.limit) if not router.keyed else None
            if packed is not None:
                router.route_packed(ids, packed)
                counters["out"] += len(ids)
            else:
                for eid, ev in zip(ids, evs, strict=True):
                    try:
                        router.route(eid, [ev])
                        counters["out"] += 1
                    except (WireError, KeyError) as exc:
                        counters["failed"] += 1
                        dead.write(
                            stage=cfg.stage,
                            event_id=eid,
                            error_type=type(exc).__name__,
                            message=f"source {cfg.stage!r} yielded an event that cannot be sent: {exc}",
                            traceback=None,
                            event=repr(ev),
                        )
            counters["in"] += n
            router.commit(None, t_read)
            for o in outlets:
                reject(o)
            if n < cfg.batch and not idle:
                exhausted = True
            poll(0)
        now = time.monotonic()
        if now >= next_stats:
            counters["shed"] = {o.stage: [o.dropped, o.rejected_count] for o in outlets}
            ctl.send_multipart(wire.simple(wire.STATS, counters))
            next_stats = now + cfg.period_s
            if not lifeline.parent_alive(cfg.parent_pid):
                os._exit(1)
    # deliver what was read, then detach
    while not all(o.idle for o in outlets):
        poll(int(lifeline.PARENT_CHECK_PERIOD_S * 1000))
        if not lifeline.parent_alive(cfg.parent_pid):
            os._exit(1)
    try:
        runner.teardown()
    except Exception as exc:
        error = error or Failure.from_exception(exc)
    for o in outlets:
        o.detach()
    dead.close()
    counters["stopped"] = stop_requested
    counters["shed"] = {o.stage: [o.dropped, o.rejected_count] for o in outlets}
    if error is not None:
        _fatal(
            ctl, f"source {cfg.stage!r} raised after {counters['in']} events: {error.type}: {error.message}", error, pid
        )
        sys.exit(EXIT_SOURCE_FAILED)
    ctl.send_multipart(wire.simple(wire.DONE, counters))
    deadline = time.monotonic() + DONE_ACK_TIMEOUT_S
    while time.monotonic() < deadline and not ctl.poll(100):
        pass
    for o in outlets:
        o.close()
    ctl.close(linger=0)
    ctx.term()


def _fatal(ctl: zmq.Socket[Any], message: str, fail: Failure, pid: int) -> None:
    ctl.send_multipart(
        wire.simple(wire.FATAL, {"message": message, "type": fail.type, "traceback": fail.traceback, "pid": pid})
    )
    ctl.close(linger=2000)

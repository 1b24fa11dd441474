"""Runs in the controller process: where a run listens, and how it reaches its children.

Binds the control ROUTER (REGISTER/STATS/DONE/FATAL in from every queue, worker and
source; CLOSE/STOP/GONE/RETIRE out through `ControlLinks`, held for a child until it
has registered) and the command ROUTER (`sedamp status/scale/top`), and decides each
stage queue's endpoint: ``ipc://`` in the run's private socket directory, or ``tcp://``
(with CURVE keys when the topology asks) when the topology says so or the executor
places processes on other hosts. Writes run.json (through `sedamp.control.rundir`) and
makes the `Wiring` every child is started with. Reads nothing from the children.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from sedamp.control.rundir import socket_dir, write_run_file
from sedamp.control.wiring import Wiring
from sedamp.errors import StorageError
from sedamp.runtime import blocks, security, sockets
from sedamp.runtime.tracing import TRACE_DIR
from sedamp.spec import Topology, paths

if TYPE_CHECKING:
    from sedamp.control.summary import RunOptions

log = logging.getLogger(__name__)

# Longest a message is held for a child that has not registered. A child registers as
# soon as it runs (before its setup), so only one that never runs waits this long: a
# Ray actor waits at most a minute for a CPU, and a child that dies first has its
# messages dropped at its exit (`forget`). The deadline catches whatever else.
PENDING_TTL_S = 300.0


class ControlLinks:
    """The control ROUTER and the poller the run loop waits on (sockets and process
    sentinels). A message to a child that has not registered yet is held until it does
    (a ROUTER drops it otherwise), until it exits, or for PENDING_TTL_S at most."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.ctl: zmq.Socket[Any] | None = None
        self.poller = zmq.Poller()
        self.registered: set[bytes] = set()
        self.pending: dict[bytes, list[list[bytes]]] = {}
        self.held_since: dict[bytes, float] = {}  # when the oldest message of each was held
        self.clock = clock
        # Ctrl-C's handler sends (HALT to the sources) wherever the loop is, which may be
        # between two frames of a message the loop is sending: such a send is queued,
        # and the send it interrupted sends it after its own, whole
        self._out: deque[list[bytes]] = deque()
        self._sending = False

    def send(self, identity: str, frames: list[bytes]) -> None:
        self.send_to(identity.encode(), frames)

    def send_to(self, rid: bytes, frames: list[bytes]) -> None:
        if rid not in self.registered:
            now = self.clock()
            self._expire(now)
            self.pending.setdefault(rid, []).append(frames)
            self.held_since.setdefault(rid, now)
            return
        self._out.append([rid, *frames])
        if self._sending:  # a signal handler's, inside another send: that one sends it
            return
        while self._out:
            self._sending = True
            try:
                while self._out:
                    self._send_now(self._out.popleft())
            finally:
                self._sending = False  # a handler that runs from here sends its own

    def _send_now(self, message: list[bytes]) -> None:
        assert self.ctl is not None
        try:
            self.ctl.send_multipart(message, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("controller: cannot send to %r: %s", message[0], exc)

    def register(self, rid: bytes) -> None:
        """`rid` registered: it can be sent to now, and what was held for it is sent."""
        self.registered.add(rid)
        self.held_since.pop(rid, None)
        for frames in self.pending.pop(rid, []):
            self.send_to(rid, frames)
        self._expire(self.clock())

    def forget(self, identity: str) -> None:
        """The child has exited: what was held for it will never be read."""
        rid = identity.encode()
        self.registered.discard(rid)
        self.pending.pop(rid, None)
        self.held_since.pop(rid, None)

    def _expire(self, now: float) -> None:
        for rid, since in list(self.held_since.items()):
            if now - since > PENDING_TTL_S:
                dropped = self.pending.pop(rid, [])
                del self.held_since[rid]
                log.warning(
                    "controller: %r never registered in %.0f s; dropped %d messages held for it",
                    rid,
                    now - since,
                    len(dropped),
                )

    def watch(self, fd: int) -> None:
        self.poller.register(fd, zmq.POLLIN)

    def unwatch(self, fd: int) -> None:
        self.poller.unregister(fd)


class Ports:
    """The run's sockets and endpoints, from `open` to `close`."""

    def __init__(self, top: Topology, run_dir: Path, started_monotonic: float, links: ControlLinks) -> None:
        self.top = top
        self.run_dir = run_dir
        self.started_monotonic = started_monotonic
        self.socks = sockets.Sockets()
        self.links = links
        self.sock_dir: Path | None = None
        self.transport = top.controller.transport
        self.curve: security.Keys | None = None
        self.ctl_endpoint: str | None = None
        self.endpoints: dict[str, str] = {}  # each stage queue's, by stage
        self.cmd: zmq.Socket[Any] | None = None
        self.blocks = ""  # the token of the run's shared blocks ("": the run uses none)

    def open(self, remote: bool) -> str | None:
        """Bind the control and command sockets; an error when the CURVE keys cannot be read."""
        error = None
        self.sock_dir = socket_dir(self.run_dir)
        net = self.top.controller
        # processes on other hosts reach the queues over tcp whatever the topology says
        self.transport = "tcp" if remote else net.transport
        if self.transport == "tcp":
            # queues bind a port the OS picks and report it when they register
            if net.curve:
                try:
                    keys = paths.resolve(self.top, net.keys) if net.keys else None
                    self.curve = security.Keys.load(keys) if keys else security.Keys.generate()
                except (OSError, ValueError) as exc:
                    error = f"controller.keys: {exc}"
            self.socks.curve = self.curve
            host = f"[{net.host}]" if ":" in net.host else net.host
            self.endpoints = {n: f"tcp://{host}:*" for n in self.top.stages}
            self.links.ctl = self.socks.router(f"tcp://{host}:*")
            self.ctl_endpoint = sockets.bound_endpoint(self.links.ctl, net.advertise)
        else:
            self.ctl_endpoint = f"ipc://{self.sock_dir}/ctl"
            self.endpoints = {n: f"ipc://{self.sock_dir}/q{i}" for i, n in enumerate(self.top.stages)}
            self.links.ctl = self.socks.router(self.ctl_endpoint)
            self.blocks = _blocks_token()
        return error

    def open_commands(self) -> None:
        """The command socket, and both sockets on the poller."""
        assert self.links.ctl is not None, "open() binds the control socket"
        self.cmd = self.socks.router(f"ipc://{self.sock_dir}/cmd")
        self.links.poller.register(self.links.ctl, zmq.POLLIN)
        self.links.poller.register(self.cmd, zmq.POLLIN)

    def wiring(self, dead_letters: Path, import_paths: tuple[str, ...], journal: Path, opt: RunOptions) -> Wiring:
        """What every child is told: the endpoints, the run's files, and with `opt`'s
        resume and trace_sample where the skip file and the trace records are."""
        assert self.ctl_endpoint is not None, "open() binds the control socket"
        return Wiring(
            endpoints=dict(self.endpoints),
            control_endpoint=self.ctl_endpoint,
            dead_letters=str(dead_letters),
            import_paths=import_paths,
            period_s=self.top.controller.period_s,
            parent_pid=os.getpid(),
            journal=str(journal),
            skip=str(self.run_dir / "skip.ids") if opt.resume else "",
            curve=dataclasses.asdict(self.curve) if self.curve is not None else None,
            advertise=self.top.controller.advertise,
            slot_dir=self.sock_dir,
            trace_dir=str(self.run_dir / TRACE_DIR) if opt.trace_sample else "",
            trace_sample=opt.trace_sample,
            blocks=self.blocks,
            run_dir=str(self.run_dir),
            stage_dir=str(self.top.base_dir.absolute()),
        )

    def write_run_file(self, ended: bool) -> None:
        write_run_file(
            self.run_dir,
            name=self.top.name,
            command=f"ipc://{self.sock_dir}/cmd",
            topology=self.top.path.resolve() if self.top.path is not None else None,
            started=time.time() - (time.monotonic() - self.started_monotonic),
            period_s=self.top.controller.period_s,
            ended=ended,
            endpoints={"control": self.ctl_endpoint, **self.endpoints},
            curve_server_key=self.curve.server_public if self.curve is not None else None,
        )

    def close(self) -> None:
        """Close the sockets, mark run.json ended, remove the socket directory."""
        if self.links.ctl is not None:
            self.links.ctl.close(linger=0)
        if self.cmd is not None:
            self.cmd.close(linger=0)
            try:
                self.write_run_file(ended=True)
            except StorageError as exc:  # its controller's pid is gone: still read as ended
                log.info("%s", exc)
        self.socks.close()
        if self.sock_dir is not None:
            shutil.rmtree(self.sock_dir, ignore_errors=True)
        if self.blocks:  # every child is gone: no block of the run is in use
            blocks.sweep(self.blocks)


def _blocks_token() -> str:
    """The run's shared-blocks token (every process on this host, ipc), or "" when
    there is no /dev/shm or SEDAMP_SHARED_MEMORY=0 (or off) turns them off (frames carry
    every buffer then). Blocks that runs killed before their end left behind go first."""
    if not blocks.threshold(os.environ.get(blocks.ENV, "")) or not blocks.available():
        return ""
    blocks.sweep_stale()
    return blocks.run_token()

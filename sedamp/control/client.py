"""Finding a running topology and talking to its controller's command socket.

Every run writes ``run.json`` in its run directory (`<workdir>/runs/<name>-<time>-<id>/`)
with the controller's pid, command endpoint and topology file. `find_run` picks a live
one: the run directory given; or the newest live run of a topology file (looked for in
the workdir beside it, where runs go by default); or of a topology name, or the newest
live run at all, in the workdir given (default ``.sedamp`` in the current directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zmq

from sedamp.control.rundir import WORKDIR_NAME, read_run, run_is_live, workdir_of
from sedamp.errors import SedampError, WireError
from sedamp.runtime import wire

# How long a command waits for the controller's reply.
COMMAND_TIMEOUT_S = 5.0


def is_topology_file(target: str) -> bool:
    """Whether `target` names a topology file rather than a topology's name."""
    return target.endswith((".yaml", ".yml")) or Path(target).is_file()


def find_run(target: str | None, workdir: Path | None) -> dict[str, Any]:
    """The run.json of a live run; raises SedampError saying what was looked at."""
    if target and (Path(target) / "run.json").exists():
        info = read_run(Path(target))
        if info is None or not run_is_live(info):
            raise SedampError(f"{target}: that run is not running")
        return info
    topology = Path(target).resolve() if target and is_topology_file(target) else None
    if topology is not None:
        runs = workdir_of(topology.parent, workdir) / "runs"
    else:
        runs = (workdir if workdir is not None else Path(WORKDIR_NAME)) / "runs"
    candidates = []
    for d in runs.glob("*/run.json") if runs.is_dir() else []:
        info = read_run(d.parent)
        if not info or not run_is_live(info):
            continue
        if target is None or (info.get("topology") == str(topology) if topology else info.get("name") == target):
            candidates.append(info)
    if not candidates:
        what = f"of {target} " if topology else f"named {target!r} " if target else ""
        raise SedampError(
            f"no running topology {what}under {runs} (give the topology file, its run directory, or --workdir)"
        )
    return max(candidates, key=lambda i: i.get("started", 0))


def command(info: dict[str, Any], cmd: dict[str, Any], timeout_s: float = COMMAND_TIMEOUT_S) -> dict[str, Any]:
    """Send one command to a run's controller and return its reply."""
    ctx: zmq.Context[Any] = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    try:
        s.connect(info["command"])
        s.send_multipart(wire.simple(wire.COMMAND, cmd))
        if not s.poll(int(timeout_s * 1000)):
            raise SedampError(f"run {info.get('name')!r} (pid {info.get('pid')}) did not answer in {timeout_s:.0f} s")
        try:
            msg = wire.parse(s.recv_multipart())
        except WireError as exc:
            raise SedampError(f"bad reply from the controller: {exc}") from None
        if msg.kind != wire.REPLY:
            raise SedampError("bad reply from the controller")
        reply: dict[str, Any] = msg.fields[0]
        return reply
    finally:
        s.close()

"""Runs in the controller process: the control commands of a running topology.

`sedamp status`, `sedamp scale` and `sedamp top` send a COMMAND to the run's command
socket (`sedamp.control.client`); the controller answers each with `answer`, which
calls one function per verb. Each reads the roster and the last record and returns the
reply (``{"ok": True, ...}`` or ``{"ok": False, "error": ...}``); `scale` also sets a
pool's target, pins the stage (the pool controller leaves it alone from then on) and
adds its decision to the next record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from sedamp.control import policy
from sedamp.control.roster import Roster
from sedamp.errors import WireError
from sedamp.runtime import wire

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandContext:
    """What a command may read, and the collections `scale` adds to."""

    roster: Roster
    cores: int
    last_record: dict[str, Any] | None  # the last period's record (None before the first)
    pinned: set[str]  # stages whose size `sedamp scale` set
    decisions: list[dict[str, Any]]  # decisions for the next record


def status(cmd: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
    """The last period's record."""
    if ctx.last_record is None:
        return {"ok": False, "error": "no measurement yet: try again after one period"}
    return {"ok": True, "record": ctx.last_record}


def scale(cmd: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
    """Set a pool's size and keep it there."""
    stages, top = ctx.roster.stages, ctx.roster.top
    name, n = cmd.get("stage"), cmd.get("workers")
    if not isinstance(name, str) or name not in stages:
        return {"ok": False, "error": f"no stage {name!r} (stages: {', '.join(stages)})"}
    st = stages[name]
    if st.spec.kind == "source":
        return {"ok": False, "error": f"{name!r} is a source: it runs in one process"}
    if top.is_member(name):
        return {"ok": False, "error": f"{name!r} is inside a group: scale {top.head_of(name)!r}"}
    if top.route_key(name) is not None:
        return {"ok": False, "error": f"{name!r} is key-routed: its worker count is fixed"}
    if st.ended:
        return {"ok": False, "error": f"{name!r} has finished"}
    if st.stateful:
        return {"ok": False, "error": f"{name!r} keeps state until its input ends (finish()): fixed size"}
    lo, hi = policy.worker_bounds(st.spec, ctx.cores)
    if not isinstance(n, int) or isinstance(n, bool) or not lo <= n <= hi:
        return {"ok": False, "error": f"workers for {name!r} must be within {lo}..{hi}, got {n!r}"}
    old, st.target = st.target, n
    ctx.pinned.add(name)  # the pool controller leaves it alone from now on
    d = policy.Decision(name, old, n, "set by sedamp scale (the controller no longer resizes it)")
    ctx.decisions.append(d.as_dict())
    log.info("stage %s: %d -> %d workers: %s", name, old, n, d.reason)
    return {"ok": True, "stage": name, "from": old, "to": n}


VERBS: dict[str, Callable[[dict[str, Any], CommandContext], dict[str, Any]]] = {"status": status, "scale": scale}


def answer(cmd: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
    """The reply to one command."""
    op = cmd.get("op")
    verb = VERBS.get(op) if isinstance(op, str) else None
    if verb is None:
        return {"ok": False, "error": f"unknown command {op!r}"}
    return verb(cmd, ctx)


def serve(sock: zmq.Socket[Any], frames: list[bytes], ctx: CommandContext) -> None:
    """Answer one command that came on the command socket `sock` (ROUTER: `frames`
    start with the client's id); a malformed one is answered with its error."""
    if len(frames) < 2:
        return
    rid = frames[0]
    try:
        msg = wire.parse(frames[1:])
        if msg.kind != wire.COMMAND:
            raise WireError("expected COMMAND")
        reply = answer(msg.fields[0], ctx)
    except WireError as exc:
        reply = {"ok": False, "error": f"bad command: {exc}"}
    try:
        sock.send_multipart([rid, *wire.simple(wire.REPLY, reply)], zmq.NOBLOCK)
    except zmq.ZMQError as exc:
        log.debug("command client went away: %s", exc)

"""Fusion: which consecutive stages the runtime runs in one pool. Pure.

A stage boundary costs a queue process and two hand-overs per batch (on the tiny
benchmark, each boundary of near-free stages costs more CPU than the stages). For work
bound by the CPU of one machine, a pool whose workers call a chain of stages one after
the other does what separate pools would, with no hop: N workers each running a, b and
c sustain N / (s_a + s_b + s_c) events per second, which is exactly what the best split
of N workers over three pools reaches when it is perfectly balanced, and the split
only reaches it then. So under ``controller.policy: adaptive`` the runtime fuses every
chain it can keep the meaning of, and keeps apart what would change behaviour:

- a source (it runs alone, pacing the input), and a sink (one worker by default: it
  often writes one file or holds state that must not be split over many workers);
- an edge that is keyed, conditional, or one of several (fan-out, fan-in): the events
  would no longer reach the stage they reach now;
- a stage that sets its own pool (``workers``, ``queue``, ``batch``, ``timeout_s``,
  ``max_events``, ``max_rss_mb``) or ``max_event_bytes``: the user chose it for that
  stage alone (the first stage of a fused run may set ``queue`` and ``batch``, which
  act on the input of the whole run);
- a stage in a ``group:`` (the user fused by hand) or with ``fuse: never``.

`plan` returns the topology with each fused run as a group (its name starts with
``fused:``, which no user group can) and one `Fusion` per boundary it decided on, with
the reason, for the metrics stream and the summary. Events crossing a fused boundary
are what they would have been after MessagePack (`sedamp.runtime.chain`), so fusing
never changes results.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from sedamp.spec.keys import POOL_KEYS
from sedamp.spec.model import StageSpec, Topology

__all__ = ["FUSED_PREFIX", "Fusion", "plan"]

FUSED_PREFIX = "fused:"
# what the first stage of a fused run may set: they act on the queue in front of the run
_HEAD_MAY_SET = ("queue", "batch")


@dataclass(frozen=True)
class Fusion:
    """One decision about the boundary between two stages: fused, or kept apart, and why."""

    upstream: str
    downstream: str
    action: Literal["fuse", "apart"]
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"from": self.upstream, "to": self.downstream, "action": self.action, "reason": self.reason}


def plan(topology: Topology) -> tuple[Topology, list[Fusion]]:
    """The topology to run, with fused runs as groups, and the decision at each boundary
    of a chain. Only under ``policy: adaptive``; a static topology runs as written."""
    if topology.controller.policy != "adaptive":
        return topology, []
    decisions: list[Fusion] = []
    nxt: dict[str, str] = {}  # fused boundaries: upstream -> downstream
    for spec in topology.stages.values():
        if spec.kind == "source" or len(spec.to) != 1:  # a source runs in its own process
            continue
        down = topology.stages[spec.to[0].stage]
        if spec.group is not None and spec.group == down.group:  # fused by hand
            continue
        why_not = _apart(topology, spec, down)
        if why_not is None:
            decisions.append(Fusion(spec.name, down.name, "fuse", _why(spec, down)))
            nxt[spec.name] = down.name
        else:
            decisions.append(Fusion(spec.name, down.name, "apart", why_not))
    runs: list[list[str]] = []
    for head in [n for n in nxt if n not in nxt.values()]:  # the chain is acyclic (validated)
        run = [head]
        while run[-1] in nxt:
            run.append(nxt[run[-1]])
        runs.append(run)
    if not runs:
        return topology, decisions
    group_of = {name: FUSED_PREFIX + "+".join(run) for run in runs for name in run}
    stages = {
        name: dataclasses.replace(s, group=group_of[name]) if name in group_of else s
        for name, s in topology.stages.items()
    }
    return dataclasses.replace(topology, stages=_in_chain_order(stages, runs)), decisions


def _apart(topology: Topology, up: StageSpec, down: StageSpec) -> str | None:
    """Why `up` and `down` (up's only edge leads to down) stay apart, or None."""
    edge = up.to[0]
    for s in (up, down):
        if s.group is not None:
            return f"{s.name!r} is in group {s.group!r}"
        if s.fuse == "never":
            return f"{s.name!r} says fuse: never"
    if down.kind == "sink":
        return f"{down.name!r} is a sink, which keeps its own pool (one worker unless it says otherwise)"
    if edge.key is not None or edge.when is not None:
        return f"the edge {up.name} -> {down.name} is {'keyed' if edge.key is not None else 'conditional'}"
    senders = topology.upstream(down.name)
    if senders != [up.name]:
        return f"{down.name!r} also receives from {', '.join(repr(x) for x in senders if x != up.name)}"
    own = [k for k in (*POOL_KEYS, "max_event_bytes") if k in down.given]
    own_up = [k for k in (*POOL_KEYS, "max_event_bytes") if k in up.given and k not in _HEAD_MAY_SET]
    if own or own_up:
        name, keys = (down.name, own) if own else (up.name, own_up)
        return f"{name!r} sets {', '.join(keys)} for its own pool"
    return None


def _why(up: StageSpec, down: StageSpec) -> str:
    return (
        f"{up.name!r} sends only to {down.name!r}, which only it feeds, and neither sets its own pool: "
        "one pool calling both has the parallelism of two pools without the hop between them"
    )


def _in_chain_order(stages: dict[str, StageSpec], runs: list[list[str]]) -> dict[str, StageSpec]:
    """`stages` with the members of each run in chain order (a group is read in file
    order), the run placed where its first stage is."""
    members = {name for run in runs for name in run}
    head_run = {run[0]: run for run in runs}
    ordered: dict[str, StageSpec] = {}
    for name, s in stages.items():
        if name in head_run:
            for m in head_run[name]:
                ordered[m] = stages[m]
        elif name not in members:
            ordered[name] = s
    return ordered

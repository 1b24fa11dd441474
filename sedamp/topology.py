"""Topology YAML -> validated, frozen spec objects. Pure: starts no process.

SPEC SECTION (the dataclasses below are the contract the runtime uses; loading and
validation are implemented further down).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

StageKind = Literal["source", "handler", "sink"]
OnFull = Literal["block", "reject", "drop"]
PolicyName = Literal["adaptive", "static"]

# Default bound of a stage queue, in events. Large enough to keep every worker of a
# cheap stage busy across a scheduling hiccup, small enough that a slow stage holds
# little memory: 1024 events of a few KiB each is a few MiB per stage.
DEFAULT_CAPACITY_EVENTS = 1024


@dataclass(frozen=True)
class WorkersSpec:
    """Pool size bounds. A fixed integer N in YAML gives min == max == N."""

    min: int = 1
    max: int | None = 1  # None = as many as the controller's core budget allows

    @property
    def fixed(self) -> bool:
        return self.min == self.max


@dataclass(frozen=True)
class QueueSpec:
    capacity: int = DEFAULT_CAPACITY_EVENTS
    on_full: OnFull = "block"


@dataclass(frozen=True)
class Edge:
    """An edge to `stage`; with `key`, events are routed by `event[key]` so that equal
    keys always reach the same worker of that stage."""

    stage: str
    key: str | None = None


@dataclass(frozen=True, eq=False)
class StageSpec:
    name: str
    kind: StageKind
    ref: str  # "module:attribute"
    params: Mapping[str, Any] = field(default_factory=dict)
    workers: WorkersSpec = WorkersSpec()
    queue: QueueSpec = QueueSpec()
    batch: int | None = None  # events per message; None = the runtime's default
    to: tuple[Edge, ...] = ()
    line: int | None = None  # line of the stage's key in the topology file
    ref_line: int | None = None  # line of its source:/handler:/sink: value


@dataclass(frozen=True)
class ControllerSpec:
    cores: int | None = None  # None = "auto": the number of usable cores
    period_s: float = 0.5
    policy: PolicyName = "adaptive"
    drain_timeout_s: float = 10.0  # how long Ctrl-C/SIGTERM lets in-flight work finish


@dataclass(frozen=True, eq=False)
class Topology:
    name: str
    stages: Mapping[str, StageSpec]  # in file order
    controller: ControllerSpec = ControllerSpec()
    path: Path | None = None  # the YAML file, if loaded from one
    base_dir: Path = Path(".")  # directory added to sys.path for user modules

    def upstream(self, name: str) -> list[str]:
        """Names of the stages with an edge to `name`, in file order."""
        return [s.name for s in self.stages.values() if any(e.stage == name for e in s.to)]

    def route_key(self, name: str) -> str | None:
        """The key `name` is routed by (all edges into a stage agree), or None."""
        for s in self.stages.values():
            for e in s.to:
                if e.stage == name and e.key is not None:
                    return e.key
        return None

    def sources(self) -> list[StageSpec]:
        return [s for s in self.stages.values() if s.kind == "source"]

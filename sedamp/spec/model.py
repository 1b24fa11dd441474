"""The topology model: the frozen spec objects a validated topology file becomes, and the
choices each field allows. Pure: the contract the runtime, the controller and the CLI read;
`sedamp.spec.load` builds it, nothing here reads a file or starts a process."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "BUDGET_MIN_EVENTS",
    "DEFAULT_CAPACITY_EVENTS",
    "DEFAULT_ERROR_BUDGET",
    "EXECUTOR_CHOICES",
    "KINDS",
    "MAX_BATCH",
    "ON_ERROR_THEN",
    "ON_FULL_CHOICES",
    "POLICY_CHOICES",
    "ControllerSpec",
    "Edge",
    "ExecutorName",
    "FUSE_CHOICES",
    "FuseChoice",
    "OnErrorSpec",
    "OnErrorThen",
    "OnFull",
    "PolicyName",
    "QueueSpec",
    "StageKind",
    "StageSpec",
    "Topology",
    "Transport",
    "WorkersSpec",
]

StageKind = Literal["source", "handler", "sink"]
OnFull = Literal["block", "reject", "drop"]
PolicyName = Literal["adaptive", "static"]
OnErrorThen = Literal["dead_letter", "skip", "fail"]
Transport = Literal["ipc", "tcp"]
ExecutorName = Literal["local", "ray"]
FuseChoice = Literal["auto", "never"]
FUSE_CHOICES: tuple[FuseChoice, ...] = ("auto", "never")
EXECUTOR_CHOICES: tuple[ExecutorName, ...] = ("local", "ray")
KINDS: tuple[StageKind, ...] = ("source", "handler", "sink")
ON_FULL_CHOICES: tuple[OnFull, ...] = ("block", "reject", "drop")
POLICY_CHOICES: tuple[PolicyName, ...] = ("adaptive", "static")
ON_ERROR_THEN: tuple[OnErrorThen, ...] = ("dead_letter", "skip", "fail")

# Default bound of a stage queue, in events, per process that may produce into it
# (`QueueSpec.bound`). Large enough to hold four of the largest batches
# (MAX_BATCH_EVENTS) per producer: a queue lets each producer hold credit for at most
# capacity / (2 x producers) events, so each can have two batches on their way while
# the other is handled (at a bound of one batch per producer, three near-free stages
# ran 15-20% slower; at two, the single worker of a pool of near-free stages waited
# for credit after every batch, and tiny ran 10% slower). It grew with the batches from
# 2048 (see MAX_BATCH_EVENTS). A queue fills only while its stage falls behind, and
# large events meet the bound in bytes first (DEFAULT_MAX_BYTES): 16384 events of a few
# KiB are a few tens of MiB per producer.
DEFAULT_CAPACITY_EVENTS = 16384
# Default bound of a stage queue in bytes (events and the buffers beside them): with
# large events (arrays, images) the bound in bytes is the one that holds, so a job's
# memory is bounded by its topology whatever the size of its events.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
# The share of its events a stage may dead-letter before the run stops (on_error.budget).
# High enough that a stage failing on a bad input now and then, or even on most inputs,
# goes on; low enough that a handler failing on every event (a typo, a missing field)
# stops within seconds instead of filling the dead-letter file with the whole input.
DEFAULT_ERROR_BUDGET = 0.9
# The events a stage must have handled before its error budget is judged. Fewer would
# stop a run on the bad luck of its first few events; more would let a handler that
# fails on everything run longer (at 50 events/s a typo still stops within a second or
# two of its first failure).
BUDGET_MIN_EVENTS = 50
# The largest batch a stage may ask for, in events (fixed, or the ceiling of the adaptive size).
MAX_BATCH = 65536


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
    """A stage's input queue: its bound in events and bytes, and what a producer does when it is full."""

    capacity: int = DEFAULT_CAPACITY_EVENTS
    on_full: OnFull = "block"
    max_bytes: int = DEFAULT_MAX_BYTES
    # the topology left capacity out: it is then per producer (`bound`)
    per_producer: bool = False

    def bound(self, producers: int) -> int:
        """The queue's bound in events when up to `producers` processes may produce into
        it: `capacity` as given, or by default `capacity` for each of them."""
        return self.capacity * max(1, producers) if self.per_producer else self.capacity


@dataclass(frozen=True)
class OnErrorSpec:
    """What a worker does when the handler raises on an event (or the event killed a
    worker twice): try again up to `retry` times, `backoff_s` apart (doubling), then
    dead-letter it, skip it (counted), or fail the run. Once the stage has handled
    BUDGET_MIN_EVENTS events, dead-lettering more than `budget` of them (a fraction)
    stops the run: 1 never does."""

    retry: int = 0
    backoff_s: float = 0.0
    then: OnErrorThen = "dead_letter"
    budget: float = DEFAULT_ERROR_BUDGET


@dataclass(frozen=True)
class Edge:
    """An edge to `stage`; with `key`, events are routed by `event[key]` so that equal
    keys always reach the same worker of that stage."""

    stage: str
    key: str | None = None
    # with `when`, only events whose fields equal all of these go along this edge
    when: tuple[tuple[str, Any], ...] | None = None


@dataclass(frozen=True, eq=False)
class StageSpec:
    """One stage of a topology, as validated from its YAML: what runs, where its outputs
    go, and its pool's bounds."""

    name: str
    kind: StageKind
    ref: str  # "module:attribute"
    params: Mapping[str, Any] = field(default_factory=dict)
    workers: WorkersSpec = WorkersSpec()
    queue: QueueSpec = QueueSpec()
    batch: int | None = None  # fixed events per batch; None = adaptive
    batch_bounds: tuple[int, int] | None = None  # floor and ceiling of the adaptive batch
    to: tuple[Edge, ...] = ()
    line: int | None = None  # line of the stage's key in the topology file
    ref_line: int | None = None  # line of its source:/handler:/sink: value
    group: str | None = None  # consecutive stages of one group share one process pool
    on_error: OnErrorSpec = OnErrorSpec()
    timeout_s: float | None = None  # a handler call running longer gets its worker killed
    max_events: int | None = None  # a worker that handled this many is replaced
    max_rss_mb: int | None = None  # a worker whose memory grew past this is replaced
    dedupe: bool = False  # sinks: handle each event id once, even when redelivered
    max_event_bytes: int | None = None  # outputs larger than this are dead-lettered
    fuse: FuseChoice = "auto"  # "never": the runtime never fuses it with a neighbour (spec.fusion)
    given: frozenset[str] = frozenset()  # the keys the topology file set on this stage


@dataclass(frozen=True)
class ControllerSpec:
    """The topology's `controller:` section: cores, the period, the pool policy and the drain deadline."""

    cores: int | None = None  # None = "auto": the number of usable cores
    period_s: float = 0.5
    policy: PolicyName = "adaptive"
    drain_timeout_s: float = 10.0  # how long Ctrl-C/SIGTERM lets in-flight work finish
    transport: Transport = "ipc"  # ipc:// in the private run directory, or tcp://
    host: str = "127.0.0.1"  # tcp: the address sockets bind to
    advertise: str | None = None  # tcp: the address peers connect to (default: host)
    curve: bool = True  # tcp: CURVE encryption and authentication (required off loopback)
    keys: str | None = None  # tcp: a directory made by `sedamp keys` (default: fresh keys per run)
    executor: ExecutorName = "local"  # where workers run: local processes, or Ray actors (implies tcp)
    address: str | None = None  # ray: the cluster's address (default: RAY_ADDRESS, else the local cluster)


@dataclass(frozen=True, eq=False)
class Topology:
    """A validated topology: its stages in file order and its controller settings."""

    name: str
    stages: Mapping[str, StageSpec]  # in file order
    controller: ControllerSpec = ControllerSpec()
    path: Path | None = None  # the YAML file, if loaded from one
    # the topology file's folder: user modules import from it, stage code runs in it (so
    # relative paths in params resolve against it), and runs are kept in its .sedamp/
    base_dir: Path = Path(".")

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

    def chain_of(self, name: str) -> list[StageSpec]:
        """The stages a worker of `name` runs, in order: its group (validated to be a
        chain starting at `name`), or just `name`."""
        head = self.stages[name]
        if head.group is None:
            return [head]
        return [s for s in self.stages.values() if s.group == head.group]

    def paths_to(self, name: str) -> int:
        """How many paths lead from the sources to `name` (2 means two or more)."""
        edges = {s.name: [e.stage for e in s.to] for s in self.stages.values()}
        return count_paths(edges, [s.name for s in self.sources()]).get(name, 0)

    def head_of(self, name: str) -> str:
        """The first stage of `name`'s group (whose queue and pool serve the group)."""
        s = self.stages[name]
        if s.group is None:
            return name
        return next(x.name for x in self.stages.values() if x.group == s.group)

    def is_member(self, name: str) -> bool:
        """True for a grouped stage other than the first: it has no queue or pool."""
        return self.head_of(name) != name


def count_paths(edges: Mapping[str, Sequence[str]], sources: Sequence[str]) -> dict[str, int]:
    """For each stage, how many paths lead to it from `sources` along `edges` (stage ->
    the stages it sends to), capped at 2: an event id is a position at its source, and
    a copy keeps its parent's id, so a stage reached by two paths can see one id twice.
    The graph is acyclic (the checks refuse cycles first)."""
    counts: dict[str, int] = {}
    indegree = {n: 0 for n in edges}
    for targets in edges.values():
        for t in targets:
            indegree[t] = indegree.get(t, 0) + 1
    ready = [n for n in edges if indegree.get(n, 0) == 0]
    for s in sources:
        counts[s] = 1
    while ready:
        n = ready.pop()
        for t in edges.get(n, ()):
            counts[t] = min(2, counts.get(t, 0) + counts.get(n, 0))
            indegree[t] -= 1
            if indegree[t] == 0:
                ready.append(t)
    return counts


# A size written in a topology: a number of bytes and a unit (KB = 1000, KiB = 1024, ...).
SIZE_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*([KMGT]i?B|B)?\s*$"
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_SIZE_UNITS.update({"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40})


def parse_size(value: object) -> int | None:
    """Bytes from an integer or a string such as ``256MiB``, ``1.5GB`` or ``4096``;
    None if it is neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str) or not re.match(SIZE_PATTERN, value):
        return None
    text = value.strip()
    number = text.rstrip("KMGTiB ")
    unit = text[len(number) :].strip()
    return int(float(number) * _SIZE_UNITS[unit])

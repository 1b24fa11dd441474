"""Pure: what a run is given (`RunOptions`) and what it returns (`Summary`, one
`StageSummary` per stage), and which of the exit codes of `sedamp run` (`sedamp.errors`) it maps to.
No process or socket here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sedamp.errors import EXIT_FAILED_EVENTS, EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_ERROR
from sedamp.executor.base import Executor
from sedamp.observe.failures import FailureKind


@dataclass(frozen=True)
class RunOptions:
    """How a run is made beyond its topology (the command line's flags, or the Python API's arguments)."""

    workdir: Path | None = None  # run directories and journals; None: .sedamp beside the topology file
    cores: int | None = None  # overrides the topology's controller.cores
    drain_timeout_s: float | None = None  # overrides controller.drain_timeout_s
    executor: Executor | None = None
    on_tick: Callable[[dict[str, Any]], None] | None = None  # called every period (and at the end) with the record
    handle_signals: bool = True
    metrics_path: Path | None = None  # write one JSON line per period (docs/controller.md, "Metrics stream")
    resume: bool = False  # skip the source positions every sink journaled in earlier runs
    trace_sample: float = 0.0  # > 0: that share of events is traced into the run's traces/ (docs/traces.md)


@dataclass(frozen=True)
class StageSummary:
    """One stage's counters at the end of a run."""

    name: str
    kind: str
    events_in: int
    events_out: int
    failed: int
    workers: int  # largest pool size during the run
    restarts: int
    dropped: int = 0  # events its full queue made producers drop (on_full: drop)
    rejected: int = 0  # events its full queue refused (on_full: reject), dead-lettered
    retried: int = 0  # handler calls made again after a failure (on_error: retry)
    skipped: int = 0  # events that failed and were dropped (on_error: skip)
    duplicates: int = 0  # redelivered events a dedupe sink did not handle again
    poisoned: int = 0  # events that killed POISON_DEATHS workers (dead-lettered unless skip)
    discarded: int = 0  # events dropped on Ctrl-C: waiting in its queue, or read and not sent (a source)
    timeouts: int = 0  # workers killed because a handler call passed timeout_s
    recycled: int = 0  # workers replaced after max_events or max_rss_mb
    stats: dict[str, Any] | None = None  # what a source says of itself (its stats(): listening, answered)


@dataclass(frozen=True)
class Summary:
    """What a run did: its stages' counters, its outcome and where its files are."""

    name: str
    run_dir: Path
    dead_letters: Path
    stages: tuple[StageSummary, ...]
    wall_s: float
    events: int  # events read by the sources
    failed: int  # events sent to the dead-letter file (handler failures and rejections)
    interrupted: bool
    error: str | None
    fusion: tuple[dict[str, str], ...] = ()  # the runtime's fuse decisions (spec.fusion.Fusion.as_dict)
    # the first failure of each kind per stage, with how many were like it (observe.failures)
    failures: tuple[FailureKind, ...] = ()
    other_failures: Mapping[str, int] = field(default_factory=dict)  # per stage, past the kinds kept
    outputs: tuple[tuple[str, Path], ...] = ()  # what the sinks write: (stage, absolute path) (spec.paths)
    # events that left the pipeline: written by a sink, filtered, failed, skipped, shed
    # (None when events are fanned out or copied, and so no longer map to source events)
    done: int | None = None
    discarded: int = 0  # events read but dropped on Ctrl-C (waiting in a queue): a re-run does them

    @property
    def events_per_s(self) -> float:
        """Events read per second; of an interrupted run, events done per second."""
        n = self.done if self.interrupted and self.done is not None else self.events
        return n / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.error is not None:
            return EXIT_RUN_ERROR
        if self.failed:
            return EXIT_FAILED_EVENTS
        return EXIT_OK

    def fused_runs(self) -> list[list[str]]:
        """The chains of stages the runtime ran in one pool each, in chain order."""
        nxt = {f["from"]: f["to"] for f in self.fusion if f["action"] == "fuse"}
        runs = []
        for head in [n for n in nxt if n not in nxt.values()]:
            run = [head]
            while run[-1] in nxt:
                run.append(nxt[run[-1]])
            runs.append(run)
        return runs

    def stage(self, name: str) -> StageSummary:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "run_dir": str(self.run_dir),
            "dead_letters": str(self.dead_letters),
            "wall_s": round(self.wall_s, 4),
            "events": self.events,
            "done": self.done,
            "discarded": self.discarded,
            "events_per_s": round(self.events_per_s, 1),
            "failed": self.failed,
            "interrupted": self.interrupted,
            "error": self.error,
            "exit_code": self.exit_code,
            "stages": [s.__dict__ for s in self.stages],
            "fusion": list(self.fusion),
            "failures": [k.as_dict() for k in self.failures],
            "other_failures": dict(self.other_failures),
            "outputs": [{"stage": stage, "path": str(path)} for stage, path in self.outputs],
        }

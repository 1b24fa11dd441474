"""What each runtime process is started with: the config of a queue, a worker and a
source (plain data the controller builds and the executor hands to the child as JSON),
the downstream edges they send on, and the routing ids they go by. Pure data, light to
import: the controller imports this, not the role modules that run in the children."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sedamp.runtime import wire

# Most events a worker asks for at once (the ceiling of its batch size): its outlets
# ask each downstream queue for credit for two such batches. Every batch costs a
# handful of messages whatever its size, and each message wakes a process: for
# near-free events 512 beat 256 by 15-20%; with queues, source reads and PUTs grown to
# match, 2048 took 0.85x the time of 512 and 4096 0.92x that of 2048 (tiny, 1M events,
# whole runs in interleaved pairs: the queues' CPU fell from ~0.55 to ~0.35 s at
# 2048); 8192 gained ~7% more for twice the memory of a full queue. The ceiling binds
# only stages cheaper than ~12 us per event: the adaptive size aims at batches of ~50 ms.
MAX_BATCH_EVENTS = 4096


@dataclass(frozen=True)
class OutputConfig:
    """Where one downstream edge goes (plain data, passed to child processes)."""

    stage: str
    endpoint: str
    key: str | None
    partitions: int
    on_full: str = "block"
    when: list[list[Any]] | None = None  # [[field, value], ...]: only matching events go here
    max_bytes: int = 256 * 1024 * 1024  # its queue's bound in bytes: a larger event cannot go


@dataclass(frozen=True)
class QueueConfig:
    """What a queue process starts with (sent by the controller through the executor)."""

    stage: str
    endpoint: str  # where the data ROUTER binds
    control_endpoint: str
    capacity: int
    partitions: int  # > 1 for a key-routed stage: one per worker index
    period_s: float
    parent_pid: int
    dead_letters: str = ""  # where poison events go
    on_poison: str = "dead_letter"  # the stage's on_error.then: dead_letter | skip | fail
    producers: int = 1  # how many processes may produce into it at once (their credit is shared)
    max_bytes: int = 256 * 1024 * 1024  # the bound in bytes (sedamp.runtime.flow)
    curve: dict[str, str] | None = None  # the run's CURVE keys (tcp endpoints)
    advertise: str | None = None  # the host peers reach this queue at (tcp)
    trace_dir: str = ""  # where this process writes its trace records ("": not traced)
    trace_sample: float = 0.0  # the share of events traced (sedamp.runtime.tracing)
    blocks: str = ""  # the run's shared blocks (sedamp.runtime.blocks): their token; "": none


def queue_identity(stage: str) -> str:
    return f"q:{stage}"


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker process starts with (sent by the controller through the executor)."""

    stage: str
    kind: str  # "handler" or "sink"
    index: int
    ref: str
    params: dict[str, Any]
    input_endpoint: str
    outputs: tuple[OutputConfig, ...]
    control_endpoint: str
    batch: int | None  # fixed batch size, or None = adaptive
    dead_letters: str
    import_paths: tuple[str, ...]
    period_s: float
    parent_pid: int
    # the stages after this one in its group, each {"stage", "kind", "ref", "params"}:
    # the worker calls them directly, in order, on what the previous one returned
    chain_rest: tuple[dict[str, Any], ...] = ()
    batch_min: int = 1  # floor and ceiling of the adaptive batch size
    batch_max: int = 256
    on_error: tuple[int, float, str] = (0, 0.0, "dead_letter")  # retry, backoff_s, then
    timeout_s: float | None = None
    slot_path: str = ""  # this worker's slot (which event is in the handler, deadline)
    max_events: int | None = None
    max_rss_mb: int | None = None
    dedupe: bool = False
    max_event_bytes: int = wire.MAX_EVENT_BYTES
    journal: str = ""  # the run's journal directory (sinks marked resumable write to it)
    curve: dict[str, str] | None = None  # the run's CURVE keys (tcp endpoints)
    # names this worker to the controller (unique in the run); 0: its pid. The
    # controller gives a token so that it knows the identity before the process runs
    # (a cluster executor places the process later, on a host of its choosing).
    token: int = 0
    trace_dir: str = ""  # where this process writes its trace records ("": not traced)
    trace_sample: float = 0.0  # the share of events traced (sedamp.runtime.tracing)
    blocks: str = ""  # the run's shared blocks (sedamp.runtime.blocks): their token; "": none
    run_dir: str = ""  # the run directory, told to stage code (runtime.stage.enter_run)
    stage_dir: str = ""  # the topology's folder: the current directory of stage code


def worker_identity(stage: str, index: int, token: int) -> str:
    return f"w:{stage}:{index}:{token}"


@dataclass(frozen=True)
class SourceConfig:
    """What a source process starts with (sent by the controller through the executor)."""

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
    trace_dir: str = ""  # where this process writes its trace records ("": not traced)
    trace_sample: float = 0.0  # the share of events traced (sedamp.runtime.tracing)
    blocks: str = ""  # the run's shared blocks (sedamp.runtime.blocks): their token; "": none
    slot_path: str = ""  # its slot: the time it is blocked and waiting, as it accrues ("": none)
    run_dir: str = ""  # the run directory, told to stage code (runtime.stage.enter_run)
    stage_dir: str = ""  # the topology's folder: the current directory of stage code


def source_identity(stage: str, pid: int) -> str:
    return f"s:{stage}:{pid}"

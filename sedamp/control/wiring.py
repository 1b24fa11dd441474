"""Pure: the config each child of a run is started with (`QueueConfig`,
`WorkerConfig`, `SourceConfig`), from the topology and the run's `Wiring` (where the
sockets listen, where the run's files are). No process or socket here: the roster
passes these configs to the executor."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sedamp.runtime import wire
from sedamp.runtime.configs import MAX_BATCH_EVENTS, OutputConfig, QueueConfig, SourceConfig, WorkerConfig
from sedamp.spec import StageSpec, Topology
from sedamp.spec.fusion import FUSED_PREFIX

# Events a source reads per PUT: large enough to amortise the per-message cost for
# near-free events (as MAX_BATCH_EVENTS), small enough that a slow first stage still
# gets work to all its workers at once (the queue splits batches for workers that ask
# for fewer). A source of large events reads fewer (`READ_BYTES_SHARE`).
SOURCE_BATCH_EVENTS = 4096


@dataclass(frozen=True)
class Wiring:
    """What every child of one run is told besides its stage: the run's endpoints and
    files. With tcp a queue's endpoint is known once it registered (a new Wiring)."""

    endpoints: dict[str, str]  # each stage queue's data endpoint, by stage
    control_endpoint: str
    dead_letters: str
    import_paths: tuple[str, ...]
    period_s: float
    parent_pid: int
    journal: str = ""
    skip: str = ""  # the ids a resumed run skips ("" when not resuming)
    curve: dict[str, str] | None = None
    advertise: str | None = None
    slot_dir: Path | None = None  # where the workers' slots are made (None: no slots)
    producers: dict[str, int] = field(default_factory=dict)  # processes that may produce into each queue
    trace_dir: str = ""  # where the processes write trace records ("": not traced)
    trace_sample: float = 0.0  # the share of events traced
    blocks: str = ""  # the token of the run's shared blocks ("": none, frames only)
    run_dir: str = ""  # the run directory (stage code may keep files for the run there)
    stage_dir: str = ""  # the topology's folder, where stage code runs (relative paths resolve there)


def partitions(top: Topology, name: str) -> int:
    """How many partitions a stage's queue keeps: one per worker when key-routed."""
    if top.route_key(name) is None:
        return 1
    return top.stages[name].workers.min


def outputs(top: Topology, spec: StageSpec, w: Wiring) -> tuple[OutputConfig, ...]:
    """Where a stage sends its outputs: one outlet per edge."""
    return tuple(
        OutputConfig(
            e.stage,
            w.endpoints[e.stage],
            e.key,
            partitions(top, e.stage),
            top.stages[e.stage].queue.on_full,
            [list(p) for p in e.when] if e.when else None,
            top.stages[e.stage].queue.max_bytes,
        )
        for e in spec.to
    )


def queue_config(top: Topology, name: str, w: Wiring) -> QueueConfig:
    spec = top.stages[name]
    return QueueConfig(
        stage=name,
        endpoint=w.endpoints[name],
        control_endpoint=w.control_endpoint,
        capacity=spec.queue.bound(w.producers.get(name, 1)),
        partitions=partitions(top, name),
        period_s=w.period_s,
        parent_pid=w.parent_pid,
        dead_letters=w.dead_letters,
        on_poison=spec.on_error.then,
        producers=w.producers.get(name, 1),
        max_bytes=spec.queue.max_bytes,
        curve=w.curve,
        advertise=w.advertise,
        trace_dir=w.trace_dir,
        trace_sample=w.trace_sample,
        blocks=w.blocks,
    )


def source_config(top: Topology, spec: StageSpec, w: Wiring, slot_path: str = "") -> SourceConfig:
    return SourceConfig(
        stage=spec.name,
        ref=spec.ref,
        params=dict(spec.params),
        outputs=outputs(top, spec, w),
        control_endpoint=w.control_endpoint,
        batch=spec.batch or SOURCE_BATCH_EVENTS,
        dead_letters=w.dead_letters,
        import_paths=w.import_paths,
        period_s=w.period_s,
        parent_pid=w.parent_pid,
        max_event_bytes=spec.max_event_bytes or wire.MAX_EVENT_BYTES,
        skip=w.skip,
        curve=w.curve,
        trace_dir=w.trace_dir,
        trace_sample=w.trace_sample,
        blocks=w.blocks,
        slot_path=slot_path,
        run_dir=w.run_dir,
        stage_dir=w.stage_dir,
    )


def worker_config(top: Topology, spec: StageSpec, index: int, token: int, slot_path: str, w: Wiring) -> WorkerConfig:
    """A worker of `spec`'s pool (it runs the whole group `spec` heads)."""
    chain = top.chain_of(spec.name)
    return WorkerConfig(
        token=token,
        stage=spec.name,
        kind=spec.kind,
        index=index,
        ref=spec.ref,
        params=dict(spec.params),
        input_endpoint=w.endpoints[spec.name],
        outputs=outputs(top, chain[-1], w),
        control_endpoint=w.control_endpoint,
        batch=spec.batch,
        dead_letters=w.dead_letters,
        import_paths=w.import_paths,
        period_s=w.period_s,
        parent_pid=w.parent_pid,
        batch_min=spec.batch_bounds[0] if spec.batch_bounds else 1,
        batch_max=spec.batch_bounds[1] if spec.batch_bounds else MAX_BATCH_EVENTS,
        chain_rest=tuple(
            {
                "stage": m.name,
                "kind": m.kind,
                "ref": m.ref,
                "params": dict(m.params),
                "on_error": (m.on_error.retry, m.on_error.backoff_s, m.on_error.then),
                "crossing": (m.group or "").startswith(FUSED_PREFIX),
            }
            for m in chain[1:]
        ),
        on_error=(spec.on_error.retry, spec.on_error.backoff_s, spec.on_error.then),
        timeout_s=spec.timeout_s,
        slot_path=slot_path,
        max_events=spec.max_events,
        max_rss_mb=spec.max_rss_mb,
        dedupe=chain[-1].dedupe,
        max_event_bytes=chain[-1].max_event_bytes or wire.MAX_EVENT_BYTES,
        journal=w.journal,
        curve=w.curve,
        trace_dir=w.trace_dir,
        trace_sample=w.trace_sample,
        blocks=w.blocks,
        run_dir=w.run_dir,
        stage_dir=w.stage_dir,
    )

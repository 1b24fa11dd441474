"""A simulated period's record: the metrics line of a real run, built with the
recorder's own types (`recorder.Period`, `StageRecord`, `StageCounts`, `WorkerSample`)
so that its keys are the real ones and every reader of a metrics stream (`sedamp
report`, `sedamp top`'s table, Prometheus) reads it. Pure.

What a model does not know is what a real run does not measure: no latency
percentiles (null), no memory (null), process ids 0, no failures. `t` and `elapsed_s`
are simulated seconds since the start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sedamp.control import policy
from sedamp.control.recorder import Period, StageCounts, StageRecord, WorkerSample
from sedamp.observe import metrics

if TYPE_CHECKING:
    from sedamp.control.simmodel import SimPool, SimSource
    from sedamp.control.simulate import Simulation

_NO_LATENCY: dict[str, dict[str, float] | None] = {"queue_wait": None, "service": None, "path": None}


def period_record(sim: Simulation, budget: float, final: bool) -> dict[str, Any]:
    """The record of the period that ends now (its counters not yet reset)."""
    from sedamp.control.simulate import STEP_S, batch_events

    dt = sim.dt
    records: dict[str, StageRecord] = {}
    pools = {p.name: p for p in sim.pools}
    for s in sim.sources:
        records[s.name] = _source_record(s, dt)
    for p in sim.pools:
        for i, member in enumerate(p.members):
            records[member] = _pool_record(sim, p, member, i == 0, dt, batch_events(sim, p))
    records = {n: records[n] for n in sim.top.stages if n in records}  # in file order, as a real run
    others = sim.profile.others_at(sim.t - STEP_S)
    used = sum(p.cpu_s for p in sim.pools) / dt + sim.profile.runtime_cores
    blocked = {n: r.blocked for n, r in records.items() if not sim.top.is_member(n)}
    down = {s.name: list(s.down) for s in sim.sources} | {p.name: list(p.down) for p in sim.pools}
    fill = {p.name: p.queue / p.capacity for p in pools.values()}
    period = Period(
        t=round(sim.t, 3), elapsed_s=round(sim.t, 3), final=final, cores=sim.cores,
        cpu_percent=round(min(100.0, 100 * (used + others) / sim.cores), 1), load1=0.0, stages=records, decisions=[],
        own_cores=round(used, 2), other_cores=others, budget=round(budget, 2),
        runtime_cores=sim.profile.runtime_cores, bottleneck=metrics.bottleneck(blocked, down, fill),
    )  # fmt: skip
    return period.as_dict()


def _source_record(s: SimSource, dt: float) -> StageRecord:
    sent = round(s.sent)
    counts = StageCounts(
        kind="source", group=None, workers=0, target=0, queue=None,
        counts={"in": sent, "out": sent, "total": s.events},
        dropped=0, rejected=0, poisoned=0, timeouts=0, recycled=0, restarts=0,
    )  # fmt: skip
    rate = round(s.period_sent / dt, 2)
    return StageRecord(
        counts=counts, bounds=(1, 1), arrivals_per_s=rate, completions_per_s=rate, latency_ms=dict(_NO_LATENCY),
        batch_size=None, events_per_batch=None, worker_detail=(),
        blocked_s_per_s=round(s.blocked_s / dt, 3), waiting_s_per_s=round(s.waiting_s / dt, 3),
    )  # fmt: skip


def _pool_record(sim: Simulation, p: SimPool, member: str, head: bool, dt: float, batch: float) -> StageRecord:
    """A pool's stage (each member of a group; the pool's workers on its first)."""
    spec = sim.top.stages[member]
    done = round(p.done)
    counts = StageCounts(
        kind=spec.kind, group=spec.group, workers=p.workers, target=p.goal,
        queue={"length": int(p.queue), "capacity": p.capacity, "leased": 0, "credit": None, "expired": 0},
        counts={"in": done, "out": done if spec.kind != "sink" else 0, "failed": 0},
        dropped=0, rejected=0, poisoned=0, timeouts=0, recycled=0, restarts=0, ready=p.ready,
    )  # fmt: skip
    return StageRecord(
        counts=counts,
        bounds=policy.worker_bounds(spec, sim.cores),
        arrivals_per_s=round(p.period_in / dt, 2) if head else round(p.period_done / dt, 2),
        completions_per_s=round(p.period_done / dt, 2),
        latency_ms=dict(_NO_LATENCY),
        batch_size=batch if head else None,
        events_per_batch=None,
        worker_detail=_workers(p, dt) if head else (),
        blocked_s_per_s=round(p.blocked_s / dt, 3) if head else None,
        waiting_s_per_s=round(p.waiting_s / dt, 3) if head else None,
    )


def _workers(p: SimPool, dt: float) -> tuple[WorkerSample, ...]:
    """Its workers, all alike (a fluid model does not tell them apart); those still
    starting neither work nor wait."""
    out = []
    per = p.ready * dt
    for i in range(p.workers):
        if i < p.ready and per > 0:
            busy, blocked, waiting = (round(min(1.0, x / per), 3) for x in (p.busy_s, p.blocked_s, p.waiting_s))
            out.append(WorkerSample(i, 0, round(100 * min(1.0, p.cpu_s / per), 1), None, busy, blocked, waiting))
        else:
            out.append(WorkerSample(i, 0, None, None, 0.0))
    return tuple(out)

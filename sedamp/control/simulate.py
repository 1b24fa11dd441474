"""A simulated run: the controller's own pool policy against a model of the stages, in
simulated time (`sedamp simulate`, `sedamp.simulate`). Pure: no process, socket or clock.

    topology, cores, Profile (costs per stage and phase, set-up times, events, rate, noise)
        |
        v
    Simulation.run: every STEP_S, simmodel.step moves the pools, queues and sources on;
        every controller.period_s (the first two sooner, `policy.record_gap`, and one
        soon after a pool ends, `policy.END_RECORD`, as in a real run) it builds the
        period's record (the metrics line of a real run,
        `recorder.Period.as_dict`: the same keys) and the views
        the recorder would build from it, and calls what the real controller calls:
        `policy.decide` (growth to the DS2 share, rebalancing, the thrashing guard,
        shrinking) with the budget `policy.machine_budget` gives; the decisions set
        each pool's target, and new workers take events once started (Profile.start_s)
        and set up (StageCost.setup_s).
        |
        v
    SimResult: the records (the metrics stream; the last one "final": true), the
        decisions, the simulated wall time and the limit the cores set.

The first split is the runtime's (`policy.initial_targets`, on the topology the
runtime would run: `spec.fusion.plan`), unless `split` gives one. Under
`controller.policy: static` (or `adaptive=False`) nothing is resized.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sedamp.control import policy
from sedamp.control.simmodel import SimPool, SimSource, step
from sedamp.control.simprofile import Profile, check_against, events_of
from sedamp.control.simrecord import period_record
from sedamp.errors import SimulationError
from sedamp.spec import Topology, fusion, load_topology

__all__ = ["STEP_S", "SimResult", "Simulation", "simulate"]

# The model's time step: short against a period (100 steps in 0.5 s) and against the
# fastest events that matter (a queue of 2,048 drains in ~0.2 s at 10,000 events/s),
# long enough that 100,000 events on 64 cores take seconds to simulate.
STEP_S = 0.005
# A simulated run still going after this long is taken to never end.
MAX_SIMULATED_S = 3600.0
# However busy the machine, the pools get this much CPU: the scheduler gives every
# runnable process a share, and a real run crawls rather than stops.
MIN_POOL_CORES = 0.1
# The noise factor on a stage's costs never goes below this (costs stay positive).
MIN_NOISE_FACTOR = 0.1


@dataclass(frozen=True)
class SimResult:
    """What a simulated run returns."""

    name: str
    cores: int
    events: int  # per source
    wall_s: float  # simulated time until every event left the pipeline
    limit_s: float  # the CPU the events cost, over the cores: no split can end sooner
    records: tuple[dict[str, Any], ...]  # the metrics stream, the last one final
    decisions: tuple[dict[str, Any], ...]  # every decision, with "elapsed_s"
    pools: tuple[str, ...] = ()  # the stages with a pool of their own (a group's first)

    @property
    def peaks(self) -> dict[str, int]:
        """The most workers each pool had."""
        out: dict[str, int] = {}
        for r in self.records:
            for name in self.pools:
                out[name] = max(out.get(name, 0), r["stages"][name]["workers"])
        return out


def simulate(
    topology: Topology | str | Path,
    cores: int,
    profile: Profile | None = None,
    *,
    split: Mapping[str, int] | None = None,
    adaptive: bool | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    schedule: Sequence[tuple[float, Mapping[str, int]]] = (),
) -> SimResult:
    """Simulate a run of `topology` (a Topology, or a YAML file loaded without importing
    its stages) on `cores` cores with the costs of `profile`; see the module docstring.
    `schedule`: pool sizes to set at given times, their workers ready at once (an
    oracle that knows when the load changes, to compare a controller with).
    Raises SimulationError for a profile that does not fit the topology."""
    if not isinstance(topology, Topology):
        topology = load_topology(topology, check_handlers=False)
    return Simulation(topology, cores, profile or Profile(), split, adaptive, schedule).run(on_record)


class Simulation:
    """One simulated run: the model, the policy's state, the records so far."""

    def __init__(
        self,
        topology: Topology,
        cores: int,
        profile: Profile,
        split: Mapping[str, int] | None = None,
        adaptive: bool | None = None,
        schedule: Sequence[tuple[float, Mapping[str, int]]] = (),
    ) -> None:
        if cores < 1:
            raise SimulationError(f"cores must be at least 1, got {cores}")
        check_against(profile, topology)
        self.top, _ = fusion.plan(topology)
        self.cores = cores
        self.profile = profile
        self.events = events_of(profile, topology)
        self.adaptive = self.top.controller.policy == "adaptive" if adaptive is None else adaptive
        self.period_s = self.top.controller.period_s
        self.dt = self.period_s  # the length of the period being recorded (the first is shorter)
        self.rng = random.Random(profile.seed)
        self.state = policy.PolicyState()
        self.pools = self._pools(split)
        self.feeds = {  # each pool's producers: sources and pools
            p.name: {self.top.head_of(u) for u in self.top.upstream(p.name)} for p in self.pools
        }
        self.sources = [
            SimSource(s.name, tuple(self.top.head_of(e.stage) for e in s.to), self.events, profile.rate)
            for s in self.top.sources()
        ]
        self.t = 0.0
        self.others_seen: float | None = None
        self.records: list[dict[str, Any]] = []
        self.decisions: list[dict[str, Any]] = []
        self.cpu_total_s = 0.0
        self.schedule = sorted(schedule, key=lambda x: x[0])  # see `simulate`

    def _pools(self, split: Mapping[str, int] | None) -> list[SimPool]:
        """The pools in topological order, each with its first split's workers."""
        first = dict(policy.initial_targets(self.top, self.cores))
        for name, n in (split or {}).items():
            if name not in first:
                raise SimulationError(f"split: no pool {name!r} (pools: {', '.join(first)})")
            first[name] = n
        pools = []
        for name in _topological(self.top):
            spec = self.top.stages[name]
            if spec.kind == "source" or self.top.is_member(name):
                continue
            chain = self.top.chain_of(name)
            costs = tuple(self.profile.of(s.name) for s in chain)
            pool = SimPool(
                name, tuple(s.name for s in chain), costs, tuple(self.top.head_of(e.stage) for e in chain[-1].to),
                spec.queue.bound(policy.producers_of(self.top, name, self.cores)), 0,
            )  # fmt: skip
            pool.resize(first[name], self.profile.launch_s + max(c.setup_s for c in costs))
            pool.join_ready(0.0)
            pools.append(pool)
        return pools

    # ---------------------------------------------------------------- the run

    def run(self, on_record: Callable[[dict[str, Any]], None] | None = None) -> SimResult:
        """Step until every event has left the pipeline; a record every period."""
        self._draw_noise()
        self.dt = policy.record_gap(0, self.period_s)  # the first periods are short, as a real run's
        next_period, last, n = self.dt, 0.0, 0
        while not self._finished():
            machine = max(MIN_POOL_CORES, self.cores - self.profile.runtime_cores - self.profile.others_at(self.t))
            step(self.pools, self.sources, machine, self.events, self.t, STEP_S)
            self.t += STEP_S
            self._follow_schedule()
            for p in self.pools:
                p.join_ready(self.t)
            if self._end_streams() and self._resizing_goes_on():  # as a real run's controller
                next_period = min(next_period, self.t + policy.END_RECORD * self.period_s)
            if self.t >= next_period:
                n += 1
                next_period += policy.record_gap(n, self.period_s)
                self.dt, last = self.t - last, self.t
                self._period(on_record)
            if self.t > MAX_SIMULATED_S:
                raise SimulationError(
                    f"the simulated run has not ended after {MAX_SIMULATED_S:.0f} s: is a stage's cost far too high?"
                )
        self.dt = max(STEP_S, self.t - last)
        self._emit(self._record(final=True), on_record)
        return SimResult(
            self.top.name, self.cores, self.events, round(self.t, 3), round(self.cpu_total_s / self.cores, 3),
            tuple(self.records), tuple(self.decisions), tuple(p.name for p in self.pools),
        )  # fmt: skip

    def _follow_schedule(self) -> None:
        """Set the pool sizes the schedule gives for this time, their workers ready now."""
        while self.schedule and self.schedule[0][0] <= self.t + 1e-9:
            _, sizes = self.schedule.pop(0)
            for p in self.pools:
                if p.name in sizes and not p.ended:
                    p.resize(sizes[p.name], self.t)

    def _finished(self) -> bool:
        return all(p.ended for p in self.pools)

    def _end_streams(self) -> bool:
        """A pool whose every producer has finished and whose queue is empty ends (its
        workers leave, as a real run's do at the end of their stream). Whether one did."""
        done = {s.name for s in self.sources if s.sent >= s.events - 1e-6}
        done |= {p.name for p in self.pools if p.ended}
        ended = False
        for p in self.pools:  # in topological order: an end passes down the chain in one step
            if not p.ended and p.queue < 1e-6 and all(u in done for u in self.feeds[p.name]):
                p.end()
                done.add(p.name)
                ended = True
        return ended

    def _resizing_goes_on(self) -> bool:
        """Whether a pool the controller may resize still runs (`policy.END_RECORD`)."""
        return any(not p.ended and policy.resizable(self.top, p.name, self.cores) for p in self.pools)

    def _period(self, on_record: Callable[[dict[str, Any]], None] | None) -> None:
        """The period's record, then (adaptive) the controller's decisions, as a real
        run's `_tick` does; then the counters start again and the noise is drawn anew."""
        record = self._record(final=False)
        budget = max(1, round(record["system"]["budget"]))
        views = self._views(budget)
        for p in self.pools:
            self.cpu_total_s += p.cpu_s
            p.reset_period()
        for s in self.sources:
            s.reset_period()
        if self.adaptive:
            for d in policy.decide(views, budget, self.t, self.state, self.others_seen or 0.0):
                pool = next(p for p in self.pools if p.name == d.stage)
                lo, hi = policy.worker_bounds(self.top.stages[d.stage], self.cores)
                pool.resize(max(lo, min(hi, d.new)), self.t + self.profile.start_s + _setup_s(pool))
                record["decisions"].append(d.as_dict())
                self.decisions.append({"elapsed_s": round(self.t, 3), **d.as_dict()})
        self._draw_noise()
        self._emit(record, on_record)

    def _emit(self, record: dict[str, Any], on_record: Callable[[dict[str, Any]], None] | None) -> None:
        self.records.append(record)
        if on_record is not None:
            on_record(record)

    def _record(self, final: bool) -> dict[str, Any]:
        if final:
            self.cpu_total_s += sum(p.cpu_s for p in self.pools)
        others = self.profile.others_at(self.t - STEP_S)
        budget, self.others_seen = policy.machine_budget(self.cores, self.cores, others, self.others_seen)
        budget = max(policy.MIN_BUDGET, budget - self.profile.runtime_cores)
        return period_record(self, budget, final)

    def _views(self, budget: int) -> list[policy.StageView]:
        """What the recorder would hand the policy this period (`Recorder.views`)."""
        views = []
        pools = {p.name: p for p in self.pools}
        visits = policy.visits_of(
            self.feeds,
            {p.name: p.period_in / self.dt for p in self.pools},
            {**{p.name: p.period_done / self.dt for p in self.pools},
             **{s.name: s.period_sent / self.dt for s in self.sources}},
            [s.name for s in self.sources],
        )  # fmt: skip
        finishing: set[str] = set()
        if all(s.sent >= s.events - 1e-6 for s in self.sources):  # as the recorder: every source has ended
            finishing = policy.finishing(
                self.feeds,
                {p.name: p.queue for p in self.pools},
                {p.name: p.period_done / self.dt for p in self.pools},
                {p.name: p.period_in / self.dt for p in self.pools},
                self.period_s,
            )
        for p in self.pools:
            if p.ended:
                continue  # as a real run's recorder leaves out a stage whose queue has ended
            spec = self.top.stages[p.name]
            lo, hi = policy.worker_bounds(spec, self.cores)
            per_worker = p.ready * self.dt
            views.append(
                policy.StageView(
                    name=p.name,
                    target=p.goal,
                    lo=lo,
                    hi=hi,
                    queue_length=int(p.queue),
                    capacity=p.capacity,
                    batch_size=batch_events(self, p),
                    busy=min(1.0, p.busy_s / per_worker) if per_worker else 0.0,
                    completions_per_s=p.period_done / self.dt,
                    resizable=policy.resizable(self.top, p.name, self.cores),
                    arrivals_per_s=p.period_in / self.dt,
                    downstream_fill=max((pools[d].queue / pools[d].capacity for d in p.down), default=0.0),
                    downstream=tuple(p.down),
                    starting=p.starting,
                    cpu=min(1.0, p.cpu_s / per_worker) if per_worker else 0.0,
                    visits=visits.get(p.name),
                    finishing=p.name in finishing,
                )
            )
        return views

    def _draw_noise(self) -> None:
        if self.profile.noise > 0:
            for p in self.pools:
                p.noise = max(MIN_NOISE_FACTOR, self.rng.gauss(1.0, self.profile.noise))


def batch_events(sim: Simulation, p: SimPool) -> float:
    """The batch its workers ask for: fixed, the profile's, or as `runtime.pace` adapts
    it (events worth TARGET_BATCH_S of handling, within the stage's bounds)."""
    from sedamp.runtime.configs import MAX_BATCH_EVENTS
    from sedamp.runtime.pace import INITIAL_BATCH_EVENTS, TARGET_BATCH_S

    spec = sim.top.stages[p.name]
    if spec.batch is not None:
        return float(spec.batch)
    if sim.profile.batch_events is not None:
        return sim.profile.batch_events
    lo, hi = spec.batch_bounds or (1, MAX_BATCH_EVENTS)
    per_event = p.cost_now_s / p.speed if p.cost_now_s > 0 else 0.0
    wanted = TARGET_BATCH_S / per_event if per_event > 0 else float(INITIAL_BATCH_EVENTS)
    return float(max(lo, min(hi, round(wanted))))


def _setup_s(pool: SimPool) -> float:
    return max(c.setup_s for c in pool.costs)


def _topological(top: Topology) -> list[str]:
    """The stages in an order where every stage comes after those that send to it."""
    indegree = {n: 0 for n in top.stages}
    for s in top.stages.values():
        for e in s.to:
            indegree[e.stage] += 1
    ready = [n for n, d in indegree.items() if d == 0]
    out = []
    while ready:
        n = ready.pop(0)
        out.append(n)
        for e in top.stages[n].to:
            indegree[e.stage] -= 1
            if indegree[e.stage] == 0:
                ready.append(e.stage)
    return out

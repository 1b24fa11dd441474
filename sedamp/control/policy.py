"""Pure decision functions of the controller: how many workers each stage gets.

No process, socket or clock here: every function takes plain values and returns a
decision, so each can be unit-tested on recorded numbers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from sedamp.observe.words import plural
from sedamp.spec import StageSpec, Topology


def usable_cores() -> int:
    """Cores this process may run on (respects CPU affinity and cgroup-limited sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def worker_bounds(spec: StageSpec, cores: int) -> tuple[int, int]:
    """A stage's pool bounds with `max: None` resolved to the core budget."""
    lo = spec.workers.min
    hi = spec.workers.max if spec.workers.max is not None else max(lo, cores)
    return lo, hi


def resizable(topology: Topology, name: str, cores: int, stateful: bool = False) -> bool:
    """May the controller resize the pool of stage `name`: its bounds leave room, it is
    not key-routed, and its workers keep no state (`stateful`, as they report it)?"""
    lo, hi = worker_bounds(topology.stages[name], cores)
    return lo != hi and not stateful and topology.route_key(name) is None


def producers_of(topology: Topology, name: str, cores: int) -> int:
    """How many processes may produce into stage `name`'s queue at once: a source is one,
    a pool as many as its largest size."""
    producers = 0
    for up in topology.upstream(name):
        u = topology.stages[up]
        producers += 1 if u.kind == "source" else worker_bounds(topology.stages[topology.head_of(up)], cores)[1]
    return producers


def capacity_problems(topology: Topology, cores: int) -> list[str]:
    """Queues too small for the processes that may produce into them.

    A queue caps each producer's credit at ``capacity // (2 * producers)`` (`producers_of`),
    so that idle producers can hold at most half the room and the workers always have
    buffered work to drain: a producer with data then always gets credit. Below two
    events of room per producer that cap is 1 and idle producers can hold all the room
    while the one with data waits for credit that never comes."""
    out = []
    for name, spec in topology.stages.items():
        if spec.kind == "source" or topology.is_member(name):
            continue
        producers = producers_of(topology, name, cores)
        bound = spec.queue.bound(producers)
        if bound < 2 * producers:
            out.append(
                f"the queue of stage {name!r} holds {plural(bound, 'event')} "
                f"but up to {producers} processes "
                f"produce into it: give it queue: {{capacity: {2 * producers}}} or more (2 per producer), "
                "or fewer upstream workers"
            )
    return out


def initial_targets(topology: Topology, cores: int) -> Mapping[str, int]:
    """Pool sizes to start with, before anything is measured.

    Fixed pools get their size. The core budget left after them is shared evenly among
    the stages with a range, each clamped to its bounds: with nothing measured yet an
    even share is the guess that is least wrong, and it uses every core from the start.
    """
    targets: dict[str, int] = {}
    ranged = []
    fixed_total = 0
    for s in topology.stages.values():
        if s.kind == "source" or topology.is_member(s.name):
            continue  # grouped stages after the first share the first's pool
        lo, hi = worker_bounds(s, cores)
        if lo == hi:
            targets[s.name] = lo
            fixed_total += lo
        else:
            ranged.append(s)
    if ranged:
        share = max(1, (cores - fixed_total) // len(ranged))
        for s in ranged:
            lo, hi = worker_bounds(s, cores)
            targets[s.name] = min(hi, max(lo, share))
    return targets


# ---------------------------------------------------------------- the pool controller
#
# SEDA's thread-pool controller, for process pools under one core budget. Every period
# it looks at each stage's queue and workers and may move the stage's target by one:
#
#   grow    the queue holds at least GROW_QUEUE_FRACTION of its capacity (or two full
#           batches) and the workers are at least GROW_BUSY busy (FILLING_BUSY when the
#           queue fills at FILLING_FACTOR x its rate): the stage is a
#           bottleneck. Of several, the one completing the fewest events per second,
#           one per period; never a stage whose next queue is already half full.
#           It grows in one step to its share of the budget (as DS2 sizes Flink
#           operators): in a pipeline every stage runs at the rate of the bottleneck,
#           so the cores each uses (workers x busy) are in proportion to the work an
#           event costs there, and the split that balances the pipeline gives each
#           stage budget x its cores / all cores used. One worker at a time took ~10 s
#           to go from 1 to 8 workers, so in a short job the first split decided.
#           Within the stage's max and the core budget; when the budget is spent, a
#           worker is taken from a stage that has sat idle. The budget counts
#           the cores the pools keep busy (workers x busy fraction), not processes: a
#           worker waiting on a slow neighbour holds no core, and counting processes
#           would stop a pipeline with more stages than cores from ever growing its
#           bottleneck. A growth needs GROW_HEADROOM_CORES of the budget unused, unless
#           the queue is nearly full or filling faster than it drains: then its producers
#           are about to be held back, so their cores will be free (bounded by
#           OVERSUBSCRIBE x the budget in processes).
#   shrink  the workers have been under SHRINK_BUSY busy for IDLE_TIMEOUT_S: the pool
#           gives back the workers its load does not need, down to its min.
#
# Safeguards: a stage just changed is left alone for COOLDOWN_PERIODS (hysteresis, so
# noise cannot make a pool oscillate); a growth that did not raise the stage's
# completions by THRASH_GAIN within that time is undone and growth is barred for
# THRASH_BAR_PERIODS (SEDA's thrashing guard). The guard's clock starts when the new
# worker is ready: a worker whose setup() loads a model for longer than a period has not
# had its chance to pay yet, and a stage with workers still starting does not grow again.
# Stages whose handler keeps state to emit at the end (finish()) or that are key-routed
# are never resized.

# The first record (and so the first decision) comes after FIRST_PERIOD of a period,
# the second SECOND_RECORD of a period from the start, the others a period apart
# (`record_gap`). A pool's workers are ready within ~0.05 s of the start and their busy
# time is read as it accrues (their slots), so waiting a whole period only left a
# bottleneck at its first size: at half a period (0.25 s) the second worker of the
# heavy benchmark's one fused pool started 0.25 s after the first, a core idle
# meanwhile; at 0.1 s the job took 0.95-1.00 the time (four runs of 6 interleaved
# pairs against the code before). But 0.1 s in, the queue after the
# source is full with the source's first burst while what lies downstream has barely
# begun: in the shift benchmark the 1 ms stage a read backed up and busy and the 4 ms
# stage b after it, busy too, had an empty queue; a grew and took a core from b. So
# in the first record only a pool with no resizable pool after it may grow
# (`_first_look_is_clear`), and the second record, at a quarter of a second as the
# first was before, decides on the rest.
FIRST_PERIOD = 0.2
SECOND_RECORD = 0.5
# When a pool ends while a pool the controller may resize runs on, the next record comes
# END_RECORD of a period later instead of up to a period later: the cores the ended pool
# used are idle until another pool grows onto them. In the shift benchmark the 4 ms
# stage c, one worker with a long queue, grew in the record after b's pool ended, which
# came up to half a second later (a core idle meanwhile, one run in two).
END_RECORD = 0.1


def record_gap(n: int, period_s: float) -> float:
    """How long after the one before (the start, for n = 0) record n comes."""
    if n == 0:
        return FIRST_PERIOD * period_s
    if n == 1:
        return (SECOND_RECORD - FIRST_PERIOD) * period_s
    return period_s


GROW_QUEUE_FRACTION = 0.25
GROW_BUSY = 0.75
SHRINK_BUSY = 0.25
IDLE_TIMEOUT_S = 2.0
COOLDOWN_PERIODS = 3
THRASH_GAIN = 1.05
THRASH_BAR_PERIODS = 10
GROW_HEADROOM_CORES = 0.5
FULL_QUEUE_FRACTION = 0.75
DOWNSTREAM_FULL_FRACTION = 0.5
GROWING_FACTOR = 1.2  # a queue filling 20% faster than it drains holds its producers back soon
# A backed-up queue taking events this many times faster than its workers complete them
# grows at FILLING_BUSY: its work arrived within the period, whose mean busy time counts
# the time before it (the shift benchmark's c: its queue went 0 -> 395 at 2.8x its rate,
# its workers 73% busy over the period and saturated at its end; it grew a period later).
FILLING_FACTOR = 2.0
FILLING_BUSY = 0.5
OVERSUBSCRIBE = 2
# A stage that ends its work within this many periods (the sources have ended) holds
# cores only until then: a growth elsewhere that waited for them would wait a period
# longer than they are held (the shift benchmark's c, 1 worker on 2 cores for a period
# after b ended), while running a period oversubscribed costs little.
FINISHING_PERIODS = 2
# Other programs using this many cores (smoothed) make the machine shared: the pools do
# not grow past the budget, and yield cores when what they want is over it by the slack.
# A program that wants a whole core reads 0.6-0.7 of one while it contends with the
# pools on 2 cores; smoothed, it passed 0.5 only in the third record after it started.
SHARED_MACHINE_CORES = 0.4
YIELD_SLACK_CORES = 0.25
# Workers on CPU less than this share of their busy time wait on I/O (`waits_on_io`):
# such a pool does not yield cores, and its share is counted in the cores it holds.
YIELD_CPU_RATIO = 0.5
# Workers whose CPU time is at least this fraction of their busy time are not waiting for
# cores: a growth that leaves them so did not thrash, whatever its rate says (the work
# per event may have changed meanwhile).
CONTENTION_RATIO = 0.8
# Events that cost this much more than before, on workers that are not contending for
# cores, are other work (a change of phase).
WORK_CHANGED = 1.5


@dataclass(frozen=True)
class StageView:
    """What the pool controller sees of one stage in one period."""

    name: str
    target: int
    lo: int
    hi: int
    queue_length: int
    capacity: int
    batch_size: float
    busy: float  # mean fraction of the period its workers spent handling events
    completions_per_s: float
    resizable: bool = True
    arrivals_per_s: float = 0.0
    downstream_fill: float = 0.0  # the fullest queue this stage sends to, as a fraction of its capacity
    starting: int = 0  # workers started but not yet set up (setup() still running): capacity on its way
    cpu: float | None = None  # mean CPU fraction of its workers (psutil); None where not measured
    visits: float | None = None  # events it handles per event the sources read (`visits_of`); None: not known
    downstream: tuple[str, ...] = ()  # the pools it sends to
    # every source has ended and what is left for it (its queue and all upstream of it)
    # takes it less than FINISHING_PERIODS at its rate: its cores are as good as free
    finishing: bool = False

    @property
    def cores_used(self) -> float:
        """The cores its workers keep busy: their CPU where measured (a worker waiting on a
        disk or a socket inside its handler holds no core), else their busy time."""
        return self.target * (self.cpu if self.cpu is not None else self.busy)

    @property
    def need(self) -> float | None:
        """The cores it needs per event/s the sources read: its CPU (else busy) seconds
        per event it handles times the events it handles per event read. Unlike the
        cores it uses, this holds while queues fill or drain (the first periods of a
        run, a change of phase), when stages run at different rates. 0.0 for a stage
        with nothing to do; None when not known (nothing completed, or no visits)."""
        if self.completions_per_s <= 0:
            return 0.0 if self.arrivals_per_s <= 0 and self.queue_length == 0 else None
        if self.visits is None:
            return None
        share = self.cpu if self.cpu is not None else self.busy
        return self.target * share / self.completions_per_s * self.visits

    @property
    def waits_on_io(self) -> bool:
        """Its workers are on CPU less than YIELD_CPU_RATIO of their busy time: they wait
        on a disk or a socket inside their handler (contention for cores alone leaves a
        CPU-bound worker more than that: 2/3 of a core with one neighbour on 2 cores)."""
        return self.cpu is not None and self.busy > 0 and self.cpu < YIELD_CPU_RATIO * self.busy

    @property
    def on_cpu(self) -> bool:
        """Its busy workers are running, not waiting for a core: CPU close to busy time."""
        return self.cpu is not None and self.busy > 0.5 and self.cpu >= CONTENTION_RATIO * self.busy


@dataclass(frozen=True)
class Decision:
    """One change of a pool's target size, with the reason the metrics stream and the summary show."""

    stage: str
    old: int
    new: int
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"stage": self.stage, "from": self.old, "to": self.new, "reason": self.reason}


@dataclass
class PolicyState:
    """What the controller remembers between periods (mutated by `decide`)."""

    period: int = 0
    changed_at: dict[str, int] = field(default_factory=dict)
    idle_since: dict[str, float] = field(default_factory=dict)
    # stage -> (period, rate, target, service time per event) before its last growth
    grown: dict[str, tuple[int, float, int, float]] = field(default_factory=dict)
    barred_until: dict[str, int] = field(default_factory=dict)
    # barred stages whose growth was judged while the pools used every core of the budget
    contended: set[str] = field(default_factory=set)


def decide(
    views: list[StageView], budget: int, now_s: float, state: PolicyState, others: float = 0.0
) -> list[Decision]:
    """One period of the pool controller: the target changes to make, with reasons.
    `others`: the cores other programs on the machine use (smoothed).

    The steps run in this order, each on the targets the previous ones left: the idle
    clocks, the thrashing guard, the shrinking of idle stages, yielding cores to other
    programs, the growth of the bottleneck."""
    state.period += 1
    r = _Round(state, {v.name: v.target for v in views}, shared=others >= SHARED_MACHINE_CORES)
    _update_idle_clocks(views, now_s, state)
    decisions = _undo_unpaid_growth(views, budget, r)
    decisions += _shrink_idle(views, now_s, r)
    decisions += _yield_cores(views, budget, r)
    decisions += _grow_bottleneck(views, budget, r)
    return decisions


@dataclass
class _Round:
    """One period of `decide`: the targets as decided so far."""

    state: PolicyState
    targets: dict[str, int]
    shared: bool = False  # other programs use cores of the machine

    def cooling(self, name: str) -> bool:
        """Changed less than COOLDOWN_PERIODS ago: left alone (hysteresis)."""
        return self.state.period - self.state.changed_at.get(name, -(10**9)) < COOLDOWN_PERIODS

    def change(self, v: StageView, new: int, reason: str) -> Decision:
        d = Decision(v.name, self.targets[v.name], new, reason)
        self.targets[v.name] = new
        self.state.changed_at[v.name] = self.state.period
        return d


def _update_idle_clocks(views: list[StageView], now_s: float, state: PolicyState) -> None:
    """Start the idle clock of a stage with idle workers and no backlog; stop the others'."""
    for v in views:
        if v.busy < SHRINK_BUSY and v.queue_length < 2 * max(1.0, v.batch_size):
            state.idle_since.setdefault(v.name, now_s)
        else:
            state.idle_since.pop(v.name, None)


def _undo_unpaid_growth(views: list[StageView], budget: int, r: _Round) -> list[Decision]:
    """The thrashing guard: a growth that bought nothing is undone, and growth barred
    (noting whether the pools used every core then: see `_wants_to_grow`)."""
    state, p = r.state, r.state.period
    contended = _cores_used(views, r) + GROW_HEADROOM_CORES > budget
    by_name = {v.name: v for v in views}
    decisions = []
    for name, (at, before, old, cost) in list(state.grown.items()):
        v = by_name.get(name)
        if v is not None and v.starting:
            state.grown[name] = (p, before, old, cost)  # judged from when its workers are ready
            continue
        if v is None or p - at < COOLDOWN_PERIODS:
            continue
        del state.grown[name]
        if v.on_cpu or _work_changed(cost, _cost(v), r.targets[name] / max(1, old)):
            continue  # its workers run (no contention), or its events now cost another amount
        back = max(v.lo, min(old, r.targets[name] - 1))
        if v.completions_per_s < before * THRASH_GAIN and r.targets[name] > back and v.queue_length > 0:
            decisions.append(
                r.change(
                    v,
                    back,
                    f"growth did not pay: {v.completions_per_s:.0f}/s after vs {before:.0f}/s before; "
                    f"back to {back}, no growth for {THRASH_BAR_PERIODS} periods",
                )
            )
            state.barred_until[name] = p + THRASH_BAR_PERIODS
            if contended:
                state.contended.add(name)
            else:
                state.contended.discard(name)
    return decisions


def _shrink_idle(views: list[StageView], now_s: float, r: _Round) -> list[Decision]:
    """A stage idle for IDLE_TIMEOUT_S gives back, in one step, the workers its load
    does not need (what keeps the rest GROW_BUSY busy), down to its min: one worker
    per timeout took a pool of 64 at a trickle of work two minutes to let go."""
    decisions = []
    for v in views:
        since = r.state.idle_since.get(v.name)
        target = r.targets[v.name]
        if (
            v.resizable
            and since is not None
            and now_s - since >= IDLE_TIMEOUT_S
            and target > v.lo
            and not r.cooling(v.name)
        ):
            keep = max(v.lo, min(target - 1, math.ceil(target * v.busy / GROW_BUSY)))
            decisions.append(
                r.change(
                    v,
                    keep,
                    f"idle for {now_s - since:.1f} s (workers {v.busy:.0%} busy, queue empty): shrink to {keep}",
                )
            )
            r.state.idle_since[v.name] = now_s
    return decisions


def _yield_cores(views: list[StageView], budget: int, r: _Round) -> list[Decision]:
    """Another program took cores of the machine and the pools' CPU is over the budget
    left to them: each stage holding more than its share of that budget shrinks to it
    at once, so that the run and the other program do not both run slower on too few
    cores. (The budget is what the machine has less what the others use, smoothed.)"""
    # what the pools want, not what they get: while the cores are contended a busy
    # CPU-bound worker reads 2/3 of a core on 2 cores, and two of them read under the
    # slack (a neighbour's start was yielded to a period or two late)
    used = sum(v.target * (v.cpu if v.waits_on_io else max(v.cpu, v.busy)) for v in views if v.cpu is not None)
    if not r.shared or used <= budget + YIELD_SLACK_CORES:
        return []
    decisions = []
    for v in views:
        if v.cpu is None or v.waits_on_io:
            continue  # unmeasured, or its workers mostly wait: fewer would not free cores
        share = cores_share(v, views, budget)
        # its share rounded up: growth stops at the first pool over its share, so a
        # yield to below it would be undone by the next growth
        keep = max(v.lo, min(v.hi, math.ceil(share - 1e-9))) if share is not None else r.targets[v.name]
        if v.resizable and not r.cooling(v.name) and keep < r.targets[v.name]:
            reason = (
                f"the pools use {used:.1f} cores and other programs the rest of the machine "
                f"(a budget of {plural(budget, 'core')} left): shrink to {keep}"
            )
            decisions.append(r.change(v, keep, reason))
    return decisions


def _grow_bottleneck(views: list[StageView], budget: int, r: _Round) -> list[Decision]:
    """Grow the bottleneck: of the backed-up, busy stages, the one that completes the
    fewest events per second bounds the pipeline (a stage upstream of it looks busy
    only until backpressure reaches it). One growth per period."""
    used = _cores_used(views, r)
    room = used + GROW_HEADROOM_CORES <= budget
    for v in sorted(views, key=lambda x: (x.completions_per_s, -x.queue_length)):
        if not _wants_to_grow(v, r, views, budget, room):
            continue
        if room:
            if r.shared and _has_its_share(v, views, budget, r.targets[v.name]):
                continue  # more would be over its share, and yielded back next period
            free = int(budget - used)
            if share_of_budget(v, views, budget) - r.targets[v.name] > free:
                decisions = _rebalance(v, views, budget, r, free)  # the rest of its share from others
                if decisions:
                    return decisions
            step = max(1, min(share_of_budget(v, views, budget) - r.targets[v.name], free))
            return [_grow(v, r, f" ({used:.1f} of {budget} cores busy)", step)]
        decisions = _grow_past_budget(v, views, budget, r)
        if decisions:
            return decisions
    return []


def _cores_used(views: list[StageView], r: _Round) -> float:
    """The cores the pools will use at the targets decided so far (at their present use
    per worker), leaving out pools that finish within a period or two."""
    return sum(r.targets[x.name] / max(1, x.target) * x.cores_used for x in views if not x.finishing)


def _wants_to_grow(v: StageView, r: _Round, views: list[StageView], budget: int, room: bool) -> bool:
    """Resizable, below its max, not cooling, its outputs not waiting, and its queue
    backed up with busy workers. A stage that has just grown, whose new workers are
    ready, may grow on while its need says its share is larger still (the period that
    saw a change of phase measured a mix of the old work and the new): hysteresis
    holds back a change of direction, not the rest of a growth. A stage barred by the
    thrashing guard stays barred, unless its growth was judged while the pools used
    every core and cores are idle now (`room`): a growth that did not pay on contended
    cores says nothing of one onto an idle core (the shift benchmark's c was held at
    one worker, one core idle, for the 5 s of its bar once the stages before it had
    ended). One that did not pay with cores idle stays barred: something other than
    cores holds that stage back."""
    if not v.resizable or r.targets[v.name] >= v.hi or v.starting or v.finishing:
        return False
    if r.cooling(v.name) or v.name in r.state.grown:  # changed lately; its growth still judged
        if not _grows_on(v, r, views, budget):
            return False
    if r.state.barred_until.get(v.name, 0) > r.state.period and not (room and v.name in r.state.contended):
        return False
    if v.downstream_fill >= DOWNSTREAM_FULL_FRACTION:
        return False  # its outputs already wait: more workers here would only wait too
    if r.state.period == 1 and not _first_look_is_clear(v, views):
        return False
    threshold = min(GROW_QUEUE_FRACTION * v.capacity, 2 * max(1.0, v.batch_size))
    # a queue filling fast took its load in the period: its busy time mixes before and after
    filling = v.arrivals_per_s > FILLING_FACTOR * max(1.0, v.completions_per_s)
    return not (v.queue_length < threshold or v.busy < (FILLING_BUSY if filling else GROW_BUSY))


def _first_look_is_clear(v: StageView, views: list[StageView]) -> bool:
    """No pool after `v` may be resized: in the first record (see FIRST_PERIOD) a
    backed-up queue may be the first burst of what comes before it, and the pools after
    it have barely begun (a worker sends on a batch when it has handled all of it, ~50
    ms), so one of them may be the bottleneck that has not had the time to back up."""
    resizable = {x.name for x in views if x.resizable}
    return not resizable.intersection(v.downstream)


def _grows_on(v: StageView, r: _Round, views: list[StageView], budget: int) -> bool:
    """`v` grew lately and its share is larger still, and the growth paid or the work
    per event changed since (the growth was sized on a period that mixed the old work
    with the new): it may grow on without waiting out the cooldown."""
    grown = r.state.grown.get(v.name)
    if grown is None or share_of_budget(v, views, budget) <= r.targets[v.name]:
        return False
    _, before, old, cost = grown
    paid = v.completions_per_s >= before * THRASH_GAIN
    if v.on_cpu:  # its workers run, not wait for cores: a dearer event is dearer work
        return paid or (cost > 0 and _cost(v) > WORK_CHANGED * cost)
    return paid or _work_changed(cost, _cost(v), r.targets[v.name] / max(1, old))


def _grow_past_budget(v: StageView, views: list[StageView], budget: int, r: _Round) -> list[Decision]:
    """The budget is spent: take workers from stages that need fewer (`_rebalance`), else
    grow anyway if the queue is about to hold its producers back (their cores will be
    free), else nothing."""
    decisions = _rebalance(v, views, budget, r)
    if decisions or r.shared:  # with other programs on the machine, no growth past the budget
        return decisions
    # A nearly full queue holds its producers back (backpressure), so the cores they
    # use now will be free: grow anyway, within OVERSUBSCRIBE x the budget in processes.
    growing = v.arrivals_per_s > GROWING_FACTOR * max(1.0, v.completions_per_s)
    full = v.queue_length >= FULL_QUEUE_FRACTION * v.capacity or growing
    # idle pools hold no core, nor pools that finish their work within a period or two
    processes = sum(r.targets[x.name] for x in views if x.busy >= SHRINK_BUSY and not x.finishing)
    if _has_its_share(v, views, budget, r.targets[v.name]):
        return []  # a full queue here is the sources running ahead of it
    # In one step to its share: the producers it holds back free their cores as it grows.
    step = max(1, min(share_of_budget(v, views, budget) - r.targets[v.name], OVERSUBSCRIBE * budget - processes))
    if full and processes + 1 <= OVERSUBSCRIBE * budget:
        new = min(v.hi, r.targets[v.name] + step)
        why = f"filling ({v.arrivals_per_s:.0f}/s in, {v.completions_per_s:.0f}/s out)" if growing else "nearly full"
        reason = (
            f"queue {v.queue_length}/{v.capacity} {why} and workers {v.busy:.0%} busy: grow to "
            f"{new} (its producers will be held back; {processes + new - r.targets[v.name]} busy processes "
            f"for {budget} cores)"
        )
        r.state.grown[v.name] = (r.state.period, v.completions_per_s, r.targets[v.name], _cost(v))
        return [r.change(v, new, reason)]
    return []


def _rebalance(v: StageView, views: list[StageView], budget: int, r: _Round, free: int = 0) -> list[Decision]:
    """The budget is spent and `v` is the bottleneck: stages holding more workers than
    their share of the budget and than their load needs (at GROW_BUSY) give the
    difference back, and `v` takes it, up to its own share, in one period. (Giving one
    worker per period from one idle stage took minutes at 64 cores.)"""
    freed = 0
    decisions = []
    for d in views:
        if d.name == v.name or not d.resizable or r.cooling(d.name) or d.busy >= GROW_BUSY:
            continue
        keep = max(d.lo, share_of_budget(d, views, budget), math.ceil(r.targets[d.name] * d.busy / GROW_BUSY))
        if keep < r.targets[d.name]:
            freed += r.targets[d.name] - keep
            decisions.append(
                r.change(
                    d,
                    keep,
                    f"gives {r.targets[d.name] - keep} to {v.name!r} ({d.busy:.0%} busy, its share of the "
                    f"budget {share_of_budget(d, views, budget)}): shrink to {keep}",
                )
            )
    if not freed:
        return []
    step = max(1, min(freed + free, share_of_budget(v, views, budget) - r.targets[v.name]))
    spare = f"{free} unused and " if free else ""
    return [*decisions, _grow(v, r, f" (taking {spare}{freed} from stages that need fewer)", step)]


def _cost(v: StageView) -> float:
    """Busy worker-seconds per event completed this period (0.0: none completed)."""
    return v.target * v.busy / v.completions_per_s if v.completions_per_s > 0 else 0.0


def _work_changed(before: float, after: float, grew_by: float) -> bool:
    """Did the stage's events change cost between before and after a growth (the load
    moved, as when a later part of the input is heavier)? Contention for cores makes each
    event take longer by at most the factor the pool grew; a change past twice that, or
    a halving, is the work itself. The thrashing guard then cannot judge the growth."""
    if before <= 0 or after <= 0:
        return False
    return after > 2 * grew_by * before or after < before / 2


# The core budget follows the machine: the cores other programs use are taken out of it
# (smoothed, so a burst does not shrink every pool), down to this floor. A rise is
# followed faster than a fall: a program that starts beside the run reads low while
# they contend (it gets a share of the cores it wants, 2/3 of one on 2 cores), so at
# 0.7 a whole core took five periods to count; at 0.5 it crossed SHARED_MACHINE_CORES in
# the second record after the start or the third, by where in a period it fell (the
# neighbour benchmark yielded within 1 s in 3 runs of 5); at 0.3, in the second (10 of
# 10). But at 0.3 a burst of one period from nothing (0.6 of a core) would count too,
# so a rise from under OTHERS_UNDER_WAY is followed at OTHERS_RISING_FIRST: one
# period's burst is not a neighbour, a rise that goes on is (counted from 0.1 of a core,
# the neighbour benchmark met its target in 4 runs of 5; from 0.05, in 6 of 6). A
# program that ends gives its cores back for good, so taking them back can wait.
OTHERS_SMOOTHING = 0.7  # weight of the old estimate when the others use less
OTHERS_RISING = 0.3  # ... and when they use more than an estimate already rising
OTHERS_RISING_FIRST = 0.5  # ... and when they use more than an estimate near nothing
OTHERS_UNDER_WAY = 0.05  # cores: an estimate from which a rise is followed fast
MIN_BUDGET = 1.0


def machine_budget(cap: int, machine: int, other_cores: float, seen: float | None) -> tuple[float, float]:
    """The core budget this period and the smoothed CPU of other programs: the `machine`'s
    cores less what other programs use (smoothed), within `cap` (the configured or usable
    cores, a hard cap), at least MIN_BUDGET. So sedamp yields cores to another job that
    starts on the machine and takes them back when it ends."""
    if seen is not None and other_cores > seen:
        old = OTHERS_RISING if seen >= OTHERS_UNDER_WAY else OTHERS_RISING_FIRST
    else:
        old = OTHERS_SMOOTHING
    smoothed = other_cores if seen is None else old * seen + (1 - old) * other_cores
    return max(MIN_BUDGET, min(float(cap), machine - smoothed)), smoothed


def share_of_budget(v: StageView, views: list[StageView], budget: int) -> int:
    """`v`'s share of the budget when the pipeline is balanced (`cores_share`), rounded,
    within its bounds."""
    share = cores_share(v, views, budget)
    return v.target if share is None else max(v.lo, min(v.hi, round(share)))


def _has_its_share(v: StageView, views: list[StageView], budget: int, target: int) -> bool:
    """`v` holds at least its share of the budget by need, counting only the stages whose
    need is known (those not yet known would only make its share smaller). In cores: a
    pool of 16 workers that wait on I/O 95% of their busy time holds 0.8 of a core."""
    known = [x.need for x in _staying(v, views) if x.need is not None]
    if v.need is None or not sum(known):
        return False
    # a CPU-bound worker is a core, whatever share of one it gets while cores are contended
    per_worker = v.cpu / v.busy if v.waits_on_io and v.cpu is not None else 1.0
    return budget * v.need / sum(known) <= target * per_worker


def cores_share(v: StageView, views: list[StageView], budget: int) -> float | None:
    """`v`'s share of the budget when the pipeline is balanced, in cores: budget x its
    need over all stages' need (`StageView.need`: in a balanced pipeline every stage
    runs at the sources' pace, so the cores each uses are in proportion to it). Where a
    need is not known, the cores each uses now stand in for it (the same in a steady
    state). Stages that finish their work within a period or two leave their cores to the
    others. None when nothing is measured."""
    views = _staying(v, views)
    needs = [x.need for x in views]
    if any(n is None for n in needs) or not any(needs):
        load = {x.name: x.cores_used for x in views}
    else:
        load = {x.name: float(n or 0.0) for x, n in zip(views, needs, strict=True)}
    total = sum(load.values())
    return None if total <= 0 else budget * load[v.name] / total


def _staying(v: StageView, views: list[StageView]) -> list[StageView]:
    """`v` and the stages that do not finish their work within a period or two."""
    return [x for x in views if x is v or not x.finishing]


def finishing(
    feeds: Mapping[str, Collection[str]],
    backlog: Mapping[str, float],
    rates: Mapping[str, float],
    arrivals: Mapping[str, float],
    period_s: float,
) -> set[str]:
    """The pools that end their work within FINISHING_PERIODS, once every source has
    ended: what is left for a pool is its backlog (events waiting or leased) and the
    backlogs of every pool upstream of it (`feeds`: each pool's producers), which it
    handles at its rate of the last period (`rates`, events/s). A pool whose queue
    fills (`arrivals` above its rate) is not finishing: its rate is about to fall (the
    shift benchmark's c, whose events turn heavy as the last of the input reaches it)."""
    done = set()
    for pool in feeds:
        if arrivals.get(pool, 0.0) > rates.get(pool, 0.0):
            continue
        left, seen, todo = 0.0, set(), [pool]
        while todo:
            p = todo.pop()
            if p in seen or p not in feeds:  # a source: it has ended
                continue
            seen.add(p)
            left += backlog.get(p, 0.0)
            todo += feeds[p]
        if rates.get(pool, 0.0) > 0 and left / rates[pool] < FINISHING_PERIODS * period_s:
            done.add(pool)
    return done


def visits_of(
    feeds: Mapping[str, Collection[str]],
    arrivals: Mapping[str, float],
    completions: Mapping[str, float],
    sources: Collection[str],
) -> dict[str, float]:
    """Events each pool handles per event its sources read, from one period's rates.

    `feeds` maps each pool to the pools and sources that send to it; `completions`
    holds each pool's events handled per second and each source's events read. A source
    event passes a producer u at completions[u] / visits[u] per second; a pool
    receiving arrivals[p] per second handles arrivals[p] over the fastest of those per
    source event (the fastest, not the sum: a copy sent down two branches that join
    arrives twice). Measured from rates in one period, the ratio holds while queues
    fill, unlike cumulative counts, which lag by whatever the queues hold. A pool whose
    producers completed nothing this period is left out (not known). With several
    sources nothing is known: an event of one is not an event of another."""
    if len(sources) != 1:
        return {}  # events of different sources are not one unit: needs fall back on cores used
    visits = {s: 1.0 for s in sources}
    pending = dict(feeds)
    while pending:
        ready = [n for n, ups in pending.items() if all(u in sources or u not in pending for u in ups)]
        if not ready:
            break  # a cycle: not a topology the runtime runs
        for name in ready:
            ups = pending.pop(name)
            through = [completions.get(u, 0.0) / visits[u] for u in ups if visits.get(u)]
            through = [t for t in through if t > 0]
            if ups and all(u in sources for u in ups):
                visits[name] = 1.0
            elif through:
                visits[name] = arrivals.get(name, 0.0) / max(through)
    return {k: v for k, v in visits.items() if k not in sources}


def _grow(v: StageView, r: _Round, why: str, step: int = 1) -> Decision:
    """Add `step` workers to `v` and remember the rate before, for the thrashing guard."""
    new = min(v.hi, r.targets[v.name] + step)
    reason = f"queue {v.queue_length}/{v.capacity} and workers {v.busy:.0%} busy: grow to {new}" + why
    r.state.grown[v.name] = (r.state.period, v.completions_per_s, r.targets[v.name], _cost(v))
    return r.change(v, new, reason)

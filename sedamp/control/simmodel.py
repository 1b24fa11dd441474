"""The model a simulated run moves forward (`sedamp simulate`): stage pools, their
queues and the sources, on a machine of C cores. Pure: no process, socket or clock.

Fluid queues: events are amounts, not objects. In each step of `dt` seconds a pool with
`ready` set-up workers can handle ``ready * dt / cost`` events (its events' CPU cost
now), no more than its queue holds and no more than the room left in every queue it
sends to (backpressure: a worker whose outputs have no room waits and uses no CPU). The
machine shares its cores equally among the workers that have work (processor
sharing): when they want more CPU than there are cores, each runs at cores / wanted.
Pools are moved last first, so room freed downstream in a step is used in the same
step; then each source fills the queues it feeds, as fast as their room (and its
rate, if paced) lets it. Each pool keeps, for the period's record, the worker-seconds
its workers spent handling (wall time, contention included), on the CPU, blocked (no
room downstream) and waiting (nothing to handle).

What it leaves out: batching and the hops between processes (a queue's, a source's and
the controller's CPU is `runtime_cores`, a constant share of the machine), the
handlers' fan-out (every event a pool takes becomes one event in each queue it sends
to) and `when`/`key` routing (every edge carries every event).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sedamp.control.simprofile import RateStep, StageCost


@dataclass
class SimPool:
    """A stage's pool (a group's, at its first stage) and the queue in front of it."""

    name: str
    members: tuple[str, ...]  # the stages its workers run, in order (a group's chain)
    costs: tuple[StageCost, ...]  # per member
    down: tuple[str, ...]  # the pools its outputs go to
    capacity: int
    ready: int  # workers set up, taking events
    goal: int = 0  # the pool's target, as the controller set it
    ended: bool = False  # its input ended and its queue is empty: its workers have left
    pending: list[tuple[float, int]] = field(default_factory=list)  # (ready at, workers) on their way
    queue: float = 0.0  # events waiting
    done: float = 0.0  # events handled
    noise: float = 1.0  # this period's factor on its costs
    cost_now_s: float = 0.0  # the CPU cost of an event in the last step
    speed: float = 1.0  # the share of a core each of its workers got in the last step
    # this period, in worker-seconds (or events)
    busy_s: float = 0.0
    cpu_s: float = 0.0
    blocked_s: float = 0.0
    waiting_s: float = 0.0
    period_done: float = 0.0
    period_in: float = 0.0

    @property
    def starting(self) -> int:
        return sum(n for _, n in self.pending)

    @property
    def workers(self) -> int:
        """Its worker processes: set up or starting."""
        return self.ready + self.starting

    def cost_s(self, events: int, t: float) -> float:
        """CPU seconds its next event costs: the sum over its members, times the noise."""
        return self.noise * sum(c.cost_s(self.done, events, t) for c in self.costs)

    def join_ready(self, t: float) -> None:
        """Workers whose set-up is done by `t` start taking events."""
        joining = sum(n for at, n in self.pending if at <= t)
        if joining:
            self.ready = max(1, self.ready + joining)
            self.pending = [(at, n) for at, n in self.pending if at > t]

    def resize(self, target: int, ready_at: float) -> None:
        """Move to `target` workers: new ones are ready at `ready_at`; fewer: those still
        starting are stopped first, then set-up ones leave at once."""
        self.goal = target
        delta = target - self.workers
        if delta > 0:
            self.pending.append((ready_at, delta))
            return
        while delta < 0 and self.pending:
            at, n = self.pending.pop()
            keep = n + delta
            delta = min(0, keep)
            if keep > 0:
                self.pending.append((at, keep))
        self.ready = max(1, self.ready + delta) if delta else self.ready

    def end(self) -> None:
        """Its input has ended and it has handled all of it: its workers exit."""
        self.ended = True
        self.ready = 0
        self.pending = []

    def reset_period(self) -> None:
        self.busy_s = self.cpu_s = self.blocked_s = self.waiting_s = self.period_done = self.period_in = 0.0


@dataclass
class SimSource:
    """A source: `events` to send, unpaced (as fast as backpressure lets it) or at `rate`."""

    name: str
    down: tuple[str, ...]
    events: int
    rate: tuple[RateStep, ...] | None = None
    sent: float = 0.0
    period_sent: float = 0.0
    blocked_s: float = 0.0
    waiting_s: float = 0.0

    def allowed(self, t: float) -> float:
        """The events its rate lets it have sent by `t` (the last step's rate holds after it)."""
        if self.rate is None:
            return math.inf
        total, start = 0.0, 0.0
        for step in self.rate:
            if t <= start + step.seconds:
                return total + step.per_s * (t - start)
            total += step.per_s * step.seconds
            start += step.seconds
        return total + self.rate[-1].per_s * (t - start)

    def reset_period(self) -> None:
        self.period_sent = self.blocked_s = self.waiting_s = 0.0


def room(pool: SimPool, pools: dict[str, SimPool]) -> float:
    """The room in the fullest queue `pool` sends to (inf: it sends nowhere)."""
    return min((pools[d].capacity - pools[d].queue for d in pool.down), default=math.inf)


def step(order: list[SimPool], sources: list[SimSource], cores: float, events: int, t: float, dt: float) -> None:
    """Move the model on by `dt` from `t`: every pool (`order` is topological; moved
    last first), then every source."""
    pools = {p.name: p for p in order}
    can = []
    for p in order:
        p.cost_now_s = p.cost_s(events, t)
        limit = p.ready * dt / p.cost_now_s if p.cost_now_s > 0 else (math.inf if p.ready else 0.0)
        can.append(max(0.0, min(limit, p.queue, room(p, pools))))
    demand = sum(n * p.cost_now_s / dt for n, p in zip(can, order, strict=True))
    speed = min(1.0, cores / demand) if demand > 0 else 1.0
    for i in range(len(order) - 1, -1, -1):
        _handle(order[i], can[i], speed, pools, dt)
    for s in sources:
        _send(s, pools, t + dt, dt)


def _handle(p: SimPool, can: float, speed: float, pools: dict[str, SimPool], dt: float) -> None:
    """Pool `p` handles what it can at `speed`; its idle worker time is blocked time if
    the room downstream held it back, else waiting time."""
    space = room(p, pools)
    n = max(0.0, min(can * speed, p.queue, space))
    p.speed = speed
    p.queue -= n
    p.done += n
    p.period_done += n
    busy = n * p.cost_now_s / speed
    p.busy_s += busy
    p.cpu_s += n * p.cost_now_s
    idle = max(0.0, p.ready * dt - busy)
    if idle > 1e-12:
        if space <= p.queue + 1e-9 and space < math.inf:
            p.blocked_s += idle
        else:
            p.waiting_s += idle
    for d in p.down:
        pools[d].queue += n
        pools[d].period_in += n


def _send(s: SimSource, pools: dict[str, SimPool], t: float, dt: float) -> None:
    """Source `s` fills the queues it feeds, within their room and its rate."""
    left = s.events - s.sent
    if left <= 0:
        return
    space = min((pools[d].capacity - pools[d].queue for d in s.down), default=math.inf)
    paced = s.allowed(t) - s.sent
    add = max(0.0, min(left, space, paced))
    s.sent += add
    s.period_sent += add
    for d in s.down:
        pools[d].queue += add
        pools[d].period_in += add
    if add < left - 1e-9:
        if space <= min(left, paced) + 1e-9:
            s.blocked_s += dt
        else:
            s.waiting_s += dt

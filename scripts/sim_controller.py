"""Simulation: the real pool controller (`sedamp.control.policy`) driving a model of a
pipeline on a machine of any size, to show what 2 cores cannot (e.g. the shift
workload at 64 cores).

    python scripts/sim_controller.py                         # shift, 2 and 64 cores
    python scripts/sim_controller.py --cores 2,8,64 --events 200000 --json sim.json

The model. A chain of stages, each with a per-event CPU cost (the shift workload:
1 ms / 4 ms / 0.5 ms, b and c swapping costs half way through the events), a bounded
queue in front of each (2,048 events), an unlimited source behind backpressure, and a
machine of C cores shared equally by the workers that have work (processor sharing:
when more workers want CPU than there are cores, each runs at C / wanting). Time moves
in steps of 5 ms; every period (0.5 s) the controller gets, per stage, the views the
runtime's recorder builds (queue length, busy fraction, completions and arrivals per
second, the fill of the next queue) and its decisions set the pool sizes, which take
effect after --spawn-s (a process start). The controller code is the runtime's own:
`policy.decide` and `policy.initial_targets` on the topology file.

What it leaves out: the runtime's own CPU (queues, hops), batching, and noise. So it
answers one question, how well the controller's decisions track the load, and its
figures at 2 cores are checked against a real run of scripts/bench_shift.py.

Systems: "adaptive" (the controller from the runtime's even first split) and "static"
(the split that suits the first half, fixed: 1 : 4 : 0.5 of the cores, at least 1).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sedamp.control import policy  # noqa: E402

PERIOD_S = 0.5
STEP_S = 0.005
CAPACITY = 2048
FIRST = (1.0e-3, 4.0e-3, 0.5e-3)  # a, b, c: CPU seconds per event, first half
SECOND = (1.0e-3, 0.5e-3, 4.0e-3)  # second half: b and c swap


@dataclass
class SimStage:
    name: str
    workers: int
    queue: float = 0.0  # events waiting (fluid)
    done: float = 0.0  # events completed
    pending: list[tuple[float, int]] = field(default_factory=list)  # (ready at, workers) to add
    busy_s: float = 0.0  # worker-seconds spent handling, this period
    cpu_s: float = 0.0  # CPU seconds spent handling, this period
    period_done: float = 0.0
    period_in: float = 0.0

    def cost(self, index: int, events: int) -> float:
        half = FIRST if self.done < events / 2 else SECOND
        return half[index]


def step(stages: list[SimStage], cores: int, events: int, injected: float) -> float:
    """Advance STEP_S: each stage (last first, so room freed downstream is used) handles
    what its workers can, what it holds and what the next queue has room for, at the
    speed the cores allow (a worker held back by a full queue uses no CPU); then the
    source fills the first queue. Returns the events injected."""
    can = []
    for i, s in enumerate(stages):
        room = CAPACITY - stages[i + 1].queue if i + 1 < len(stages) else math.inf
        can.append(max(0.0, min(s.workers * STEP_S / s.cost(i, events), s.queue, room)))
    demand = sum(n * s.cost(i, events) / STEP_S for i, (n, s) in enumerate(zip(can, stages, strict=True)))
    speed = min(1.0, cores / demand) if demand > 0 else 1.0
    for i in range(len(stages) - 1, -1, -1):
        s = stages[i]
        room = CAPACITY - stages[i + 1].queue if i + 1 < len(stages) else math.inf
        n = max(0.0, min(can[i] * speed, s.queue, room))
        s.queue -= n
        s.done += n
        s.period_done += n
        s.busy_s += n * s.cost(i, events) / speed
        s.cpu_s += n * s.cost(i, events)
        if i + 1 < len(stages):
            stages[i + 1].queue += n
            stages[i + 1].period_in += n
    add = max(0.0, min(events - injected, CAPACITY - stages[0].queue))
    stages[0].queue += add
    stages[0].period_in += add
    return add


def views(stages: list[SimStage], cores: int) -> list[policy.StageView]:
    out = []
    for i, s in enumerate(stages):
        nxt = stages[i + 1].queue / CAPACITY if i + 1 < len(stages) else 0.0
        busy = min(1.0, s.busy_s / (s.workers * PERIOD_S)) if s.workers else 0.0
        cpu = min(1.0, s.cpu_s / (s.workers * PERIOD_S)) if s.workers else 0.0
        out.append(
            policy.StageView(
                name=s.name,
                target=s.workers + sum(n for _, n in s.pending),
                lo=1,
                hi=cores,
                queue_length=int(s.queue),
                capacity=CAPACITY,
                batch_size=8.0,
                busy=busy,
                completions_per_s=s.period_done / PERIOD_S,
                arrivals_per_s=s.period_in / PERIOD_S,
                downstream_fill=nxt,
                starting=sum(n for _, n in s.pending if n > 0),
                cpu=cpu,
            )
        )
        s.busy_s = s.cpu_s = s.period_done = s.period_in = 0.0
    return out


def simulate(
    split: list[int], cores: int, events: int, adaptive: bool, spawn_s: float, trace: bool = False
) -> dict[str, Any]:
    stages = [SimStage(name, w) for name, w in zip("abc", split, strict=True)]
    state = policy.PolicyState()
    t = injected = 0.0
    next_period = PERIOD_S
    decisions = 0
    while stages[-1].done < events - 1e-6:
        injected += step(stages, cores, events, injected)
        t += STEP_S
        for s in stages:
            ready = [n for at, n in s.pending if at <= t]
            s.workers = max(1, s.workers + sum(ready))
            s.pending = [(at, n) for at, n in s.pending if at > t]
        if t >= next_period:
            next_period += PERIOD_S
            vs = views(stages, cores)
            if adaptive:
                for d in policy.decide(vs, cores, t, state):
                    if trace:
                        print(f"    t={t:6.2f} {d.stage}: {d.old} -> {d.new}: {d.reason}")
                    s = next(x for x in stages if x.name == d.stage)
                    delta = d.new - (s.workers + sum(n for _, n in s.pending))
                    if delta > 0:
                        s.pending.append((t + spawn_s, delta))
                    else:
                        s.workers = max(1, s.workers + delta)  # a retired worker leaves at once
                    decisions += 1
        if t > 3600:
            raise RuntimeError("the simulated run does not end")
    cpu = events * (sum(FIRST) + sum(SECOND)) / 2
    return {"wall_s": round(t, 3), "limit_s": round(cpu / cores, 3), "decisions": decisions}


def static_split(cores: int) -> list[int]:
    """The split that suits the first half (1 : 4 : 0.5), at least one worker each; on 2
    cores scripts/bench_shift.py's 1 / 2 / 1."""
    if cores == 2:
        return [1, 2, 1]
    raw = [cores * c / sum(FIRST) for c in FIRST]
    split = [max(1, math.floor(x)) for x in raw]
    while sum(split) < cores:
        i = max(range(3), key=lambda k: raw[k] - split[k])
        split[i] += 1
    return split


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=lambda t: [int(x) for x in t.split(",")], default=[2, 64])
    ap.add_argument("--events", type=int, default=0, help="default: 1,500 per core (the benchmark's 3000 at 2)")
    ap.add_argument("--spawn-s", type=float, default=0.05, help="a new worker's start-up (0.05 s)")
    ap.add_argument("--trace", action="store_true", help="print every decision of the adaptive runs")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    print("$ python scripts/sim_controller.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    rows = []
    for cores in args.cores:
        events = args.events or 1500 * cores
        even = [max(1, cores // 3)] * 3
        adaptive = simulate(even, cores, events, True, args.spawn_s, args.trace)
        static = simulate(static_split(cores), cores, events, False, args.spawn_s)
        ratio = static["wall_s"] / adaptive["wall_s"]
        rows.append({"cores": cores, "events": events, "adaptive": adaptive, "static": static, "ratio": ratio})
        print(
            f"{cores:3d} cores, {events:,} events: adaptive {adaptive['wall_s']:.2f} s "
            f"({adaptive['limit_s'] / adaptive['wall_s']:.0%} of the limit, {adaptive['decisions']} decisions), "
            f"static {static_split(cores)} {static['wall_s']:.2f} s: adaptive {ratio:.2f}x the static split"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Simulation: the real pool controller (`sedamp.control.policy`) driving a model of a
pipeline on a machine of any size, to show what 2 cores cannot (e.g. the shift
workload at 64 cores).

    python scripts/sim_controller.py                         # shift, 2 and 64 cores
    python scripts/sim_controller.py --cores 2,8,64 --events 200000 --json sim.json

The model is the package's (`sedamp simulate`, sedamp/control/simmodel.py and
simulate.py); this script runs the shift workload through it: a chain of stages, each
with a per-event CPU cost (1 ms / 4 ms / 0.5 ms, b and c swapping costs half way
through the events), a bounded queue in front of each (2,048 events), an unlimited
source behind backpressure, and a machine of C cores shared equally by the workers
that have work (processor sharing: when more workers want CPU than there are cores,
each runs at C / wanting). Time moves in steps of 5 ms; every period (0.5 s) the
controller gets, per stage, the views the runtime's recorder builds (queue length,
busy fraction, completions and arrivals per second, the fill of the next queue) and
its decisions set the pool sizes, which take effect after --spawn-s (a process start).
The controller code is the runtime's own: `policy.decide` and `policy.initial_targets`
on topologies/shift.yaml.

What it leaves out: the runtime's own CPU (queues, hops), batching (the controller is
shown batches of 8 events), and noise. So it answers one question, how well the
controller's decisions track the load, and its figures at 2 cores are checked against
a real run of scripts/bench_shift.py.

Systems: "adaptive" (the controller from the runtime's even first split), "static"
(the split that suits the first half, fixed: 1 : 4 : 0.5 of the cores, at least 1), and
"oracle", which knows the phases: the first half of the events on the pools that suit
it, then the second half on the pools that suit that, as two runs, the first drained
before the second starts. The pools that suit a phase give each stage its share of
the cores by its cost, rounded up (1 : 4 : 0.5, then 1 : 0.5 : 4), so that none is
short of it; the fixed split above must add up to the cores, and leaves the stage
rounded down short (a at 8 cores: 1 worker for a share of 1.45).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _benchlib import pool_use  # noqa: E402

from sedamp.control.simprofile import Profile, RateStep, with_flags  # noqa: E402
from sedamp.control.simulate import simulate as run_model  # noqa: E402
from sedamp.observe.report import plot_pools  # noqa: E402

TOPOLOGY = REPO / "topologies" / "shift.yaml"
FIRST = (1.0e-3, 4.0e-3, 0.5e-3)  # a, b, c: CPU seconds per event, first half
SECOND = (1.0e-3, 0.5e-3, 4.0e-3)  # second half: b and c swap
# the shift workload as `sedamp simulate` flags; batches of 8 events, as this model
# always had (the runtime's adaptive batch only moves the grow threshold)
COSTS = {"a": "1ms", "b": "4ms,0.5ms@50%", "c": "0.5ms,4ms@50%"}
BATCH_EVENTS = 8.0


def simulate(
    split: list[int], cores: int, events: int, adaptive: bool, spawn_s: float, trace: bool = False,
    plot: Path | None = None,
) -> dict[str, Any]:
    """The shift workload on `cores` from the split a / b / c = `split`, with the
    controller (`adaptive`) or without; `spawn_s`: a new worker's start."""
    profile = with_flags(Profile(), costs=COSTS, events=events, start_s=spawn_s, batch_events=BATCH_EVENTS)
    result = run_model(TOPOLOGY, cores, profile, split=dict(zip("abc", split, strict=True)), adaptive=adaptive)
    if trace:
        for d in result.decisions:
            print(f"    t={d['elapsed_s']:6.2f} {d['stage']}: {d['from']} -> {d['to']}: {d['reason']}")
    if plot is not None:
        plot_pools(list(result.records), plot, f"shift: simulated on {cores} cores")
    return {
        "wall_s": result.wall_s,
        "limit_s": result.limit_s,
        "decisions": len(result.decisions),
        "rebalanced_periods": rebalanced(list(result.records), cores, events),
    }


def rebalanced(records: list[dict[str, Any]], cores: int, events: int) -> tuple[int | None, int | None]:
    """Periods from the start until b holds 85% of its balanced share (the cores x
    4 / 5.5 that balance the first half), and from the shift reaching c (c's events in
    past half) until c holds 85% of its share; None: never."""
    share = cores * 4.0 / 5.5
    start = next((k for k, r in enumerate(records) if r["stages"]["b"]["target"] >= 0.85 * share), None)
    shift = next((k for k, r in enumerate(records) if r["stages"]["c"]["events_in"] >= events / 2), None)
    if shift is None:
        return (None if start is None else start + 1, None)
    after = next((k for k in range(shift, len(records)) if records[k]["stages"]["c"]["target"] >= 0.85 * share), None)
    return (None if start is None else start + 1, None if after is None else after - shift + 1)


def oracle(cores: int, events: int, spawn_s: float) -> float:
    """The wall time of a controller that knows the phases: each half of the events on
    the pools that suit it, every stage its share of the cores by cost, rounded up."""
    wall = 0.0
    for per_event in (FIRST, SECOND):
        costs = {name: f"{c * 1000:g}ms" for name, c in zip("abc", per_event, strict=True)}
        split = [math.ceil(cores * c / sum(per_event) - 1e-9) for c in per_event]
        profile = with_flags(Profile(), costs=costs, events=events // 2, start_s=spawn_s, batch_events=BATCH_EVENTS)
        wall += run_model(TOPOLOGY, cores, profile, split=dict(zip("abc", split, strict=True)), adaptive=False).wall_s
    return wall


STAIRCASE = REPO / "topologies" / "staircase.yaml"
STAIR_COST_S = 4.0e-3


def staircase(cores: int, spawn_s: float) -> dict[str, dict[str, float]]:
    """The staircase at `cores`, its rates scaled to them (20 x N, 190 x N, 20 x N events/s
    for 3, 4 and 8 s) into a 4 ms stage: the controller from its first pool; "static",
    the pool that suits the first step, fixed; "oracle", the pool that suits each step
    from the moment it begins. Wall, worker-seconds held, and the longest queue."""
    steps = [(20 * cores, 3.0), (190 * cores, 4.0), (20 * cores, 8.0)]
    events = int(sum(r * t for r, t in steps))
    profile = with_flags(
        Profile(), costs={"work": "4ms"}, events=events, start_s=spawn_s, rate=tuple(RateStep(r, t) for r, t in steps)
    )

    def suits(rate: float) -> int:
        return max(1, math.ceil(rate * STAIR_COST_S - 1e-9))

    schedule, at = [], 0.0
    for rate, seconds in steps:
        schedule.append((at, {"work": suits(rate)}))
        at += seconds
    out = {}
    for name, kw in (
        ("adaptive", {"adaptive": True}),
        ("static", {"adaptive": False, "split": {"work": suits(steps[0][0])}}),
        ("oracle", {"adaptive": False, "split": {"work": suits(steps[0][0])}, "schedule": schedule}),
    ):
        result = run_model(STAIRCASE, cores, profile, **kw)  # type: ignore[arg-type]
        held, queue = pool_use(result.records, "work")
        out[name] = {"wall_s": result.wall_s, "worker_s": held, "max_queue": queue}
    return out


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
    ap.add_argument("--plot-dir", type=Path, help="draw each adaptive run into DIR/shift-<N>cores.png")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--staircase", action="store_true", help="the staircase against its static pool and an oracle")
    args = ap.parse_args(argv)
    if args.staircase:
        print("$ python scripts/sim_controller.py " + " ".join(argv if argv is not None else sys.argv[1:]))
        for cores in args.cores:
            runs = staircase(cores, args.spawn_s)
            print(f"{cores:3d} cores, staircase: " + "; ".join(
                f"{k} {v['wall_s']:.2f} s, {v['worker_s']:.1f} worker-s, queue up to {v['max_queue']:,}"
                for k, v in runs.items()))  # fmt: skip
        return 0
    print("$ python scripts/sim_controller.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    rows = []
    for cores in args.cores:
        events = args.events or 1500 * cores
        even = [max(1, cores // 3)] * 3
        plot = args.plot_dir / f"shift-{cores}cores.png" if args.plot_dir else None
        adaptive = simulate(even, cores, events, True, args.spawn_s, args.trace, plot)
        static = simulate(static_split(cores), cores, events, False, args.spawn_s)
        knows = oracle(cores, events, args.spawn_s)
        ratio = static["wall_s"] / adaptive["wall_s"]
        rows.append(
            {"cores": cores, "events": events, "adaptive": adaptive, "static": static, "ratio": ratio,
             "oracle_s": knows, "of_oracle": knows / adaptive["wall_s"]}
        )  # fmt: skip
        print(
            f"{cores:3d} cores, {events:,} events: adaptive {adaptive['wall_s']:.2f} s "
            f"({adaptive['limit_s'] / adaptive['wall_s']:.0%} of the limit, {adaptive['decisions']} decisions), "
            f"static {static_split(cores)} {static['wall_s']:.2f} s: adaptive {ratio:.2f}x the static split; "
            f"oracle {knows:.2f} s: adaptive {knows / adaptive['wall_s']:.2f}x the oracle; "
            "balanced in {} period(s) from the start and {} after the shift".format(*adaptive["rebalanced_periods"])
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the arrival rate steps up and down; the pool should follow it.

Runs topologies/staircase.yaml (a paced source into a ~4 ms stage whose pool may grow
from 1 up to the core budget) with the metrics stream on, and reports from it: when the
rate stepped up and when the pool grew, when the rate stepped down and when the idle
workers were released (the controller's idle timeout is 2 s), and every decision with
its reason. With --plot, a PNG of the arrival rate and the pool size over time.

With --compare, three systems in interleaved rounds: sedamp with its controller; the
pool that suits the first step (1 worker), fixed; and an oracle that knows the steps:
the pool that suits each step (1, 2, 1 workers: 40/s and 380/s of ~4 ms) set through
the run's control socket (`sedamp scale`) as each step begins. For each: the wall
time, the worker-seconds the pool held, the longest queue and the worst p90 wait in
the queue (one period's).

    python scripts/bench_staircase.py --plot docs/staircase.png
    python scripts/bench_staircase.py --compare --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _benchlib import pool_use  # noqa: E402

import sedamp  # noqa: E402
from sedamp.control import client  # noqa: E402
from sedamp.control.controller import run_topology  # noqa: E402
from sedamp.control.summary import RunOptions  # noqa: E402
from sedamp.errors import SedampError  # noqa: E402

TOPOLOGY = REPO / "topologies" / "staircase.yaml"


def analyse(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Step times from the observed arrival rate (above/below the midpoint of its range),
    and the first pool change after each step."""
    rates = [r["stages"]["work"]["arrivals_per_s"] for r in lines]
    mid = (max(rates) + min(r for r in rates if r > 0)) / 2 if any(rates) else 0
    up = next((r["elapsed_s"] for r in lines if r["stages"]["work"]["arrivals_per_s"] > mid), None)
    down = None
    if up is not None:
        down = next(
            (r["elapsed_s"] for r in lines if r["elapsed_s"] > up and 0 < r["stages"]["work"]["arrivals_per_s"] < mid),
            None,
        )
    decisions = [dict(d, t=r["elapsed_s"]) for r in lines for d in r["decisions"] if d["stage"] == "work"]
    grow = next((d["t"] for d in decisions if up is not None and d["t"] >= up and d["to"] > d["from"]), None)
    release = next((d["t"] for d in decisions if down is not None and d["t"] >= down and d["to"] < d["from"]), None)
    return {"step_up_s": up, "grow_s": grow, "step_down_s": down, "release_s": release, "decisions": decisions}


def plot(lines: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["elapsed_s"] for r in lines]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    ax1.plot(t, [r["stages"]["work"]["arrivals_per_s"] for r in lines], label="arrivals/s")
    ax1.plot(t, [r["stages"]["work"]["completions_per_s"] for r in lines], label="completions/s", linestyle="--")
    ax1.set_ylabel("events/s")
    ax1.legend(loc="upper right")
    ax2.step(t, [r["stages"]["work"]["workers"] for r in lines], where="post", label="workers")
    ax2.step(t, [r["stages"]["work"]["target"] for r in lines], where="post", label="target", linestyle=":")
    ax2.set_ylabel("workers")
    ax2.set_xlabel("seconds since start")
    ax2.legend(loc="upper right")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.set_title("staircase: the pool follows the arrival rate")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


STEPS_S = (3.0, 4.0, 8.0)  # the topology's steps: 40/s, 380/s, 40/s
SUITS = (1, 2, 1)  # the pool each step needs: 40 x 4 ms = 0.16 cores, 380 x 4 ms = 1.52


def run_once(overrides: list[str], schedule: bool) -> dict[str, float]:
    """One run in this process; with `schedule`, the oracle's sizes are set as each
    step begins (a thread, through the run's control socket)."""
    with tempfile.TemporaryDirectory(prefix="bench-staircase-") as tmp:
        metrics, workdir = Path(tmp) / "m.jsonl", Path(tmp) / "w"
        top = sedamp.load(TOPOLOGY, [f"collect.params.out={Path(tmp) / 'r.json'}", *overrides])
        stop = threading.Event()
        oracle = threading.Thread(target=_follow_steps, args=(workdir, stop), daemon=True)
        if schedule:
            oracle.start()
        try:
            summary = run_topology(top, RunOptions(workdir=workdir, metrics_path=metrics))
        finally:
            stop.set()
            if schedule:
                oracle.join(10)
        if summary.exit_code != 0:
            raise SystemExit(f"run failed: {summary.error}")
        lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    held, queue = pool_use(lines, "work")
    waits = [((r["stages"]["work"]["latency_ms"]["queue_wait"] or {}).get("p90") or 0.0) for r in lines]
    return {"wall_s": summary.wall_s, "worker_s": held, "max_queue": queue, "worst_p90_wait_ms": max(waits)}


def _follow_steps(workdir: Path, stop: threading.Event) -> None:
    """The oracle: the pool that suits each step, from the moment it begins (timed from
    when the run's control socket answers, which is about when the source starts)."""
    deadline = time.monotonic() + 10
    while not stop.is_set():
        try:
            info = client.find_run(str(TOPOLOGY), workdir)
            break
        except SedampError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
    else:
        return
    t0, at = time.monotonic(), 0.0
    for seconds, workers in zip(STEPS_S, SUITS, strict=True):
        if stop.wait(max(0.0, t0 + at - time.monotonic())):
            return
        client.command(info, {"op": "scale", "stage": "work", "workers": workers})
        at += seconds


def compare(rounds: int) -> None:
    systems = {
        "sedamp": ([], False),
        "static": (["work.workers=1", "controller.policy=static"], False),
        "oracle": (["work.workers.min=1", "work.workers.max=2", "controller.policy=static"], True),
    }
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in systems}
    for _ in range(rounds):
        for name, (overrides, schedule) in systems.items():
            runs[name].append(run_once(overrides, schedule))
    print(f"medians of {rounds} interleaved rounds")
    print(f"{'system':8} {'wall s':>7} {'worker-s':>9} {'longest queue':>14} {'worst p90 wait ms':>18}")
    for name, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(
            f"{name:8} {med['wall_s']:7.2f} {med['worker_s']:9.1f} {med['max_queue']:14.0f} "
            f"{med['worst_p90_wait_ms']:18.1f}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--compare", action="store_true", help="sedamp against the first step's pool and an oracle")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"command : {' '.join(sys.argv)}   ({time.ctime()})")
    if args.compare:
        compare(args.rounds)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-staircase-") as tmp:
        metrics = Path(tmp) / "m.jsonl"
        top = sedamp.load(TOPOLOGY, [f"collect.params.out={Path(tmp) / 'r.json'}"])
        summary = run_topology(top, RunOptions(workdir=Path(tmp) / "w", metrics_path=metrics))
        if summary.exit_code != 0:
            raise SystemExit(f"run failed: {summary.error}")
        lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    a = analyse(lines)
    period = lines[1]["elapsed_s"] - lines[0]["elapsed_s"]
    print(f"{summary.events} events in {summary.wall_s:.1f} s; period {period:.2f} s")

    def gap(x: float | None, y: float | None) -> str:
        return "-" if x is None or y is None else f"{y - x:.2f} s ({(y - x) / period:.1f} periods)"

    print(
        f"rate stepped up at   {a['step_up_s']} s; pool grew at     {a['grow_s']} s: {gap(a['step_up_s'], a['grow_s'])}"
    )
    print(
        f"rate stepped down at {a['step_down_s']} s; pool released at {a['release_s']} s: "
        f"{gap(a['step_down_s'], a['release_s'])}"
    )
    for d in a["decisions"]:
        print(f"  {d['t']:6.2f} s  {d['from']} -> {d['to']}: {d['reason']}")
    if args.plot:
        plot(lines, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

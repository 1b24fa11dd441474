"""Benchmark: the arrival rate steps up and down; the pool should follow it.

Runs topologies/staircase.yaml (a paced source into a ~4 ms stage whose pool may grow
from 1 up to the core budget) with the metrics stream on, and reports from it: when the
rate stepped up and when the pool grew, when the rate stepped down and when the idle
workers were released (the controller's idle timeout is 2 s), and every decision with
its reason. With --plot, a PNG of the arrival rate and the pool size over time.

    python scripts/bench_staircase.py --plot docs/staircase.png
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sedamp  # noqa: E402
from sedamp.control.controller import run_topology  # noqa: E402
from sedamp.control.summary import RunOptions  # noqa: E402

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    print(f"command : {' '.join(sys.argv)}   ({time.ctime()})")
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

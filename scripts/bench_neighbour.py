"""Benchmark: sedamp yields cores to another program and takes them back.

    python scripts/bench_neighbour.py                    # 2 cores: a ~30 s job
    python scripts/bench_neighbour.py --events 8000 --json neighbour.json

A sedamp job (a source, a ~4 ms stage with `workers: {min: 1, max: auto}`, a sink)
runs with its metrics stream on; for the middle third of it (from --at to --at +
--for seconds) a CPU-bound program (a Python busy loop, one core) runs beside it. From
the stream: when the pool shrank after the neighbour started and grew back after it
stopped, and how long at a time the machine had more runnable work than cores (the
workers' busy time plus the neighbour's share of the period, over the cores: what a
user sees as both programs slowed). The pool should shrink within 2 s of the neighbour
starting and grow back within 2 s of it stopping, and the demand should not exceed
the cores for more than 1 s at a time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _benchlib as bl  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

TOPOLOGY = """name: neighbour
stages:
  seeds:
    source: stages.burn:Seeds
    params: {{count: {events}}}
    to: work
  work:
    handler: stages.burn:burn
    params: {{iterations: 38400, field: w}}
    workers: {{min: 1, max: auto}}
    to: collect
  collect:
    sink: stages.burn:Collect
    params: {{out: {out}, field: w}}
"""

BUSY = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass\n"


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    topo = tmp / "neighbour.yaml"
    topo.write_text(TOPOLOGY.format(events=args.events, out=tmp / "out.json"))
    metrics = tmp / "metrics.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "sedamp",
        "run",
        str(topo),
        "--metrics",
        str(metrics),
        "-q",
        "--workdir",
        str(tmp / "w"),
    ]
    t0, t0_wall = time.monotonic(), time.time()
    job = subprocess.Popen(cmd, cwd=REPO, env=bl.user_env(PYTHONPATH=str(REPO)))
    time.sleep(args.at)
    started = time.monotonic() - t0
    neighbour = subprocess.Popen([sys.executable, "-c", BUSY.format(s=args.seconds)])
    neighbour.wait(timeout=args.seconds + 60)
    stopped = time.monotonic() - t0
    code = job.wait(timeout=900)
    if code != 0:
        raise SystemExit(f"the sedamp job exited {code}")
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    # the job's elapsed times start when its controller did, later than ours: on its clock
    lag = max(0.0, records[0]["t"] - records[0]["elapsed_s"] - t0_wall)
    return analyse(records, started - lag, stopped - lag, float(bl.machine_info()["cores"]))


def analyse(records: list[dict[str, Any]], started: float, stopped: float, cores: float) -> dict[str, Any]:
    """When the pool shrank and grew back, and the longest stretch of too much demand:
    the periods whose demand was over the cores, counting of each the time the neighbour
    ran in it (the whole period if it did not run: the pool alone was over). Counted
    whole, a stretch of two periods of which the neighbour ran 0.25 s of the first read
    as 1.01 s. `started` and `stopped` are on the job's clock (its elapsed_s)."""
    rows = []
    prev_t = 0.0
    for r in records:
        t = r["elapsed_s"]
        w = r["stages"]["work"]
        overlap = max(0.0, min(t, stopped) - max(prev_t, started))
        demand = sum(x["busy"] for x in w["worker_detail"]) + overlap / max(1e-6, t - prev_t)
        rows.append({"t": t, "workers": w["workers"], "target": w["target"], "demand": round(demand, 2),
                     "others": r["system"]["other_cores"], "budget": r["system"]["budget"],
                     "neighbour_s": overlap})  # fmt: skip
        prev_t = t
    before = max((x["target"] for x in rows if x["t"] <= started), default=None)
    shrink = next((x["t"] for x in rows if x["t"] > started and before and x["target"] < before), None)
    during = min((x["target"] for x in rows if started < x["t"] <= stopped), default=None)
    regrow = next((x["t"] for x in rows if x["t"] > stopped and during is not None and x["target"] > during), None)
    longest = run_len = 0.0
    prev_t = 0.0
    for x in rows[:-1]:  # the final record is the job's end
        # over the cores only while the neighbour ran: not the part of a period before it started
        over_s = x["neighbour_s"] or (x["t"] - prev_t)
        run_len = run_len + over_s if x["demand"] > cores + 0.1 else 0.0
        longest = max(longest, run_len)
        prev_t = x["t"]
    return {
        "neighbour": [round(started, 2), round(stopped, 2)],
        "pool_before": before,
        "pool_during": during,
        "shrunk_after_s": None if shrink is None else round(shrink - started, 2),
        "grew_back_after_s": None if regrow is None else round(regrow - stopped, 2),
        "longest_over_cores_s": round(longest, 2),
        "wall_s": records[-1]["elapsed_s"],
        "periods": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=12000, help="events of ~4 ms (12,000: about 30 s on 2 cores)")
    ap.add_argument("--at", type=float, default=10.0, help="the neighbour starts this many seconds in")
    ap.add_argument("--seconds", type=float, default=10.0, help="and runs this long")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--verbose", action="store_true", help="print every period")
    args = ap.parse_args(argv)
    print("$ python scripts/bench_neighbour.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(json.dumps(bl.machine_info()))
    with tempfile.TemporaryDirectory() as d:
        res = run(args, Path(d))
    if args.verbose:
        for x in res["periods"]:
            print(f"  {x['t']:6.2f} s  workers {x['workers']} (target {x['target']})  demand {x['demand']:.2f}  "
                  f"others {x['others']:.2f}  budget {x['budget']:.2f}")  # fmt: skip
    print(
        f"neighbour from {res['neighbour'][0]} s to {res['neighbour'][1]} s; pool {res['pool_before']} -> "
        f"{res['pool_during']}: shrank {res['shrunk_after_s']} s after it started (target <= 2: "
        f"{'met' if res['shrunk_after_s'] is not None and res['shrunk_after_s'] <= 2 else 'not met'}), grew back "
        f"{res['grew_back_after_s']} s after it stopped (target <= 2: "
        f"{'met' if res['grew_back_after_s'] is not None and res['grew_back_after_s'] <= 2 else 'not met'}); "
        f"demand over the cores for at most {res['longest_over_cores_s']} s at a time (target <= 1: "
        f"{'met' if res['longest_over_cores_s'] <= 1 else 'not met'}); job {res['wall_s']} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: a stage whose workers take 2 s to set up (50 ms an event) must still grow,
to its share of the cores in one step.

    python scripts/bench_slow_setup.py                   # real on this machine, simulated at 8/16/64
    python scripts/bench_slow_setup.py --cores 8,64 --events 300

The topology: a source, `prep` (~1 ms an event) and `model` (`stages.burn:SlowStart`:
setup() sleeps 2 s, as loading a model would; ~50 ms an event), both
`workers: {min: 1, max: auto}`, and a sink. The controller starts them on an even
split; `model` is the bottleneck, and its share of the cores is cores x 50 / 51. The
guard against growth that does not pay must wait for the new workers' setup() rather
than undo the growth. Printed: the model pool's sizes over time, how many growth steps
it took to reach its peak, and when. On this machine the run is real (the metrics
stream of `sedamp run`); at more cores it is `sedamp simulate` with the same costs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _benchlib as bl  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sedamp.control.simprofile import Profile, with_flags  # noqa: E402
from sedamp.control.simulate import simulate  # noqa: E402

TOPOLOGY = """name: slow-setup
stages:
  seeds:
    source: stages.burn:Seeds
    params: {{count: {events}}}
    to: prep
  prep:
    handler: stages.burn:burn
    params: {{iterations: 9600, field: p}}
    workers: {{min: 1, max: auto}}
    to: model
  model:
    handler: stages.burn:SlowStart
    params: {{iterations: 480000, field: m, setup_s: 2}}
    workers: {{min: 1, max: auto}}
    to: collect
  collect:
    sink: stages.burn:Collect
    params: {{out: {out}, field: m}}
"""


def growths(records: list[dict[str, Any]]) -> list[tuple[float, int, int]]:
    return [(r["elapsed_s"], d["from"], d["to"]) for r in records for d in r["decisions"] if d["stage"] == "model"]


def report(label: str, cores: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    steps = growths(records)
    peak = max(r["stages"]["model"]["target"] for r in records)
    ups = [s for s in steps if s[2] > s[1]]
    share = round(cores * 50 / 51)
    to_share = next((k + 1 for k, (_, _, to) in enumerate(ups) if to >= share), None)
    reached = ups[to_share - 1][0] if to_share else None
    print(
        f"{label:10} {cores:3d} cores: model {records[0]['stages']['model']['target']} -> its share {share} in "
        f"{to_share} growth step(s){f', at {reached:.2f} s' if reached is not None else ''} (peak {peak}); "
        f"decisions: {', '.join(f'{t:.2f} s {a}->{b}' for t, a, b in steps) or 'none'}; "
        f"run {records[-1]['elapsed_s']:.2f} s"
    )
    return {
        "label": label,
        "cores": cores,
        "peak": peak,
        "share": share,
        "steps_to_share": to_share,
        "decisions": steps,
    }


def real(events: int, tmp: Path) -> dict[str, Any]:
    topo = tmp / "slow.yaml"
    topo.write_text(TOPOLOGY.format(events=events, out=tmp / "out.json"))
    metrics = tmp / "m.jsonl"
    cmd = [sys.executable, "-m", "sedamp", "run", str(topo), "--metrics", str(metrics), "-q", "--workdir", str(tmp)]
    proc = subprocess.run(cmd, cwd=REPO, env=bl.user_env(PYTHONPATH=str(REPO)), timeout=900, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the sedamp run exited {proc.returncode}")
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    return report("real", int(bl.machine_info()["cores"]), records)


def simulated(cores: int, events: int, tmp: Path) -> dict[str, Any]:
    topo = tmp / "slow-sim.yaml"
    topo.write_text(TOPOLOGY.format(events=events, out=tmp / "out.json"))
    profile = with_flags(Profile(), costs={"prep": "1ms", "model": "50ms"}, setups={"model": "2s"}, events=events)
    return report("simulated", cores, list(simulate(topo, cores, profile).records))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=lambda t: [int(x) for x in t.split(",")], default=[8, 16, 64])
    ap.add_argument("--events", type=int, default=300, help="events per core of the machine (300)")
    ap.add_argument("--no-real", action="store_true", help="simulate only")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    print("$ python scripts/bench_slow_setup.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(json.dumps(bl.machine_info()))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        if not args.no_real:
            rows.append(real(args.events * int(bl.machine_info()["cores"]) // 2, Path(d)))
        for cores in args.cores:
            rows.append(simulated(cores, args.events * cores // 2, Path(d)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

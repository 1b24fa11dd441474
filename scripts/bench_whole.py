"""Benchmark: pipelines as a user pays for them, each system a whole process timed from
interpreter start to exit, side by side in interleaved rounds.

    python scripts/bench_whole.py                          # heavy and tiny, 3 rounds
    python scripts/bench_whole.py --workload tiny --rounds 5 --json tiny.json
    python scripts/bench_whole.py --events-heavy 60 --events-tiny 20000 --rounds 1   # a smoke check

Workloads
    heavy  Seeds -> a (~1 ms) -> b (~4 ms) -> c (~0.5 ms) -> Collect (topologies/burn.yaml's
           stages), written for sedamp with no worker counts and no groups.
    tiny   Seeds -> a -> b -> Collect with stages that return the event
           (topologies/tiny.yaml's), 1,000,000 events, no worker counts, no groups.
    (start, one event through tiny, is scripts/bench_start.py.)

Systems (each `python scripts/_whole_peers.py SYSTEM ...` or `sedamp run`)
    serial      one process calling every stage in turn: the reference for CPU per event.
    pool        multiprocessing.Pool(cores), the stages fused into one function,
                imap_unordered with chunks of --chunk-heavy / --chunk-tiny events.
    pool-chain  one Pool per stage (1/2/1 workers for heavy, the best fixed split on 2
                cores; 1/1 for tiny), imap_unordered feeding imap_unordered.
    pypeln      pl.process.map per stage, workers as pool-chain (tiny: --events-pypeln-tiny,
                it is slow; compared by rate).
    mpire       mpire.WorkerPool(cores), the stages fused, imap_unordered, same chunks as pool.
    sedamp      `python -m sedamp run TOPOLOGY -q`, the runtime choosing pools and fusion.
    sedamp-trace1, sedamp-trace100   the same with --trace at 1% and 100% sampling (only
                when named: `--systems sedamp,sedamp-trace1,sedamp-trace100` gives
                what event traces cost).

Each round runs every system once, in an order rotated each round; a warm-up round with
few events first fills the bytecode caches. A system's figure is its median over rounds;
"sedamp ÷ this" is the median over rounds of sedamp's rate divided by the system's in
the same round, so the machine's drift between rounds cancels. Every run's output is
checked against the exact expected count and checksum.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _benchlib as bl  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SYSTEMS = ("serial", "pool", "pool-chain", "pypeln", "mpire", "sedamp")
# sedamp with its event traces on (not run unless named): what tracing costs
TRACED = {"sedamp-trace1": "0.01", "sedamp-trace100": "1"}
ITERATIONS = {"heavy": [9600, 38400, 4800], "tiny": []}
TARGETS = {"heavy": ("pool", 1.0, None), "tiny": ("pool", 1.0, 500_000.0)}  # peer, ratio, events/s


def topology(workload: str, directory: Path) -> Path:
    """The example topology of `workload` with no worker counts (and no groups)."""
    name = {"heavy": "burn.yaml", "tiny": "tiny.yaml"}[workload]
    text = re.sub(r"(?m)^\s+workers: .*\n", "", (REPO / "topologies" / name).read_text())
    path = directory / f"{workload}.yaml"
    path.write_text(text)
    return path


def wall_clock() -> str:
    return time.strftime("%H:%M:%S")


def command(system: str, workload: str, n: int, out: Path, chunk: int, topo: Path, work: Path) -> list[str]:
    py = sys.executable
    if system == "sedamp":
        return [py, "-m", "sedamp", "run", str(topo), "--workdir", str(work), "-q"]
    if system in TRACED:
        trace = ["--trace", str(work / f"{system}.json"), "--trace-sample", TRACED[system]]
        return [py, "-m", "sedamp", "run", str(topo), "--workdir", str(work), "-q", *trace]
    return [py, str(REPO / "scripts" / "_whole_peers.py"), system, workload, str(n), str(out), str(chunk)]


def events_for(args: argparse.Namespace, workload: str, system: str) -> int:
    if workload == "heavy":
        return int(args.events_heavy)
    return int(args.events_pypeln_tiny if system == "pypeln" else args.events_tiny)


def expected(workload: str, n: int) -> dict[str, int]:
    """What a run of `workload` over `n` events writes: its count and exact checksum."""
    from stages.burn import expected_checksum

    return expected_checksum(n, ITERATIONS[workload]) if ITERATIONS[workload] else expected_checksum(n)


def run_workload(args: argparse.Namespace, workload: str, tmp: Path) -> dict[str, Any]:
    topo = topology(workload, tmp)
    chunk = args.chunk_heavy if workload == "heavy" else args.chunk_tiny
    base_env = bl.user_env()
    systems = list(args.systems)
    walls: dict[str, list[float]] = {s: [] for s in systems}
    for rnd in range(args.rounds + 1):  # round 0 warms the caches, with few events
        order = systems[rnd % len(systems) :] + systems[: rnd % len(systems)]
        for system in order:
            n = 50 if rnd == 0 else events_for(args, workload, system)
            out = tmp / f"{workload}-{system}.json"
            env = {**base_env, "COUNT": str(n), "OUT": str(out)}
            cmd = command(system, workload, n, out, chunk, topo, tmp / "w")
            label = f"round {rnd} {workload} {system} ({wall_clock()}, {cmd[1]} {cmd[2]} ...)"
            wall = bl.timed_process(cmd, env, REPO, out, expected(workload, n), timeout=900, label=label)
            if rnd > 0:
                walls[system].append(wall)
                print(f"  round {rnd} {workload:5} {system:10} {wall:8.3f} s  {n / wall:12,.0f} events/s", flush=True)
    return {"walls": walls, "events": {s: events_for(args, workload, s) for s in systems}}


def report(workload: str, res: dict[str, Any]) -> dict[str, Any]:
    walls, events = res["walls"], res["events"]
    rates = {s: [events[s] / w for w in ws] for s, ws in walls.items()}
    rows = []
    ratio: dict[str, float] = {}
    for s in walls:
        if "sedamp" in rates:
            ratio[s] = statistics.median(a / b for a, b in zip(rates["sedamp"], rates[s], strict=True))
        rows.append(
            [
                s,
                f"{events[s]:,}",
                f"{statistics.median(walls[s]):.2f}",
                bl.fmt_rate(statistics.median(rates[s])),
                f"{ratio[s]:.2f}x" if s in ratio else "-",
            ]
        )
    print(f"\n{workload}: whole processes, medians of {len(next(iter(walls.values())))} interleaved rounds")
    print(bl.format_table(["system", "events", "wall s", "events/s", "sedamp ÷ this"], rows))
    peer, want, floor = TARGETS[workload]
    verdict = {}
    if "sedamp" in rates and peer in ratio:
        met = ratio[peer] >= want and (floor is None or statistics.median(rates["sedamp"]) >= floor)
        floor_text = f" and >= {floor:,.0f} events/s" if floor else ""
        print(f"target: sedamp >= {want:.2f}x {peer}{floor_text}: {'met' if met else 'not met'}")
        verdict = {"peer": peer, "ratio": ratio[peer], "met": met}
    return {"walls": walls, "events": events, "ratio": ratio, "target": verdict}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", type=lambda t: t.split(","), default=["heavy", "tiny"], help="heavy,tiny")
    ap.add_argument("--systems", type=lambda t: t.split(","), default=list(SYSTEMS), help=",".join(SYSTEMS))
    ap.add_argument("--rounds", type=bl.positive, default=3)
    ap.add_argument("--events-heavy", type=bl.positive, default=2000)
    ap.add_argument("--events-tiny", type=bl.positive, default=1_000_000)
    ap.add_argument("--events-pypeln-tiny", type=bl.positive, default=100_000)
    ap.add_argument("--chunk-heavy", type=bl.positive, default=4, help="Pool/mpire chunk: ~20 ms of work (4)")
    ap.add_argument("--chunk-tiny", type=bl.positive, default=1000, help="Pool/mpire chunk for tiny (1000)")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    for s in args.systems:
        if s not in SYSTEMS and s not in TRACED:
            ap.error(f"unknown system {s!r}: choose among {','.join([*SYSTEMS, *TRACED])}")
    print("$ python scripts/bench_whole.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(json.dumps(bl.machine_info()))
    results = {}
    d = tempfile.mkdtemp(prefix="bench-whole-")
    try:
        for workload in args.workload:
            results[workload] = report(workload, run_workload(args, workload, Path(d)))
    except SystemExit as failed:  # keep the runs' directories: they say what happened
        raise SystemExit(f"{failed}\nthe runs' files are kept in {d}") from None
    shutil.rmtree(d, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(bl.strict_json({"machine": bl.machine_info(), **results}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

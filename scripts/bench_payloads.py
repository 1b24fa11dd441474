"""Benchmark: large arrays through a three-stage chain, each system a whole process timed
from interpreter start to exit, side by side in interleaved rounds.

    python scripts/bench_payloads.py                              # 1, 12 and 48 MB, 3 rounds
    python scripts/bench_payloads.py --sizes 48 --rounds 5 --json payloads.json
    python scripts/bench_payloads.py --sizes 1 --mb 8 --rounds 1  # a smoke check
    python scripts/bench_payloads.py --memory 2000                # 2,000 x 48 MB: peak RSS

Workload: a source of float64 arrays of SIZE MB (each equal to its index), three stages
that each read a strided sample of the array (every 4,096th element) and pass it on,
and a sink that checks every array arrived whole. About --mb megabytes of arrays per
size (default 2,000).

Systems
    sedamp        `sedamp run` of the chain, no worker counts: the runtime chooses pools
                  and fusion (it may fuse the cheap stages: then no array crosses).
    sedamp-apart  the same with `fuse: never` on every stage: each array crosses four
                  process boundaries (source, three stages, sink) through shared
                  blocks (sedamp.runtime.blocks: written once, mapped read-only).
    sedamp-frames sedamp-apart with SEDAMP_SHARED_MEMORY=0: every array as a ZeroMQ
                  frame of its own beside MessagePack (sedamp.runtime.payload).
    pool          multiprocessing.Pool(cores).imap of the three stages fused, chunks of 1:
                  each array pickled (protocol 5) to a worker and back.
    pool-chain    a Pool of one worker per stage, imap feeding imap: each array crosses
                  the parent between stages (six crossings).
    ray           a Ray task per stage, arrays through Ray's object store, 2 x cores
                  events in flight (if Ray is installed).

With --memory N, sedamp-apart alone moves N arrays of 48 MB through its four queues,
each bounded at --queue-bytes (default 64MiB: 256 MiB of bounds in all), and the peak
RSS of its process tree is compared with 1.5 GiB: a run's memory is its bounds, the
events in hand and the interpreters, whatever the number of events.

"sedamp ÷ this" is the median over rounds of sedamp's bytes per second divided by the
system's in the same round. Peak RSS is the largest sum over the process tree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _benchlib as bl  # noqa: E402
from _payload_stages import expected  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
SYSTEMS = ("sedamp", "sedamp-apart", "sedamp-frames", "pool", "pool-chain", "ray")
TARGET = ("pool-chain", 2.0)  # sedamp-apart moves >= 2x the bytes per second of chained Pools


def topology(directory: Path, count: int, nbytes: int, apart: bool, queue_bytes: str = "") -> Path:
    fuse = "    fuse: never\n" if apart else ""
    if queue_bytes:
        fuse += f"    queue: {{max_bytes: {queue_bytes}}}\n"
    text = f"""name: payloads
stages:
  src:
    source: _payload_stages:Arrays
    params: {{count: {count}, nbytes: {nbytes}}}
    to: look1
  look1:
    handler: _payload_stages:look1
{fuse}    to: look2
  look2:
    handler: _payload_stages:look2
{fuse}    to: look3
  look3:
    handler: _payload_stages:look3
{fuse}    to: check
  check:
    sink: _payload_stages:Check
{fuse}    params: {{out: "${{OUT}}"}}
"""
    path = directory / f"payloads-{'apart' if apart else 'free'}-{nbytes}.yaml"
    path.write_text(text)
    return path


def command(system: str, count: int, nbytes: int, out: Path, tmp: Path, queue_bytes: str = "") -> list[str]:
    py = sys.executable
    if system.startswith("sedamp"):
        topo = topology(tmp, count, nbytes, system != "sedamp", queue_bytes)
        return [py, "-m", "sedamp", "run", str(topo), "--workdir", str(tmp / "w"), "-q"]
    return [py, str(SCRIPTS / "_payload_peers.py"), system, str(count), str(nbytes), str(out)]


def timed(cmd: list[str], env: dict[str, str], out: Path, want: Any) -> tuple[float, int]:
    """Wall time and peak RSS of one run (bl.timed_process, with the tree's memory sampled)."""
    import subprocess
    import time

    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss = bl.TreeRss(proc.pid).start()
    _, err = proc.communicate(timeout=1800)
    wall = time.perf_counter() - t0
    peak = rss.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[1:5])} failed ({proc.returncode}): {err.strip()[-800:]}")
    if (got := json.loads(out.read_text())) != want:
        raise SystemExit(f"{' '.join(cmd[1:5])}: wrong result {got} (expected {want})")
    return wall, peak


def run_size(args: argparse.Namespace, mb: int, tmp: Path) -> dict[str, Any]:
    nbytes = mb * 1_000_000
    count = max(2, int(args.mb) // mb)
    env = bl.user_env()
    env["PYTHONPATH"] = os.pathsep.join([str(SCRIPTS), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    systems = list(args.systems)
    walls: dict[str, list[float]] = {s: [] for s in systems}
    peaks: dict[str, list[int]] = {s: [] for s in systems}
    for rnd in range(args.rounds + 1):  # round 0 warms the caches, with two events
        order = systems[rnd % len(systems) :] + systems[: rnd % len(systems)]
        for system in order:
            n = 2 if rnd == 0 else count
            out = tmp / f"{system}-{mb}.json"
            env_s = {**env, "OUT": str(out), **({"SEDAMP_SHARED_MEMORY": "0"} if system == "sedamp-frames" else {})}
            wall, peak = timed(command(system, n, nbytes, out, tmp), env_s, out, expected(n, nbytes))
            if rnd > 0:
                walls[system].append(wall)
                peaks[system].append(peak)
                rate, mib = n * nbytes / wall / 1e6, peak / 2**20
                line = f"  round {rnd} {mb:3} MB {system:13} {wall:7.2f} s {rate:8.0f} MB/s  peak {mib:6.0f} MiB"
                print(line, flush=True)
    return {"count": count, "nbytes": nbytes, "walls": walls, "peaks": peaks}


def report(mb: int, res: dict[str, Any]) -> dict[str, Any]:
    walls, total = res["walls"], res["count"] * res["nbytes"]
    rates = {s: [total / w / 1e6 for w in ws] for s, ws in walls.items()}
    ratio = {
        s: statistics.median(a / b for a, b in zip(rates[main], rates[s], strict=True))
        for s in walls
        for main in [("sedamp-apart" if "sedamp-apart" in rates else "sedamp")]
        if main in rates
    }
    rows = [
        [s, f"{statistics.median(walls[s]):.2f}", f"{statistics.median(rates[s]):,.0f}",
         f"{statistics.median(res['peaks'][s]) / 2**20:,.0f}", f"{ratio[s]:.2f}x" if s in ratio else "-"]
        for s in walls
    ]  # fmt: skip
    print(f"\n{mb} MB arrays x {res['count']}: whole processes, medians of {len(next(iter(walls.values())))} rounds")
    print(bl.format_table(["system", "wall s", "MB/s", "peak MiB", "sedamp-apart ÷ this"], rows))
    verdict = {}
    peer, want = TARGET
    if peer in ratio and "sedamp-apart" in rates:
        met = ratio[peer] >= want
        print(f"target: sedamp-apart >= {want:.1f}x {peer} in MB/s: {'met' if met else 'not met'}")
        verdict = {"peer": peer, "ratio": ratio[peer], "met": met}
    return {**res, "ratio": ratio, "target": verdict}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=lambda t: [int(x) for x in t.split(",")], default=[1, 12, 48], help="MB: 1,12,48")
    ap.add_argument("--systems", type=lambda t: t.split(","), default=None, help=",".join(SYSTEMS))
    ap.add_argument("--rounds", type=bl.positive, default=3)
    ap.add_argument("--mb", type=bl.positive, default=2000, help="megabytes of arrays per size and run (2000)")
    ap.add_argument("--memory", type=bl.positive, metavar="N", help="only: N arrays of 48 MB, peak RSS")
    ap.add_argument("--queue-bytes", default="64MiB", help="with --memory: each queue's max_bytes (64MiB)")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    if args.memory:
        return memory(args.memory, args.queue_bytes)
    if args.systems is None:
        args.systems = [s for s in SYSTEMS if s != "ray" or _has_ray()]
    for s in args.systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}: choose among {','.join(SYSTEMS)}")
    print("$ python scripts/bench_payloads.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(json.dumps(bl.machine_info()))
    results = {}
    with tempfile.TemporaryDirectory() as d:
        for mb in args.sizes:
            results[f"{mb}MB"] = report(mb, run_size(args, mb, Path(d)))
    if args.json:
        Path(args.json).write_text(json.dumps(bl.strict_json({"machine": bl.machine_info(), **results}), indent=1))
    return 0


def memory(count: int, queue_bytes: str) -> int:
    nbytes = 48_000_000
    print(f"$ python scripts/bench_payloads.py --memory {count} --queue-bytes {queue_bytes}")
    print(json.dumps(bl.machine_info()))
    env = bl.user_env()
    env["PYTHONPATH"] = os.pathsep.join([str(SCRIPTS), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "out.json"
        cmd = command("sedamp-apart", count, nbytes, out, Path(d), queue_bytes)
        wall, peak = timed(cmd, {**env, "OUT": str(out)}, out, expected(count, nbytes))
    gib = peak / 2**30
    print(f"{count} x 48 MB through 4 queues of max_bytes {queue_bytes}: {wall:.1f} s, "
          f"{count * nbytes / wall / 1e6:,.0f} MB/s, peak RSS {gib:.2f} GiB")  # fmt: skip
    print(f"target: peak < 1.5 GiB: {'met' if gib < 1.5 else 'not met'}")
    return 0


def _has_ray() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


if __name__ == "__main__":
    sys.exit(main())

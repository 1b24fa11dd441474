"""Benchmark: a one-event job, each system timed as a whole process, interpreter start to
exit, which is what a user pays for a small job.

    python scripts/bench_start.py [--rounds 9] [--json FILE]

Systems (each a fresh interpreter, one event through topologies/tiny.yaml's work: a
source of one seed, two stages that return the event, a sink that sums it):
    python      `python -c pass`: the floor, the interpreter alone.
    serial      the three stages called in one process.
    pool        multiprocessing.Pool(cores) mapping the stages over the one event, closed
                and joined: the peer sedamp replaces.
    sedamp      `sedamp run topologies/tiny.yaml` with COUNT=1, -q.

Rounds are interleaved (every system once per round, the order rotated each round) and
a warm-up round is run and dropped first, so that every system starts with its bytecode
cached (PYTHONDONTWRITEBYTECODE is removed from the children's environment: a user's
installed package has its .pyc files). The report gives each system's median wall time
and the median over rounds of sedamp's wall divided by each peer's. Target: sedamp
<= 0.20 s."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _benchlib as bl  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 0.20

SERIAL = """
from stages.burn import Collect, Seeds, tiny
import sys
src = Seeds(); src.setup(1)
sink = Collect(); sink.setup(sys.argv[1])
for ev in src:
    sink.handle(tiny(tiny(ev)))
sink.teardown()
"""

POOL = """
import multiprocessing, os, sys
from stages.burn import Collect, Seeds, tiny

def both(ev):
    return tiny(tiny(ev))

if __name__ == "__main__":
    src = Seeds(); src.setup(1)
    sink = Collect(); sink.setup(sys.argv[1])
    with multiprocessing.Pool(len(os.sched_getaffinity(0))) as pool:
        for out in pool.imap_unordered(both, src):
            sink.handle(out)
    pool.join()
    sink.teardown()
"""


def commands(tmp: Path) -> dict[str, list[str]]:
    py = sys.executable
    out = str(tmp / "out.json")
    return {
        "python": [py, "-c", "pass"],
        "serial": [py, "-c", SERIAL, out],
        "pool": [py, "-c", POOL, out],
        "sedamp": [py, "-m", "sedamp", "run", str(REPO / "topologies" / "tiny.yaml"), "--workdir", str(tmp / "w")]
        + ["-q"],
    }


def timed(cmd: list[str], env: dict[str, str], out: Path) -> float:
    """The wall time of `cmd`; every system but the bare interpreter writes one event's result."""
    checked = out if cmd[1:3] != ["-c", "pass"] else None
    return bl.timed_process(cmd, env, REPO, checked, {"count": 1, "checksum": 0}, timeout=60)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=bl.positive, default=9, help="interleaved rounds after the warm-up (9)")
    ap.add_argument("--json", metavar="FILE", help="also write every wall time as JSON to FILE")
    args = ap.parse_args(argv)
    print("$ python scripts/bench_start.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(json.dumps(bl.machine_info()))
    env = bl.user_env()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        env["OUT"], env["COUNT"] = str(tmp / "out.json"), "1"
        cmds = commands(tmp)
        names = list(cmds)
        walls: dict[str, list[float]] = {n: [] for n in names}
        for rnd in range(args.rounds + 1):
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            for n in order:
                wall = timed(cmds[n], env, tmp / "out.json")
                if rnd > 0:  # round 0 warms the caches
                    walls[n].append(wall)
    rows = []
    for n in names:
        ratio = statistics.median(s / p for s, p in zip(walls["sedamp"], walls[n], strict=True))
        rows.append([n, f"{statistics.median(walls[n]):.3f}", f"{min(walls[n]):.3f}", f"{ratio:.2f}x"])
    print(bl.format_table(["system", "median s", "best s", "sedamp ÷ this"], rows, [False, True, True, True]))
    median_sedamp = statistics.median(walls["sedamp"])
    met = median_sedamp <= TARGET_S
    print(f"target: sedamp one-event job <= {TARGET_S:.2f} s: {'met' if met else 'not met'} ({median_sedamp:.3f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"walls": walls, "target_s": TARGET_S, "met": met}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

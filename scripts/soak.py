"""Soak: a million small events through three stages while workers are killed at random.

    python scripts/soak.py                      # 1,000,000 events, a kill every 0.5 s
    python scripts/soak.py --events 200000 --kill-every 0.3 --seed 7

Runs ``sedamp run`` on seeds -> a -> b -> tally (a and b return the event unchanged, two
workers each; the tally sink dedupes and counts how often it saw each event). Meanwhile
it SIGKILLs a random worker of a or b every --kill-every seconds (jittered), and samples
the memory (RSS) of every process of the run by kind. It reports events in and out, the
duplicates the sink suppressed, events lost (must be 0) and seen twice (must be 0), and
for each process kind the peak RSS, the RSS after warm-up and at the end.

The exit status is 0 only if nothing was lost or duplicated and the run succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent

TOPOLOGY = """\
name: soak
stages:
  seeds:
    source: stages.burn:Seeds
    params: {{count: {events}}}
    to: a
  a:
    handler: stages.burn:tiny
    workers: 2
    to: b
  b:
    handler: stages.burn:tiny
    workers: 2
    to: tally
  tally:
    sink: scripts.soak:Tally
    params: {{out: "{out}", count: {events}}}
    dedupe: true
"""

KINDS = {"sdq": "queue", "sdw": "worker", "sds": "source"}


class Tally:
    """Sink: how many times each seed arrived (one byte per event), written at teardown."""

    def setup(self, out: str, count: int) -> None:
        self.out = out
        self.counts = bytearray(int(count))

    def handle(self, event: dict[str, Any]) -> None:
        i = event["seed"]
        if self.counts[i] < 255:
            self.counts[i] += 1

    def teardown(self) -> None:
        Path(self.out).write_bytes(bytes(self.counts))


def kind_of(p: psutil.Process, run_pid: int) -> str | None:
    if p.pid == run_pid:
        return "controller"
    name = p.name()
    if name.startswith("sd") and name[:3] in KINDS:
        return KINDS[name[:3]]
    if "sedamp.runtime.launcher" in " ".join(p.cmdline()):
        return "launcher"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--kill-every", type=float, default=0.5, help="seconds between kills (jittered +-50%%)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory(prefix="sedamp-soak-") as tmp:
        out = Path(tmp) / "tally.bin"
        topo = Path(tmp) / "soak.yaml"
        topo.write_text(TOPOLOGY.format(events=args.events, out=out))
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "sedamp", "run", str(topo), "--workdir", str(Path(tmp) / "w"), "--json"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        run = psutil.Process(proc.pid)
        samples: list[tuple[float, dict[str, float]]] = []  # (elapsed, kind -> largest RSS MiB)
        kills: list[tuple[float, str]] = []
        next_kill = t0 + args.kill_every * rng.uniform(0.5, 1.5)
        while proc.poll() is None and time.monotonic() - t0 < args.timeout:
            time.sleep(0.1)
            now = time.monotonic()
            try:
                procs = [run, *run.children(recursive=True)]
            except psutil.Error:
                break
            rss: dict[str, float] = {}
            victims = []
            for p in procs:
                try:
                    kind = kind_of(p, run.pid)
                    if kind is None or p.status() == psutil.STATUS_ZOMBIE:
                        continue
                    rss[kind] = max(rss.get(kind, 0.0), p.memory_info().rss / 2**20)
                    if p.name().startswith(("sdw:a", "sdw:b")):
                        victims.append(p)
                except psutil.Error:
                    continue
            samples.append((now - t0, rss))
            if now >= next_kill and victims:
                v = rng.choice(victims)
                try:
                    name = v.name()
                    v.kill()
                    kills.append((now - t0, name))
                except psutil.Error:
                    pass
                next_kill = now + args.kill_every * rng.uniform(0.5, 1.5)
        if proc.poll() is None:
            proc.kill()
            print(f"soak: the run did not finish within {args.timeout:.0f} s", file=sys.stderr)
        stdout, stderr = proc.communicate()
        wall = time.monotonic() - t0
        try:
            summary = json.loads(stdout)
        except json.JSONDecodeError:
            print(stderr, file=sys.stderr)
            return 1
        counts = out.read_bytes() if out.exists() else b""

    seen = sum(1 for c in counts if c)
    lost = args.events - seen
    twice = sum(1 for c in counts if c > 1)
    stages = {s["name"]: s for s in summary["stages"]}
    print(f"command : {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"python  : {sys.version.split()[0]}, {os.cpu_count()} cores, {time.ctime()}")
    rate = summary["events"] / wall
    print(f"run     : exit {proc.returncode} in {wall:.1f} s ({rate:,.0f} events/s), error: {summary['error']}")
    print(f"kills   : {len(kills)} workers SIGKILLed "
          f"(restarts a {stages['a']['restarts']}, b {stages['b']['restarts']})")  # fmt: skip
    print(f"events  : in {summary['events']:,}, out {seen:,}, duplicates suppressed by the sink "
          f"{stages['tally']['duplicates']:,}, lost {lost:,}, delivered twice {twice:,}")  # fmt: skip
    print("memory  : RSS MiB of the largest process of each kind (sampled every 0.1 s)")
    print(f"  {'kind':<11}{'after warm-up':>14}{'peak':>9}{'final':>9}")
    for kind in ("controller", "launcher", "source", "queue", "worker"):
        seen_at = [(t, s[kind]) for t, s in samples if kind in s]
        if not seen_at:
            continue
        span = seen_at[-1][0] - seen_at[0][0]
        warm = next(v for t, v in seen_at if t >= seen_at[0][0] + 0.2 * span)
        peak = max(v for _, v in seen_at)
        print(f"  {kind:<11}{warm:>14.1f}{peak:>9.1f}{seen_at[-1][1]:>9.1f}")
    ok = proc.returncode == 0 and lost == 0 and twice == 0 and kills
    print("verdict : " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

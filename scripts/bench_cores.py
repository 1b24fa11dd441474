"""Benchmark: where each system's CPU goes, process by process, and what that makes of
a job on more cores than this machine has.

    python scripts/bench_cores.py                                  # tiny, on 1 and 2 cores, 3 rounds
    python scripts/bench_cores.py --workload heavy --rounds 3
    python scripts/bench_cores.py --events-tiny 20000 --rounds 1   # a smoke check

What it runs
    The workloads of scripts/bench_whole.py (heavy, tiny: the same topologies with no
    worker counts and no groups, the same `Pool.imap` peer, the same checked outputs),
    sedamp and `pool`, each a whole process pinned to the first 1, 2, ... cores
    (--cores; both systems size their pools to the cores they may run on), in interleaved
    rounds.

What it measures
    wall     interpreter start to exit, as in bench_whole.
    CPU      the whole tree's CPU seconds (user + system), exact: the rusage of the
             child when it is reaped, which counts every descendant reaped below it.
    by role  each process's CPU, read every --sample-ms while it runs (a process's last
             few milliseconds are missed; the table says how much is unattributed),
             grouped: sedamp's command line and controller, launcher, each queue, each
             source and each stage's pool; `pool`'s main process (its task, result and
             worker-handler threads share one GIL) and its workers.

What it predicts
    On N cores a job takes at least bound(N) = max(CPU / N, the largest CPU of a
    group / the processes it may spread over): a pool that grows with the cores (a stage
    whose workers range up to the budget, or `Pool`'s workers) divides its CPU among N
    processes; a source, a queue, a sink of one worker, the command line and `Pool`'s
    main process do not. The measured wall over the bound on the cores this machine has
    shows how far each system is from its bound; the estimate for larger N is the bound
    times that ratio on the most cores measured. It assumes the CPU per event stays
    what it is here (no contention for memory bandwidth) and that the start-up does not
    grow with the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _benchlib as bl  # noqa: E402
import bench_whole as bw  # noqa: E402
import psutil  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SYSTEMS = ("sedamp", "pool")
PREDICT = (4, 8, 16, 64)


@dataclass
class Usage:
    """One run: its wall, the tree's exact CPU, and each process's CPU seen while it ran."""

    wall_s: float
    cpu_s: float
    procs: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> (role, CPU s)

    def by_role(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for role, cpu in self.procs.values():
            out[role] = out.get(role, 0.0) + cpu
        return out


def role_of(system: str, name: str, cmdline: Sequence[str], is_root: bool) -> str:
    """The group a process belongs to, from its name (sedamp's processes are titled
    sdq:STAGE, sdw:STAGE:i, sds:STAGE) and command line."""
    if is_root:
        return "command line + controller" if system == "sedamp" else "main"
    if system != "sedamp":
        return "workers"
    kind, _, rest = name.partition(":")
    stage = rest.split(":")[0]
    if kind == "sdq":
        return f"queue {stage}"
    if kind == "sds":
        return f"source {stage}"
    if kind == "sdw":
        return f"pool {stage}"
    if "sedamp.runtime.launcher" in " ".join(cmdline):
        return "launcher"
    return f"other {name}"


def settled(role: str) -> bool:
    """Whether a process's role can no longer change: not before it is read, nor while
    it may be a fork that has not yet exec'd (the launcher started by the command
    line) or not yet named itself (a child of the launcher)."""
    return bool(role) and role != "launcher" and not role.startswith("other ")


def spread(system: str, role: str, pools: Mapping[str, int | None]) -> int | None:
    """How many processes a group's CPU may be spread over: None for as many as there
    are cores (a pool whose size ranges up to the core budget); a sedamp pool's largest
    size (`pools`: None when that is the budget); 1 for a process alone."""
    if system == "pool":
        return None if role == "workers" else 1
    if role.startswith("pool "):
        return pools.get(role.removeprefix("pool "), 1)
    return 1


def bound(cpu_s: float, groups: Mapping[str, float], spreads: Mapping[str, int | None], cores: int) -> float:
    """The least wall a job can take on `cores` cores: its CPU over the cores, or the
    largest group over the processes it may spread over, whichever is longer."""
    serial = [
        cpu / (cores if spreads.get(role) is None else min(cores, spreads[role] or 1)) for role, cpu in groups.items()
    ]
    return max([cpu_s / cores, *serial])


def pool_sizes(topology: Path) -> dict[str, int | None]:
    """The largest size of each pool of `topology` as sedamp runs it (fused runs under
    their first stage's name): None for one that ranges up to the core budget."""
    from sedamp.spec import fusion, load_topology

    top, _ = fusion.plan(load_topology(topology, check_handlers=False))
    return {s.name: s.workers.max for s in top.stages.values() if s.kind != "source" and not top.is_member(s.name)}


class Sampler:
    """Reads the CPU of every process of a tree every `period_s`, keeping the last
    reading of each (with its role) for when it has exited."""

    def __init__(self, root: int, system: str, period_s: float) -> None:
        self.root, self.system, self.period_s = root, system, period_s
        self.seen: dict[int, tuple[str, float]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop.is_set():
            for p in bl.tree_processes(self.root):
                try:
                    t = p.cpu_times()
                    role = self.seen[p.pid][0] if p.pid in self.seen else ""
                    if not settled(role):  # a fork names itself, or execs, just after
                        role = role_of(self.system, p.name(), p.cmdline(), p.pid == self.root)
                except psutil.Error:
                    continue
                self.seen[p.pid] = (role, t.user + t.system)
            self.stop.wait(self.period_s)

    def finish(self) -> dict[int, tuple[str, float]]:
        self.stop.set()
        self.thread.join(5)
        return dict(self.seen)


def run_once(cmd: list[str], env: dict[str, str], cores: Sequence[int], system: str, sample_s: float) -> Usage:
    """Run `cmd` pinned to `cores` to its exit: its wall, its tree's CPU and its roles."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=lambda: os.sched_setaffinity(0, cores),
        )
        sampler = Sampler(proc.pid, system, sample_s).start()
        _, status, rusage = os.wait4(proc.pid, 0)  # the rusage counts the descendants reaped below it
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        seen = sampler.finish()
        if proc.returncode != 0:
            err.seek(0)
            text = err.read().decode(errors="replace").strip()[-800:]
            raise SystemExit(f"{' '.join(cmd[:5])} failed ({proc.returncode}): {text}")
    return Usage(wall, rusage.ru_utime + rusage.ru_stime, seen)


def cores_for(usable: Sequence[int], count: int) -> list[int]:
    """The cores a run on `count` cores is pinned to: the first of those this process
    may use (under `taskset -c 2,3`, core 0 is not one of them)."""
    return sorted(usable)[:count]


def run_all(
    args: argparse.Namespace, tmp: Path, usable: list[int], check: Callable[[Path, int], None]
) -> dict[int, dict[str, list[Usage]]]:
    """Every round: each core count (pinned to the first of the `usable` cores), each
    system; `check` reads each run's output."""
    topo = bw.topology(args.workload, tmp)
    chunk = args.chunk_heavy if args.workload == "heavy" else args.chunk_tiny
    n = args.events_heavy if args.workload == "heavy" else args.events_tiny
    usages: dict[int, dict[str, list[Usage]]] = {c: {s: [] for s in SYSTEMS} for c in args.cores}
    for rnd in range(args.rounds + 1):  # round 0 warms the caches, with few events
        for c in args.cores:
            order = SYSTEMS if rnd % 2 else tuple(reversed(SYSTEMS))
            for system in order:
                count = 50 if rnd == 0 else n
                out = tmp / f"{system}.json"
                out.unlink(missing_ok=True)
                env = bl.user_env(COUNT=str(count), OUT=str(out))
                cmd = bw.command(system, args.workload, count, out, chunk, topo, tmp / "w")
                u = run_once(cmd, env, cores_for(usable, c), system, args.sample_ms / 1000)
                check(out, count)
                if rnd > 0:
                    usages[c][system].append(u)
                    print(f"  round {rnd} {c} core(s) {system:7} {u.wall_s:7.3f} s  CPU {u.cpu_s:6.3f} s", flush=True)
    return usages


def summarise(
    usages: Mapping[int, Mapping[str, list[Usage]]], pools: Mapping[str, int | None], events: int
) -> dict[str, Any]:
    """Medians per core count and system; the bound and the measured over it; the
    estimate for PREDICT cores."""
    table: dict[str, Any] = {"measured": {}, "roles": {}, "estimate": {}}
    most = max(usages)
    for c, by_system in sorted(usages.items()):
        for system, runs in by_system.items():
            wall = statistics.median(u.wall_s for u in runs)
            cpu = statistics.median(u.cpu_s for u in runs)
            roles: dict[str, float] = {}
            for role in {r for u in runs for r in u.by_role()}:
                roles[role] = statistics.median(u.by_role().get(role, 0.0) for u in runs)
            spreads = {r: spread(system, r, pools) for r in roles}
            b = bound(cpu, roles, spreads, c)
            table["measured"].setdefault(system, {})[c] = {"wall_s": wall, "cpu_s": cpu, "bound_s": b, "over": wall / b}
            if c == most:
                table["roles"][system] = {"roles": roles, "spreads": spreads, "cpu_s": cpu}
    for system, r in table["roles"].items():
        over = table["measured"][system][most]["over"]
        for n in PREDICT:
            b = bound(r["cpu_s"], r["roles"], r["spreads"], n)
            table["estimate"].setdefault(system, {})[n] = {
                "bound_s": b,
                "wall_s": b * over,
                "events_s": events / (b * over),
            }
    return table


def report(table: Mapping[str, Any], events: int) -> None:
    rows = []
    for system, by_cores in table["measured"].items():
        for c, m in sorted(by_cores.items()):
            rows.append(
                [
                    system,
                    str(c),
                    f"{m['wall_s']:.3f}",
                    f"{events / m['wall_s']:,.0f}",
                    f"{m['cpu_s']:.3f}",
                    f"{m['bound_s']:.3f}",
                    f"{m['over']:.2f}",
                ]
            )
    print("\nmeasured (medians over rounds)")
    print(bl.format_table(["system", "cores", "wall s", "events/s", "CPU s", "bound s", "wall / bound"], rows))
    for system, r in table["roles"].items():
        parts = sorted(r["roles"].items(), key=lambda kv: -kv[1])
        seen = sum(r["roles"].values())
        print(f"\n{system}: CPU by role on the most cores measured (s; * spreads over the cores)")
        for role, cpu in parts:
            print(f"  {role:28} {cpu:7.3f}{' *' if r['spreads'][role] is None else ''}")
        print(f"  {'unattributed':28} {max(0.0, r['cpu_s'] - seen):7.3f}")
    rows = []
    for n in PREDICT:
        cells = [str(n)]
        for system in SYSTEMS:
            e = table["estimate"][system][n]
            cells += [f"{e['wall_s']:.3f}", f"{e['events_s']:,.0f}"]
        cells.append(f"{table['estimate']['pool'][n]['wall_s'] / table['estimate']['sedamp'][n]['wall_s']:.2f}x")
        rows.append(cells)
    print("\nestimated on more cores (bound x the measured wall / bound on the most cores here)")
    print(bl.format_table(["cores", "sedamp s", "sedamp events/s", "pool s", "pool events/s", "sedamp ÷ pool"], rows))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=("tiny", "heavy"), default="tiny")
    ap.add_argument(
        "--cores",
        type=lambda t: [int(x) for x in t.split(",")],
        default=None,
        help="core counts to pin to, e.g. 1,2 (default: 1 up to the usable cores)",
    )
    ap.add_argument("--rounds", type=bl.positive, default=3)
    ap.add_argument("--events-heavy", type=bl.positive, default=2000)
    ap.add_argument("--events-tiny", type=bl.positive, default=1_000_000)
    ap.add_argument("--chunk-heavy", type=bl.positive, default=4)
    ap.add_argument("--chunk-tiny", type=bl.positive, default=1000)
    ap.add_argument("--sample-ms", type=float, default=20.0)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    usable = sorted(os.sched_getaffinity(0))
    args.cores = args.cores or list(range(1, len(usable) + 1))
    if max(args.cores) > len(usable) or min(args.cores) < 1:
        ap.error(f"--cores must be between 1 and {len(usable)} here")
    print("$ python scripts/bench_cores.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(json.dumps(bl.machine_info()))

    def check(out: Path, count: int) -> None:
        want = bw.expected(args.workload, count)
        got = json.loads(out.read_text())
        if got != want:
            raise SystemExit(f"wrong result {got} (expected {want})")

    events = args.events_heavy if args.workload == "heavy" else args.events_tiny
    with tempfile.TemporaryDirectory(prefix="bench-cores-") as d:
        pools = pool_sizes(bw.topology(args.workload, Path(d)))
        usages = run_all(args, Path(d), usable, check)
    table = summarise(usages, pools, events)
    report(table, events)
    if args.json:
        Path(args.json).write_text(json.dumps(bl.strict_json({"machine": bl.machine_info(), **table}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

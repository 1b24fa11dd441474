"""Benchmark: the same pipelines under serial Python, multiprocessing, pypeln and sedamp.

Run from the repository root (the final figures belong to a quiet machine):

    python scripts/bench_pipeline.py                       # every workload, every system
    python scripts/bench_pipeline.py --workload heavy --repeat 3 --json bench.json
    python scripts/bench_pipeline.py --events-heavy 60 --events-tiny 20000 \\
        --events-pypeln-tiny 2000 --events-memory 2000      # a quick smoke check

Workloads
    heavy   topologies/burn.yaml: Seeds -> a (~1 ms) -> b (~4 ms) -> c (~0.5 ms) ->
            Collect, pure-Python CPU stages (stages.burn.burn with the iteration counts
            and seed_field chaining of the YAML). Workers per stage 1/2/1 for sedamp,
            pypeln and the chained pools. Measures how close each system gets to the
            machine's CPU limit when the work is real.
    tiny    topologies/tiny.yaml: Seeds -> a -> b -> Collect with stages that return
            the event unchanged. Measures each system's own per-event cost (moving
            events between processes). pypeln runs on fewer events (it is slow here);
            rates are per second, so they still compare.
    memory  a source of large events (default 20,000 x 64 KiB, deterministic bytes)
            -> one deliberately slow stage (burn, ~0.5 ms) -> a sink that checks every
            payload. Measures the peak summed RSS of the whole process tree: sedamp
            (bounded queues of --memory-capacity events) against Pool.imap producing
            the events in a worker while the parent runs the slow stage (results pile
            up in the parent: the classic unbounded buffer). Each system runs in a fresh
            child interpreter, sampled every 50 ms with psutil (the child plus all its
            descendants; this harness process is left out, so earlier workloads cannot
            inflate it). "base" is the child's own RSS just before it starts the run.

Systems
    serial      one process, one event at a time through every stage. Always run: it is
                the reference (its process_time gives the CPU cost per event).
    pool        one multiprocessing.Pool of `cores` processes, one function doing all
                stages per event, imap_unordered with a chunksize of ~20 ms of work
                (at most N / (4 x processes), Pool.map's own rule). In the memory
                workload: Pool(1).imap making the events (chunksize by the same rule on
                the measured cost of making and pickling one), the slow stage and the
                sink in the parent.
    pool-chain  one Pool per handler stage (sizes as sedamp's workers), imap_unordered
                feeding imap_unordered, each with a ~20 ms-of-work chunksize; the parent
                is the sink. Unordered because the checksum does not depend on order,
                and it avoids head-of-line blocking behind a slow chunk.
    pypeln      pl.process.map per handler stage, chained, workers as sedamp's,
                default (unbounded) maxsize; the parent is the sink.
    sedamp      sedamp.api.run of the topology in this process (it starts its own
                processes), workdir and output in a fresh temporary directory.
Every wall time includes starting and stopping that system's processes: a Pool's
start-up, sedamp's start-up. sedamp reports no time from its first event to its last,
so no "excluding start-up" rate is derived; as a separate measured fact the report
gives the wall time of an empty run (0 events) of the same topology.

How to read a table
    events/s       events / wall seconds (best of --repeat runs: the shortest wall).
    eff. vs limit  events/s divided by the machine's limit = cores / (CPU seconds per
                   event of the serial run, time.process_time). 100% means every core
                   did only the stages' own work for the whole run; serial can reach at
                   most 1/cores. In the memory workload the single slow stage bounds the
                   rate by design, so efficiency is not the point there.
    sedamp ÷ this  sedamp's events/s divided by this row's: above 1 sedamp is faster.
    check          count and checksum equal to the exact expected value
                   (stages.burn.expected_checksum), and serial agrees with it. Any
                   mismatch or error is printed loudly and the script exits with 1.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import multiprocessing
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _benchlib as bl
from _benchlib import Pipeline

from stages.burn import burn, expected_checksum

REPO = Path(__file__).resolve().parent.parent
TOPOLOGIES = REPO / "topologies"

SYSTEMS = ("serial", "pool", "pool-chain", "pypeln", "sedamp")
WORKLOADS = ("heavy", "tiny", "memory")
MEMORY_SYSTEMS = ("serial", "pool", "sedamp")

# Chunks of about this much CPU work: long enough that a chunk's pickling and pipe
# round trip (~100 us) is noise, short enough that no worker idles behind another's.
TARGET_CHUNK_S = 0.02
# The memory workload's slow stage: stages.burn.burn with c's iteration count in
# topologies/burn.yaml (~0.5 ms), and the source's batch (events per PUT).
MEMORY_BURN_ITERATIONS = 4800
MEMORY_SOURCE_BATCH = 16
MEMORY_SAMPLE_S = 0.05


@dataclass(frozen=True)
class CpuWorkload:
    name: str
    topology: Path
    events: int
    pypeln_events: int
    workers: Mapping[str, int]  # per handler stage: sedamp, pypeln, pool-chain
    domain: Path | None = None  # the same pipeline with its stages in one group (sedamp-domain)


@dataclass
class Run:
    system: str
    events: int
    wall_s: float = math.nan
    cpu_s: float | None = None
    count: int | None = None
    checksum: int | None = None
    procs: str = ""
    error: str | None = None  # an exception or a failed check: reported loudly
    skipped: str | None = None  # not run, and why (not a failure)
    peak_rss_bytes: int | None = None
    base_rss_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.skipped is None

    @property
    def rate(self) -> float:
        return self.events / self.wall_s if self.ok and self.wall_s > 0 else math.nan


# ---------------------------------------------------------------------------------------
# Expected results


def expected_for(pipe: Pipeline, n: int) -> dict[str, int] | None:
    """The exact count/checksum of `pipe` on `n` seeds, for pipelines made of
    stages.burn stages (burn chained by seed_field, tiny); None for anything else."""
    iterations: list[int] = []
    prev = "seed"
    for s in pipe.stages:
        if s.call.ref == "stages.burn:tiny":
            continue
        if s.call.ref != "stages.burn:burn" or s.call.params.get("seed_field", "seed") != prev:
            return None
        iterations.append(int(s.call.params["iterations"]))
        prev = s.call.params["field"]
    if pipe.sink_ref != "stages.burn:Collect" or pipe.sink_params.get("field", "seed") != prev:
        return None
    return expected_checksum(n, iterations)


def check(run: Run, expected: Mapping[str, int] | None) -> Run:
    """Fill `run.error` when its count or checksum is not the expected one."""
    if not run.ok or expected is None:
        return run
    if run.count != expected["count"] or run.checksum != expected["checksum"]:
        run.error = (
            f"result mismatch: got count={run.count} checksum={run.checksum}, "
            f"expected count={expected['count']} checksum={expected['checksum']}"
        )
    return run


def guarded(system: str, events: int, fn: Callable[[], Run]) -> Run:
    """Run `fn`; an exception becomes a failed Run instead of ending the benchmark."""
    try:
        return fn()
    except Exception as exc:
        tb = traceback.format_exc(limit=6)
        return Run(system, events, error=f"{type(exc).__name__}: {exc}", extra={"traceback": tb})


def best_of(k: int, fn: Callable[[], Run]) -> tuple[Run, list[Run]]:
    """Run `fn` k times; the shortest successful wall, or the first failure (a system
    that failed once is reported as failed)."""
    runs = [fn() for _ in range(max(1, k))]
    for r in runs:
        if not r.ok:
            return r, runs
    return min(runs, key=lambda r: r.wall_s), runs


# ---------------------------------------------------------------------------------------
# The systems (heavy and tiny)


def run_serial(pipe: Pipeline, n: int) -> Run:
    chain = pipe.chain()
    sink = pipe.new_sink()
    events = pipe.source_events()
    c0 = time.process_time()
    t0 = time.perf_counter()
    for ev in events:
        sink.handle(chain(ev))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    s = sink.summary()
    return Run("serial", n, wall, cpu_s=cpu, count=s["count"], checksum=s["checksum"], procs="1")


def stage_costs(pipe: Pipeline, n: int, min_s: float = 0.05) -> list[float]:
    """CPU seconds per event of each handler stage, measured (process_time) on the
    first events of the source, stage by stage, until the sample takes >= min_s."""
    k = min(n, 32)
    while True:
        events = list(itertools.islice(pipe.source_events(), k))
        costs = []
        for s in pipe.stages:
            c0 = time.process_time()
            events = [s.call(e) for e in events]
            costs.append((time.process_time() - c0) / max(1, k))
        if sum(costs) * k >= min_s or k >= min(n, 50_000):
            return costs
        k = min(n, 50_000, k * 4)


def chunksize(cost_per_event: float, n: int, procs: int) -> int:
    by_time = round(TARGET_CHUNK_S / max(cost_per_event, 1e-9))
    return max(1, min(by_time, math.ceil(n / (4 * procs))))


def run_pool(pipe: Pipeline, n: int, procs: int, chunk: int) -> Run:
    sink = pipe.new_sink()
    t0 = time.perf_counter()
    pool = multiprocessing.Pool(procs)
    try:
        for ev in pool.imap_unordered(pipe.chain(), pipe.source_events(), chunk):
            sink.handle(ev)
        pool.close()
        pool.join()
    finally:
        pool.terminate()
    wall = time.perf_counter() - t0
    s = sink.summary()
    return Run("pool", n, wall, count=s["count"], checksum=s["checksum"], procs=str(procs), extra={"chunksize": chunk})


def run_pool_chain(pipe: Pipeline, n: int, workers: Sequence[int], chunks: Sequence[int]) -> Run:
    sink = pipe.new_sink()
    t0 = time.perf_counter()
    pools: list[Any] = []
    try:
        it: Iterator[Any] = pipe.source_events()
        for s, w, c in zip(pipe.stages, workers, chunks, strict=True):
            pool = multiprocessing.Pool(w)
            pools.append(pool)
            it = pool.imap_unordered(s.call, it, c)
        for ev in it:
            sink.handle(ev)
        for pool in pools:
            pool.close()
            pool.join()
    finally:
        for pool in pools:
            pool.terminate()
    wall = time.perf_counter() - t0
    s = sink.summary()
    return Run(
        "pool-chain",
        n,
        wall,
        count=s["count"],
        checksum=s["checksum"],
        procs="/".join(map(str, workers)),
        extra={"chunksizes": list(chunks)},
    )


def run_pypeln(pipe: Pipeline, n: int, workers: Sequence[int]) -> Run:
    try:
        import pypeln as pl
    except ImportError:
        return Run("pypeln", n, skipped="pypeln is not installed (pip install pypeln): skipped")
    sink = pipe.new_sink()
    t0 = time.perf_counter()
    stage: Any = pipe.source_events()
    for s, w in zip(pipe.stages, workers, strict=True):
        stage = pl.process.map(s.call, stage, workers=w)
    for ev in stage:
        sink.handle(ev)
    wall = time.perf_counter() - t0
    s = sink.summary()
    return Run(
        "pypeln",
        n,
        wall,
        count=s["count"],
        checksum=s["checksum"],
        procs="/".join(map(str, workers)),
        extra={"pypeln_version": getattr(pl, "__version__", None)},
    )


def renamed(run: Run, system: str) -> Run:
    run.system = system
    return run


def run_sedamp(topology: Path, overrides: Sequence[str], sink_name: str, n: int, procs: str) -> Run:
    import sedamp.api

    with tempfile.TemporaryDirectory(prefix="bench-sedamp-") as tmp:
        out = Path(tmp) / "result.json"
        ov = [*overrides, f"{sink_name}.params.out={out}"]
        t0 = time.perf_counter()
        summary = sedamp.api.run(topology, ov, workdir=Path(tmp) / "work")
        wall = time.perf_counter() - t0
        info = summary.to_dict()
        for k in ("run_dir", "dead_letters"):
            info.pop(k, None)
        run = Run("sedamp", n, wall, procs=procs, extra={"summary": info, "overrides": ov})
        problems = []
        if summary.exit_code != 0:
            problems.append(f"exit code {summary.exit_code} (error={summary.error!r}, failed={summary.failed})")
        if summary.events != n:
            problems.append(f"the source read {summary.events} events, not {n}")
        try:
            result = json.loads(out.read_text(encoding="utf-8"))
            run.count, run.checksum = int(result["count"]), int(result["checksum"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"no readable result from the sink: {exc}")
        if problems:
            run.error = "; ".join(problems)
        return run


# ---------------------------------------------------------------------------------------
# CPU workloads


def cpu_workload(
    wl: CpuWorkload, systems: Sequence[str], repeat: int, cores: int, ray_address: str | None = None
) -> dict[str, Any]:
    base = bl.load_pipeline(wl.topology)
    names = [s.name for s in base.stages]
    if set(wl.workers) != set(names):
        raise SystemExit(f"{wl.topology}: handler stages are {names}, the benchmark expects {sorted(wl.workers)}")
    workers = [wl.workers[s] for s in names]

    def overrides(n: int) -> list[str]:
        return [f"{base.source_name}.params.count={n}", *(f"{s}.workers={wl.workers[s]}" for s in names)]

    def pipeline(n: int) -> Pipeline:
        return bl.load_pipeline(wl.topology, overrides(n))

    n = wl.events
    pipe = pipeline(n)
    expected = expected_for(pipe, n)
    notes: list[str] = []
    costs = stage_costs(pipe, n)
    pool_chunk = chunksize(sum(costs), n, cores)
    chain_chunks = [chunksize(c, n, w) for c, w in zip(costs, workers, strict=True)]
    n_pl = min(n, wl.pypeln_events) if wl.pypeln_events > 0 else n
    pipe_pl = pipe if n_pl == n else pipeline(n_pl)
    exp_pl = expected if n_pl == n else expected_for(pipe_pl, n_pl)
    procs = "/".join(map(str, workers))

    plan: list[tuple[str, int, Callable[[], Run], Mapping[str, int] | None]] = [
        ("serial", n, lambda: run_serial(pipe, n), expected)
    ]
    if "pool" in systems:
        plan.append(("pool", n, lambda: run_pool(pipe, n, cores, pool_chunk), expected))
    if "pool-chain" in systems:
        plan.append(("pool-chain", n, lambda: run_pool_chain(pipe, n, workers, chain_chunks), expected))
    if "pypeln" in systems:
        plan.append(("pypeln", n_pl, lambda: run_pypeln(pipe_pl, n_pl, workers), exp_pl))
    if "sedamp" in systems:
        plan.append(("sedamp", n, lambda: run_sedamp(wl.topology, overrides(n), pipe.sink_name, n, procs), expected))
        if ray_address is not None:  # the same topology, its workers as Ray actors
            # the core budget stays this machine's, as for the local executor
            on_ray = ["controller.executor=ray", f"controller.address={ray_address}", f"controller.cores={cores}"]
            plan.append(
                (
                    "sedamp-ray",
                    n,
                    lambda: renamed(
                        run_sedamp(wl.topology, [*overrides(n), *on_ray], pipe.sink_name, n, f"{procs} actors"),
                        "sedamp-ray",
                    ),
                    expected,
                )
            )
            plan.append(
                (
                    "sedamp-ray-empty",
                    0,
                    lambda: renamed(
                        run_sedamp(wl.topology, [*overrides(0), *on_ray], pipe.sink_name, 0, f"{procs} actors"),
                        "sedamp-ray-empty",
                    ),
                    {"count": 0, "checksum": 0},
                )
            )
        domain = wl.domain
        if domain is not None:
            plan.append(
                (
                    "sedamp-domain",
                    n,
                    lambda: renamed(
                        run_sedamp(domain, [f"{base.source_name}.params.count={n}"], pipe.sink_name, n, "1 group"),
                        "sedamp-domain",
                    ),
                    expected,
                )
            )
        plan.append(
            (
                "sedamp-empty",
                0,
                lambda: run_sedamp(wl.topology, overrides(0), pipe.sink_name, 0, procs),
                {"count": 0, "checksum": 0},
            )
        )

    # This machine's speed drifts by tens of percent over minutes (a shared VM), so the
    # systems run interleaved, one round after another, and every comparison is made
    # within a round: efficiency against the limit measured in that round (cores / the
    # CPU seconds per event of that round's serial run), and sedamp's ratio to each
    # peer. The table gives each system's best round and the median of the per-round
    # figures. The stages are also timed one by one in each round, for reference.
    all_runs: dict[str, list[Run]] = {name: [] for name, *_ in plan}
    round_limits: list[float] = []
    sampled_limits: list[float] = []
    for _ in range(max(1, repeat)):
        sampled_limits.append(cores / sum(stage_costs(pipe, n, min_s=0.5)))
        for name, n_ev, fn, exp in plan:
            all_runs[name].append(check(guarded(name, n_ev, fn), exp))
        serial_run = all_runs["serial"][-1]
        if serial_run.ok and serial_run.cpu_s:
            round_limits.append(cores / (serial_run.cpu_s / n))
        else:
            round_limits.append(sampled_limits[-1])

    runs, efficiency, ratio = bl.round_figures(all_runs, round_limits, skip_ratio=lambda name: name.endswith("-empty"))
    # the empty runs are not systems of the table: kept apart, shown only if they failed
    empties: dict[str, Run | None] = {}
    for name, label in (("sedamp-ray-empty", "sedamp-ray (0 events)"), ("sedamp-empty", "sedamp (0 events)")):
        efficiency.pop(name, None)
        run = empties[name] = runs.pop(name, None)
        if run is not None and not run.ok:
            run.system = label
            runs[name] = run
    empty = empties["sedamp-empty"]
    if empties["sedamp-ray-empty"] is not None and empties["sedamp-ray-empty"].ok:
        notes.append(
            "an empty run (0 events) on the ray executor takes "
            f"{min(r.wall_s for r in all_runs['sedamp-ray-empty']):.2f} s: connecting to the cluster, "
            "placing the actors and starting their workers (measured separately, not subtracted)."
        )
    limit = statistics.median(round_limits)
    cpu_per_event = cores / limit
    notes.append(
        f"limit per round: {', '.join(f'{x:,.0f}' for x in round_limits)} events/s "
        f"({cores} cores / CPU seconds per event of the round's serial run; median {limit:,.0f}). "
        "eff. and sedamp ÷ this are medians of per-round figures; wall s and events/s are each system's best round."
    )
    notes.append(
        "the same limit from the stages timed one by one (0.5 s samples) in each round: "
        + ", ".join(f"{x:,.0f}" for x in sampled_limits)
        + " events/s (short samples run at this machine's faster moments: a stricter limit)."
    )
    notes.append(
        "stage CPU per event (first sample): "
        + ", ".join(f"{st.name} {c * 1e3:.4f} ms" for st, c in zip(pipe.stages, costs, strict=True))
        + f"; chunksize pool {pool_chunk}, pool-chain {'/'.join(map(str, chain_chunks))}."
    )
    if "pypeln" in systems and n_pl != n:
        notes.append(f"pypeln ran on {n_pl:,} events, not {n:,} (it is slow here); rates are per second.")
    if empty is not None and empty.ok:
        n_procs = 1 + (len(names) + 1) + (sum(workers) + 1) + 1  # source, queues, workers, launcher
        notes.append(
            f"sedamp's wall includes starting and stopping its {n_procs} processes; an empty run "
            f"(0 events) of the same topology takes {min(r.wall_s for r in all_runs['sedamp-empty']):.2f} s "
            "(measured separately, not subtracted)."
        )
    if "serial" not in systems:
        notes.append("serial is run anyway: it is the reference for the limit.")
    chain = " -> ".join([pipe.source_name, *names, pipe.sink_name])
    title = f"{wl.name}: {chain} ({wl.topology.relative_to(REPO) if wl.topology.is_relative_to(REPO) else wl.topology})"
    return {
        "title": title,
        "topology": str(wl.topology),
        "events": n,
        "cores": cores,
        "cpu_per_event_s": cpu_per_event,
        "limit_events_per_s": limit,
        "expected": expected,
        "notes": notes,
        "runs": runs,
        "all_runs": all_runs,
        "efficiency": efficiency,
        "ratio": ratio,
    }


# ---------------------------------------------------------------------------------------
# Memory workload


def memory_topology(directory: Path, n: int, size: int, capacity: int, out: Path) -> Path:
    """Write the memory workload's topology (and a copy of _benchlib, which holds its
    source and sink) into `directory`; return the topology's path."""
    shutil.copy2(Path(bl.__file__), directory / "_benchlib.py")
    text = f"""# Generated by scripts/bench_pipeline.py (memory workload).
name: memory
stages:
  src:
    source: _benchlib:BigEvents
    params: {{count: {n}, size: {size}}}
    batch: {MEMORY_SOURCE_BATCH}
    to: slow
  slow:
    handler: stages.burn:burn
    params: {{iterations: {MEMORY_BURN_ITERATIONS}, field: c}}
    workers: 1
    queue: {{capacity: {capacity}}}
    to: sink
  sink:
    sink: _benchlib:BigCollect
    params: {{out: {json.dumps(str(out))}, field: c, size: {size}}}
    workers: 1
    queue: {{capacity: {capacity}}}
"""
    path = directory / "memory.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def producer_cost(size: int, k: int = 200) -> float:
    """CPU seconds to make and pickle one memory-workload event (what a Pool worker does
    per event), one event at a time so that measuring it holds no memory."""
    c0 = time.process_time()
    for i in range(k):
        pickle.dumps(bl.make_big_event(i, size), pickle.HIGHEST_PROTOCOL)
    return (time.process_time() - c0) / k


def memory_child(system: str, n: int, size: int, capacity: int, pool_chunk: int) -> int:
    """Run one memory-workload system in this (fresh) process; print its Run as JSON."""
    import psutil

    import sedamp.api  # imported by every system, so the base RSS compares

    if system == "pool" and pool_chunk <= 0:  # the same ~20 ms-of-work rule as elsewhere
        pool_chunk = chunksize(producer_cost(size), n, 1)
    base_rss = psutil.Process().memory_info().rss
    sink = bl.BigCollect()
    sink.setup(out=os.devnull, field="c", size=size)
    run = Run(system, n, base_rss_bytes=base_rss)
    t0 = time.perf_counter()
    c0 = time.process_time()
    try:
        if system == "serial":
            for i in range(n):
                sink.handle(burn(bl.make_big_event(i, size), MEMORY_BURN_ITERATIONS, "c"))
            run.procs = "1"
        elif system == "pool":
            make = functools.partial(bl.make_big_event, size=size)
            pool = multiprocessing.Pool(1)
            try:
                for ev in pool.imap(make, range(n), chunksize=pool_chunk):
                    sink.handle(burn(ev, MEMORY_BURN_ITERATIONS, "c"))
                pool.close()
                pool.join()
            finally:
                pool.terminate()
            run.procs = "1+parent"
            run.extra["chunksize"] = pool_chunk
        elif system == "sedamp":
            with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
                out = Path(tmp) / "result.json"
                path = memory_topology(Path(tmp), n, size, capacity, out)
                t0 = time.perf_counter()  # writing the YAML is not part of the run
                summary = sedamp.api.run(path, workdir=Path(tmp) / "work")
                if summary.exit_code != 0 or summary.events != n:
                    run.error = (
                        f"sedamp exit code {summary.exit_code} (error={summary.error!r}, "
                        f"failed={summary.failed}, source read {summary.events} of {n} events)"
                    )
                result = json.loads(out.read_text(encoding="utf-8"))
                sink.count, sink.checksum = int(result["count"]), int(result["checksum"])
                run.procs = "1/1"
                run.extra["capacity"] = capacity
        else:
            raise ValueError(f"unknown memory system {system!r}")
    except Exception as exc:
        run.error = f"{type(exc).__name__}: {exc}"
        run.extra["traceback"] = traceback.format_exc(limit=6)
    run.wall_s = time.perf_counter() - t0
    run.cpu_s = time.process_time() - c0
    run.count, run.checksum = sink.count, sink.checksum
    print(json.dumps(asdict(run)), flush=True)
    return 0


def run_memory_system(system: str, n: int, size: int, capacity: int, pool_chunk: int) -> Run:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--memory-child",
        system,
        "--events-memory",
        str(n),
        "--memory-kib",
        str(size / 1024),
        "--memory-capacity",
        str(capacity),
        "--memory-pool-chunksize",
        str(pool_chunk),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    sampler = bl.TreeRss(proc.pid, MEMORY_SAMPLE_S).start()
    out, _ = proc.communicate()
    peak = sampler.stop()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return Run(system, n, error=f"the child exited with {proc.returncode} and no result")
    d = json.loads(lines[-1])
    run = Run(**d)
    run.peak_rss_bytes = peak
    run.extra["rss_samples"] = sampler.samples
    run.extra["peak_processes"] = sampler.peak_procs
    return run


def memory_workload(
    n: int, size: int, capacity: int, pool_chunk: int, systems: Sequence[str], repeat: int, cores: int
) -> dict[str, Any]:
    expected = expected_checksum(n, [MEMORY_BURN_ITERATIONS])
    runs: dict[str, Run] = {}
    all_runs: dict[str, list[Run]] = {}
    for system in MEMORY_SYSTEMS:
        if system not in systems and system != "serial":
            continue
        every = [
            check(run_memory_system(system, n, size, capacity, pool_chunk), expected) for _ in range(max(1, repeat))
        ]
        failed = [r for r in every if not r.ok]
        best = failed[0] if failed else min(every, key=lambda r: r.wall_s)
        if not failed:  # a bound is about the worst case: the highest peak seen
            best.peak_rss_bytes = max(r.peak_rss_bytes or 0 for r in every)
        runs[system] = best
        all_runs[system] = every
    serial = runs.get("serial")
    cpu_per_event = serial.cpu_s / n if serial and serial.ok and serial.cpu_s and n else math.nan
    limit = cores / cpu_per_event if cpu_per_event > 0 else math.nan
    total_mib = n * size / bl.MIB
    notes = [
        f"input: {n:,} events x {size / 1024:g} KiB = {total_mib:,.1f} MiB in total; slow stage "
        f"stages.burn.burn({MEMORY_BURN_ITERATIONS} iterations) in 1 process.",
        "machine limit unknown: the serial run failed."
        if math.isnan(limit)
        else f"serial CPU per event (process_time): {cpu_per_event * 1e3:.4f} ms -> machine limit "
        f"{limit:,.0f} events/s "
        "(the one slow stage bounds every system's rate by design).",
        f"sedamp: queue capacity {capacity} events per stage (2 queues: at most "
        f"{2 * capacity * size / bl.MIB:,.1f} MiB of payload queued), source batch {MEMORY_SOURCE_BATCH}.",
        "pool: Pool(1).imap makes the events, the parent runs the slow stage and the sink "
        "(results wait in the parent, unbounded); chunksize "
        + (str(runs["pool"].extra.get("chunksize", "?")) if "pool" in runs else "-")
        + " (~20 ms of making and pickling events, at most N/4; --memory-pool-chunksize sets it). How much "
        "piles up depends on it: results arrive a chunk at a time, and the parent's slow stage holds "
        "the GIL that the result thread needs.",
        "peak = highest summed RSS of the child interpreter and all its descendants, sampled every "
        f"{MEMORY_SAMPLE_S * 1e3:.0f} ms; base = the child's own RSS before the run; tree procs = most "
        "processes seen at once (each Python interpreter costs roughly the base).",
    ]
    sed, pool = runs.get("sedamp"), runs.get("pool")
    if sed and pool and sed.ok and pool.ok and sed.peak_rss_bytes and pool.peak_rss_bytes:
        notes.append(f"pool's peak is {pool.peak_rss_bytes / sed.peak_rss_bytes:.1f}x sedamp's.")
    return {
        "title": f"memory: src ({n:,} x {size / 1024:g} KiB) -> slow (burn ~0.5 ms) -> sink",
        "events": n,
        "event_bytes": size,
        "capacity": capacity,
        "cores": cores,
        "cpu_per_event_s": cpu_per_event,
        "limit_events_per_s": limit,
        "expected": expected,
        "notes": notes,
        "runs": runs,
        "all_runs": all_runs,
    }


# ---------------------------------------------------------------------------------------
# Report


def print_workload(res: dict[str, Any], memory: bool) -> None:
    runs: dict[str, Run] = res["runs"]
    limit: float = res["limit_events_per_s"]
    sed = runs.get("sedamp")
    sed_rate = sed.rate if sed is not None else math.nan
    headers = ["system", "procs", "events", "wall s", "events/s", "eff. vs limit", "sedamp ÷ this"]
    if memory:
        headers += ["peak MiB", "base MiB", "tree procs"]
    headers.append("check")
    rows = []
    for r in runs.values():
        eff = r.rate / limit if limit > 0 and r.ok else math.nan
        ratio = sed_rate / r.rate if r.ok and not math.isnan(sed_rate) else math.nan
        if "efficiency" in res:
            eff = res["efficiency"].get(r.system, math.nan)
            ratio = res["ratio"].get(r.system, math.nan)
        status = "ok" if r.ok else ("skipped" if r.skipped else "FAILED")
        row = [
            r.system,
            r.procs or "-",
            f"{r.events:,}",
            f"{r.wall_s:.3f}" if r.ok else "-",
            bl.fmt_rate(r.rate),
            "-" if math.isnan(eff) else f"{eff:.1%}",
            "-" if math.isnan(ratio) else f"{ratio:.2f}x",
        ]
        if memory:
            row += [
                f"{r.peak_rss_bytes / bl.MIB:,.1f}" if r.peak_rss_bytes and r.ok else "-",
                f"{r.base_rss_bytes / bl.MIB:,.1f}" if r.base_rss_bytes else "-",
                str(r.extra.get("peak_processes", "-")),
            ]
        row.append(status)
        rows.append(row)
    print()
    print(f"== {res['title']} ==")
    print(
        bl.format_table(
            headers,
            rows,
            right=[False, True, True, True, True, True, True] + ([True, True, True] if memory else []) + [False],
        )
    )
    for note in res["notes"]:
        print(f"  * {note}")
    for r in runs.values():
        if r.skipped:
            print(f"  * {r.system}: {r.skipped}")
        elif r.error:
            print(f"  !!! {r.system} FAILED: {r.error}")


def jsonable(res: dict[str, Any]) -> dict[str, Any]:
    limit = res["limit_events_per_s"]
    sed = res["runs"].get("sedamp")

    def one(r: Run) -> dict[str, Any]:
        d = asdict(r)
        d["ok"] = r.ok
        d["events_per_s"] = r.rate
        d["efficiency"] = r.rate / limit if limit > 0 else None
        d["sedamp_ratio"] = sed.rate / r.rate if sed is not None and sed.ok and r.ok else None
        if "efficiency" in res:
            d["efficiency"] = res["efficiency"].get(r.system)
            d["sedamp_ratio"] = res["ratio"].get(r.system)
        return d

    out = dict(res)
    out["runs"] = {k: one(r) for k, r in res["runs"].items()}
    out["all_runs"] = {k: [asdict(r) for r in rs] for k, rs in res["all_runs"].items()}
    return bl.strict_json(out)


def csv_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)} (got {text!r})")
        return items

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring for what each section measures.",
    )
    p.add_argument(
        "--workload",
        type=csv_list(WORKLOADS),
        default=list(WORKLOADS),
        help="comma-separated workloads (default: heavy,tiny,memory)",
    )
    p.add_argument(
        "--only",
        type=csv_list(SYSTEMS),
        default=list(SYSTEMS),
        help=f"comma-separated systems among {','.join(SYSTEMS)} (default: all); serial always runs, as the reference",
    )
    p.add_argument("--events-heavy", type=bl.positive, default=1500, help="events of the heavy workload (1500)")
    p.add_argument("--events-tiny", type=bl.positive, default=200_000, help="events of the tiny workload (200000)")
    p.add_argument(
        "--events-pypeln-tiny", type=bl.positive, default=20_000, help="events pypeln gets in the tiny workload (20000)"
    )
    p.add_argument("--events-memory", type=bl.positive, default=20_000, help="events of the memory workload (20000)")
    p.add_argument("--memory-kib", type=float, default=64.0, help="KiB per event in the memory workload (64)")
    p.add_argument(
        "--memory-capacity",
        type=bl.positive,
        default=64,
        help="sedamp queue capacity (events) in the memory workload (64)",
    )
    p.add_argument(
        "--memory-pool-chunksize",
        type=int,
        default=0,
        help="Pool.imap chunksize in the memory workload (default 0: ~20 ms of work, at most N/4)",
    )
    p.add_argument("--repeat", type=bl.positive, default=1, help="run each system K times, keep the best (1)")
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="ray: also run sedamp with its workers as Ray actors (sedamp-ray), on the cluster at --address, "
        "or on a one-node cluster of `cores` CPUs started for the benchmark (needs the ray extra)",
    )
    p.add_argument("--address", help="the Ray cluster for --executor ray (default: start one here)")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE")
    p.add_argument("--memory-child", choices=MEMORY_SYSTEMS, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    size = max(8, round(args.memory_kib * 1024))
    if args.memory_child:
        return memory_child(
            args.memory_child, args.events_memory, size, args.memory_capacity, args.memory_pool_chunksize
        )

    info = bl.machine_info()
    cores = int(info["cores"])
    print("sedamp pipeline benchmark")
    print(f"command : {info['command']}")
    print(f"python  : {info['python']} (multiprocessing start method: {info['mp_start_method']})")
    print(f"cpu     : {info['cpu_model']}")
    print(
        f"cores   : {cores} usable (sched_getaffinity; os.cpu_count() = {info['cpu_count']}), "
        f"memory {info['memory_gib']} GiB"
    )
    print(f"date    : {info['date']}")
    if info["loadavg"] is not None:
        print(f"load    : {' '.join(map(str, info['loadavg']))} (1/5/15 min, before the runs)")
    print(f"repeat  : best of {args.repeat}; systems: {','.join(args.only)}")

    report: dict[str, Any] = {
        "machine": info,
        "args": {k: v for k, v in vars(args).items() if k != "memory_child"},
        "workloads": {},
    }
    workloads = {
        "heavy": CpuWorkload(
            "heavy", TOPOLOGIES / "burn.yaml", args.events_heavy, args.events_heavy, {"a": 1, "b": 2, "c": 1}
        ),
        "tiny": CpuWorkload(
            "tiny",
            TOPOLOGIES / "tiny.yaml",
            args.events_tiny,
            args.events_pypeln_tiny,
            {"a": 1, "b": 1},
            TOPOLOGIES / "tiny-domain.yaml",
        ),
    }
    failures: list[str] = []
    ray_cluster = None
    ray_address = args.address
    if args.executor == "ray" and ray_address is None:
        from ray.cluster_utils import Cluster

        # Ray counts CPUs as slots, one per worker actor: enough for every worker of the
        # largest workload (sink included), as many as the local executor starts on the
        # same cores
        slots = max(cores, *(sum(w.workers.values()) + 1 for w in workloads.values()))
        ray_cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": slots, "include_dashboard": False})
        ray_address = ray_cluster.address
        print(
            f"ray     : a one-node cluster at {ray_address}, started for this run, declaring {slots} CPUs "
            f"(one per worker actor) on these {cores} cores; sedamp's core budget stays {cores}"
        )
    elif args.executor == "ray":
        print(f"ray     : the cluster at {ray_address}")
    try:
        failures += run_workloads(args, workloads, size, cores, ray_address if args.executor == "ray" else None, report)
    finally:
        if ray_cluster is not None:
            ray_cluster.shutdown()

    if args.json:
        report["failures"] = failures
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"\nJSON written to {args.json}")
    return bl.verdict(failures, "all results verified (count and checksum equal to the expected values)")


def run_workloads(
    args: argparse.Namespace,
    workloads: Mapping[str, CpuWorkload],
    size: int,
    cores: int,
    ray_address: str | None,
    report: dict[str, Any],
) -> list[str]:
    failures: list[str] = []
    for name in WORKLOADS:
        if name not in args.workload:
            continue
        if name == "memory":
            res = memory_workload(
                args.events_memory,
                size,
                args.memory_capacity,
                args.memory_pool_chunksize,
                args.only,
                args.repeat,
                cores,
            )
        else:
            res = cpu_workload(workloads[name], args.only, args.repeat, cores, ray_address)
        print_workload(res, memory=name == "memory")
        sys.stdout.flush()
        failures += [f"{name}/{r.system}: {r.error}" for r in res["runs"].values() if r.error]
        report["workloads"][name] = jsonable(res)
    return failures


if __name__ == "__main__":
    raise SystemExit(main())

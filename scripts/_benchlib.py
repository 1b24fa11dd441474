"""Shared helpers for the benchmarks in scripts/ (stdlib + psutil, plus sedamp itself).

What is here
    ``load_pipeline``  a linear topology (one source -> handlers -> one sink) read with
                       sedamp's own loader, as plain picklable callables, so the same
                       stages with the same params can run under serial Python,
                       ``multiprocessing`` or pypeln.
    ``StageCall`` / ``ChainCall``  picklable handler callables (one stage / all stages).
    ``TreeRss``        a thread sampling the summed RSS of a process and all its
                       descendants (psutil), keeping the peak.
    ``BigEvents`` / ``BigCollect`` / ``make_big_event``  the memory benchmark's large,
                       deterministic events: a source, a sink that checks every payload,
                       and the same event maker for ``multiprocessing``.
    ``machine_info`` / ``format_table``  report helpers.
    ``pool_use``       a pool's worker-seconds and longest queue, from a metrics stream.

This module is also copied next to generated topologies (sedamp imports user modules
from the topology's directory), so it must stay importable on its own: it imports only
the stdlib, psutil, sedamp and stages.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from sedamp.runtime.blocks import held_bytes
from stages.burn import Collect

__all__ = [
    "BigCollect",
    "BigEvents",
    "ChainCall",
    "Pipeline",
    "PipelineStage",
    "StageCall",
    "TreeRss",
    "big_payload",
    "format_table",
    "load_pipeline",
    "machine_info",
    "fmt_rate",
    "make_big_event",
    "positive",
    "strict_json",
    "tree_cpu_s",
    "tree_processes",
    "verdict",
]

MIB = 1024 * 1024

_RESOLVED: dict[str, Any] = {}


def _resolve(ref: str) -> Any:
    """``module:attribute`` -> the object, imported once per process."""
    obj = _RESOLVED.get(ref)
    if obj is None:
        from sedamp.runtime.stage import load_ref

        obj = _RESOLVED[ref] = load_ref(ref)
    return obj


class StageCall:
    """A function handler and its params as a picklable callable: ``call(event)`` is
    ``fn(event, **params)``, as sedamp's worker calls it. Only the reference and the
    params are pickled; the function is imported in whichever process calls it.

    Assumes a one-in, one-out handler (what the benchmark stages are)."""

    __slots__ = ("ref", "params", "_fn")

    def __init__(self, ref: str, params: Mapping[str, Any]) -> None:
        self.ref = ref
        self.params = dict(params)
        self._fn: Any = None

    def __getstate__(self) -> tuple[str, dict[str, Any]]:
        return self.ref, self.params

    def __setstate__(self, state: tuple[str, dict[str, Any]]) -> None:
        self.ref, self.params = state
        self._fn = None

    def __call__(self, event: Any) -> Any:
        fn = self._fn
        if fn is None:
            fn = self._fn = _resolve(self.ref)
        return fn(event, **self.params)

    def __repr__(self) -> str:
        return f"StageCall({self.ref!r}, {self.params!r})"


class ChainCall:
    """Every handler stage of a pipeline applied in order: one call does all the work of
    one event (what a plain ``Pool.map`` over the whole pipeline runs)."""

    __slots__ = ("stages",)

    def __init__(self, stages: Sequence[StageCall]) -> None:
        self.stages = tuple(stages)

    def __getstate__(self) -> tuple[StageCall, ...]:
        return self.stages

    def __setstate__(self, state: tuple[StageCall, ...]) -> None:
        self.stages = state

    def __call__(self, event: Any) -> Any:
        for stage in self.stages:
            event = stage(event)
        return event


@dataclass(frozen=True)
class PipelineStage:
    name: str
    call: StageCall
    workers: int  # the pool size sedamp starts with (workers.min)


@dataclass(frozen=True)
class Pipeline:
    """A linear topology as plain callables: ``source -> stages... -> sink``."""

    name: str
    path: Path
    source_name: str
    source_ref: str
    source_params: Mapping[str, Any]
    stages: tuple[PipelineStage, ...]
    sink_name: str
    sink_ref: str
    sink_params: Mapping[str, Any]  # without `out`

    def source_events(self) -> Iterator[Any]:
        """The source's events, produced exactly as sedamp's source process does."""
        from sedamp.runtime.stage import SourceRunner

        runner = SourceRunner(self.source_ref, dict(self.source_params))
        runner.setup()
        yield from runner
        runner.teardown()

    def chain(self) -> ChainCall:
        return ChainCall([s.call for s in self.stages])

    def new_sink(self) -> Any:
        """A fresh sink object (``handle(event)``, ``summary()``). It is never torn down,
        so it writes no file: the caller reads ``summary()``."""
        cls = _resolve(self.sink_ref)
        sink = cls()
        sink.setup(out=os.devnull, **self.sink_params)
        return sink


def load_pipeline(path: str | Path, overrides: Sequence[str] = ()) -> Pipeline:
    """Read a topology with sedamp's loader (same ``${VAR}`` and ``--set`` rules) and
    return it as a `Pipeline`. Raises ValueError unless it is one source, a chain of
    function handlers each with a single unkeyed edge, and one class sink."""
    import inspect

    from sedamp.api import load

    top = load(path, overrides)
    sources = top.sources()
    if len(sources) != 1:
        raise ValueError(f"{path}: expected one source, got {len(sources)}")
    src = sources[0]
    stages: list[PipelineStage] = []
    spec = src
    seen = {src.name}
    while True:
        if len(spec.to) != 1 or spec.to[0].key is not None:
            raise ValueError(f"{path}: stage {spec.name!r} must have exactly one unkeyed edge")
        spec = top.stages[spec.to[0].stage]
        if spec.name in seen:
            raise ValueError(f"{path}: the pipeline loops at {spec.name!r}")
        seen.add(spec.name)
        if spec.kind == "sink":
            break
        if inspect.isclass(_resolve(spec.ref)):
            raise ValueError(f"{path}: handler {spec.name!r} is a class; only function handlers are supported")
        stages.append(PipelineStage(spec.name, StageCall(spec.ref, spec.params), spec.workers.min))
    sink_params = {k: v for k, v in spec.params.items() if k != "out"}
    return Pipeline(
        name=top.name,
        path=Path(path),
        source_name=src.name,
        source_ref=src.ref,
        source_params=dict(src.params),
        stages=tuple(stages),
        sink_name=spec.name,
        sink_ref=spec.ref,
        sink_params=sink_params,
    )


# ---------------------------------------------------------------------------------------
# Peak memory of a process tree


def tree_processes(pid: int) -> list[psutil.Process]:
    """Process `pid` and all its descendants alive now (empty if `pid` is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid` and its descendants
    alive now; a process that vanished in between is left out."""
    return cpu_s(tree_processes(pid)) or 0.0


def cpu_s(procs: Sequence[psutil.Process]) -> float | None:
    """CPU seconds (user + system) used so far by `procs`, leaving out those that ended
    before the read; None when none could be read."""
    total, found = 0.0, False
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:  # exited between the listing and the read
            continue
        found = True
        total += t.user + t.system
    return total if found else None


class TreeRss:
    """Samples, every `interval_s` in a daemon thread, the RSS of process `pid` plus all
    its descendants, summed; keeps the peak. Summed RSS counts pages shared between
    processes (the interpreter's code, copy-on-write pages) once per process, so it
    over-states the physical total a little; it is the same rule for every system. A
    sedamp run's shared blocks (/dev/shm) are added, mapped or not (mapped pages are so
    counted twice)."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.peak_procs = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-rss", daemon=True)

    def sample(self) -> int:
        procs = tree_processes(self.pid)
        if not procs:
            return 0
        total = 0
        alive = 0
        for p in procs:
            try:
                total += p.memory_info().rss
                alive += 1
            except psutil.Error:  # exited between the listing and the read
                pass
        total += held_bytes(self.pid)  # a sedamp run's shared blocks in /dev/shm
        self.samples += 1
        if total > self.peak_bytes:
            self.peak_bytes = total
        self.peak_procs = max(self.peak_procs, alive)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def start(self) -> TreeRss:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_bytes


# ---------------------------------------------------------------------------------------
# The memory benchmark's events


def big_payload(seed: int, size: int) -> bytes:
    """`size` bytes that depend on `seed` only: its 8 little-endian bytes repeated."""
    unit = (seed & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
    reps, rest = divmod(int(size), 8)
    return unit * reps + unit[:rest]


def make_big_event(seed: int, size: int) -> dict[str, Any]:
    """The event `BigEvents` yields for `seed`: ``{"seed": seed, "data": <size bytes>}``."""
    return {"seed": seed, "data": big_payload(seed, size)}


class BigEvents:
    """Source: `count` events of `size` bytes each (``make_big_event(i, size)``)."""

    def setup(self, count: int | str, size: int | str) -> None:
        self.count = int(count)
        self.size = int(size)

    def total(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[dict[str, Any]]:
        size = self.size
        for i in range(self.count):
            yield make_big_event(i, size)


class BigCollect(Collect):
    """``stages.burn.Collect`` that also checks each event's payload is intact (the
    bytes `BigEvents` made for its seed): a corrupted payload is a ValueError, so the
    event is counted as failed and the count check catches it."""

    def setup(self, out: str | os.PathLike[str], field: str = "seed", size: int | str = 0) -> None:
        super().setup(out, field)
        self.size = int(size)

    def handle(self, event: dict[str, Any]) -> None:
        data = event.get("data") if isinstance(event, dict) else None
        if not isinstance(data, bytes) or data != big_payload(event["seed"], self.size):
            raise ValueError("BigCollect: the payload is not the one made for this seed")
        super().handle(event)


# ---------------------------------------------------------------------------------------
# Reporting


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def machine_info(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """What a benchmark report starts with: command, Python, CPU, cores, date, load."""
    import multiprocessing

    args = list(sys.argv if argv is None else argv)
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "command": shlex.join([sys.executable, *args]),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "loadavg": load,
        "mp_start_method": multiprocessing.get_start_method(),
    }


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    """A plain-text table; columns are right-aligned where `right` says (default: all
    but the first)."""
    align = list(right) if right is not None else [False] + [True] * (len(headers) - 1)
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, c in enumerate(cells):
            out.append(str(c).rjust(widths[i]) if align[i] else str(c).ljust(widths[i]))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def verdict(failures: Sequence[str], verified: str) -> int:
    """End a benchmark: the failed verifications on stderr (exit code 1), or `verified`."""
    if failures:
        print("\n" + "!" * 78, file=sys.stderr)
        print(f"VERIFICATION FAILED for {len(failures)} run(s):", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        print("!" * 78, file=sys.stderr)
        return 1
    print(f"\n{verified}")
    return 0


def round_figures(
    all_runs: Mapping[str, Sequence[Any]],
    limits: Sequence[float],
    reference: str = "sedamp",
    skip_ratio: Callable[[str], bool] = lambda name: False,
) -> tuple[dict[str, Any], dict[str, float], dict[str, float]]:
    """From each system's runs, one per round (each with ``ok``, ``wall_s`` and
    ``rate``): its best round (its first failure instead, if any), the median of its
    per-round efficiency (rate / that round's limit), and the median of `reference`'s
    per-round rate divided by its own (unless `skip_ratio(name)`). Every comparison is
    made within a round, so the machine's drift between rounds cancels."""
    runs: dict[str, Any] = {}
    efficiency: dict[str, float] = {}
    ratio: dict[str, float] = {}
    ref = all_runs.get(reference, [])
    for name, rs in all_runs.items():
        failed = [r for r in rs if not r.ok]
        runs[name] = failed[0] if failed else min(rs, key=lambda r: r.wall_s)
        if failed:
            continue
        efficiency[name] = statistics.median(r.rate / lim for r, lim in zip(rs, limits, strict=True))
        if ref and all(r.ok for r in ref) and not skip_ratio(name):
            ratio[name] = statistics.median(s.rate / r.rate for s, r in zip(ref, rs, strict=True))
    return runs, efficiency, ratio


def strict_json(x: Any) -> Any:
    """NaN and infinities -> None, Paths -> str, recursively: strict JSON."""
    if isinstance(x, float):
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, dict):
        return {str(k): strict_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [strict_json(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def pool_use(records: Sequence[dict[str, Any]], stage: str) -> tuple[float, int]:
    """The worker-seconds `stage`'s pool held over a run (its workers in each record
    times the time since the record before) and its longest queue, from the run's
    metrics records (a real run's or a simulated one's)."""
    held, last, longest = 0.0, 0.0, 0
    for r in records:
        st = r["stages"][stage]
        held += st["workers"] * (r["elapsed_s"] - last)
        last = r["elapsed_s"]
        longest = max(longest, int((st["queue"] or {}).get("length") or 0))
    return held, longest


def fmt_rate(x: float) -> str:
    """A rate for a table: ``-`` when unknown, no decimals from 100 up."""
    if math.isnan(x):
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def user_env(**extra: str) -> dict[str, str]:
    """This process's environment as a user's run would have it, plus `extra`: without
    PYTHONDONTWRITEBYTECODE, so that a child imports compiled bytecode (an installed
    package has its .pyc files) instead of compiling every module it imports whose
    source changed since its bytecode was written, on every start."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra)
    return env


def timed_process(
    cmd: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    out: Path | None,
    expected: Any,
    timeout: float,
    label: str | None = None,
) -> float:
    """Run `cmd` to its exit and return its wall time, interpreter start to exit (what a
    user pays). It must exit 0 and, with `out`, write `expected` there as JSON (the file is
    removed first); anything else ends the benchmark with a message (SystemExit) that
    starts with `label` (default: the command)."""
    if out is not None:
        out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    r = subprocess.run(list(cmd), cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    what = label or " ".join(cmd[1:5])
    if r.returncode != 0:
        raise SystemExit(f"{what} failed ({r.returncode}): {r.stderr.strip()[-800:]}")
    if out is not None and (got := json.loads(out.read_text())) != expected:
        raise SystemExit(f"{what}: wrong result {got} (expected {expected})")
    return wall


def positive(text: str) -> int:
    """argparse type: an int >= 1."""
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v

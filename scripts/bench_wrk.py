"""Benchmark: sedamp's HTTP front end driven by wrk and by scripts/loadgen.py, against
gunicorn and the single-process asyncio server, with its targets checked within rounds.

    python scripts/bench_wrk.py --json /tmp/bench-wrk.json      # ~33 min with the defaults
    python scripts/bench_wrk.py --smoke                          # ~1.5 min: proves it runs, measures nothing

wrk comes from the distribution's packages: ``sudo apt-get install wrk`` (Debian, Ubuntu;
wrk 4.1). The other systems need the ``bench`` extra (gunicorn).

What runs. Every system serves the same handlers, ``stages.http_demo``: sedamp with
topologies/http-service.yaml, gunicorn's prefork sync workers (one per core) and the
asyncio server of scripts/_http_peers.py (the server start and stop, the warm-up and the
machine's speed are scripts/bench_http.py's). GET /work is ~5 ms of pure Python (its
iterations calibrated once at the start, or --iterations), GET /hello nearly nothing.
The points: /work at 4, 32, 256 and 512 connections (--connections) and /hello at 4
(--hello-connections). Each point runs once per driver (--drivers):

- ``wrk``: each connection sends its next request as soon as its answer arrives (no think
  time, Retry-After ignored), with as many threads as connections (below), --timeout s.
- ``loadgen``: scripts/loadgen.py in the same closed loop (--think-ms 0
  --ignore-retry-after, the same timeout), so the two drivers cross-check each other.

A run starts once the server is idle (what the previous run left queued is done), and is
--settle seconds of load that are not measured, then --duration seconds measured, on
the same connections.
Connection errors, lost requests and timeouts count over the whole run, settling
included: nothing unanswered hides.

Latency by status. wrk prints one latency distribution of every answer, 200s and 503s
together, "corrected" for coordinated omission (it adds made-up samples for every answer
slower than the mean interval between answers), so under overload its percentiles are
neither those of the 200s nor measured ones. scripts/bench_wrk.lua times each request
itself, from request() to response() on the monotonic clock (LuaJIT's FFI), keeps a
histogram per status, and counts only the answers received in the measured window (it
is given the window's start on the same clock). wrk does not tell response() which
connection answered, so the pairing is exact only with one connection per thread: wrk
runs with -t equal to -c (512 threads at 512 connections, ~90 MB; the limit on open
files is raised to fit). The p50, p90 and p99 reported are the 200s', from the script;
``wrk p90`` is wrk's own (every answer of the whole run, settling included, corrected),
printed beside them for comparison. A wrk whose Lua has no FFI stops the benchmark with
that message (wrk embeds LuaJIT; Debian's links the system's). wrk counts a request that
is never answered nowhere: the script counts requests sent again before their answer
came (``lost``: the connection closed or failed under them) and those still waiting at
the end for longer than the timeout (added to ``timeouts``, with wrk's answers slower
than the timeout).

Reported per point: 200s, 503s and all answers per second; p50/p90/p99 of the 200s;
wrk's p90; socket errors, lost requests and timeouts; the server's CPU per answer (its
whole process tree, psutil, over the measured window) and its cores; the load
generator's cores; for sedamp, the front end's cores and CPU per refusal (its CPU
seconds / 503s): the front end is the process named sds:http among the descendants of
``sedamp run``.

Pool size. By default gunicorn runs a worker per core and sedamp /work's pool as the
topology writes it. ``--workers N`` gives both N processes for /work (gunicorn -w N,
sedamp --set work.workers=N): with fewer than the cores, sedamp's front end and queue
have a core of their own, as on any machine larger than the pool. ``wk ms/200`` is the
CPU per 200 of the processes that run the handler (sedamp's /work workers, gunicorn's
workers), beside ``ms/ans``, the whole server's per answer.

Rounds. The machine's speed drifts by tens of percent within minutes, so the whole set
runs --rounds times (default 4), every system in turn in an order rotated by one per
round (scripts/bench_http.py's), the points in reverse order and the drivers swapped in
odd rounds. A ratio to gunicorn is taken within each round and the median of the rounds'
ratios is checked; an absolute limit (milliseconds, cores) must hold in every round, so
the highest over the rounds is checked.

Targets (met / NOT met, per driver: wrk's are the targets, loadgen's a cross-check):
- /work at 4 connections: 200s per second >= 0.95x gunicorn's; p90 of the 200s <= 1.2x
  gunicorn's.
- /work at 256 and 512 connections: 200s per second >= 0.95x gunicorn's; p90 of the 200s
  <= 1.2x the route's target_p90_ms (topologies/http-service.yaml); no socket error, lost
  request or timeout.
- /hello at 4 connections: 200s per second >= 0.5x gunicorn's; p90 of the 200s <= 2 ms.
- Under overload (/work at 256 and 512 connections) the front end uses at most 25% of one
  core.

Time: rounds x systems x (points x drivers x (settle + duration + ~0.5 s) + warm-up +
~5 s of start and stop), printed at the start: with the defaults (4 rounds, 3 systems,
5 points, 2 drivers, 5 + 10 s, 3 s warm-up) 4 x 3 x (5 x 2 x 15.5 + 8) s = ~33 min.

--json FILE writes every point, the summary and the targets (again after each round,
so an interrupted run keeps its finished rounds). --smoke: one round of points of 1 s
settling and 1 s measured, to prove the script and its tools work.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil
import yaml
from _benchlib import cpu_s, machine_info, positive, tree_cpu_s, tree_processes
from bench_http import load, machine_speed, rotation, serving

REPO = Path(__file__).resolve().parent.parent
LUA = REPO / "scripts" / "bench_wrk.lua"
TOPOLOGY = REPO / "topologies" / "http-service.yaml"
FRONT_END = "sds:http"  # the process name of the topology's front end stage ("http")
WORK_WORKER = "sdw:work:"  # ... and the start of its /work workers' names
SYSTEMS = ("sedamp", "gunicorn", "asyncio")
BASELINE = "gunicorn"
DRIVERS = ("wrk", "loadgen")

LIGHT = 4  # /work connections where sedamp is compared with gunicorn unloaded
LIGHT_RPS_SHARE = 0.95  # ... 200s per second >= this x gunicorn's
LIGHT_P90_FACTOR = 1.2  # ... p90 of the 200s <= this x gunicorn's
OVERLOAD = (256, 512)  # /work connections past saturation
OVERLOAD_RPS_SHARE = 0.95  # ... 200s per second >= this x gunicorn's
TARGET_P90_FACTOR = 1.2  # ... p90 of the 200s <= this x the route's target_p90_ms
HELLO_RPS_SHARE = 0.5  # /hello at LIGHT: 200s per second >= this x gunicorn's
HELLO_P90_MS = 2.0  # ... and p90 of the 200s <= this
FRONT_END_CORES = 0.25  # under OVERLOAD the front end uses at most this share of a core

Row = dict[str, Any]
Point = tuple[str, int]  # (path, connections)


# ---------------------------------------------------------------------------------------
# Pure parts: wrk's output, the figures of a run, the summary and the targets


class WrkOutputError(ValueError):
    """wrk's output lacks what every run prints (its "N requests in T" line)."""


_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_s(text: str) -> float:
    """A duration as wrk prints it ("812.00us", "1.23ms", "10.01s", "2.00m") in seconds."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(us|ms|s|m|h)\s*", text)
    if m is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS_S[m.group(2)]


def parse_wrk(text: str) -> Row:
    """wrk's standard output (with --latency) and the lines of scripts/bench_wrk.lua.

    From wrk, over the whole run: requests, runtime_s, requests_per_s, latency_ms (avg,
    stdev, max and the p50/p75/p90/p99 of its distribution), socket_errors (connect,
    read, write, timeout; zeros when wrk printed none) and non_2xx. From the script:
    window_s (the measurement window), counts and hist (per status, in the window:
    answers, and whole microseconds -> answers), lost and pending_us (the age of each
    request in flight at the end) over the whole run, and script_threads."""
    done = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+),", text, re.M)
    if done is None:
        raise WrkOutputError("wrk printed no 'requests in' line: " + (text.strip().splitlines() or ["nothing"])[-1])
    out: Row = {"requests": int(done.group(1)), "runtime_s": duration_s(done.group(2))}
    rate = re.search(r"^Requests/sec:\s*([0-9.]+)", text, re.M)
    out["requests_per_s"] = float(rate.group(1)) if rate else None
    lat: Row = {}
    line = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)\s", text, re.M)
    if line is not None:
        for key, cell in zip(("avg", "stdev", "max"), line.groups(), strict=True):
            lat[key] = _ms_or_none(cell)
    for q, cell in re.findall(r"^\s*(50|75|90|99)%\s+(\S+)\s*$", text, re.M):
        lat[f"p{q}"] = _ms_or_none(cell)
    out["latency_ms"] = lat
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    names = ("connect", "read", "write", "timeout")
    out["socket_errors"] = dict(zip(names, (int(g) for g in sock.groups()) if sock else (0, 0, 0, 0), strict=True))
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non_2xx"] = int(non.group(1)) if non else 0
    out |= _script_lines(text)
    return out


def _ms_or_none(cell: str) -> float | None:
    try:
        return round(duration_s(cell) * 1000, 3)
    except ValueError:
        return None


def _script_lines(text: str) -> Row:
    """The thread lines of scripts/bench_wrk.lua, merged over the threads."""
    counts: dict[int, int] = {}
    hist: dict[int, dict[int, int]] = {}
    lost, pending, threads, window_s = 0, [], 0, None
    for line in text.splitlines():
        if line.startswith("bench_wrk noclock"):
            raise WrkOutputError("this wrk's Lua has no FFI (LuaJIT), so scripts/bench_wrk.lua has no clock")
        if line.startswith("bench_wrk window "):
            start_us, end_us = map(float, line.split()[2:4])
            window_s = (end_us - start_us) / 1e6
        if not line.startswith("bench_wrk thread "):
            continue
        fields = line.split()[2:]
        threads += 1
        lost += int(fields[0])
        if int(fields[1]) >= 0:
            pending.append(int(fields[1]))
        for token in fields[2:]:
            head, _, cells = token.partition(":")
            status, _, n = head.partition("/")
            counts[int(status)] = counts.get(int(status), 0) + int(n)
            h = hist.setdefault(int(status), {})
            for cell in filter(None, cells.split(",")):
                us, _, k = cell.partition("=")
                h[int(us)] = h.get(int(us), 0) + int(k)
    return {"script_threads": threads, "window_s": window_s, "lost": lost, "pending_us": pending,
            "counts": counts, "hist": hist}  # fmt: skip


def hist_percentile(hist: dict[int, int], q: float) -> int | None:
    """The nearest-rank `q` quantile of a histogram (value -> count), as
    scripts/loadgen.py takes it of its samples; None when empty."""
    n = sum(hist.values())
    if n == 0:
        return None
    rank = min(n - 1, max(0, int(round(q * n + 0.5)) - 1))
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen > rank:
            return value
    return max(hist)  # not reached


def wrk_figures(w: Row, timeout_s: float) -> Row:
    """One wrk run's figures (parse_wrk's output) in the shape every driver reports: the
    answers in the measurement window; what went unanswered over the whole run."""
    wall = w["window_s"] or w["runtime_s"] or 1e-9
    ok_hist = w["hist"].get(200, {})
    answers = sum(w["counts"].values())
    ok, refused = w["counts"].get(200, 0), w["counts"].get(503, 0)
    sock = w["socket_errors"]

    def ms(q: float) -> float | None:
        us = hist_percentile(ok_hist, q)
        return None if us is None else round(us / 1000, 3)

    return {
        "answers": answers,
        "refused": refused,
        "wall_s": round(wall, 3),
        "ok_rps": round(ok / wall, 1),
        "refused_rps": round(refused / wall, 1),
        "all_rps": round(answers / wall, 1),
        "ok_p50_ms": ms(0.5),
        "ok_p90_ms": ms(0.9),
        "ok_p99_ms": ms(0.99),
        "wrk_p90_ms": w["latency_ms"].get("p90"),
        "statuses": {str(k): v for k, v in sorted(w["counts"].items())},
        "socket_errors": sock["connect"] + sock["read"] + sock["write"],
        "lost": w["lost"],
        "timeouts": sock["timeout"] + sum(1 for us in w["pending_us"] if us > timeout_s * 1e6),
    }


def loadgen_figures(out: Row) -> Row:
    """One scripts/loadgen.py run's figures (its JSON) in the shape every driver reports."""
    wall = out["wall_s"] or 1e-9
    refused = int(out["statuses"].get("503", 0))
    ok = out["ok_latency_ms"]
    return {
        "answers": out["answered"],
        "refused": refused,
        "wall_s": wall,
        "ok_rps": out["ok_throughput"],
        "refused_rps": round(refused / wall, 1),
        "all_rps": out["throughput"],
        "ok_p50_ms": ok["p50"],
        "ok_p90_ms": ok["p90"],
        "ok_p99_ms": ok["p99"],
        "wrk_p90_ms": None,
        "statuses": out["statuses"],
        "socket_errors": out["errors"],
        "lost": 0,  # loadgen counts a request cut off by its connection in errors
        "timeouts": out["timeouts"],
    }


def unanswered(f: Row) -> int:
    """Socket errors, lost requests and timeouts of one run's figures."""
    return int(f["socket_errors"] + f["lost"] + f["timeouts"])


def server_figures(f: Row, cpu_s: float, front_s: float | None, wall_s: float, work_s: float | None = None) -> Row:
    """CPU figures of a measurement window: the server's CPU per answer and its cores,
    the CPU per 200 of the processes that run the handler (`work_s`: their CPU seconds),
    and (sedamp) the front end's cores and CPU per refusal."""
    wall = wall_s or 1e-9
    refused = f["refused"]
    ok = f["ok_rps"] * f["wall_s"]
    return {
        "cpu_ms_per_answer": round(cpu_s / f["answers"] * 1000, 3) if f["answers"] else None,
        "work_ms_per_ok": round(work_s / ok * 1000, 3) if work_s is not None and ok else None,
        "server_cores": round(cpu_s / wall, 3),
        "front_cores": None if front_s is None else round(front_s / wall, 3),
        "front_ms_per_refusal": None if front_s is None or not refused else round(front_s / refused * 1000, 4),
    }


def point_order(points: Sequence[Point], round_: int) -> list[Point]:
    """The points of a round: as given in even rounds, reversed in odd ones."""
    return list(points)[::-1] if round_ % 2 else list(points)


def _pick(rows: Iterable[Row], driver: str, system: str, point: Point) -> dict[int, Row]:
    return {
        r["round"]: r
        for r in rows
        if (r["driver"], r["system"], r["path"], r["connections"]) == (driver, system, *point)
    }


def _median(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def _highest(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return max(vals) if vals else None


def round_ratios(rows: Sequence[Row], driver: str, point: Point, key: str) -> dict[int, float | None]:
    """Per round with both: sedamp's `key` over gunicorn's (None where either is missing
    or gunicorn's is 0)."""
    mine, base = _pick(rows, driver, "sedamp", point), _pick(rows, driver, BASELINE, point)
    out: dict[int, float | None] = {}
    for rnd in sorted(mine.keys() & base.keys()):
        a, b = mine[rnd].get(key), base[rnd].get(key)
        out[rnd] = a / b if a is not None and b else None
    return out


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "NOT met")


def ratio_check(rows: Sequence[Row], driver: str, point: Point, key: str, limit: float, what: str) -> Row:
    """The median over the rounds of sedamp's `key` over gunicorn's: >= `limit` for a
    rate (``ok_rps``), <= `limit` for a latency."""
    at_least = key == "ok_rps"
    ratios = round_ratios(rows, driver, point, key)
    med = _median(ratios.values())
    met = None if med is None else (med >= limit if at_least else med <= limit)
    each = ", ".join("-" if v is None else f"{v:.2f}" for v in ratios.values())
    path, n = point
    return {
        "target": f"{path} at {n}: {what} {'>=' if at_least else '<='} {limit}x gunicorn's",
        "met": met,
        "value": med,
        "detail": "no round with both systems" if med is None else f"median {med:.2f}x; rounds {each}",
    }


def highest_check(rows: Sequence[Row], driver: str, point: Point, limit_ms: float, what: str) -> Row:
    """sedamp's p90 of the 200s in every round <= `limit_ms` (the highest is checked)."""
    got = _pick(rows, driver, "sedamp", point)
    top = _highest(r.get("ok_p90_ms") for r in got.values())
    each = ", ".join(_fmt_ms(r.get("ok_p90_ms")) for _, r in sorted(got.items()))
    path, n = point
    return {
        "target": f"{path} at {n}: p90 of 200s <= {limit_ms:g} ms{what}",
        "met": None if top is None else top <= limit_ms,
        "value": top,
        "detail": "no figure" if top is None else f"highest {_fmt_ms(top)} ms; rounds {each}",
    }


def unanswered_check(rows: Sequence[Row], driver: str, point: Point) -> Row:
    """No socket error, lost request or timeout for sedamp at `point`, in any round
    (settling included)."""
    got = list(_pick(rows, driver, "sedamp", point).values())
    sock, lost, tmo = (sum(int(r[k]) for r in got) for k in ("socket_errors", "lost", "timeouts"))
    path, n = point
    return {
        "target": f"{path} at {n}: no connection error or timeout",
        "met": None if not got else sock + lost + tmo == 0,
        "value": sock + lost + tmo,
        "detail": f"{sock} socket errors, {lost} lost, {tmo} timeouts" if got else "no figure",
    }


def front_end_check(rows: Sequence[Row], driver: str) -> Row:
    """sedamp's front end under overload: at most FRONT_END_CORES in every round and
    count of OVERLOAD (the highest is checked); its CPU per refusal reported."""
    got = [r for n in OVERLOAD for r in _pick(rows, driver, "sedamp", ("/work", n)).values()]
    cores = [(r["front_cores"], r["connections"], r["round"]) for r in got if r.get("front_cores") is not None]
    per_refusal = _median(r.get("front_ms_per_refusal") for r in got)
    target = f"front end under overload (/work at {' and '.join(map(str, OVERLOAD))}) <= {FRONT_END_CORES} cores"
    if not cores:
        return {"target": target, "met": None, "value": None, "detail": "no figure"}
    top = max(cores)
    refusal = "-" if per_refusal is None else f"{per_refusal:.3f} ms"
    return {
        "target": target,
        "met": top[0] <= FRONT_END_CORES,
        "value": top[0],
        "detail": f"highest {top[0]:.3f} cores at {top[1]} connections, round {top[2]}; CPU per refusal "
        f"(median) {refusal}",
    }


def evaluate_targets(rows: Sequence[Row], driver: str, target_p90_ms: float) -> list[Row]:
    """Every target, checked on `driver`'s rows: a list of {target, met (None when not
    measured), value, detail}."""
    light, hello = ("/work", LIGHT), ("/hello", LIGHT)
    checks = [
        ratio_check(rows, driver, light, "ok_rps", LIGHT_RPS_SHARE, "200s per second"),
        ratio_check(rows, driver, light, "ok_p90_ms", LIGHT_P90_FACTOR, "p90 of 200s"),
    ]
    limit = TARGET_P90_FACTOR * target_p90_ms
    for n in OVERLOAD:
        point = ("/work", n)
        checks += [
            ratio_check(rows, driver, point, "ok_rps", OVERLOAD_RPS_SHARE, "200s per second"),
            highest_check(rows, driver, point, limit, f" ({TARGET_P90_FACTOR}x target_p90_ms {target_p90_ms:g})"),
            unanswered_check(rows, driver, point),
        ]
    checks += [
        ratio_check(rows, driver, hello, "ok_rps", HELLO_RPS_SHARE, "200s per second"),
        highest_check(rows, driver, hello, HELLO_P90_MS, ""),
        front_end_check(rows, driver),
    ]
    return checks


def summarize(rows: Sequence[Row]) -> list[Row]:
    """One entry per driver, system and point (in the order first measured, points
    sorted): medians over the rounds, the highest p90 and front-end cores, totals of
    what went unanswered."""
    groups: dict[tuple[str, str, str, int], list[Row]] = {}
    for r in rows:
        groups.setdefault((r["driver"], r["system"], r["path"], r["connections"]), []).append(r)
    first = {k: i for i, k in enumerate(dict.fromkeys((r["driver"], r["system"]) for r in rows))}

    def order(key: tuple[str, str, str, int]) -> tuple[int, bool, int]:
        return first[key[:2]], key[2] != "/work", key[3]

    out = []
    for (driver, system, path, n), g in sorted(groups.items(), key=lambda kv: order(kv[0])):
        oks = [r["ok_rps"] for r in g]
        out.append(
            {
                "driver": driver,
                "system": system,
                "path": path,
                "connections": n,
                "rounds": len(g),
                "ok_rps": statistics.median(oks),
                "ok_rps_lowest": min(oks),
                "ok_rps_highest": max(oks),
                **{k: _median(r.get(k) for r in g) for k in ("refused_rps", "ok_p50_ms", "ok_p90_ms", "ok_p99_ms")},
                "ok_p90_ms_highest": _highest(r.get("ok_p90_ms") for r in g),
                "wrk_p90_ms": _median(r.get("wrk_p90_ms") for r in g),
                "unanswered": sum(unanswered(r) for r in g),
                **{k: _median(r.get(k) for r in g) for k in ("cpu_ms_per_answer", "work_ms_per_ok", "server_cores")},
                "front_ms_per_refusal": _median(r.get("front_ms_per_refusal") for r in g),
                "front_cores_highest": _highest(r.get("front_cores") for r in g),
            }
        )
    return out


# ---------------------------------------------------------------------------------------
# Printing


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if v < 10 else f"{v:.0f}"


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


ROW_HEADER = (
    f"{'round':>5}  {'system':<9}{'driver':<8}{'path':<7}{'conns':>6}{'200/s':>9}{'503/s':>9}{'all/s':>9}"
    f"{'p50':>8}{'p90':>8}{'p99':>8}{'wrk p90':>8}{'sock':>6}{'lost':>6}{'tmo':>5}"
    f"{'ms/ans':>8}{'wk ms/200':>10}{'srv cores':>10}{'gen cores':>10}{'fe cores':>9}{'fe ms/503':>10}"
)


def row_line(r: Row) -> str:
    """One measured point, under ROW_HEADER (latencies in ms, of the 200s but wrk p90)."""
    return (
        f"{r['round']:>5}  {r['system']:<9}{r['driver']:<8}{r['path']:<7}{r['connections']:>6}"
        f"{r['ok_rps']:>9.1f}{r['refused_rps']:>9.1f}{r['all_rps']:>9.1f}"
        f"{_fmt_ms(r['ok_p50_ms']):>8}{_fmt_ms(r['ok_p90_ms']):>8}{_fmt_ms(r['ok_p99_ms']):>8}"
        f"{_fmt_ms(r['wrk_p90_ms']):>8}{r['socket_errors']:>6}{r['lost']:>6}{r['timeouts']:>5}"
        f"{_fmt(r['cpu_ms_per_answer'], '.3f'):>8}{_fmt(r.get('work_ms_per_ok'), '.3f'):>10}"
        f"{r['server_cores']:>10.2f}{r['gen_cores']:>10.2f}"
        f"{_fmt(r['front_cores'], '.3f'):>9}{_fmt(r['front_ms_per_refusal'], '.3f'):>10}"
    )


def summary_lines(summary: Sequence[Row]) -> list[str]:
    rounds = max((s["rounds"] for s in summary), default=0)
    lines = [
        f"summary over {rounds} round{'s' if rounds != 1 else ''}: medians (200/s with lowest-highest), the "
        "highest p90 of any round, unanswered in all (settling included), the highest front-end cores",
        f"{'driver':<8}{'system':<9}{'path':<7}{'conns':>6}{'200/s':>9}{'lowest-highest':>18}{'503/s':>9}{'p50':>8}"
        f"{'p90':>8}{'p99':>8}{'max p90':>8}{'wrk p90':>8}{'unans':>7}{'ms/ans':>8}{'wk ms/200':>10}"
        f"{'srv cores':>10}{'fe cores':>9}{'fe ms/503':>10}",
    ]
    for s in summary:
        spread = f"{s['ok_rps_lowest']:.1f}-{s['ok_rps_highest']:.1f}"
        lines.append(
            f"{s['driver']:<8}{s['system']:<9}{s['path']:<7}{s['connections']:>6}{s['ok_rps']:>9.1f}{spread:>18}"
            f"{_fmt(s['refused_rps'], '.1f'):>9}{_fmt_ms(s['ok_p50_ms']):>8}{_fmt_ms(s['ok_p90_ms']):>8}"
            f"{_fmt_ms(s['ok_p99_ms']):>8}{_fmt_ms(s['ok_p90_ms_highest']):>8}{_fmt_ms(s['wrk_p90_ms']):>8}"
            f"{s['unanswered']:>7}{_fmt(s['cpu_ms_per_answer'], '.3f'):>8}{_fmt(s['work_ms_per_ok'], '.3f'):>10}"
            f"{_fmt(s['server_cores'], '.2f'):>10}"
            f"{_fmt(s['front_cores_highest'], '.3f'):>9}{_fmt(s['front_ms_per_refusal'], '.3f'):>10}"
        )
    return lines


def target_lines(checks: Sequence[Row], driver: str) -> list[str]:
    role = "the targets" if driver == "wrk" else "a cross-check of wrk's"
    lines = [f"{driver}: {role}"]
    lines += [f"  {c['target']}: {_verdict(c['met'])} ({c['detail']})" for c in checks]
    return lines


# ---------------------------------------------------------------------------------------
# Running the drivers against a server


class BenchError(Exception):
    """A precondition of the benchmark not met (no wrk, too few file descriptors)."""


RUN_OVERHEAD_S = 0.5  # a point's process starts (loadgen's interpreter, wrk's threads)
START_STOP_S = 5.0  # a server's start, its machine-speed timing and its stop


def estimate_s(args: argparse.Namespace, points: int) -> float:
    """How long the whole run takes, about."""
    per_point = len(args.drivers) * (args.settle + args.duration + RUN_OVERHEAD_S)
    return args.rounds * len(args.systems) * (points * per_point + args.warmup + START_STOP_S)


def raise_fd_limit(connections: int) -> None:
    """wrk holds a socket and an epoll descriptor per connection (one thread each):
    raise the soft limit on open files to fit, up to the hard limit."""
    need = 2 * connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise BenchError(f"{connections} connections need {need} open files, the hard limit is {hard} (ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def run_wrk(port: int, point: Point, settle_s: int, duration_s: int, timeout_s: int) -> tuple[Row, float]:
    """One wrk run of `settle_s` + `duration_s`, measured after the settling (the
    window starts on the monotonic clock, which the script reads too): its figures and
    its CPU seconds."""
    path, n = point
    window_start_us = int((time.monotonic() + settle_s) * 1e6)
    cmd = ["wrk", "-t", str(n), "-c", str(n), "-d", f"{settle_s + duration_s}s", "--timeout", f"{timeout_s}s",
           "--latency", "-s", str(LUA), f"http://127.0.0.1:{port}{path}", "--", str(window_start_us)]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=settle_s + duration_s + 120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"wrk exited with {r.returncode}: {r.stderr.strip() or r.stdout.strip()[-500:]}")
    parsed = parse_wrk(r.stdout)
    if parsed["script_threads"] != n or parsed["window_s"] is None:
        raise RuntimeError(f"{LUA.name} reported {parsed['script_threads']} threads of {n}: {r.stderr.strip()}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wrk_figures(parsed, timeout_s), cpu


def run_loadgen(port: int, point: Point, settle_s: int, duration_s: int, timeout_s: int) -> tuple[Row, float]:
    """One scripts/loadgen.py run in wrk's closed loop, measured after `settle_s` (its
    --warmup): its figures and its CPU seconds."""
    path, n = point
    extra = ("--ignore-retry-after", "--timeout", str(timeout_s))
    out = load(port, n, duration_s, 0.0, extra, settle=settle_s, path=path)
    return loadgen_figures(out), float(out["loadgen_cpu_s"])


DRIVE = {"wrk": run_wrk, "loadgen": run_loadgen}


def front_end_cpu_s(pid: int) -> float | None:
    """CPU seconds used so far by the processes named FRONT_END among `pid` and its
    descendants; None when there is none (not sedamp)."""
    return _named_cpu_s(pid, lambda name: name == FRONT_END)


def work_cpu_s(pid: int, system: str) -> float | None:
    """CPU seconds used so far by the processes that run /work's handler: sedamp's
    WORK_WORKER pool, gunicorn's workers (every descendant of its arbiter), the asyncio
    server itself. A worker that ended in between is left out."""
    if system == "sedamp":
        return _named_cpu_s(pid, lambda name: name.startswith(WORK_WORKER))
    procs = tree_processes(pid)
    return cpu_s(procs[1:] if system == "gunicorn" else procs[:1])


def _named_cpu_s(pid: int, wanted: Callable[[str], bool]) -> float | None:
    procs = []
    for p in tree_processes(pid):
        try:
            if wanted(p.name()):
                procs.append(p)
        except psutil.Error:
            continue
    return cpu_s(procs)


IDLE_CORES = 0.2  # a server using less than this is idle (sedamp idle: ~0.005)
IDLE_WAIT_S = 20.0  # ... waited for at most this long after a point


def wait_idle(
    cpu_s: Callable[[], float],
    period_s: float = 0.25,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Wait until the server, whose CPU seconds so far `cpu_s` reads, uses less than
    IDLE_CORES over a period (a point leaves work queued behind it: gunicorn answers
    every abandoned connection of 512, ~1.5 s), at most IDLE_WAIT_S; returns the
    seconds waited."""
    t0 = clock()
    before = cpu_s()
    while clock() - t0 < IDLE_WAIT_S:
        sleep(period_s)
        now = cpu_s()
        if now - before < IDLE_CORES * period_s:
            break
        before = now
    return clock() - t0


def measure(proc: subprocess.Popen[bytes], port: int, system: str, point: Point, driver: str,
            args: argparse.Namespace) -> Row:  # fmt: skip
    """One point by one driver: one run, its connections kept from the settling into the
    measured window; the server's and the front end's CPU over that window (read at
    its start by a timer, and after the run)."""
    marks: list[tuple[float, float | None, float | None, float]] = []

    def mark() -> None:
        pid = proc.pid
        marks.append((tree_cpu_s(pid), front_end_cpu_s(pid), work_cpu_s(pid, system), time.monotonic()))

    launched = time.monotonic()
    timer = threading.Timer(args.settle, mark)
    timer.start()
    try:
        figures, gen_cpu_s = DRIVE[driver](port, point, args.settle, args.duration, args.timeout)
    finally:
        timer.cancel()
        timer.join()
    mark()
    if len(marks) != 2:
        raise RuntimeError(f"the {driver} run ended within its {args.settle} s of settling")
    (cpu0, front0, work0, t0), (cpu1, front1, work1, t1) = marks
    front = None if front0 is None or front1 is None else max(0.0, front1 - front0)
    work = None if work0 is None or work1 is None or point[0] != "/work" else max(0.0, work1 - work0)
    row = {"system": system, "driver": driver, "path": point[0], "connections": point[1], **figures}
    row |= server_figures(figures, cpu1 - cpu0, front, t1 - t0, work)
    row["gen_cores"] = round(gen_cpu_s / (t1 - launched), 3)  # over its whole run
    return row


def run_system(system: str, points: Sequence[Point], args: argparse.Namespace, round_: int) -> list[Row]:
    """Start `system`, warm it up, time the machine, measure every point with every
    driver (in this round's order), stop it."""
    from stages.burn import spin

    rows = []
    with serving(system, args.iterations, args.workers or args.cores, work_workers=args.workers) as (proc, port):
        if args.warmup > 0:
            load(port, 8, args.warmup, 20.0)  # workers calibrated, pools grown
        cost_ms = round(machine_speed(spin, args.iterations) * 1000, 3)  # the server idle
        drivers = args.drivers if round_ % 2 == 0 else args.drivers[::-1]
        for point in point_order(points, round_):
            for driver in drivers:
                wait_idle(lambda: tree_cpu_s(proc.pid))
                row = {"round": round_, **measure(proc, port, system, point, driver, args), "cost_ms": cost_ms}
                rows.append(row)
                print(row_line(row), flush=True)
    return rows


def route_target_p90_ms(path: Path = TOPOLOGY, route: str = "work") -> float:
    """The route's target_p90_ms in the topology's front end limits."""
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    return float(spec["stages"]["http"]["params"]["limits"][route]["target_p90_ms"])


def wrk_version() -> str | None:
    if shutil.which("wrk") is None:
        return None
    r = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    return (r.stdout.strip().splitlines() or [""])[0] or None


# ---------------------------------------------------------------------------------------
# The command


def write_json(path: Path, meta: Row, rows: Sequence[Row], complete: bool) -> None:
    report = {
        **meta,
        "complete": complete,
        "rows": list(rows),
        "summary": summarize(rows),
        "targets": {d: evaluate_targets(rows, d, meta["target_p90_ms"]) for d in meta["args"]["drivers"]},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


def print_results(rows: Sequence[Row], drivers: Sequence[str], target_p90_ms: float) -> None:
    print()
    for line in summary_lines(summarize(rows)):
        print(line)
    for driver in drivers:
        print()
        for line in target_lines(evaluate_targets(rows, driver, target_p90_ms), driver):
            print(line)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated, of " + ", ".join(SYSTEMS))
    ap.add_argument("--drivers", default=",".join(DRIVERS), help="comma-separated, of " + ", ".join(DRIVERS))
    ap.add_argument("--connections", default="4,32,256,512", help="/work points")
    ap.add_argument("--hello-connections", default="4", help="/hello points (empty: none)")
    ap.add_argument("--duration", type=positive, default=10, help="whole seconds measured per point and driver")
    ap.add_argument("--settle", type=int, default=5, help="whole seconds of the same load first, not measured")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of light /work load at each server's start")
    ap.add_argument("--rounds", type=positive, default=4)
    ap.add_argument("--timeout", type=positive, default=10, help="seconds after which a request is a timeout")
    ap.add_argument("--iterations", type=positive, help="the work of a /work request (default: ~5 ms, calibrated)")
    ap.add_argument("--cores", type=positive, default=psutil.cpu_count() or 1, help="gunicorn workers")
    ap.add_argument(
        "--workers",
        type=positive,
        help="serve /work with this many processes in both sedamp (--set work.workers=N) and gunicorn "
        "(-w N, instead of --cores): with fewer than the cores, the front end and queue have a core of "
        "their own, as on a machine larger than the pool",
    )
    ap.add_argument("--json", type=Path, help="write every point, the summary and the targets to this file")
    ap.add_argument("--smoke", action="store_true", help="one round, 1 s settling + 1 s per point: proves it runs")
    args = ap.parse_args(argv)
    if args.smoke:
        args.duration, args.settle, args.warmup, args.rounds = 1, 1, 0.5, 1
    args.systems = [s for s in args.systems.split(",") if s]
    args.drivers = [d for d in args.drivers.split(",") if d]
    for name, got, known in (("--systems", args.systems, SYSTEMS), ("--drivers", args.drivers, DRIVERS)):
        if not got or any(x not in known for x in got):
            ap.error(f"{name} {','.join(got)}: each must be one of {', '.join(known)}")
    try:
        args.points = [("/work", int(c)) for c in args.connections.split(",") if c]
        args.points += [("/hello", int(c)) for c in args.hello_connections.split(",") if c]
    except ValueError as exc:
        ap.error(f"--connections and --hello-connections take comma-separated whole numbers: {exc}")
    if not args.points or any(n < 1 for _, n in args.points) or args.settle < 0:
        ap.error("give at least one point, every count >= 1, and --settle >= 0")
    return args


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def preflight(args: argparse.Namespace) -> str | None:
    """wrk's version line (None without the wrk driver), after checking that what the run
    needs is there: wrk, and enough open files for its connections."""
    version = wrk_version() if "wrk" in args.drivers else None
    if "wrk" in args.drivers and version is None:
        raise BenchError("wrk is not installed: sudo apt-get install wrk (Debian, Ubuntu), or --drivers loadgen")
    raise_fd_limit(max(n for _, n in args.points))
    return version


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        version = preflight(args)
    except BenchError as exc:
        print(f"bench_wrk: {exc}", file=sys.stderr)
        return 2
    target_p90_ms = route_target_p90_ms()
    machine = machine_info()
    sys.path.insert(0, str(REPO))
    from stages.burn import calibrate, spin

    args.iterations = args.iterations or calibrate(5.0)
    cost = machine_speed(spin, args.iterations, 0.5)
    points = ", ".join(f"{p} at {n}" for p, n in args.points)
    print(f"command : {machine['command']}")
    print(f"machine : {machine['python']}, {machine['cores']} cores ({machine['cpu_model']}), load "
          f"{machine['loadavg']}, {machine['date']}; {version or 'no wrk'}")  # fmt: skip
    print(f"work    : {args.iterations} iterations = {cost * 1000:.2f} ms of CPU per /work request now")
    print(f"plan    : {args.rounds} round(s) of {', '.join(args.systems)} (rotated); {points}; drivers "
          f"{', '.join(args.drivers)}; {args.settle} s settling + {args.duration} s measured per point and driver; "
          f"about {_minutes(estimate_s(args, len(args.points)))}")  # fmt: skip
    print(ROW_HEADER, flush=True)
    meta: Row = {
        "machine": machine,
        "wrk": version,
        "iterations": args.iterations,
        "cost_ms_at_start": round(cost * 1000, 3),
        "target_p90_ms": target_p90_ms,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    rows: list[Row] = []
    for rnd in range(args.rounds):
        order = rotation(args.systems, rnd)
        print(f"round {rnd}: {', '.join(order)}", flush=True)
        for system in order:
            rows += run_system(system, args.points, args, rnd)
        if args.json:
            write_json(args.json, meta, rows, complete=rnd == args.rounds - 1)
    print_results(rows, args.drivers, target_p90_ms)
    if args.json:
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

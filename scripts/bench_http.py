"""Benchmark: a CPU-bound HTTP endpoint under load far past saturation, served by sedamp,
by gunicorn's prefork sync workers (one per core: the Apache-style design) and by a
single-process asyncio server running the handler inline (the event-driven design).

    python scripts/bench_http.py --plot docs/http.png
    python scripts/bench_http.py --clients 4,16,64 --duration 4 --settle 2 --rounds 1   # a quick look

Every system serves ``stages.http_demo.work`` (~5 ms of pure Python per request) on
GET /work. Its iterations are calibrated to ~5 ms at the start of each run, so two runs
differ in the work of a request; --iterations N fixes it for a series of runs.

For each client count, scripts/loadgen.py runs a closed loop (each client sends, waits
for the answer, thinks ~20 ms on average, as in the SEDA paper) for --duration seconds,
after --settle seconds of the same load that are not counted, so each point measures the
steady state once the controllers have settled. A client refused with 503 waits its
Retry-After (1 s) before trying again, unless --ignore-retry-after. The load generator
runs on the same machine and takes CPU from every system alike.

Rounds. The machine's speed drifts (by 15-40% within minutes on a shared host), so
points measured minutes apart differ by the drift as much as by the systems. The whole
comparison therefore runs --rounds times (default 4, so a run takes about four times as
long as one pass). Each round runs every system in turn (start the server, warm up,
every client count, stop the server), in an order rotated by one each round (a,b,c;
then b,c,a; then c,a,b), so no system is always measured first or last. Within a round
the client counts run ascending in even rounds and descending in odd ones (--order
alternate), so a drift over a round does not always fall on the largest counts. Every
point is printed as it is measured, with its round.

Machine speed per point. Just before each measured point, while the server is idle,
the benchmark times ``stages.burn.spin`` with the request's iteration count over about
0.3 s of its own CPU: ``cost_ms`` is the CPU per request at that moment, ``limit_rps``
= cores / cost the most the machine could then serve, and ``efficiency`` = 200s per
second / limit_rps, a figure that compares points measured at different speeds.

Reported per point: round, answers per second (200s, and all), p90 latency of the 200s,
the maximum latency of any answer, Jain's fairness index over the clients' completed
requests, 503s (explicit refusals), requests left unanswered (client timeouts and
connection errors), cost_ms, limit_rps and efficiency. After all rounds, a summary per
system and client count: the median over rounds of 200s per second (with the lowest and
highest) and of efficiency, the highest p90 and the highest maximum latency of any
round, the median Jain index, and the total 503s and unanswered requests.

Then sedamp's targets are checked over the rounds. Each client count's 200s per second
is the median over the rounds, and the peak is the highest of those medians (not the
highest single point: that is the luckiest moment of the machine, and shares of it are
biased low by the noise). Saturation is the smallest client count whose median is >= 95%
of the peak. The targets: the median >= 95% of the peak at every count from saturation
to the largest, which must be at least 8x saturation; the highest p90 of the 200s in any
round <= 1.2x the configured target and the median Jain index >= 0.98 at every count
from saturation on; nothing unanswered in any round. Each round's points as shares of
that round's own peak are printed too. With --rounds 1 these are the checks of a single
pass.

sedamp runs with --metrics, and each of its points also reports the CPU its /work
workers used in the measured window (``wrk cores``, summed over the workers) and the CPU
per completed request (``cpu/req``), and the events a batch of theirs carried
(``ev/batch``: with few requests waiting, batches are small and each request carries
more of a batch's fixed cost), from sedamp's own metrics. For every system, ``srv
cores`` is the CPU of the server's whole process tree (for sedamp: front end, queues,
controller and workers) and ``cs/ans`` the machine's context switches per answer, both
over the whole load of the point, settling included. A diagnostic line checks
that the workers' CPU (median over the rounds) holds >= 95% of its peak from saturation on: whether
overload took capacity from the workers, apart from what each request cost at the time.
The load generator's own CPU is reported too (``gen cores``).

--json writes every point (with round, cost_ms, limit_rps and efficiency), the summary
and the target figures; --plot draws the medians with each round's points faintly.
--report A.json B.json ... runs nothing: it prints the summary and the targets of saved
runs again, with their rounds pooled (the medians then span every round of every run),
and refuses runs of different settings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from _benchlib import positive, tree_cpu_s

REPO = Path(__file__).resolve().parent.parent
TARGET_P90_MS = 250.0  # topologies/http-service.yaml: limits.work.target_p90_ms
P90_FACTOR = 1.2  # the p90 target is met up to this multiple of TARGET_P90_MS
PEAK_SHARE = 0.95  # from saturation on, 200s per second >= this share of the peak
OVERLOAD = 8  # ... up to at least this multiple of the saturating client count
JAIN_MIN = 0.98
SPEED_CPU_S = 0.3  # seconds of CPU spent timing the machine's speed before each point


# ---------------------------------------------------------------------------------------
# Pure parts: the order of the runs, the machine's speed, aggregation and targets over
# rows (loadgen's JSON for one point plus "system", "round", "cost_ms", "limit_rps" and
# "efficiency").

Row = dict[str, Any]


def rotation(systems: Sequence[str], round_: int) -> list[str]:
    """The order in which round `round_` runs `systems`: rotated left by one per round
    (round 0: a,b,c; round 1: b,c,a; round 2: c,a,b; round 3: a,b,c again)."""
    if not systems:
        return []
    k = round_ % len(systems)
    return [*systems[k:], *systems[:k]]


ORDERS = ("alternate", "ascending")


def client_order(counts: Sequence[int], round_: int, order: str = "alternate") -> list[int]:
    """The order in which round `round_` runs the client counts. "alternate": ascending
    in even rounds, descending in odd ones, so that a drift of the machine's speed over
    a round does not fall on the same counts every round; "ascending": every round."""
    up = sorted(counts)
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    return up[::-1] if order == "alternate" and round_ % 2 else up


def machine_speed(spin: Callable[[int, int], object], iterations: int, cpu_s: float = SPEED_CPU_S) -> float:
    """Seconds of this process's CPU per ``spin(iterations, i)``, timed over at least
    `cpu_s` seconds of CPU (one request's work at the machine's current speed)."""
    t0 = time.process_time()
    n = 0
    while True:
        spin(iterations, n)
        n += 1
        spent = time.process_time() - t0
        if spent >= cpu_s:
            return spent / n


def with_speed(out: Row, cost_s: float, cores: int) -> Row:
    """`out` plus the machine's speed measured just before it: ``cost_ms`` (CPU per
    request), ``limit_rps`` (cores / cost) and ``efficiency`` (200s per second / limit)."""
    limit = cores / cost_s if cost_s > 0 else None
    out["cost_ms"] = round(cost_s * 1000, 3)
    out["limit_rps"] = None if limit is None else round(limit, 1)
    out["efficiency"] = None if limit is None else round(out["ok_throughput"] / limit, 4)
    if out.get("loadgen_cpu_s") is not None and out.get("loadgen_wall_s"):
        out["loadgen_cores"] = round(out["loadgen_cpu_s"] / out["loadgen_wall_s"], 3)
    return out


def worker_cpu(records: Iterable[Row], t0: float, t1: float, stage: str = "work") -> Row | None:
    """From sedamp's metrics records (``--metrics``) stamped between `t0` and `t1`: the
    CPU the stage's workers used (cores, summed over its workers, mean over the
    records), how busy they were (mean fraction), the CPU per completed event and the
    workers in the pool (mean).

    The machine's speed moves by tens of percent within a minute, which a 5% target on
    throughput cannot see through. The CPU the workers get is what sedamp controls: if
    it holds under overload, what the requests cost decides the rest. None without
    records in the window."""
    cores, busy, done, carried, pool = [], [], [], [], []
    for r in records:
        if not t0 <= r.get("t", 0) <= t1 or stage not in r.get("stages", {}):
            continue
        st = r["stages"][stage]
        detail = st.get("worker_detail") or []
        cores.append(sum(d.get("cpu_percent") or 0.0 for d in detail) / 100)
        pool.append(len(detail))
        busy.append(statistics.fmean(d.get("busy") or 0.0 for d in detail) if detail else 0.0)
        done.append(st.get("completions_per_s") or 0.0)
        if st.get("events_per_batch") is not None:
            carried.append(st["events_per_batch"])
    if not cores:
        return None
    mean_cores, mean_done = statistics.fmean(cores), statistics.fmean(done)
    return {
        "cores": round(mean_cores, 3),
        "busy": round(statistics.fmean(busy), 3),
        "cpu_ms_per_event": round(mean_cores / mean_done * 1000, 3) if mean_done > 0 else None,
        "events_per_batch": round(statistics.fmean(carried), 2) if carried else None,
        "workers": round(statistics.fmean(pool), 2),
        "records": len(cores),
    }


def _round(r: Row) -> int:
    return int(r.get("round", 0))


def _unanswered(r: Row) -> int:
    return int(r["timeouts"] + r["errors"])


def _median(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def _highest(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return max(vals) if vals else None


def summarize(rows: Sequence[Row]) -> list[Row]:
    """One entry per system (in the order first seen) and client count (ascending), over
    the rounds: median, lowest and highest 200s per second; median efficiency and
    limit; highest p90 of the 200s and highest maximum latency of any round; median
    and lowest Jain index; total 503s and total unanswered."""
    groups: dict[tuple[str, int], list[Row]] = {}
    for r in rows:
        groups.setdefault((r["system"], r["clients"]), []).append(r)
    out = []
    for system in dict.fromkeys(r["system"] for r in rows):
        for n in sorted(c for s, c in groups if s == system):
            g = groups[(system, n)]
            oks = [r["ok_throughput"] for r in g]
            out.append(
                {
                    "system": system,
                    "clients": n,
                    "rounds": len(g),
                    "ok_throughput": statistics.median(oks),
                    "ok_throughput_lowest": min(oks),
                    "ok_throughput_highest": max(oks),
                    "efficiency": _median(r.get("efficiency") for r in g),
                    "limit_rps": _median(r.get("limit_rps") for r in g),
                    "p90_ms_highest": _highest(r["ok_latency_ms"]["p90"] for r in g),
                    "max_ms_highest": _highest(r["latency_ms"]["max"] for r in g),
                    "jain": _median(r["per_client"]["jain"] for r in g),
                    "jain_lowest": min((j for r in g if (j := r["per_client"]["jain"]) is not None), default=None),
                    "refused": sum(int(r["statuses"].get("503", 0)) for r in g),
                    "unanswered": sum(_unanswered(r) for r in g),
                }
            )
    return out


def throughput_ratios(rows: Sequence[Row], key: str = "ok_throughput") -> dict[int, dict[int, float]]:
    """Per round, each client count's 200s per second (or another figure, `key`)
    divided by that round's peak (its highest over the client counts); 0 when the peak
    is 0."""
    by_round: dict[int, list[Row]] = {}
    for r in rows:
        by_round.setdefault(_round(r), []).append(r)
    ratios = {}
    for rnd in sorted(by_round):
        peak = max(r.get(key) or 0.0 for r in by_round[rnd])
        ratios[rnd] = {r["clients"]: ((r.get(key) or 0.0) / peak if peak > 0 else 0.0) for r in by_round[rnd]}
    return ratios


def median_shares(rows: Sequence[Row], key: str = "ok_throughput") -> tuple[dict[int, float], float, dict[int, float]]:
    """Per client count, the median over rounds of `key` (200s per second unless told);
    the peak, the highest of those medians; and each median as a share of the peak (0
    when the peak is 0). The median of each point first, then the peak: the peak of one
    round is that round's luckiest point, so shares of it are biased low by the noise."""
    counts = sorted({r["clients"] for r in rows})
    med = {c: statistics.median((r.get(key) or 0.0) for r in rows if r["clients"] == c) for c in counts}
    peak = max(med.values(), default=0.0)
    return med, peak, {c: (v / peak if peak > 0 else 0.0) for c, v in med.items()}


def evaluate_targets(rows: Sequence[Row], system: str = "sedamp") -> Row | None:
    """sedamp's targets over the rounds (None without rows of `system`).

    Throughput: each client count's median 200s per second over the rounds, as a share
    of the peak (the highest of those medians; see median_shares). Saturation is the
    smallest count whose share is >= PEAK_SHARE (if none is, the count with the highest
    share: the throughput target is then not met). From saturation to the largest
    count: the share >= PEAK_SHARE at every count; the highest p90 of the 200s of any
    round <= P90_FACTOR x TARGET_P90_MS; the median Jain index >= JAIN_MIN at every
    count; and, over all counts, nothing unanswered in any round. A missing p90 or Jain
    index counts as 0. Each round's points as shares of that round's own peak are
    reported too (``ratios``, ``median_ratio``, the lowest single one)."""
    mine = [r for r in rows if r["system"] == system]
    if not mine:
        return None
    ratios = throughput_ratios(mine)
    medians, peak, share = median_shares(mine)
    peaks = {rnd: max(r["ok_throughput"] for r in mine if _round(r) == rnd) for rnd in ratios}
    counts = sorted(share)
    median_ratio = {c: statistics.median(ratios[rnd][c] for rnd in ratios if c in ratios[rnd]) for c in counts}
    sat = next((c for c in counts if share[c] >= PEAK_SHARE), None)
    found = sat is not None
    if sat is None:
        sat = max(counts, key=lambda c: share[c])
    checked = [c for c in counts if c >= sat]
    after = [r for r in mine if r["clients"] >= sat]

    low = min(checked, key=lambda c: share[c])
    low_med = min(checked, key=lambda c: median_ratio[c])
    low_one = min((ratios[rnd][c], rnd, c) for rnd in ratios for c in checked if c in ratios[rnd])
    worst_p90 = max(after, key=lambda r: r["ok_latency_ms"]["p90"] or 0.0)
    p90_ms = worst_p90["ok_latency_ms"]["p90"] or 0.0
    lim = P90_FACTOR * TARGET_P90_MS
    jain_median = {
        c: statistics.median(r["per_client"]["jain"] or 0.0 for r in after if r["clients"] == c) for c in checked
    }
    jain_low_med = min(checked, key=lambda c: jain_median[c])
    worst_jain = min(after, key=lambda r: r["per_client"]["jain"] or 0.0)
    per_round_lost = {rnd: sum(_unanswered(r) for r in mine if _round(r) == rnd) for rnd in ratios}
    lost = sum(per_round_lost.values())
    return {
        "system": system,
        "rounds": sorted(ratios),
        "peaks": peaks,
        "peak": peak,
        "counts": counts,
        "medians": medians,
        "share": share,
        "ratios": ratios,
        "median_ratio": median_ratio,
        "saturation": sat,
        "saturation_found": found,
        "largest": counts[-1],
        "worker_share": _worker_share(mine, checked),
        "throughput": {
            "met": all(share[c] >= PEAK_SHARE for c in checked) and counts[-1] >= OVERLOAD * sat,
            "held": all(share[c] >= PEAK_SHARE for c in checked),
            "reaches": counts[-1] / sat,
            "lowest": share[low],
            "lowest_clients": low,
            "lowest_median_ratio": median_ratio[low_med],
            "lowest_median_ratio_clients": low_med,
            "lowest_single": low_one[0],
            "lowest_single_round": low_one[1],
            "lowest_single_clients": low_one[2],
        },
        "p90": {
            "met": p90_ms <= lim,
            "limit_ms": lim,
            "highest_ms": p90_ms,
            "round": _round(worst_p90),
            "clients": worst_p90["clients"],
        },
        "jain": {
            "met": all(jain_median[c] >= JAIN_MIN for c in checked),
            "lowest_median": jain_median[jain_low_med],
            "lowest_median_clients": jain_low_med,
            "lowest_single": worst_jain["per_client"]["jain"] or 0.0,
            "lowest_single_round": _round(worst_jain),
            "lowest_single_clients": worst_jain["clients"],
        },
        "unanswered": {"met": lost == 0, "total": lost, "per_round": per_round_lost},
    }


def _worker_share(mine: Sequence[Row], checked: Sequence[int]) -> Row | None:
    """The throughput target's check again on the CPU the /work workers used
    (``work_cpu_cores``, from sedamp's own metrics): whether overload took capacity
    from them, apart from the machine's speed. None when the rows lack the figure."""
    if not all(r.get("work_cpu_cores") for r in mine):
        return None
    _, _, share = median_shares(mine, "work_cpu_cores")
    low = min(checked, key=lambda c: share[c])
    return {"met": all(share[c] >= PEAK_SHARE for c in checked), "lowest": share[low], "clients": low}


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def check_targets(rows: Sequence[Row]) -> list[str]:
    """The target lines printed after the summary (empty without sedamp rows)."""
    t = evaluate_targets(rows)
    if t is None:
        return []
    sat, big, rounds = t["saturation"], t["largest"], t["rounds"]
    peaks = ", ".join(f"{t['peaks'][rnd]:.1f}" for rnd in rounds)
    lines = [f"sedamp: peak {t['peak']:.1f}/s (the highest median over the rounds; the rounds' own peaks: {peaks})"]
    if t["saturation_found"]:
        lines.append(
            f"  saturation at {sat} clients (the first count whose median is >= {PEAK_SHARE:.0%} of the peak); "
            f"checked from {sat} to {big} clients ({big / sat:.0f}x saturation)"
        )
    else:
        lines.append(
            f"  no client count's median reaches {PEAK_SHARE:.0%} of the peak; checked from {sat} clients (the "
            f"highest median) to {big} ({big / sat:.0f}x)"
        )
    lines.append("  200/s: the median as a share of the peak; each round's point as a share of that round's peak")
    lines.append(f"  {'clients':>9}{'median':>9}{'of peak':>9}" + "".join(f"{f'round {rnd}':>9}" for rnd in rounds))
    for c in t["counts"]:
        cells = "".join(f"{t['ratios'][rnd][c]:>9.1%}" if c in t["ratios"][rnd] else f"{'-':>9}" for rnd in rounds)
        mark = ("* " if c >= sat else "") + str(c)
        lines.append(f"  {mark:>9}{t['medians'][c]:>9.1f}{t['share'][c]:>9.1%}{cells}")
    tp, p90, jn, lost = t["throughput"], t["p90"], t["jain"], t["unanswered"]
    if tp["reaches"] < OVERLOAD:
        lines.append(
            f"  the counts reach {tp['reaches']:.0f}x saturation, not the {OVERLOAD}x the throughput target asks for"
            + (f" (held >= {PEAK_SHARE:.0%} over that range)" if tp["held"] else "")
        )
    lines.append(
        f"  throughput >= {PEAK_SHARE:.0%} of peak to {OVERLOAD}x saturation: {_met(tp['met'])} (lowest "
        f"{tp['lowest']:.1%} at "
        f"{tp['lowest_clients']} clients; of each round's own peak: lowest median {tp['lowest_median_ratio']:.1%} "
        f"at {tp['lowest_median_ratio_clients']} clients, lowest single {tp['lowest_single']:.1%}, round "
        f"{tp['lowest_single_round']} at {tp['lowest_single_clients']} clients)"
    )
    share = t.get("worker_share")
    if share is not None:
        lines.append(
            f"  (diagnostic) CPU of the /work workers >= {PEAK_SHARE:.0%} of its peak: {_met(share['met'])} "
            f"(lowest {share['lowest']:.1%} at {share['clients']} clients); the rest of a fall in throughput is "
            "what each request cost at the time (cpu/req)"
        )
    lines.append(
        f"  p90 of 200s <= {p90['limit_ms']:.0f} ms: {_met(p90['met'])} (highest {p90['highest_ms']:.0f} ms, round "
        f"{p90['round']} at {p90['clients']} clients)"
    )
    lines.append(
        f"  Jain >= {JAIN_MIN}: {_met(jn['met'])} (lowest median {jn['lowest_median']:.3f} at "
        f"{jn['lowest_median_clients']} clients; lowest single {jn['lowest_single']:.3f}, round "
        f"{jn['lowest_single_round']} at {jn['lowest_single_clients']} clients)"
    )
    lines.append(
        f"  nothing unanswered: {_met(lost['met'])} ({lost['total']} timeouts or errors over {len(rounds)} "
        f"round{'s' if len(rounds) != 1 else ''})"
    )
    return lines


ROW_HEADER = (
    f"{'round':>5}  {'system':<9}{'clients':>8}{'200/s':>10}{'all/s':>10}{'p90 ms':>10}{'max ms':>10}{'Jain':>8}"
    f"{'503':>8}{'unanswered':>11}{'cost ms':>9}{'limit/s':>9}{'eff':>7}{'gen cores':>10}{'wrk cores':>10}"
    f"{'cpu/req':>8}{'ev/batch':>9}{'srv cores':>10}{'cs/ans':>8}"
)


def _row(r: Row) -> str:
    s = r["statuses"]
    jain = r["per_client"]["jain"]
    cost, limit, eff = r.get("cost_ms"), r.get("limit_rps"), r.get("efficiency")
    gen, wrk, per, batch = r.get("loadgen_cores"), r.get("work_cpu_cores"), r.get("work_cpu_ms"), r.get("work_batch")
    return (
        f"{_round(r):>5}  {r['system']:<9}{r['clients']:>8}{r['ok_throughput']:>10.1f}{r['throughput']:>10.1f}"
        f"{_ms(r['ok_latency_ms']['p90']):>10}{_ms(r['latency_ms']['max']):>10}"
        f"{(f'{jain:.3f}' if jain is not None else '-'):>8}{s.get('503', 0):>8}{_unanswered(r):>11}"
        f"{('-' if cost is None else f'{cost:.2f}'):>9}{('-' if limit is None else f'{limit:.0f}'):>9}"
        f"{('-' if eff is None else f'{eff:.1%}'):>7}"
        f"{('-' if gen is None else f'{gen:.2f}'):>10}{('-' if wrk is None else f'{wrk:.2f}'):>10}"
        f"{('-' if per is None else f'{per:.2f}'):>8}{('-' if batch is None else f'{batch:.1f}'):>9}"
        f"{('-' if (srv := r.get('server_cores')) is None else f'{srv:.2f}'):>10}"
        f"{('-' if (cs := r.get('switches_per_answer')) is None else f'{cs:.1f}'):>8}"
    )


def summary_lines(summary: Sequence[Row]) -> list[str]:
    """The summary table: one line per system and client count."""
    rounds = max((s["rounds"] for s in summary), default=0)
    lines = [
        f"summary over {rounds} round{'s' if rounds != 1 else ''}: median 200/s (lowest-highest), median "
        "efficiency, highest p90 and max latency of any round, median Jain, total 503s and unanswered",
        f"{'system':<9}{'clients':>8}{'rounds':>7}{'200/s':>9}{'lowest-highest':>16}{'eff':>7}{'p90 ms':>8}"
        f"{'max ms':>8}{'Jain':>7}{'503':>8}{'unanswered':>11}",
    ]
    for s in summary:
        eff, jain = s["efficiency"], s["jain"]
        spread = f"{s['ok_throughput_lowest']:.1f}-{s['ok_throughput_highest']:.1f}"
        lines.append(
            f"{s['system']:<9}{s['clients']:>8}{s['rounds']:>7}{s['ok_throughput']:>9.1f}{spread:>16}"
            f"{('-' if eff is None else f'{eff:.1%}'):>7}{_ms(s['p90_ms_highest']):>8}{_ms(s['max_ms_highest']):>8}"
            f"{('-' if jain is None else f'{jain:.3f}'):>7}{s['refused']:>8}{s['unanswered']:>11}"
        )
    return lines


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


# ---------------------------------------------------------------------------------------
# Running the servers and the load


def context_switches(stat: str | None = None) -> int | None:
    """The machine's context switches since boot (the ``ctxt`` line of /proc/stat), or
    None where there is no such line."""
    if stat is None:
        try:
            stat = Path("/proc/stat").read_text(encoding="ascii")
        except OSError:
            return None
    for line in stat.splitlines():
        if line.startswith("ctxt "):
            return int(line.split()[1])
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(
    system: str, port: int, cores: int, metrics: Path | None = None, work_workers: int | None = None
) -> list[str]:
    """How `system` is started: gunicorn with `cores` workers; sedamp's /work pool as the
    topology writes it, or `work_workers` processes (``--set work.workers=N``)."""
    py = sys.executable
    if system == "sedamp":
        more = ["--metrics", str(metrics)] if metrics is not None else []
        more += ["--set", f"work.workers={work_workers}"] if work_workers else []
        return [py, "-m", "sedamp", "run", "topologies/http-service.yaml", "-q", "--workdir", "/tmp/sedamp-bench-http",
                *more]  # fmt: skip
    if system == "gunicorn":
        return [py, "-m", "gunicorn", "-w", str(cores), "-k", "sync", "--backlog", "4096", "--log-level", "warning",
                "-b", f"127.0.0.1:{port}", "scripts._http_peers:wsgi"]  # fmt: skip
    return [py, "scripts/_http_peers.py", "asyncio", "--port", str(port)]


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not listen in time")


def load(
    port: int,
    clients: int,
    duration: float,
    think_ms: float,
    extra: tuple[str, ...] = (),
    settle: float = 0.0,
    path: str = "/work",
) -> dict[str, Any]:
    """scripts/loadgen.py's JSON for one closed-loop load of `path`, plus its own CPU
    (``loadgen_cpu_s``) and the wall time of its process (``loadgen_wall_s``)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = subprocess.run(
        [
            sys.executable,
            "scripts/loadgen.py",
            "--port",
            str(port),
            "--path",
            path,
            "--clients",
            str(clients),
            "--think-ms",
            str(think_ms),
            "--duration",
            str(duration),
            "--warmup",
            str(settle),
            "--timeout",
            "60",
            "--json",
            *extra,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=settle + duration + 120,
    )
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    out: dict[str, Any] = json.loads(r.stdout)
    # the load generator's own CPU (its process is this one's only child reaped here):
    # on a small machine it takes a share of the cores the server could have used
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["loadgen_cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 3)
    out["loadgen_wall_s"] = round(time.monotonic() - t0, 3)
    return out


def stop_server(proc: subprocess.Popen[bytes], system: str) -> None:
    """Stop a server started by `serving` as its users would (Ctrl-C for sedamp and the
    asyncio peer, SIGTERM for gunicorn); killed after 30 s."""
    proc.send_signal(signal.SIGINT if system != "gunicorn" else signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def serving(
    system: str, iterations: int, cores: int, metrics: Path | None = None, work_workers: int | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`system` serving stages.http_demo on a free port with `iterations` of work per
    /work request, listening: yields its process and port; stopped on exit."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HTTP_DEMO_WORK_ITERATIONS": str(iterations)}
    cmd = command(system, port, cores, metrics, work_workers)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        yield proc, port
    finally:
        stop_server(proc, system)


def run_system(system: str, counts: list[int], args: argparse.Namespace, round_: int = 0) -> list[Row]:
    from stages.burn import spin

    cores = os.cpu_count() or 1
    scratch = Path(tempfile.mkdtemp(prefix="bench-http-"))
    metrics = scratch / "metrics.jsonl" if system == "sedamp" else None
    rows = []
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, scratch, ignore_errors=True)  # after the server stopped
        proc, port = stack.enter_context(serving(system, args.iterations, args.cores, metrics))
        load(port, 8, args.warmup, args.think_ms)  # warm-up: workers calibrated, pools grown
        for n in client_order(counts, round_, args.order):
            cost = machine_speed(spin, args.iterations)  # the server is idle between two loads
            extra = ("--ignore-retry-after",) if args.ignore_retry_after else ()
            started = time.time()
            cpu0, cs0, t0 = tree_cpu_s(proc.pid), context_switches(), time.monotonic()
            out = load(port, n, args.duration, args.think_ms, extra, settle=args.settle)
            # the server's processes (front end, queues, controller and workers for sedamp)
            # and the machine's context switches, over the whole load (settling included)
            wall = time.monotonic() - t0
            out["server_cores"] = round((tree_cpu_s(proc.pid) - cpu0) / wall, 3)
            cs1 = context_switches()
            if cs0 is not None and cs1 is not None and out["throughput"] > 0:
                out["switches_per_answer"] = round((cs1 - cs0) / wall / out["throughput"], 1)
            if metrics is not None:  # the measured window: after the settling, a period's slack each side
                share = worker_cpu(
                    _records(metrics), started + args.settle + 1.0, started + args.settle + args.duration
                )
                if share is not None:
                    out["work_cpu_cores"], out["work_cpu_ms"] = share["cores"], share["cpu_ms_per_event"]
                    out["work_busy"], out["work_batch"] = share["busy"], share["events_per_batch"]
                    out["work_workers"] = share["workers"]
            out = {"round": round_, "system": system, **with_speed(out, cost, cores)}
            rows.append(out)
            print(_row(out), flush=True)
    return rows


def _records(path: Path) -> list[Row]:
    """The complete lines of a metrics file that is still being written."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # the line being written
    return out


def plot(rows: Sequence[Row], path: Path) -> None:
    """The four panels against clients: the median over rounds as a line, each round's
    points faintly."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = len({_round(r) for r in rows})
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels: list[tuple[str, Callable[[Row], float | None]]] = [
        ("200s per second", lambda r: r["ok_throughput"]),
        ("p90 latency of 200s (ms)", lambda r: r["ok_latency_ms"]["p90"]),
        ("max latency of any answer (ms)", lambda r: r["latency_ms"]["max"]),
        ("Jain's fairness index", lambda r: r["per_client"]["jain"]),
    ]
    for ax, (title, f) in zip(axes.flat, panels, strict=True):
        for system in dict.fromkeys(r["system"] for r in rows):
            mine = [r for r in rows if r["system"] == system]
            counts = sorted({r["clients"] for r in mine})
            medians = [_median(f(r) for r in mine if r["clients"] == c) for c in counts]
            (line,) = ax.plot(counts, medians, marker="o", label=system)
            if rounds > 1:
                pts = [(r["clients"], f(r)) for r in mine if f(r) is not None]
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=12, alpha=0.3, color=line.get_color())
        ax.set_xscale("log", base=2)
        ax.set_xlabel("clients")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0][1].axhline(TARGET_P90_MS, color="grey", linestyle="--", linewidth=1, label="sedamp target")
    axes[0][1].set_yscale("log")
    axes[1][0].set_yscale("log")
    axes[0][0].legend()
    axes[0][1].legend()
    each = f"median of {rounds} rounds (dots: each round)" if rounds > 1 else "one round"
    fig.suptitle(f"GET /work (~5 ms of CPU): closed loop, 20 ms mean think time; {each}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def mixed(args: argparse.Namespace) -> None:
    """Only the expensive endpoint overloaded: /work at `--mixed` clients and /hello at 8
    clients at the same time, against sedamp. Refusals should fall on /work alone."""
    with serving("sedamp", args.iterations, args.cores) as (_, port):
        load(port, 8, args.warmup, args.think_ms)
        base = [sys.executable, "scripts/loadgen.py", "--port", str(port), "--duration", str(args.duration), "--json",
                "--warmup", str(args.settle), "--think-ms", str(args.think_ms), "--timeout", "60"]  # fmt: skip
        runs = {
            "/work": subprocess.Popen(
                [*base, "--path", "/work", "--clients", str(args.mixed)], cwd=REPO, stdout=subprocess.PIPE, text=True
            ),
            "/hello": subprocess.Popen(
                [*base, "--path", "/hello", "--clients", "8"], cwd=REPO, stdout=subprocess.PIPE, text=True
            ),
        }
        print(f"mixed: /work at {args.mixed} clients and /hello at 8 clients together (sedamp)")
        for path, p in runs.items():
            out = json.loads(p.communicate(timeout=args.settle + args.duration + 120)[0])
            print(
                f"  {path:<7} 200/s {out['ok_throughput']:>8.1f}  p90 {_ms(out['ok_latency_ms']['p90']):>5} ms  "
                f"statuses {out['statuses']}  unanswered {out['timeouts'] + out['errors']}"
            )


def write_json(path: Path, meta: Row, rows: Sequence[Row], complete: bool) -> None:
    """Every point, the summary and the target figures (written again after each round,
    so an interrupted run keeps the rounds it finished)."""
    report = {
        **meta,
        "complete": complete,
        "rows": list(rows),
        "summary": summarize(rows),
        "targets": evaluate_targets(rows),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


def pool_rounds(reports: Sequence[Row]) -> list[Row]:
    """The rows of several runs' JSON reports (--json) as one set of rounds: each run's
    rounds renumbered after the previous run's, so the medians are taken over all of
    them. A run calibrates the work of a request at its start unless given it
    (``iterations``), so its answers per second are scaled to the first run's request (times its iterations
    over the first run's); latencies are left as measured. Refuses reports of different
    settings or p90 target, which would not measure the same thing."""
    rows: list[Row] = []
    first = reports[0] if reports else {}
    for rep in reports:
        for key in ("target_p90_ms", "args"):
            a, b = rep.get(key), first.get(key)
            if key == "args":
                a, b = _workload(a or {}), _workload(b or {})
            if a != b:
                raise ValueError(f"reports measure different things: {key} {a} against {b}")
        scale = (rep.get("iterations") or 1) / (first.get("iterations") or 1)
        base = 1 + max((_round(r) for r in rows), default=-1)
        for r in rep.get("rows", []):
            out = {**r, "round": base + _round(r)}
            for key in ("ok_throughput", "throughput"):
                if r.get(key) is not None:
                    out[key] = r[key] * scale
            rows.append(out)
    return rows


def _workload(args: Row) -> tuple[Any, ...]:
    """What must agree between runs pooled by --report (not the calibrated iterations:
    they follow the machine's speed at each run's start)."""
    return tuple(args.get(k) for k in ("duration", "settle", "think_ms", "cores", "ignore_retry_after"))


def print_results(rows: Sequence[Row]) -> None:
    """The summary table, then sedamp's targets."""
    print()
    for line in summary_lines(summarize(rows)):
        print(line)
    print()
    for line in check_targets(rows):
        print(line)


def report(paths: Sequence[Path], plot_path: Path | None) -> int:
    """--report: the summary and the targets again from saved runs (no server runs)."""
    reports = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    try:
        rows = pool_rounds(reports)
    except ValueError as e:
        print(f"bench_http: {e}", file=sys.stderr)
        return 2
    for p, rep in zip(paths, reports, strict=True):
        done = "" if rep.get("complete", True) else " (interrupted)"
        print(f"from    : {p}: {rep.get('started', '?')}, {1 + max(map(_round, rep.get('rows', [])), default=-1)} "
              f"rounds{done}, {rep.get('iterations')} iterations per request")  # fmt: skip
    if len({rep.get("iterations") for rep in reports}) > 1:
        print("answers per second are scaled to the first run's iterations per request")
    print_results(rows)
    if plot_path:
        plot(rows, plot_path)
        print(f"plot: {plot_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default="sedamp,gunicorn,asyncio")
    ap.add_argument("--clients", default="4,8,16,32,64,128,256")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds measured per point")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of load at each server's start, not measured")
    ap.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds of load at each new client count before its measurement starts (controllers settle)",
    )
    ap.add_argument(
        "--rounds",
        type=positive,
        default=4,
        help="run every system at every client count this many times, in a rotated order each round",
    )
    ap.add_argument(
        "--order",
        choices=ORDERS,
        default="alternate",
        help="the client counts within a round: ascending and descending in turn (default), or always ascending",
    )
    ap.add_argument("--think-ms", type=float, default=20.0)
    ap.add_argument(
        "--iterations",
        type=positive,
        help="the work of a request in LCG iterations, the same for a series of runs "
        "(default: calibrated at start to ~5 ms of CPU)",
    )
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="gunicorn workers (default: the cores)")
    ap.add_argument(
        "--ignore-retry-after", action="store_true", help="clients retry a 503 after the think time, not Retry-After"
    )
    ap.add_argument(
        "--mixed", type=int, default=0, help="instead: /work at this many clients and /hello at 8, together"
    )
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--json", type=Path, help="also write every row, the summary and the targets to this file")
    ap.add_argument(
        "--report",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="run nothing: print the summary and the targets of saved runs (--json files), their rounds pooled",
    )
    args = ap.parse_args(argv)
    if args.report:
        return report(args.report, args.plot)
    counts = sorted(int(c) for c in args.clients.split(","))
    systems = args.systems.split(",")
    cores = os.cpu_count() or 1
    print(f"command : {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"python  : {sys.version.split()[0]}, {cores} cores, {time.ctime()}")
    # one fixed amount of work per request for every system, measured here on an idle machine
    # unless given (a series of runs whose rates compare directly)
    sys.path.insert(0, str(REPO))
    from stages.burn import calibrate, spin

    args.iterations = args.iterations or calibrate(5.0)
    cost = machine_speed(spin, args.iterations, 0.5)
    print(
        f"work    : {args.iterations} iterations = {cost * 1000:.2f} ms of CPU per request now; machine limit "
        f"{cores / cost:.0f} requests/s ({cores} cores / CPU per request); measured again before each point"
    )
    if args.mixed:
        mixed(args)
        return 0
    print(
        f"rounds  : {args.rounds}, each running every system in an order rotated by one per round; client counts "
        + ("ascending and descending in turn" if args.order == "alternate" else "ascending")
    )
    print(ROW_HEADER, flush=True)
    meta: Row = {
        "command": " ".join([sys.executable, *sys.argv]),
        "python": sys.version.split()[0],
        "cores": cores,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "iterations": args.iterations,
        "cost_ms_at_start": round(cost * 1000, 3),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "target_p90_ms": TARGET_P90_MS,
    }
    rows: list[Row] = []
    for rnd in range(args.rounds):
        order = rotation(systems, rnd)
        print(f"round {rnd}: {', '.join(order)}", flush=True)
        for system in order:
            rows += run_system(system, counts, args, rnd)
        if args.json and rnd < args.rounds - 1:
            write_json(args.json, meta, rows, complete=False)
    print_results(rows)
    if args.json:
        write_json(args.json, meta, rows, complete=True)
        print(f"json: {args.json}")
    if args.plot:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

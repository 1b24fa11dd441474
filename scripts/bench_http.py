"""Benchmark: a CPU-bound HTTP endpoint under load far past saturation, served by sedamp,
by gunicorn's prefork sync workers (one per core: the Apache-style design) and by a
single-process asyncio server running the handler inline (the event-driven design).

    python scripts/bench_http.py --plot docs/http.png
    python scripts/bench_http.py --clients 4,16,64 --duration 4 --settle 2   # a quick look

Every system serves ``stages.http_demo.work`` (~5 ms of pure Python per request) on
GET /work. For each client count, scripts/loadgen.py runs a closed loop (each client
sends, waits for the answer, thinks ~20 ms on average, as in the SEDA paper) for
--duration seconds, after --settle seconds of the same load that are not counted, so
each point measures the steady state once the controllers have settled. A client
refused with 503 waits its Retry-After (1 s) before trying again, unless
--ignore-retry-after. The load generator runs on the same machine and takes CPU from
every system alike.

Reported per system and client count: answers per second (200s, and all), p90 latency
of the 200s, the maximum latency of any answer, Jain's fairness index over the clients'
completed requests, 503s (explicit refusals), and requests left unanswered (client
timeouts and connection errors). Then sedamp's targets are checked: from saturation to
the largest client count, 200s per second >= 95% of its peak, p90 of the 200s <= 1.2x
the configured target, Jain's index >= 0.98, nothing unanswered.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TARGET_P90_MS = 250.0  # topologies/http-service.yaml: limits.work.target_p90_ms


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(system: str, port: int, cores: int) -> list[str]:
    py = sys.executable
    if system == "sedamp":
        return [py, "-m", "sedamp", "run", "topologies/http-service.yaml", "-q", "--workdir", "/tmp/sedamp-bench-http"]
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
    port: int, clients: int, duration: float, think_ms: float, extra: tuple[str, ...] = (), settle: float = 0.0
) -> dict[str, Any]:
    r = subprocess.run(
        [
            sys.executable,
            "scripts/loadgen.py",
            "--port",
            str(port),
            "--path",
            "/work",
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
    return out


def run_system(system: str, counts: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HTTP_DEMO_WORK_ITERATIONS": str(args.iterations)}
    proc = subprocess.Popen(command(system, port, args.cores), cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    rows = []
    try:
        wait_listening(port, proc)
        load(port, 8, args.warmup, args.think_ms)  # warm-up: workers calibrated, pools grown
        for n in counts:
            extra = ("--ignore-retry-after",) if args.ignore_retry_after else ()
            out = load(port, n, args.duration, args.think_ms, extra, settle=args.settle)
            out["system"] = system
            rows.append(out)
            print(_row(out), flush=True)
    finally:
        proc.send_signal(signal.SIGINT if system != "gunicorn" else signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return rows


def _row(r: dict[str, Any]) -> str:
    s = r["statuses"]
    unanswered = r["timeouts"] + r["errors"]
    jain = r["per_client"]["jain"]
    return (
        f"{r['system']:<9}{r['clients']:>8}{r['ok_throughput']:>10.1f}{r['throughput']:>10.1f}"
        f"{_ms(r['ok_latency_ms']['p90']):>10}{_ms(r['latency_ms']['max']):>10}"
        f"{(f'{jain:.3f}' if jain is not None else '-'):>8}{s.get('503', 0):>8}{unanswered:>11}"
    )


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def check_targets(rows: list[dict[str, Any]]) -> list[str]:
    mine = [r for r in rows if r["system"] == "sedamp"]
    if not mine:
        return []
    peak = max(r["ok_throughput"] for r in mine)
    # saturation: the first client count whose throughput is within 5% of the peak
    sat = next(r["clients"] for r in mine if r["ok_throughput"] >= 0.95 * peak)
    after = [r for r in mine if r["clients"] >= sat]
    biggest = max(r["clients"] for r in mine)
    lines = [f"sedamp: peak {peak:.1f}/s; saturation at {sat} clients; checked from {sat} to {biggest} clients "
             f"({biggest / sat:.0f}x saturation)"]  # fmt: skip
    worst = min(r["ok_throughput"] for r in after) / peak
    lines.append(f"  throughput >= 95% of peak: {'met' if worst >= 0.95 else 'NOT met'} (lowest {worst:.1%})")
    p90s = [r["ok_latency_ms"]["p90"] or 0.0 for r in after]
    lim = 1.2 * TARGET_P90_MS
    lines.append(
        f"  p90 of 200s <= {lim:.0f} ms: {'met' if max(p90s) <= lim else 'NOT met'} (highest {max(p90s):.0f} ms)"
    )
    jains = [r["per_client"]["jain"] or 0.0 for r in after]
    lines.append(f"  Jain >= 0.98: {'met' if min(jains) >= 0.98 else 'NOT met'} (lowest {min(jains):.3f})")
    lost = sum(r["timeouts"] + r["errors"] for r in mine)
    lines.append(f"  nothing unanswered: {'met' if lost == 0 else 'NOT met'} ({lost} timeouts or errors)")
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = [
        ("200s per second", lambda r: r["ok_throughput"]),
        ("p90 latency of 200s (ms)", lambda r: r["ok_latency_ms"]["p90"]),
        ("max latency of any answer (ms)", lambda r: r["latency_ms"]["max"]),
        ("Jain's fairness index", lambda r: r["per_client"]["jain"]),
    ]
    for ax, (title, f) in zip(axes.flat, panels, strict=True):
        for system in dict.fromkeys(r["system"] for r in rows):
            mine = [r for r in rows if r["system"] == system]
            ax.plot([r["clients"] for r in mine], [f(r) for r in mine], marker="o", label=system)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("clients")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0][1].axhline(TARGET_P90_MS, color="grey", linestyle="--", linewidth=1, label="sedamp target")
    axes[0][1].set_yscale("log")
    axes[1][0].set_yscale("log")
    axes[0][0].legend()
    axes[0][1].legend()
    fig.suptitle("GET /work (~5 ms of CPU): closed loop, 20 ms mean think time")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def mixed(args: argparse.Namespace) -> None:
    """Only the expensive endpoint overloaded: /work at `--mixed` clients and /hello at 8
    clients at the same time, against sedamp. Refusals should fall on /work alone."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HTTP_DEMO_WORK_ITERATIONS": str(args.iterations)}
    proc = subprocess.Popen(command("sedamp", port, args.cores), cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
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
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default="sedamp,gunicorn,asyncio")
    ap.add_argument("--clients", default="4,8,16,32,64,128,256")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds measured per point")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of load once at the start, not measured")
    ap.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds of load at each new client count before its measurement starts (controllers settle)",
    )
    ap.add_argument("--think-ms", type=float, default=20.0)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="gunicorn workers (default: the cores)")
    ap.add_argument(
        "--ignore-retry-after", action="store_true", help="clients retry a 503 after the think time, not Retry-After"
    )
    ap.add_argument(
        "--mixed", type=int, default=0, help="instead: /work at this many clients and /hello at 8, together"
    )
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--json", type=Path, help="also write every row to this file")
    args = ap.parse_args(argv)
    counts = [int(c) for c in args.clients.split(",")]
    print(f"command : {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"python  : {sys.version.split()[0]}, {os.cpu_count()} cores, {time.ctime()}")
    # one fixed amount of work per request for every system, measured here on an idle machine
    sys.path.insert(0, str(REPO))
    from stages.burn import calibrate, spin

    args.iterations = calibrate(5.0)
    t0 = time.process_time()
    for i in range(100):
        spin(args.iterations, i)
    cost = (time.process_time() - t0) / 100
    print(
        f"work    : {args.iterations} iterations = {cost * 1000:.2f} ms of CPU per request; machine limit "
        f"{(os.cpu_count() or 1) / cost:.0f} requests/s ({os.cpu_count()} cores / CPU per request)"
    )
    print(
        f"{'system':<9}{'clients':>8}{'200/s':>10}{'all/s':>10}{'p90 ms':>10}{'max ms':>10}{'Jain':>8}"
        f"{'503':>8}{'unanswered':>11}"
    )
    rows: list[dict[str, Any]] = []
    if args.mixed:
        mixed(args)
        return 0
    for system in args.systems.split(","):
        rows += run_system(system, counts, args)
    for line in check_targets(rows):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.plot:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`sedamp status`, `sedamp scale`, `sedamp top`: look at and steer a running topology."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from sedamp.cli._common import fail
from sedamp.control.client import command, find_run
from sedamp.errors import EXIT_FAILED, SedampError
from sedamp.observe.metrics import fraction_of

TargetArg = Annotated[
    str | None, typer.Argument(help="A run directory or a topology name (default: the newest running one).")
]
WorkdirOpt = Annotated[Path, typer.Option(help="Where run directories are.")]


def _status(target: str | None, workdir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        info = find_run(target, workdir)
        reply = command(info, {"op": "status"})
    except SedampError as exc:
        raise fail(str(exc), EXIT_FAILED) from None
    if not reply.get("ok"):
        raise fail(str(reply.get("error")), EXIT_FAILED)
    return info, reply["record"]


def table(info: dict[str, Any], record: dict[str, Any]) -> Table:
    """A row per stage; the bottleneck (the stage its upstream neighbours were blocked
    on, as the controller judged the period) in bold red, marked, and why in the caption."""
    stages = record["stages"]
    held = record.get("bottleneck") or {}
    sysinfo = record["system"]
    caption = str(info["run_dir"])
    if held:
        caption += f"\nbottleneck: {held.get('stage')}: {held.get('reason')}"
    t = Table(
        title=f"{info['name']} (pid {info['pid']}): {record['elapsed_s']:.1f} s, "
        f"cpu {sysinfo['cpu_percent']:.0f}% of {sysinfo['cores']} cores",
        caption=caption,
    )
    columns = ("stage", "workers", "queue", "in/s", "done", "failed", "batch", "svc p90", "wait p90")
    for col in (*columns, "blocked", "waiting"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for name, s in stages.items():
        bottleneck = name == held.get("stage")
        t.add_row(*_row(name, s, bottleneck), style="bold red" if bottleneck else None)
    return t


def _row(name: str, s: dict[str, Any], bottleneck: bool) -> list[str]:
    """One stage's cells: see `table`."""
    q = s.get("queue") or {}
    lat = s.get("latency_ms") or {}
    svc = (lat.get("service") or {}).get("p90")
    wait = (lat.get("queue_wait") or {}).get("p90")
    label = {"source": f"{name} (source)", "sink": f"{name} (sink)"}.get(s["kind"], name)
    if s.get("group"):
        label += f" [{s['group']}]"
    if bottleneck:
        label += " < bottleneck"
    processes = len(s.get("worker_detail") or ())
    shares = [fraction_of(s.get(k), processes) for k in ("blocked_s_per_s", "waiting_s_per_s")]
    return [
        label,
        f"{s['workers']}/{s['target']}" if s["kind"] != "source" else "-",
        f"{q.get('length', 0)}/{q.get('capacity')}" if q else "-",
        f"{s['arrivals_per_s']:,.0f}",
        f"{s['events_in']:,}",
        f"{s['failed']:,}",
        f"{s['batch_size']:.0f}" if s.get("batch_size") else "-",
        f"{svc:.2f}ms" if svc is not None else "-",
        f"{wait:.0f}ms" if wait is not None else "-",
        *(f"{x:.0%}" if x is not None else "-" for x in shares),
    ]


def status(
    target: TargetArg = None,
    workdir: WorkdirOpt = Path(".sedamp"),
    json_: Annotated[bool, typer.Option("--json", help="Print the controller's last record as JSON.")] = False,
) -> None:
    """Print the stages, queues, workers and rates of a running topology.

    Example: sedamp status wordcount
    """
    info, record = _status(target, workdir)
    if json_:
        typer.echo(json.dumps(record, indent=2))
    else:
        Console().print(table(info, record))


def scale(
    assignment: Annotated[str, typer.Argument(help="STAGE=N: the number of workers the stage should have.")],
    target: TargetArg = None,
    workdir: WorkdirOpt = Path(".sedamp"),
) -> None:
    """Set a stage's pool size on a running topology (within its workers bounds).

    Example: sedamp scale resize=4

    The pool controller leaves that stage alone afterwards.
    """
    name, sep, n = assignment.partition("=")
    if not sep or not n.strip().isdigit():
        raise fail(f"expected STAGE=N, got {assignment!r}", EXIT_FAILED)
    try:
        info = find_run(target, workdir)
        reply = command(info, {"op": "scale", "stage": name.strip(), "workers": int(n)})
    except SedampError as exc:
        raise fail(str(exc), EXIT_FAILED) from None
    if not reply.get("ok"):
        raise fail(str(reply.get("error")), EXIT_FAILED)
    typer.echo(f"{info['name']}: {reply['stage']}: {reply['from']} -> {reply['to']} workers")


def top(
    target: TargetArg = None,
    workdir: WorkdirOpt = Path(".sedamp"),
) -> None:
    """A live view of a running topology, refreshed every period; the bottleneck in red.

    Example: sedamp top
    """
    info, record = _status(target, workdir)
    period = float(info.get("period_s") or 0.5)
    with Live(table(info, record), refresh_per_second=4, screen=False) as live:
        while True:
            time.sleep(period)
            try:
                reply = command(info, {"op": "status"}, timeout_s=max(2.0, 4 * period))
            except SedampError:
                break  # the run has ended
            if not reply.get("ok"):
                break
            live.update(table(info, reply["record"]))
    typer.echo(f"{info['name']}: the run has ended")

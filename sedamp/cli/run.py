"""`sedamp run`: run a topology to completion and print its summary."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sedamp.cli._common import load_or_exit, setup_logging
from sedamp.cli.progress import LogProgress, TerminalProgress
from sedamp.control.controller import RunOptions, Summary, run_topology
from sedamp.executor.base import Executor
from sedamp.executor.local import LocalExecutor
from sedamp.observe.progress import copies_events
from sedamp.runtime import journal


def _keep_stdout_for_json() -> IO[str]:
    """With --json, stdout carries the summary and nothing else: keep a handle on it,
    and send whatever the run's processes (and a cluster client) print to stderr."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    return out


def run(
    topology: Annotated[Path, typer.Argument(help="The topology YAML file.")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a field: STAGE.FIELD=VALUE, e.g. resize.workers=4 (repeatable)."),
    ] = None,
    workdir: Annotated[Path, typer.Option(help="Where run directories (dead letters, logs) are made.")] = Path(
        ".sedamp"
    ),
    cores: Annotated[
        int | None, typer.Option(min=1, help="Core budget (default: controller.cores, else all usable cores).")
    ] = None,
    drain_timeout: Annotated[
        float | None, typer.Option(min=0, help="Seconds Ctrl-C lets in-flight work finish (default 10).")
    ] = None,
    metrics: Annotated[
        Path | None, typer.Option(help="Write one JSON line of measurements per period to this file.")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Skip the events the sinks of earlier runs of this topology already wrote "
            "(every sink must be resumable, e.g. stages.files:WriteFiles)."
        ),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(help="Write plots of the run over time and a summary page (index.html) into this directory."),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Serve the metrics in the Prometheus format on this port.")
    ] = None,
    executor_name: Annotated[
        str | None,
        typer.Option(
            "--executor",
            help="Where workers run: local (processes here) or ray (Ray actors on a cluster; "
            "default: controller.executor, else local).",
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="The Ray cluster's address, HOST:PORT (default: controller.address, else RAY_ADDRESS, "
            "else the cluster started on this machine)."
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Address the Prometheus endpoint listens on (loopback unless you choose otherwise).")
    ] = "127.0.0.1",
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Show progress on stderr (default: a live bar on a terminal, a line every "
            "--progress-interval seconds otherwise).",
            show_default=False,
        ),
    ] = None,
    progress_interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between progress lines when stderr is not a terminal.")
    ] = 10.0,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log lines (-vv for debug).")] = 0,
) -> None:
    """Run TOPOLOGY until its sources are exhausted and every queue has drained.

    Example: sedamp run topologies/wordcount.yaml --set count.workers=2

    Exit codes: 0 all events handled; 1 some events failed (see the dead-letter file);
    2 invalid topology; 3 the run failed (a process died, setup raised); 130 interrupted.
    Ctrl-C stops the sources and drains in-flight work; a second Ctrl-C stops at once.
    """
    setup_logging(verbose)
    if executor_name not in (None, "local", "ray"):
        typer.echo(f"error: --executor: {executor_name!r} is not one of local, ray", err=True)
        raise typer.Exit(2)
    summary_out = _keep_stdout_for_json() if json_ else None
    executor: Executor = LocalExecutor()  # boots while the topology loads
    try:
        top = load_or_exit(topology, set_ or [])
    except BaseException:
        executor.close()
        raise
    if (executor_name or top.controller.executor) == "ray":
        from sedamp.executor.ray import ExecutorError, RayExecutor

        assert isinstance(executor, LocalExecutor)
        try:
            executor = RayExecutor(address or top.controller.address, local=executor)
        except ExecutorError as exc:
            executor.close()
            typer.echo(f"error: --executor ray: {exc}", err=True)
            raise typer.Exit(3) from None
    elif address is not None:
        executor.close()
        typer.echo("error: --address applies to --executor ray", err=True)
        raise typer.Exit(2)
    if resume:
        problem = journal.resume_problem(top)
        if problem is not None:
            executor.close()
            typer.echo(f"error: --resume: {problem}", err=True)
            raise typer.Exit(2)
    if report is not None:
        from sedamp.observe import report as report_mod

        problem = report_mod.plotting_problem()
        if problem is not None:
            executor.close()
            typer.echo(f"error: --report: {problem}", err=True)
            raise typer.Exit(2)
        if metrics is None:
            try:
                report.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                executor.close()
                typer.echo(f"error: --report {report}: cannot make the directory: {exc.strerror or exc}", err=True)
                raise typer.Exit(2) from None
            metrics = report / "metrics.jsonl"
    ticks: list[Callable[[dict[str, Any]], None]] = []
    closers: list[Callable[[], None]] = []
    if metrics_port is not None:
        from sedamp.observe.prometheus import Exporter

        try:
            exporter = Exporter(metrics_host, metrics_port, topology=top.name)
        except (OSError, ValueError) as exc:
            executor.close()
            typer.echo(f"error: --metrics-port {metrics_port}: {exc}", err=True)
            raise typer.Exit(2) from None
        ticks.append(exporter.update)
        closers.append(exporter.close)
        typer.echo(f"sedamp: Prometheus metrics at {exporter.url}", err=True)
    show = progress if progress is not None else not quiet
    if show:
        copies = copies_events(top)
        display: TerminalProgress | LogProgress = (
            TerminalProgress(copies=copies) if sys.stderr.isatty() else LogProgress(progress_interval, copies=copies)
        )
        ticks.append(display)
        closers.insert(0, display.close)

    def on_tick(record: dict[str, Any]) -> None:
        for tick in ticks:
            tick(record)

    options = RunOptions(
        workdir=workdir,
        cores=cores,
        drain_timeout_s=drain_timeout,
        executor=executor,
        metrics_path=metrics,
        resume=resume,
        on_tick=on_tick if ticks else None,
    )
    try:
        summary = run_topology(top, options)
    finally:
        for close in closers:
            close()
    if report is not None and metrics is not None:
        try:
            index = report_mod.write_report(metrics, report)
        except (report_mod.ReportError, OSError) as exc:  # the run's own exit code still stands
            typer.echo(f"error: --report {report}: {exc}", err=True)
        else:
            if not quiet:
                typer.echo(f"sedamp: report written to {index}", err=True)
    if summary_out is not None:
        summary_out.write(json.dumps(summary.to_dict(), indent=2) + "\n")
        summary_out.flush()
    elif not quiet:
        print_summary(summary)
    if summary.failed:
        typer.echo(f"sedamp: {summary.failed} events failed; see {summary.dead_letters}", err=True)
    if summary.error:
        typer.echo(f"error: {summary.error}", err=True)
    raise typer.Exit(summary.exit_code)


def print_summary(s: Summary) -> None:
    console = Console(stderr=False, highlight=False)
    table = Table(title=f"{s.name}: {s.events} events in {s.wall_s:.2f} s ({s.events_per_s:,.0f} events/s)")
    table.add_column("stage")
    table.add_column("kind")
    table.add_column("in", justify="right")
    table.add_column("out", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("workers", justify="right")
    shed = any(st.dropped or st.rejected for st in s.stages)
    if shed:
        table.add_column("dropped", justify="right")
        table.add_column("rejected", justify="right")
    for st in s.stages:
        row = [st.name, st.kind, f"{st.events_in:,}", f"{st.events_out:,}", f"{st.failed:,}", str(st.workers)]
        if shed:
            row += [f"{st.dropped:,}", f"{st.rejected:,}"]
        table.add_row(*row)
    console.print(table)
    if s.interrupted:
        console.print("interrupted")

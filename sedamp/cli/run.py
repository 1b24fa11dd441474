"""`sedamp run`: run a topology to completion and print its summary.

Thin over the Python API: the flags map to `sedamp.run`'s arguments. What is the
command's own: refusing bad flags before anything starts (exit 2; exit 3 when Ray cannot
start), the Prometheus endpoint and the progress display it feeds every period, the
report drawn after the run, and the summary printed (or given as JSON on stdout)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from sedamp import api
from sedamp.cli import table
from sedamp.cli._common import fail, load_or_exit, setup_logging
from sedamp.control.rundir import workdir_of
from sedamp.control.summary import Summary
from sedamp.errors import EXIT_INVALID, EXIT_RUN_ERROR, ExecutorError, ReportError, StorageError
from sedamp.executor import EXECUTORS, open_executor
from sedamp.executor.base import Executor
from sedamp.executor.local import LocalExecutor
from sedamp.observe.failures import FailureLines, repeat_lines
from sedamp.observe.progress import Listening, answered_line, copies_events
from sedamp.observe.words import plural
from sedamp.runtime import journal
from sedamp.spec import Topology, paths

if TYPE_CHECKING:  # rich and the progress displays load only when something is shown
    from sedamp.cli.live import TerminalProgress
    from sedamp.cli.progress import LogProgress

TopologyArg = Annotated[Path, typer.Argument(metavar="TOPOLOGY", help="The topology YAML file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", metavar="K=V", help="Override a field, STAGE.FIELD=VALUE: e.g. thumb.workers=4 (repeatable)."
    ),
]
WorkdirOpt = Annotated[
    Path | None,
    typer.Option(
        metavar="DIR",
        help="Where run directories (dead letters, logs) and journals are made "
        "(default: .sedamp beside the topology file).",
        show_default=False,
    ),
]
CoresOpt = Annotated[
    int | None,
    typer.Option(min=1, metavar="N", help="Core budget (default: controller.cores, else all usable cores)."),
]
DrainOpt = Annotated[
    float | None,
    typer.Option(min=0, metavar="SECONDS", help="Seconds Ctrl-C lets in-flight work finish (default 10)."),
]
MetricsOpt = Annotated[
    Path | None, typer.Option(metavar="FILE", help="Write one JSON line of measurements per period to this file.")
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        help="Skip the events the sinks of earlier runs of this topology already wrote "
        "(every sink must be resumable, e.g. stages.files:WriteFiles).",
        show_default=False,
    ),
]
ReportOpt = Annotated[
    Path | None,
    typer.Option(
        metavar="DIR", help="Write plots of the run over time and a summary page (index.html) into this directory."
    ),
]
MetricsPortOpt = Annotated[
    int | None,
    typer.Option(min=0, max=65535, metavar="PORT", help="Serve the metrics in the Prometheus format on this port."),
]
ExecutorOpt = Annotated[
    str | None,
    typer.Option(
        "--executor",
        metavar="local|ray",
        help="Where workers run: local (processes here) or ray (Ray actors on a cluster; "
        "default: controller.executor, else local).",
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        metavar="HOST:PORT",
        help="The Ray cluster's address, HOST:PORT (default: controller.address, else RAY_ADDRESS, "
        "else the cluster started on this machine)."
    ),
]
MetricsHostOpt = Annotated[
    str,
    typer.Option(
        metavar="HOST", help="Address the Prometheus endpoint listens on (loopback unless you choose otherwise)."
    ),
]
ProgressOpt = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress",
        help="Show progress on stderr (default: a live bar on a terminal, a line every "
        "--progress-interval seconds otherwise).",
        show_default=False,
    ),
]
ProgressIntervalOpt = Annotated[
    float,
    typer.Option(min=0.1, metavar="SECONDS", help="Seconds between progress lines when stderr is not a terminal."),
]
TraceOpt = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="Trace a sample of events hop by hop and write them to this file as Chrome trace-event "
        "JSON (open it in ui.perfetto.dev; summarise it with `sedamp trace FILE`)."
    ),
]
TraceSampleOpt = Annotated[
    float,
    typer.Option(
        min=0.0001, max=1.0, metavar="SHARE", help="With --trace: the share of events traced (0.01: one in 100)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
VerboseOpt = Annotated[
    int,
    typer.Option("--verbose", "-v", count=True, metavar="", show_default=False, help="More log lines (-vv for debug)."),
]


def run(
    ctx: typer.Context,
    topology: TopologyArg,
    set_: SetOpt = None,
    workdir: WorkdirOpt = None,
    cores: CoresOpt = None,
    drain_timeout: DrainOpt = None,
    metrics: MetricsOpt = None,
    resume: ResumeOpt = False,
    report: ReportOpt = None,
    metrics_port: MetricsPortOpt = None,
    executor_name: ExecutorOpt = None,
    address: AddressOpt = None,
    metrics_host: MetricsHostOpt = "127.0.0.1",
    progress: ProgressOpt = None,
    progress_interval: ProgressIntervalOpt = 10.0,
    trace: TraceOpt = None,
    trace_sample: TraceSampleOpt = 0.01,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Run TOPOLOGY until its sources are exhausted and every queue has drained.

    Example: sedamp run topologies/wordcount.yaml --set count.workers=2

    Exit codes: 0 all events handled; 1 some events failed (see the
    dead-letter file); 2 invalid topology or arguments; 3 the run failed
    (a process died, setup raised); 130 interrupted: Ctrl-C finishes the
    work in hand and drops what waits in queues; a second stops at once."""
    setup_logging(verbose)
    if executor_name not in (None, *EXECUTORS):
        raise fail(f"--executor: {executor_name!r} is not one of {', '.join(EXECUTORS)}", EXIT_INVALID)
    summary_out = _keep_stdout_for_json() if json_ else None
    started = _tell_launcher(ctx.obj, summary_out is not None)
    top, executor = _open(topology, set_ or [], executor_name, address, started)
    workdir = _checked_workdir(workdir, top, executor)
    metrics = _metrics_path(top, executor, resume, report, metrics)
    watchers = _watchers(top, executor, (metrics_port, metrics_host), (progress, quiet), progress_interval, verbose)
    try:
        summary = api.run(
            top,
            workdir=workdir,
            cores=cores,
            drain_timeout_s=drain_timeout,
            executor=executor,
            metrics_path=metrics,
            resume=resume,
            on_tick=watchers if watchers.ticks else None, trace_sample=trace_sample if trace is not None else 0.0,
        )
    except StorageError as exc:  # no run directory could be made: nothing was started
        raise fail(str(exc), EXIT_RUN_ERROR) from None
    finally:
        watchers.close()
    _write_outputs(top, summary, (metrics, report, trace), quiet)
    _tell(summary, summary_out, quiet)
    raise typer.Exit(summary.exit_code)


def _checked_workdir(given: Path | None, top: Topology, executor: Executor) -> Path:
    """The run's workdir: `given` (relative to the current directory), else .sedamp
    beside the topology file. Exit 2 with one line when run directories or journals
    cannot be made under it (a file in the way, a directory that cannot be written, a
    read-only file system), before anything starts and without making anything. A
    disk that fills up later is the run's error (exit 3)."""
    workdir = workdir_of(top.base_dir, given)
    for part, what in (("runs", "run directories"), ("journal", "journals")):
        existing = (workdir / part).absolute()
        while not existing.exists():
            existing = existing.parent
        why = None
        if not existing.is_dir():
            why = f"{existing} is not a directory"
        elif not os.access(existing, os.W_OK | os.X_OK):
            why = f"{existing} cannot be written"
        if why is not None:
            where = f"--workdir {given}" if given is not None else f"the workdir {workdir}"
            raise _refuse(executor, f"{where}: cannot make {what} there: {why}")
    return workdir


def _keep_stdout_for_json() -> IO[str]:
    """With --json, stdout carries the summary and nothing else: keep a handle on it,
    and send whatever the run's processes (and a cluster client) print to stderr."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    return out


def _open(
    path: Path, overrides: list[str], executor_name: str | None, address: str | None, local: LocalExecutor | None
) -> tuple[Topology, Executor]:
    """The topology (exit 2 on any problem) and the executor it runs on (exit 2 for an
    --address without Ray, 3 when Ray cannot start), on `local` if it was started
    already."""
    local = local or LocalExecutor()  # boots while the topology loads
    try:
        top = load_or_exit(path, overrides)
    except BaseException:
        local.close()
        raise
    kind = executor_name or top.controller.executor
    if kind != "ray" and address is not None:
        raise _refuse(local, "--address applies to --executor ray")
    try:
        return top, open_executor(kind, address or top.controller.address, local)
    except ExecutorError as exc:  # open_executor has closed `local`
        raise fail(f"--executor ray: {exc}", EXIT_RUN_ERROR) from None


def _tell_launcher(obj: object, json_summary: bool) -> LocalExecutor | None:
    """The launcher `sedamp.cli.main` started before the command line was parsed (None
    if it did not), told what was parsed since: the log level (always: it started with
    whatever level its environment had), and that stdout is the summary's (``--json``)."""
    started = obj if isinstance(obj, LocalExecutor) else None
    if started is not None:
        started.log_level(os.environ["SEDAMP_LOG_LEVEL"])  # set by setup_logging from -v
    if started is not None and json_summary:
        started.stdout_to_stderr()
    return started


def _refuse(executor: Executor, message: str) -> typer.Exit:
    """Close `executor` and say on stderr why the run cannot start: the Exit to raise."""
    executor.close()
    return fail(message, EXIT_INVALID)


def _metrics_path(
    top: Topology, executor: Executor, resume: bool, report: Path | None, metrics: Path | None
) -> Path | None:
    """Refuse --resume and --report where they cannot work, before anything starts; the
    metrics file (under the --report directory when --metrics is not given)."""
    problem = journal.resume_problem(top) if resume else None
    if problem is not None:
        raise _refuse(executor, f"--resume: {problem}")
    if report is None:
        return metrics
    from sedamp.observe.report import plotting_problem

    problem = plotting_problem()
    if problem is not None:
        raise _refuse(executor, f"--report: {problem}")
    if metrics is not None:
        return metrics
    try:
        report.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _refuse(executor, f"--report {report}: cannot make the directory: {exc.strerror or exc}") from None
    return report / "metrics.jsonl"


@dataclass
class _Watchers:
    """What the run feeds every period with its metrics record (the Prometheus endpoint,
    the progress display), and closes when it ends."""

    ticks: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def __call__(self, record: dict[str, Any]) -> None:
        for tick in self.ticks:
            tick(record)

    def close(self) -> None:
        for close in self.closers:
            close()


def _watchers(
    top: Topology,
    executor: Executor,
    exporter_at: tuple[int | None, str],
    shown: tuple[bool | None, bool],
    progress_interval: float,
    verbose: int,
) -> _Watchers:
    """The Prometheus endpoint (on `exporter_at`, port and host), the line saying where a
    stage listens, and the progress display, or without one the lines that tell each
    new kind of failure (errors: printed even with -q) and each warning. `shown` is
    (--progress/--no-progress or None, --quiet): with --quiet, no listening line and no
    warnings."""
    watchers = _Watchers()
    progress, quiet = shown
    show_progress = progress if progress is not None else not quiet
    if not quiet:
        watchers.ticks.append(_tell_listening(Listening()))  # before the display draws: above its bar
    metrics_port, metrics_host = exporter_at
    if metrics_port is not None:
        from sedamp.observe.prometheus import Exporter

        try:
            exporter = Exporter(metrics_host, metrics_port, topology=top.name)
        except (OSError, ValueError) as exc:
            raise _refuse(executor, f"--metrics-port {metrics_port}: {exc}") from None
        watchers.ticks.append(exporter.update)
        watchers.closers.append(exporter.close)
        typer.echo(f"sedamp: Prometheus metrics at {exporter.url}", err=True)
    display: TerminalProgress | LogProgress | FailureLines = FailureLines(verbose > 0, warnings=not quiet)
    if show_progress and sys.stderr.isatty():
        from sedamp.cli.live import TerminalProgress  # rich: only for a terminal

        display = TerminalProgress(copies=copies_events(top), verbose=verbose > 0)
    elif show_progress:
        from sedamp.cli.progress import LogProgress

        display = LogProgress(progress_interval, copies=copies_events(top), verbose=verbose > 0)
    watchers.ticks.append(display)
    watchers.closers.insert(0, display.close)
    return watchers


def _tell_listening(listening: Listening) -> Callable[[dict[str, Any]], None]:
    def tell(record: dict[str, Any]) -> None:
        for line in listening(record):
            typer.echo(line, err=True)

    return tell


def _write_report(metrics: Path, report: Path, quiet: bool) -> None:
    from sedamp.observe.report import write_report

    try:
        index = write_report(metrics, report)
    except (ReportError, OSError) as exc:  # the run's own exit code still stands
        typer.echo(f"error: --report {report}: {exc}", err=True)
    else:
        if not quiet:
            typer.echo(f"sedamp: report written to {index}", err=True)


def _write_outputs(top: Topology, summary: Summary, paths: tuple[Path | None, ...], quiet: bool) -> None:
    """What the run writes once it is over: the --report (from the metrics file) and the
    --trace."""
    metrics, report, trace = paths
    if report is not None and metrics is not None:
        _write_report(metrics, report, quiet)
    if trace is not None:
        _write_trace(top, summary, trace, quiet)


def _write_trace(top: Topology, summary: Summary, out: Path, quiet: bool) -> None:
    """Merge the run's trace records into `out` (an error here leaves the exit code be)."""
    from sedamp.observe.trace import write_trace
    from sedamp.runtime.tracing import TRACE_DIR

    try:
        n = write_trace(summary.run_dir / TRACE_DIR, out, list(top.stages), top.name)
    except OSError as exc:
        typer.echo(f"error: --trace {out}: {exc.strerror or exc}", err=True)
    else:
        if not quiet:
            typer.echo(f"sedamp: {plural(n, 'sampled event')} traced to {out}", err=True)


def _tell(summary: Summary, summary_out: IO[str] | None, quiet: bool) -> None:
    """The summary on stdout (a table, or JSON with --json), and on stderr what failed."""
    if summary_out is not None:
        summary_out.write(json.dumps(summary.to_dict(), indent=2) + "\n")
        summary_out.flush()
    elif not quiet and not (summary.error and _nothing_done(summary)):  # a table of zeros says nothing
        print_summary(summary)
    if summary.failed:
        typer.echo(f"sedamp: {plural(summary.failed, 'event')} failed; see {summary.dead_letters}", err=True)
        kinds = [k.as_dict() for k in summary.failures]
        for line in repeat_lines(kinds, summary.other_failures):
            typer.echo(f"  {line}", err=True)
    if summary.error:
        typer.echo(f"error: {summary.error}", err=True)


def _nothing_done(s: Summary) -> bool:
    """No handler or sink took an event and nothing failed (the sources may have read some)."""
    return not s.failed and not any(st.events_in for st in s.stages if st.kind != "source")


def print_summary(s: Summary) -> None:
    header = ["stage", "kind", "in", "out", "failed", "workers"]
    shed = any(st.dropped or st.rejected for st in s.stages)
    if shed:
        header += ["dropped", "rejected"]
    rows = []
    for st in s.stages:
        row = [st.name, st.kind, f"{st.events_in:,}", f"{st.events_out:,}", f"{st.failed:,}", str(st.workers)]
        if shed:
            row += [f"{st.dropped:,}", f"{st.rejected:,}"]
        rows.append(row)
    runs = s.fused_runs()
    caption = "ran fused, in one pool: " + ", ".join("+".join(r) for r in runs) if runs else None
    right = [False, False] + [True] * (len(header) - 2)
    for line in table.draw(summary_title(s), header, rows, right, caption):
        typer.echo(line.rstrip())
    for st in s.stages:
        served = answered_line(st.name, st.stats)
        if served is not None:
            typer.echo(served)
    for line in where_lines(s):
        typer.echo(line)
    if s.interrupted:
        typer.echo(interrupted_line(s))


def where_lines(s: Summary) -> list[str]:
    """Where the run's outputs went and where its run directory is, for the summary:
    paths relative to the current directory when under it, else absolute."""
    lines = []
    if s.outputs:
        named = len({stage for stage, _ in s.outputs}) > 1
        shown = [paths.shown(path) + (f" ({stage})" if named else "") for stage, path in s.outputs]
        lines.append(f"output{'s' if len(shown) > 1 else ''}: {', '.join(shown)}")
    lines.append(f"run directory: {paths.shown(s.run_dir)}")
    return lines


def summary_title(s: Summary) -> str:
    """``name: 1,000 events in 2.00 s (500 events/s)``; of an interrupted run, the events
    done out of those read (the others were dropped from the queues, or not counted)."""
    if not s.interrupted:
        rate = plural(round(s.events_per_s), "event")  # "1 event/s", "1,234 events/s"
        return f"{s.name}: {plural(s.events, 'event')} in {s.wall_s:.2f} s ({rate}/s)"
    if s.done is None:
        return f"{s.name}: {plural(s.events, 'event')} read in {s.wall_s:.2f} s (interrupted)"
    return f"{s.name}: {s.done:,} of {plural(s.events, 'event')} done in {s.wall_s:.2f} s (interrupted)"


def interrupted_line(s: Summary) -> str:
    """What an interrupt left undone, and how to do it."""
    left = s.events - s.done if s.done is not None else s.discarded
    if left <= 0:
        return "interrupted"
    return f"interrupted: {left:,} of the events read were not done; run again to do them"

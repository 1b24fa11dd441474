"""`sedamp simulate`: the controller's policy on a model of a topology's stages, in
simulated time; the metrics stream of a real run on stdout, a summary on stderr."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from sedamp.cli._common import fail, load_or_exit
from sedamp.errors import EXIT_FAILED, EXIT_INVALID, SimulationError
from sedamp.observe.words import plural

CostOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--cost",
        metavar="STAGE=COST",
        help="STAGE=COST[,COST@AT]...: the CPU an event costs, by phase; AT is N% of the events, "
        "the stage's Nth event or a time (b=4ms,0.5ms@50%; repeatable).",
    ),
]
SetupOpt = Annotated[
    list[str] | None,
    typer.Option("--setup", metavar="STAGE=TIME", help="STAGE=TIME: how long a new worker's setup() takes (b=2s)."),
]


TopologyArg = Annotated[
    Path,
    typer.Argument(metavar="TOPOLOGY", help="The topology YAML file (its stages are not imported)."),
]
CoresOpt = Annotated[
    int | None,
    typer.Option(min=1, metavar="N", help="Cores of the simulated machine (controller.cores, else this one's)."),
]
ProfileOpt = Annotated[
    Path | None,
    typer.Option(metavar="FILE", help="A YAML or JSON file of costs, set-up times and the rest; flags win."),
]
EventsOpt = Annotated[
    int | None,
    typer.Option(min=1, metavar="N", help="Events per source (default: its count param)."),
]
RateOpt = Annotated[
    str | None,
    typer.Option(metavar="RATE", help="The sources' rate: unlimited (default), 100/s, or steps 40/s:3s,380/s:4s."),
]
StartOpt = Annotated[
    str | None,
    typer.Option(metavar="TIME", help="A new worker's process start before setup() (50ms)."),
]
LaunchOpt = Annotated[
    str | None,
    typer.Option(metavar="TIME", help="How long the run takes to start its first workers (0s; a real run: ~0.4s)."),
]
RuntimeOpt = Annotated[
    float | None,
    typer.Option(min=0, metavar="CORES", help="CPU of the runtime's queues, sources, controller, in cores (0)."),
]
OthersOpt = Annotated[
    str | None,
    typer.Option(
        metavar="CORES", help="CPU other programs use on the machine, in cores: 0.5, or steps 1.5:2s,0.3:1s (0)."
    ),
]
NoiseOpt = Annotated[
    float | None,
    typer.Option(min=0, metavar="NOISE", help="Costs times a factor ~ N(1, NOISE), drawn per stage and period (0)."),
]
SeedOpt = Annotated[int | None, typer.Option(metavar="N", help="Seed of the noise (0).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="K=V", help="Override a topology field: STAGE.FIELD=VALUE (repeatable)."),
]
MetricsOpt = Annotated[
    Path | None,
    typer.Option(metavar="FILE", help="Write the metrics stream to this file, not stdout."),
]
PlotOpt = Annotated[
    Path | None,
    typer.Option(metavar="FILE", help="Draw workers and queue lengths per stage over time into this PNG."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No summary on stderr.")]


def simulate(
    topology: TopologyArg,
    cores: CoresOpt = None,
    cost: CostOpt = None,
    setup: SetupOpt = None,
    profile: ProfileOpt = None,
    events: EventsOpt = None,
    rate: RateOpt = None,
    start: StartOpt = None,
    launch: LaunchOpt = None,
    runtime_cores: RuntimeOpt = None,
    others: OthersOpt = None,
    noise: NoiseOpt = None,
    seed: SeedOpt = None,
    set_: SetOpt = None,
    metrics: MetricsOpt = None,
    plot: PlotOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Simulate TOPOLOGY on CORES cores with the controller's own policy code.

    Example: sedamp simulate topologies/shift.yaml --cores 8 --cost a=1ms --cost b=4ms,0.5ms@50% --cost c=0.5ms,4ms@50%

    Prints one JSON line per period, shaped as sedamp run --metrics writes them
    (workers, queues, rates, the controller's decisions and reasons), the last
    with "final": true; then a summary on stderr. A stage without a cost costs
    nothing. No stage code runs and no process starts.

    Exit codes: 0 simulated; 1 the metrics file or plot could not be written;
    2 invalid topology, flags or profile, or no matplotlib for --plot.
    """
    from sedamp.control import policy
    from sedamp.control.simulate import simulate as run_model

    top = load_or_exit(topology, set_ or [], check_handlers=False)
    if plot is not None:
        _check_plotting()
    try:
        given = _profile(
            profile, cost or [], setup or [],
            {"rate": rate, "start_s": start, "launch_s": launch, "other_cores": others},
            events=events, runtime_cores=runtime_cores, noise=noise, seed=seed,
        )  # fmt: skip
        n = cores or top.controller.cores or policy.usable_cores()
        with _stream(metrics) as out:

            def write(record: dict[str, Any]) -> None:
                out.write(json.dumps(record) + "\n")

            result = run_model(top, n, given, on_record=write)
    except SimulationError as exc:
        raise fail(str(exc), EXIT_INVALID) from None
    except OSError as exc:
        raise fail(f"cannot write the metrics file {metrics}: {exc.strerror or exc}", EXIT_FAILED) from None
    if plot is not None:
        _plot(result.records, plot, f"{top.name}: simulated on {plural(n, 'core')}")
    if not quiet:
        for line in summary_lines(result):
            typer.echo(line, err=True)


def _profile(
    path: Path | None, costs: list[str], setups: list[str], texts: dict[str, str | None], **numbers: Any
) -> Any:
    """The profile file's values (if any) with the flags over them; SimulationError."""
    import dataclasses

    from sedamp.control import simprofile as sp

    parsers = {"rate": sp.parse_rate, "start_s": sp.parse_time, "launch_s": sp.parse_time, "other_cores": sp.parse_load}
    flags = {"rate": "--rate", "start_s": "--start", "launch_s": "--launch", "other_cores": "--others"}
    parsed = {k: parsers[k](v, flags[k]) for k, v in texts.items() if v is not None}
    base = sp.load_profile(path) if path is not None else sp.Profile()
    if "rate" in parsed and parsed["rate"] is None:  # --rate unlimited over a profile's rate
        base = dataclasses.replace(base, rate=None)
    costs_by = sp.parse_assignments(costs, "--cost")
    setups_by = sp.parse_assignments(setups, "--setup")
    return sp.with_flags(base, costs=costs_by, setups=setups_by, **parsed, **numbers)


class _stream:
    """Where the records go: stdout, or a file made for them."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.file: IO[str] = sys.stdout

    def __enter__(self) -> IO[str]:
        if self.path is not None:
            self.file = self.path.open("w", encoding="utf-8")
        return self.file

    def __exit__(self, *exc: object) -> None:
        if self.path is not None:
            self.file.close()
        else:
            self.file.flush()


def _check_plotting() -> None:
    from sedamp.observe.report import plotting_problem

    problem = plotting_problem()
    if problem is not None:
        raise fail(f"--plot: {problem}", EXIT_INVALID)


def _plot(records: Any, path: Path, title: str) -> None:
    from sedamp.observe.report import plot_pools

    try:
        plot_pools(records, path, title)
    except OSError as exc:
        raise fail(f"cannot write the plot {path}: {exc.strerror or exc}", EXIT_FAILED) from None


def summary_lines(result: Any) -> list[str]:
    """The summary: time against the limit, each pool's workers, every decision."""
    first = {n: s["workers"] for n, s in result.records[0]["stages"].items() if s["worker_detail"]}
    last = result.records[-1]["stages"]
    share = result.limit_s / result.wall_s if result.wall_s else 0.0
    lines = [
        f"{result.name}: simulated on {plural(result.cores, 'core')}, {plural(result.events, 'event')} per source: "
        f"{result.wall_s:.2f} s, {share:.0%} of the limit ({result.limit_s:.2f} s of CPU over the cores); "
        f"{plural(len(result.decisions), 'decision')}",
        f"  {'pool':<16} {'first':>5} {'peak':>5} {'last':>5} {'events':>9}",
    ]
    for name, peak in result.peaks.items():
        lines.append(
            f"  {name:<16} {first.get(name, 0):>5} {peak:>5} {last[name]['workers']:>5} {last[name]['events_in']:>9,}"
        )
    for d in result.decisions:
        lines.append(f"  {d['elapsed_s']:7.2f} s  {d['stage']}: {d['from']} -> {d['to']}: {d['reason']}")
    return lines

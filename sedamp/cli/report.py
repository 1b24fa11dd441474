"""`sedamp report`: plots of a run over time and a summary page, from its metrics file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sedamp.cli._common import fail, setup_logging
from sedamp.errors import EXIT_FAILED, EXIT_INVALID, ReportError


def report(
    metrics: Annotated[
        Path,
        typer.Argument(
            metavar="METRICS",
            help="The metrics file of a run: sedamp run --metrics FILE.jsonl (or --report DIR's metrics.jsonl)."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="Directory for the plots, index.html and summary.md (made if missing; its files are replaced). "
            "Default: beside METRICS, named after it (run.jsonl -> run-report/).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Draw the plots of a run over time from its METRICS file, with a summary page.

    Example: sedamp report burn.jsonl -o burn-report
    (after: sedamp run topologies/burn.yaml --metrics burn.jsonl)

    Writes queue_length.png, workers.png, throughput.png, latency_path.png,
    latency_service.png, latency_queue_wait.png, cpu.png and memory.png
    (time on x, one line per stage); index.html: the plots, a table of
    per-stage totals, the run's duration and throughput, and the pool
    decisions; summary.md: the same in Markdown. Prints the path of
    index.html. A last line cut short (a run stopped while writing it) is
    skipped with a warning. sedamp run --report DIR does all this at the
    end of a run.

    Needs matplotlib: pip install matplotlib (or sedamp's "plot" extra).

    Exit codes: 0 written; 1 the output directory could not be written;
    2 METRICS is missing, empty or not a metrics file, or no matplotlib.
    """
    from sedamp.observe.report import plotting_problem, write_report  # not imported by `sedamp run`

    setup_logging(0)  # warnings (a skipped last line) reach stderr
    problem = plotting_problem()
    if problem is not None:
        raise fail(problem, EXIT_INVALID)
    target = out if out is not None else metrics.with_name(f"{metrics.stem}-report")
    try:
        index = write_report(metrics, target)
    except ReportError as exc:
        raise fail(str(exc), EXIT_INVALID) from None
    except OSError as exc:
        where = exc.filename if exc.filename is not None else target
        raise fail(f"cannot write the report into {target}: {where}: {exc.strerror or exc}", EXIT_FAILED) from None
    typer.echo(str(index))

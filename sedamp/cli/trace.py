"""`sedamp trace`: the summary of an event trace (`sedamp run --trace FILE`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sedamp.cli._common import fail
from sedamp.errors import EXIT_INVALID


def trace(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="The trace a run wrote: sedamp run TOPOLOGY --trace FILE.")
    ],
    slowest: Annotated[
        int, typer.Option(min=0, metavar="N", help="How many of the slowest sampled events to show.")
    ] = 3,
) -> None:
    """Summarise an event trace: per stage, the median and p90 of the sampled events'
    queue wait, service, transit and blocked time; the slowest stage (where the slowest
    tenth of them spent the most time); and the critical path of the slowest events.

    Example: sedamp trace run.trace.json
    (after: sedamp run topologies/tiny.yaml --trace run.trace.json --trace-sample 0.05)

    Open FILE itself in ui.perfetto.dev (or chrome://tracing) to see it drawn.

    Exit codes: 0 printed; 2 FILE cannot be read or is not a trace.
    """
    from sedamp.observe.trace import render, summarize

    try:
        with open(file, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror or exc}", EXIT_INVALID) from None
    except ValueError as exc:
        raise fail(f"{file}: not JSON: {exc}", EXIT_INVALID) from None
    try:
        summary = summarize(doc, slowest)
    except (ValueError, KeyError, TypeError) as exc:
        raise fail(f"{file}: {exc}", EXIT_INVALID) from None
    for line in render(summary):
        typer.echo(line)

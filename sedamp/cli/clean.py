"""`sedamp clean`: remove the directories of ended runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sedamp.control.rundir import prune_runs
from sedamp.observe.words import plural


def clean(
    name: Annotated[
        str | None, typer.Argument(metavar="NAME", help="Only the runs of this topology (default: all).")
    ] = None,
    workdir: Annotated[Path, typer.Option(metavar="DIR", help="Where run directories are.")] = Path(".sedamp"),
    keep: Annotated[int, typer.Option(min=0, metavar="N", help="Ended runs to keep per topology, the newest.")] = 0,
) -> None:
    """Remove the run directories (dead letters, logs, run.json) of ended runs.

    Example: sedamp clean --keep 3

    A running topology's directory is never removed, nor any journal (--resume needs
    it). Every run also keeps only the newest 20 ended runs of its topology.

    Exit codes: 0 done (also when there was nothing to remove); 2 invalid
    arguments.
    """
    removed = prune_runs(workdir, name, keep)
    for d in removed:
        typer.echo(str(d))
    typer.echo(f"sedamp: removed {plural(len(removed), 'run directory', 'run directories')}", err=True)

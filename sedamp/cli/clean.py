"""`sedamp clean`: remove the directories of ended runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sedamp.cli._common import load_or_exit
from sedamp.control.client import is_topology_file
from sedamp.control.rundir import WORKDIR_NAME, prune_runs, workdir_of
from sedamp.observe.words import plural
from sedamp.runtime import blocks


def clean(
    name: Annotated[
        str | None,
        typer.Argument(
            metavar="NAME",
            help="Only the runs of this topology: its name, or its file (default: all).",
            show_default=False,
        ),
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Where run directories are (default: .sedamp beside the topology file given, else in this directory).",
            show_default=False,
        ),
    ] = None,
    keep: Annotated[int, typer.Option(min=0, metavar="N", help="Ended runs to keep per topology, the newest.")] = 0,
) -> None:
    """Remove the run directories (dead letters, logs, run.json) of ended runs.

    Example: sedamp clean topologies/wordcount.yaml --keep 3

    A running topology's directory is never removed, nor any journal (--resume needs
    it). Every run also keeps only the newest 20 ended runs of its topology. Shared-memory
    blocks (/dev/shm) left by runs that were killed go too; a run removes them as it
    starts as well.

    Exit codes: 0 done (also when there was nothing to remove); 2 invalid
    arguments.
    """
    if name is not None and is_topology_file(name):
        file = Path(name)
        workdir = workdir_of(file.resolve().parent, workdir)
        name = load_or_exit(file, check_handlers=False).name
    removed = prune_runs(workdir if workdir is not None else Path(WORKDIR_NAME), name, keep)
    for d in removed:
        typer.echo(str(d))
    typer.echo(f"sedamp: removed {plural(len(removed), 'run directory', 'run directories')}", err=True)
    stale = blocks.sweep_stale()
    if stale:
        typer.echo(f"sedamp: removed {plural(stale, 'shared-memory block')} of runs that were killed", err=True)

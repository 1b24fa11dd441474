"""`sedamp validate`: check a topology and import its handlers without starting anything."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sedamp.cli._common import load_or_exit
from sedamp.observe.words import plural


def validate(
    topology: Annotated[Path, typer.Argument(metavar="TOPOLOGY", help="The topology YAML file.")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="K=V", help="Override a field: STAGE.FIELD=VALUE (repeatable)."),
    ] = None,
) -> None:
    """Validate TOPOLOGY: its structure, its graph, and that every handler imports.

    Example: sedamp validate topologies/wordcount.yaml --set count.workers=4

    Exit codes: 0 valid; 2 not valid, with one line per problem
    (file:line: field: message).
    """
    top = load_or_exit(topology, set_ or [])
    kinds = {"source": 0, "handler": 0, "sink": 0}
    for s in top.stages.values():
        kinds[s.kind] += 1
    typer.echo(
        f"{topology}: valid: {plural(len(top.stages), 'stage')} "
        f"({kinds['source']} source, {kinds['handler']} handler, {kinds['sink']} sink)"
    )

"""`sedamp graph`: print the stage graph of a topology as Mermaid or Graphviz dot."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from sedamp.cli._common import load_or_exit
from sedamp.spec import to_dot, to_mermaid


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"


def graph(
    topology: Annotated[Path, typer.Argument(metavar="TOPOLOGY", help="The topology YAML file.")],
    format_: Annotated[
        GraphFormat, typer.Option("--format", "-f", metavar="mermaid|dot", help="Output format.")
    ] = GraphFormat.mermaid,
) -> None:
    """Print the stage graph of TOPOLOGY.

    Example: sedamp graph topologies/wordcount.yaml --format dot | dot -Tpng > graph.png

    Exit codes: 0 printed; 2 invalid topology or arguments.
    """
    top = load_or_exit(topology, check_handlers=False)
    typer.echo(to_mermaid(top) if format_ is GraphFormat.mermaid else to_dot(top))

"""`sedamp schema`: print the JSON Schema of the topology YAML format, for editors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sedamp.cli._common import fail
from sedamp.errors import EXIT_FAILED


def schema(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write the schema to this file instead of stdout."),
    ] = None,
) -> None:
    """Print the JSON Schema (draft 2020-12) of topology files, for editors.

    Example: sedamp schema -o sedamp.schema.json

    Then make this the first line of a topology file, for completion, hover
    help and checks as you type (YAML language server, e.g. VS Code's YAML):
    # yaml-language-server: $schema=sedamp.schema.json

    The schema knows every key, type, bound and choice of the format;
    `sedamp validate` also checks the graph and imports the handlers.

    Exit codes: 0 printed or written; 1 the output file could not be written.
    """
    from sedamp.spec.schema import topology_schema  # not imported by `sedamp run`

    text = json.dumps(topology_schema(), indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror or exc} (choose another --output)", EXIT_FAILED) from None
    typer.echo(f"wrote {output}")

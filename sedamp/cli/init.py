"""`sedamp init`: write a starter project, a topology and its stage module, that runs as is."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated

import typer

from sedamp.cli import templates
from sedamp.cli._common import fail
from sedamp.errors import EXIT_FAILED, EXIT_INVALID


def init(
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME", help="The project's name: a letter or _, then letters, digits and _ (e.g. shout)."
        ),
    ],
    directory: Annotated[
        Path, typer.Option("--dir", "-d", metavar="DIR", help="Where to write the files (created if missing).")
    ] = Path("."),
) -> None:
    """Write a starter project: NAME.yaml (a topology) and NAME_stages.py.

    Example: sedamp init shout --dir shout && sedamp run shout/shout.yaml

    NAME.yaml runs numbers (a source) -> square (a handler) -> write (a sink
    writing NAME.txt beside the topology). NAME_stages.py holds the three
    stages, with docstrings explaining the stage API. The topology runs as
    written, from any directory. Existing files are never overwritten.

    Exit codes: 0 written; 1 a file could not be written; 2 invalid NAME,
    or NAME.yaml or NAME_stages.py exists already (nothing is written).
    """
    if not templates.NAME_PATTERN.match(name):
        raise fail(
            f"invalid name {name!r}: it names a Python module ({name}_stages), so use a letter or _, "
            "then letters, digits and _ (e.g. my_pipeline)",
            EXIT_INVALID,
        )
    topology = directory / f"{name}.yaml"
    module = directory / f"{templates.stages_module(name)}.py"
    existing = [p for p in (topology, module) if p.exists() or p.is_symlink()]
    if existing:
        shown = " and ".join(str(p) for p in existing)
        raise fail(
            f"{shown} already exist{'s' if len(existing) == 1 else ''}; nothing was written "
            "(choose another NAME or --dir, or remove the file)",
            EXIT_INVALID,
        )
    written: list[Path] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path, text in ((module, templates.stages_py(name)), (topology, templates.topology_yaml(name))):
            with open(path, "x", encoding="utf-8") as f:  # "x": never overwrite, even in a race
                written.append(path)
                f.write(text)
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        where = exc.filename or directory
        code = EXIT_INVALID if isinstance(exc, FileExistsError) else EXIT_FAILED
        raise fail(f"cannot write {where}: {exc.strerror or exc}; nothing was written", code) from None
    for path in written:
        typer.echo(f"wrote {path}")
    typer.echo(f"run it:  sedamp run {shlex.quote(os.fspath(topology))}")
    typer.echo(f"output:  {directory / templates.output_name(name)}")

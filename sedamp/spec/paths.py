"""Pure: the one rule for paths in a topology, and where a run's outputs go.

Every relative path a topology gives (a param of any stage, the key directory of
``controller.keys``) resolves against the folder of the topology file, whatever the
current directory: the runtime runs stage code in that folder, and a run keeps its run
directory in that folder's ``.sedamp/`` unless ``--workdir`` says otherwise. So a
topology and the files beside it make a job that runs the same from anywhere. A path
given on the command line (``--workdir``, ``--metrics``, ``--report``, ``--trace``) is a
path of the shell: relative to the current directory. ``${VAR}`` and ``--set`` values
become part of the topology, so a relative path in them resolves against its folder too.
"""

from __future__ import annotations

import os
from pathlib import Path

from sedamp.spec.model import Topology

__all__ = ["OUTPUT_PARAMS", "outputs", "resolve", "shown"]

# The sink params that name what a run writes, shown at the end of a run: the names the
# ready-made sinks use (WriteFiles, WriteCounts, WriteJsonl, ...) and the usual others.
OUTPUT_PARAMS = ("out", "output", "path", "dir", "directory", "file")


def resolve(top: Topology, value: str | os.PathLike[str]) -> Path:
    """`value`, a path given in `top`, as an absolute path: ``~`` expanded, a relative
    path joined to the topology's folder."""
    return (Path(top.base_dir) / Path(value).expanduser()).absolute()


def outputs(top: Topology) -> tuple[tuple[str, Path], ...]:
    """What the sinks of `top` write, as (stage, absolute path): each sink param named in
    OUTPUT_PARAMS whose value is a non-empty string."""
    found = []
    for name, spec in top.stages.items():
        if spec.kind != "sink":
            continue
        for param in OUTPUT_PARAMS:
            value = spec.params.get(param)
            if isinstance(value, str) and value:
                found.append((name, resolve(top, value)))
    return tuple(found)


def shown(path: str | os.PathLike[str], cwd: str | os.PathLike[str] | None = None) -> str:
    """`path` as a user reads it best: relative to `cwd` (default the current directory)
    when it lies under it, else absolute."""
    p = Path(path).absolute()
    here = Path(cwd if cwd is not None else os.getcwd()).absolute()
    return str(p.relative_to(here)) if p.is_relative_to(here) and p != here else str(p)

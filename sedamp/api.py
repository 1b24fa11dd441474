"""The Python API: load and run a topology from code."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sedamp.controller import RunOptions, Summary, run_topology
from sedamp.executor import LocalExecutor
from sedamp.topology import Topology, load_topology


def load(path: str | Path, overrides: Sequence[str] = (), check_handlers: bool = True) -> Topology:
    """Load and validate a topology file; raises TopologyError listing every problem."""
    return load_topology(path, overrides=overrides, check_handlers=check_handlers)


def run(
    topology: str | Path | Topology,
    overrides: Sequence[str] = (),
    *,
    workdir: str | Path = ".sedamp",
    cores: int | None = None,
    drain_timeout_s: float | None = None,
) -> Summary:
    """Run a topology (a path or a loaded Topology) to completion; return its summary.

    Ctrl-C during the call drains and stops the run as `sedamp run` does."""
    executor = LocalExecutor()  # boots while the topology loads
    try:
        top = topology if isinstance(topology, Topology) else load(topology, overrides)
    except BaseException:
        executor.close()
        raise
    options = RunOptions(workdir=Path(workdir), cores=cores, drain_timeout_s=drain_timeout_s, executor=executor)
    return run_topology(top, options)

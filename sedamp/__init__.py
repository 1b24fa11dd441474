"""sedamp: a staged event-driven runtime for CPU-bound Python pipelines.

The public surface: `run`, `load` and `Pipeline` (the Python API: run a topology file,
load and validate one, build one in code), `simulate` (the controller's policy on a
model of a topology, `sedamp.control.simulate`), `Many` and `IDLE` (for stage code), and the
exception tree (`SedampError` and its subclasses)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sedamp.api import Pipeline, load, run
    from sedamp.control.simulate import simulate
    from sedamp.errors import Problem, SedampError, TopologyError, WireError
    from sedamp.runtime.stage import IDLE, Many

__version__ = "0.1.0"

__all__ = [
    "IDLE",
    "Many",
    "Pipeline",
    "Problem",
    "SedampError",
    "TopologyError",
    "WireError",
    "__version__",
    "load",
    "run",
    "simulate",
]


def __getattr__(name: str) -> Any:
    # Every name is loaded when first asked for: `import sedamp.cli` must not pay for
    # the exception tree (dataclasses, inspect) or the stage module before the command
    # line has started the launcher of a run, and a worker importing `sedamp` for `Many`
    # should not pay for the API, which pulls in the controller (and ZeroMQ).
    if name in ("IDLE", "Many"):
        from sedamp.runtime import stage

        return getattr(stage, name)
    if name in ("Problem", "SedampError", "TopologyError", "WireError"):
        from sedamp import errors

        return getattr(errors, name)
    if name in ("run", "load", "Pipeline"):
        from sedamp import api

        return getattr(api, name)
    if name == "simulate":
        from sedamp.control.simulate import simulate

        return simulate
    raise AttributeError(f"module 'sedamp' has no attribute {name!r}")

"""sedamp: a staged event-driven runtime for CPU-bound Python pipelines."""

from __future__ import annotations

from sedamp.errors import HandlerError, Problem, RunError, SedampError, TopologyError, WireError
from sedamp.stage import Many

__version__ = "0.1.0"

__all__ = [
    "HandlerError",
    "Many",
    "Problem",
    "RunError",
    "SedampError",
    "TopologyError",
    "WireError",
    "__version__",
]

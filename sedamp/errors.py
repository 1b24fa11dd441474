"""The exception hierarchy of sedamp.

SedampError                 base of everything sedamp raises on purpose
+-- TopologyError           a topology file or override is invalid (CLI exit code 2)
|                           `.problems` lists every problem found, each with place and hint
+-- WireError               a frame could not be parsed or built (counted, never fatal)
+-- HandlerError            user code failed; carries the remote traceback text
+-- RunError                a run could not complete (a process died, a deadline passed)
+-- ReportError             (sedamp.observe.report) a metrics file cannot be read or plotted
+-- ExporterError           (sedamp.observe.prometheus, also a ValueError) the metrics endpoint
                            cannot be set up: a bad host or port, no prometheus-client
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "HandlerError",
    "Problem",
    "RunError",
    "SedampError",
    "TopologyError",
    "WireError",
]


class SedampError(Exception):
    """Base class of the errors sedamp raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a topology, with its place and a hint for the fix.

    `file` is the topology path (or ``"--set"`` for a command-line override), `line` is
    1-based or ``None`` when unknown, `field` is a dotted path such as
    ``stages.resize.workers.max``.
    """

    file: str
    line: int | None
    field: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        place = f"{self.file}:{self.line}" if self.line is not None else self.file
        text = f"{place}: {self.field}: {self.message}" if self.field else f"{place}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class TopologyError(SedampError):
    """A topology is invalid. `problems` holds every problem found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class WireError(SedampError):
    """A frame is malformed, of an unknown kind, too large, or an event cannot be packed."""


class HandlerError(SedampError):
    """User code raised. `remote_traceback` is the formatted traceback from the worker."""

    def __init__(self, message: str, remote_traceback: str | None = None) -> None:
        super().__init__(message)
        self.remote_traceback = remote_traceback


class RunError(SedampError):
    """A run could not complete: a runtime process died, or a deadline passed."""

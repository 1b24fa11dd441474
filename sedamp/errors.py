"""The exception hierarchy and the exit codes of sedamp.

SedampError                 base of everything sedamp raises on purpose
+-- TopologyError           a topology file or override is invalid (CLI exit code 2)
|                           `.problems` lists every problem found, each with place and hint
+-- WireError               a frame could not be parsed or built (counted, never fatal)
+-- ExecutorError           (also a RuntimeError) an executor cannot start: Ray missing, or no
|                           cluster at the address (CLI exit code 3)
+-- LaunchError             (also a RuntimeError) the process launcher could not start a process
+-- JournalError            another run holds the topology's journal, or --resume finds it made
|                           for a different topology (the run's error: exit code 3)
+-- ReportError             a metrics file cannot be read or plotted (CLI exit code 2)
+-- ExporterError           (also a ValueError) the Prometheus endpoint cannot be set up: a bad
                            host or port, no prometheus-client (CLI exit code 2)

Errors of user code never surface as exceptions here: they cross processes as data
(stage, pid, event id, exception type, message, traceback text) into the dead-letter
file, and a run that could not complete says why in its summary (`Summary.error`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "EXIT_FAILED",
    "EXIT_FAILED_EVENTS",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_RUN_ERROR",
    "ExecutorError",
    "ExporterError",
    "LaunchError",
    "Problem",
    "ReportError",
    "SedampError",
    "TopologyError",
    "WireError",
]

# Exit codes of the `sedamp` commands (docs/cli.md lists them per command).
EXIT_OK = 0
# `sedamp run`: every source was read, and some events failed (see the dead-letter file)
EXIT_FAILED_EVENTS = 1
# the other commands: their work could not be done (a file not written, a run not answering)
EXIT_FAILED = 1
# the input is invalid and nothing was started: a topology, an override, a flag, a file
EXIT_INVALID = 2
# `sedamp run`: the run failed (a process died, setup raised, no executor)
EXIT_RUN_ERROR = 3
# stopped by SIGINT (Ctrl-C) or SIGTERM: 128 + SIGINT, the shell's convention
EXIT_INTERRUPTED = 130


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


class JournalError(SedampError):
    """A run's journal cannot be used: another run of the topology holds it, or
    --resume finds it was made for a different topology."""


class WireError(SedampError):
    """A frame is malformed, of an unknown kind, too large, or an event cannot be packed."""


class ExecutorError(SedampError, RuntimeError):
    """An executor cannot start: Ray is missing, or no cluster answers at the address."""


class LaunchError(SedampError, RuntimeError):
    """The process launcher could not start a process."""


class ReportError(SedampError):
    """A metrics file cannot be made into a report (missing, empty, not metrics), or
    matplotlib is missing. The message names the file (and line) and the fix."""


class ExporterError(SedampError, ValueError):
    """The Prometheus endpoint cannot be set up: prometheus-client is missing or too old,
    or the host or port is invalid."""

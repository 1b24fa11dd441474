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
+-- StorageError            a file the run must keep (the dead letters, the journal, run.json,
|                           the metrics) cannot be written: the disk is full, a read-only file
|                           system... The message names the file and the errno (the run's
|                           error: exit code 3; any process that meets it stops the run)
+-- ReportError             a metrics file cannot be read or plotted (CLI exit code 2)
+-- SimulationError         `sedamp simulate`'s costs, profile file or flags are invalid (CLI
|                           exit code 2)
+-- ExporterError           (also a ValueError) the Prometheus endpoint cannot be set up: a bad
                            host or port, no prometheus-client (CLI exit code 2)

Errors of user code never surface as exceptions here: they cross processes as data
(stage, pid, event id, exception type, message, traceback text) into the dead-letter
file, and a run that could not complete says why in its summary (`Summary.error`).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

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
    "SimulationError",
    "StorageError",
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


class SimulationError(SedampError):
    """A simulation's costs, profile file or flags are invalid (`sedamp simulate`; CLI
    exit code 2). The message names the flag or the file and key, and the form expected."""


class JournalError(SedampError):
    """A run's journal cannot be used: another run of the topology holds it, or
    --resume finds it was made for a different topology."""


# What an errno means for a run whose files live there (the rest say only their errno).
_STORAGE_HINTS = {
    errno.ENOSPC: "the file system{mount} is full",
    errno.EDQUOT: "the disk quota{mount} is used up",
    errno.EFBIG: "the file size limit (ulimit -f) is reached",
    errno.EROFS: "the file system{mount} is read-only",
}


class StorageError(SedampError):
    """A file the run must keep cannot be written. `errno` is the OS error's number.
    Build one with `StorageError.of`, which names the file, the errno and, for a full
    or read-only disk, the mount point."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_

    @classmethod
    def of(cls, what: str, path: str | os.PathLike[str], exc: OSError, verb: str = "write") -> StorageError:
        """`exc` raised writing (`verb`) `path`, which is `what` ("the dead-letter file")."""
        code = exc.errno
        name = errno.errorcode.get(code, str(code)) if code is not None else "no errno"
        text = f"cannot {verb} {what} {os.fspath(path)}: {exc.strerror or exc} ({name})"
        hint = _STORAGE_HINTS.get(code) if code is not None else None
        if hint is not None:
            mount = _mount_point(Path(path))
            text += "; " + hint.format(mount=f" at {mount}" if mount else "")
        return cls(text, code)


def _mount_point(path: Path) -> str | None:
    """The mount point that holds `path`, if found: the longest one in the mount table
    that contains it (bind mounts included), else the nearest ancestor that is one."""
    p = Path(os.path.realpath(path))
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            points = [Path(_unescape(line.split()[4])) for line in f]
        return str(max((m for m in points if p == m or m in p.parents), key=lambda m: len(m.parts)))
    except (OSError, IndexError, ValueError):  # not Linux, or a table it cannot read
        pass
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return str(p)


def _unescape(field: str) -> str:
    """A mountinfo path: space, tab, newline and backslash are written as octal escapes."""
    for code in ("040", "011", "012", "134"):
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field


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

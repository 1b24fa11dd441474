"""The failures of a run as a user should see them: the first failure of each kind, per
stage, with how many more were like it; and the error budget that stops a run whose
stage fails nearly every event. Pure: no file, process or socket here (`FailureLines`
prints to the stream it is given).

The controller follows the run's dead-letter file as the workers write it
(`sedamp.runtime.deadletter.DeadLetterTail`) and gives each record to a `FailureDigest`.
Two records are of one kind when they come from the same stage with the same exception
type raised at the same line of the user's code (`user_place`: the last frame of the
traceback outside sedamp, the standard library and installed packages), or, without a
traceback (an event that cannot be sent, a rejection, a poison event), with the same
message once numbers and quoted names are taken out. A new kind goes into the next
metrics record (``"failures"``), which `sedamp run` prints as it happens; the kinds
with their counts go into the run's `Summary`.

`over_budget` reads a metrics record: a stage that has handled at least
`BUDGET_MIN_EVENTS` events and dead-lettered more than its ``on_error.budget`` (a
fraction, 0.9 by default) of them stops the run (`budget_message` says why).
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from sedamp.observe.words import plural
from sedamp.spec.model import BUDGET_MIN_EVENTS

__all__ = [
    "BUDGET_MIN_EVENTS",
    "FailureDigest",
    "FailureKind",
    "FailureLines",
    "budget_message",
    "failure_line",
    "failure_lines",
    "over_budget",
    "repeat_lines",
    "user_place",
]

# Kinds of failure kept per stage. Past it, failures are counted as "of other kinds":
# a handler whose every failure is a new kind (no traceback, messages full of ids)
# cannot grow the controller's memory or fill the terminal.
MAX_KINDS_PER_STAGE = 20
# The longest message shown (its first line); the dead-letter file has the whole of it.
MESSAGE_CHARS = 300

_SEDAMP_DIR = str(Path(__file__).resolve().parents[1]) + os.sep
_INSTALLED = tuple(
    sorted(
        {
            str(Path(p).resolve()) + os.sep
            for key in ("stdlib", "platstdlib", "purelib", "platlib")
            if (p := sysconfig.get_paths().get(key))
        }
    )
)
_FRAME = re.compile(r'^  File "(?P<path>[^"]+)", line (?P<line>\d+)', re.MULTILINE)
_SEDAMP_FRAME = re.compile(r"[/\\]site-packages[/\\]sedamp[/\\]")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class FailureKind:
    """The first failure of a kind, and how many failures of the kind there were."""

    stage: str
    error_type: str
    message: str  # the first one's first line, at most MESSAGE_CHARS
    place: str | None  # the user's file:line (`user_place`), when the traceback shows one
    event_id: Any  # the first one's
    traceback: str | None  # the first one's
    count: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "error_type": self.error_type,
            "message": self.message,
            "place": self.place,
            "event_id": self.event_id,
            "count": self.count,
            "traceback": self.traceback,
        }


def _frames(traceback: str) -> list[tuple[str, str]]:
    """The (path, line) of each frame of the last exception of a traceback text (a
    chained exception prints its causes first)."""
    last = traceback.rfind("Traceback (most recent call last):")
    return [(m["path"], m["line"]) for m in _FRAME.finditer(traceback[max(0, last) :])]


def _ours(path: str) -> bool:
    return path.startswith(_SEDAMP_DIR) or bool(_SEDAMP_FRAME.search(path))


def user_place(traceback: str | None, cwd: str | None = None) -> str | None:
    """``file:line`` of the user's code in a traceback: its last frame outside sedamp,
    the standard library and installed packages (else the last outside sedamp), the
    file relative to `cwd` (default: the current directory) when it lies under it."""
    if not traceback:
        return None
    frames = [(p, n) for p, n in _frames(traceback) if not p.startswith("<") and not _ours(p)]
    own = [(p, n) for p, n in frames if not p.startswith(_INSTALLED)]
    if not (own or frames):
        return None
    path, line = (own or frames)[-1]
    base = cwd if cwd is not None else os.getcwd()
    rel = os.path.relpath(path, base) if os.path.isabs(path) else path
    return f"{rel if not rel.startswith('..') else path}:{line}"


def _one_line(message: str) -> str:
    line = message.strip().split("\n", 1)[0]
    return line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 3] + "..."


class FailureDigest:
    """Dead-letter records grouped into kinds (see the module docstring), in the order
    each kind was first seen."""

    def __init__(self, cwd: str | None = None) -> None:
        self.cwd = cwd
        self.first: dict[tuple[str, str, str], FailureKind] = {}
        self.counts: dict[tuple[str, str, str], int] = {}
        self.kinds_of: dict[str, int] = {}  # stage -> kinds kept
        self.unlisted: dict[str, int] = {}  # stage -> failures past MAX_KINDS_PER_STAGE kinds

    def add(self, record: Mapping[str, Any]) -> FailureKind | None:
        """Count one dead-letter record; the kind it starts, if it is the first of one."""
        stage = str(record.get("stage"))
        etype = str(record.get("error_type"))
        message = str(record.get("message", ""))
        tb = record.get("traceback") if isinstance(record.get("traceback"), str) else None
        place = user_place(tb, self.cwd)
        what = place if place is not None else _NUMBER.sub("N", _QUOTED.sub("'?'", _one_line(message)))
        key = (stage, etype, what)
        if key in self.counts:
            self.counts[key] += 1
            return None
        if self.kinds_of.get(stage, 0) >= MAX_KINDS_PER_STAGE:
            self.unlisted[stage] = self.unlisted.get(stage, 0) + 1
            return None
        self.kinds_of[stage] = self.kinds_of.get(stage, 0) + 1
        self.counts[key] = 1
        kind = self.first[key] = FailureKind(stage, etype, _one_line(message), place, record.get("event_id"), tb)
        return kind

    def kinds(self) -> list[FailureKind]:
        """Every kind kept, with its count, in the order first seen."""
        return [FailureKind(**{**k.__dict__, "count": self.counts[key]}) for key, k in self.first.items()]

    def first_of(self, stage: str) -> FailureKind | None:
        """The first failure of `stage` this digest saw."""
        return next((k for k in self.first.values() if k.stage == stage), None)


def _described(kind: Mapping[str, Any]) -> str:
    """``KeyError: 'txt' (at shout.py:3)``."""
    text = f"{kind.get('error_type')}: {kind.get('message')}"
    return text + (f" (at {kind['place']})" if kind.get("place") else "")


def failure_line(kind: Mapping[str, Any]) -> str:
    """A new kind of failure as `sedamp run` prints it when it happens (a
    `FailureKind.as_dict`): ``stage 'shout' failed on event 7: KeyError: 'txt' (at shout.py:3)``."""
    return f"stage {kind.get('stage')!r} failed on event {kind.get('event_id')!r}: {_described(kind)}"


def failure_lines(record: Mapping[str, Any], verbose: bool = False, warnings: bool = True) -> list[str]:
    """The lines that tell the new kinds of failure of a metrics record as they come;
    with `verbose`, each followed by its traceback; and the warnings the record carries
    (``"warnings"``: each is in one record of a run only), unless `warnings` is False."""
    lines = [f"sedamp: warning: {text}" for text in record.get("warnings", ())] if warnings else []
    for kind in record.get("failures", ()):
        lines.append(f"sedamp: {failure_line(kind)}")
        if verbose and kind.get("traceback"):
            lines.append(str(kind["traceback"]).rstrip("\n"))
    return lines


class FailureLines:
    """Prints `failure_lines` of every record it is fed (`sedamp run` without a
    progress display: -q, --no-progress; the displays print them themselves); the
    warnings only with `warnings` (not under -q, which prints nothing but errors)."""

    def __init__(self, verbose: bool = False, stream: TextIO | None = None, warnings: bool = True) -> None:
        self.verbose = verbose
        self.stream = stream
        self.warnings = warnings

    def __call__(self, record: Mapping[str, Any]) -> None:
        lines = failure_lines(record, self.verbose, self.warnings)
        if not lines:
            return
        stream = self.stream or sys.stderr
        # one write: the runtime's processes log to the same stderr (-v), and a line of
        # theirs must not land between a failure and its traceback
        stream.write("".join(line + "\n" for line in lines))
        stream.flush()
        stream.flush()

    def close(self) -> None:
        pass


def repeat_lines(kinds: Sequence[Mapping[str, Any]], unlisted: Mapping[str, int]) -> list[str]:
    """The failures of a run, a line per kind, as the summary ends:
    ``shout: KeyError: 'txt' (at shout.py:3), and 4,999 more like it``."""
    lines = []
    for k in kinds:
        more = int(k.get("count", 1)) - 1
        lines.append(f"{k.get('stage')}: {_described(k)}" + (f", and {more:,} more like it" if more else ""))
    for stage, n in unlisted.items():
        lines.append(f"{stage}: {plural(n, 'more failure')} of other kinds")
    return lines


def over_budget(record: Mapping[str, Any], budgets: Mapping[str, float]) -> tuple[str, int, int] | None:
    """The first stage of a metrics record past its error budget, as (stage, failed,
    handled): it handled at least BUDGET_MIN_EVENTS events and dead-lettered more than
    `budgets[stage]` of them. Stages without a budget are not judged."""
    for name, st in record.get("stages", {}).items():
        budget = budgets.get(name)
        if budget is None or not isinstance(st, Mapping):
            continue
        handled, failed = int(st.get("events_in") or 0), int(st.get("failed") or 0)
        if handled >= BUDGET_MIN_EVENTS and failed > budget * handled:
            return name, failed, handled
    return None


def budget_message(stage: str, failed: int, handled: int, budget: float, first: FailureKind | None) -> str:
    """Why a run stopped on a stage's error budget, in one line."""
    text = f"stage {stage!r} failed {failed:,} of the {handled:,} events it handled, over its error budget"
    text += f" (on_error.budget: {budget:g})"
    return text + (f"; the first: {_described(first.as_dict())}" if first is not None else "")

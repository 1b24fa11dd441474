"""The problems recorder the topology checks share, and the words its messages are made of.
Pure: no file is read here.

A `Problems` collects every `sedamp.errors.Problem` found in one topology, each placed
with the YAML line map (`file:line: field: message (hint)`), so that one run of the checks
reports every mistake at once. A value whose ``${VAR}`` expansion failed is *poisoned*:
later problems inside it stay quiet, so one mistake gives one problem. A value set by a
``--set`` override is reported with file ``--set`` and no line. The typed readers
(`integer`, `choice`, ...) read one field, record what is wrong with it and return None.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from sedamp.errors import Problem
from sedamp.spec import yamlmap
from sedamp.spec.model import WorkersSpec, parse_size

__all__ = ["OVERRIDE_FILE", "Problems", "bounds_text", "describe", "did_you_mean", "field_name"]

OVERRIDE_FILE = "--set"  # the `file` of problems caused by a command-line override


class Problems:
    """Every problem found in the topology labelled `file`, with what silences repeats."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines = yamlmap.LineMap()
        self.problems: list[Problem] = []
        self.overridden: set[tuple[Any, ...]] = set()  # paths set by --set
        self.poisoned: set[tuple[Any, ...]] = set()  # paths whose value is unusable
        self.bad_stages: set[str] = set()  # stages with a problem: their handlers are not imported

    # -- recording -------------------------------------------------------------------

    def is_overridden(self, path: tuple[Any, ...]) -> bool:
        return any(path[:i] in self.overridden for i in range(1, len(path) + 1))

    def add(self, path: tuple[Any, ...], message: str, hint: str | None = None, line: int | None = None) -> None:
        """Record a problem at `path` (its line is looked up unless `line` is given)."""
        if len(path) >= 2 and path[0] == "stages":
            self.bad_stages.add(str(path[1]))
        if any(path[:i] in self.poisoned for i in range(len(path) + 1)):
            return  # the value is unusable because of a problem already reported
        if self.is_overridden(path):
            file, where = OVERRIDE_FILE, None
        else:
            file, where = self.file, (line if line is not None else self.lines.nearest(path))
        self.problems.append(Problem(file, where, field_name(path), message, hint))

    def add_raw(self, file: str, line: int | None, field_: str, message: str, hint: str | None) -> None:
        self.problems.append(Problem(file, line, field_, message, hint))

    def issue(self, issue: yamlmap.YamlIssue, override: bool = False) -> None:
        """Record a problem the YAML walker found."""
        file = OVERRIDE_FILE if override else self.file
        self.problems.append(Problem(file, issue.line, field_name(issue.path), issue.message, issue.hint))
        if issue.poisoned:
            self.poisoned.add(issue.path)
            if len(issue.path) >= 2 and issue.path[0] == "stages":
                self.bad_stages.add(str(issue.path[1]))

    def sorted_problems(self) -> list[Problem]:
        """File problems by line, then override problems in the order found."""

        def key(p: Problem) -> tuple[int, int]:
            return (0 if p.file == self.file else 1, p.line or 0)

        return sorted(self.problems, key=key)

    # -- typed field readers -----------------------------------------------------------

    def unknown_keys(self, path: tuple[Any, ...], mapping: dict[Any, Any], allowed: Sequence[str], what: str) -> None:
        for k in mapping:
            if k not in allowed:
                hint = did_you_mean(str(k), allowed, f"allowed keys: {', '.join(allowed)}")
                self.add((*path, k), f"unknown key {k!r} in {what}", hint)

    def integer(
        self,
        path: tuple[Any, ...],
        value: Any,
        *,
        minimum: int = 1,
        maximum: int | None = None,
        hint: str | None = None,
    ) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(
                path,
                f"must be an integer, got {describe(value)}",
                hint or f"e.g. {field_name(path[-1:])}: {max(minimum, 1)}",
            )
            return None
        if value < minimum:
            self.add(path, f"must be >= {minimum}, got {value}", hint)
            return None
        if maximum is not None and value > maximum:
            self.add(path, f"must be <= {maximum}, got {value}", hint)
            return None
        return value

    def size(self, path: tuple[Any, ...], value: Any) -> int | None:
        """A size in bytes: an integer, or a string such as 256MiB, 1GiB, 500MB, 64KiB."""
        hint = "a size in bytes, e.g. 268435456, 256MiB, 1GiB or 500MB"
        n = parse_size(value)
        if n is None:
            self.add(path, f"must be a size, got {describe(value)}", hint)
        elif n < 1:
            self.add(path, f"must be >= 1 byte, got {value!r}", hint)
            return None
        return n

    def positive_float(self, path: tuple[Any, ...], value: Any, hint: str) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add(path, f"must be a number of seconds, got {describe(value)}", hint)
            return None
        if not value > 0 or value != value or value == float("inf"):
            self.add(path, f"must be > 0, got {value}", hint)
            return None
        return float(value)

    def choice(self, path: tuple[Any, ...], value: Any, choices: Sequence[str]) -> str | None:
        if not isinstance(value, str) or value not in choices:
            shown = repr(value) if isinstance(value, str) else describe(value)
            alts = " | ".join(choices)
            self.add(
                path,
                f"must be one of {alts}, got {shown}",
                did_you_mean(str(value), choices, f"use one of {alts}")
                if isinstance(value, str)
                else f"use one of {alts}",
            )
            return None
        return value

    def string(self, path: tuple[Any, ...], value: Any, what: str) -> str | None:
        if not isinstance(value, str):
            self.add(path, f"must be {what}, got {describe(value)}", "quote it")
            return None
        return value


# -- the words of the messages -----------------------------------------------------------


def field_name(path: Sequence[Any]) -> str:
    """``("stages", "a", "to", 1, "key")`` -> ``stages.a.to[1].key``."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def describe(value: Any) -> str:
    """A short description of a YAML value for messages: ``a string ('four')``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def did_you_mean(word: str, choices: Sequence[str], otherwise: str) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean {close[0]!r}?" if close else otherwise


def bounds_text(spec: WorkersSpec) -> str:
    """A pool's bounds in messages: ``4``, or ``min 1, max auto``."""
    if spec.fixed:
        return str(spec.min)
    return f"min {spec.min}, max {spec.max if spec.max is not None else 'auto'}"

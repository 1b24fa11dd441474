"""The starter project `sedamp init NAME` writes. Pure: only strings.

`topology_yaml(name)` is ``NAME.yaml``, a three-stage topology (numbers -> square ->
write) that runs as written; `stages_py(name)` is ``NAME_stages.py``, its stage module,
whose docstrings explain the stage API. The topology names its stages as
``NAME_stages:...``: the directory of a topology file is importable, so the two files
only need to stay side by side.
"""

from __future__ import annotations

import re

__all__ = ["NAME_PATTERN", "output_name", "stages_module", "stages_py", "topology_yaml"]

# NAME becomes a module name (NAME_stages) and the topology's name: a Python identifier
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_PLACEHOLDER = "__NAME__"

_TOPOLOGY = """\
# __NAME__: count to COUNT (default 10), square each number, write one line per number.
#   numbers (source) -> square (handler) -> write (sink: __NAME__.txt beside this file)
# Run:       sedamp run __NAME__.yaml                (COUNT=100 sedamp run __NAME__.yaml)
# Paths:     a relative path here is relative to this file's folder, wherever you run it
#            from; the runs' files (dead letters, logs) go to .sedamp/ beside it too
# Check:     sedamp validate __NAME__.yaml           (structure, graph, handler imports)
# Editors:   sedamp schema -o sedamp.schema.json, then make this the first line:
#            # yaml-language-server: $schema=sedamp.schema.json
# Reference: docs/topology.md in sedamp's repository.
name: __NAME__
stages:
  numbers:
    # module:attribute of a function or class; this file's directory is importable
    source: __NAME___stages:numbers
    params: {count: "${COUNT:-10}"}         # keyword arguments; ${VAR:-default} comes from the environment
    to: square
  square:
    handler: __NAME___stages:square
    params: {label: squared}
    workers: {min: 1, max: 2}               # a pool of 1 to 2 processes, sized by the controller
    on_error: {retry: 1, then: dead_letter} # a failing event is tried again once, then dead-lettered
    to: write
  write:
    sink: __NAME___stages:WriteLines
    params: {path: "${OUT:-__NAME__.txt}"}     # beside this file
"""

_STAGES = '''\
"""Stages of the __NAME__ pipeline (see __NAME__.yaml, which names them as
``__NAME___stages:ATTRIBUTE``).

A stage is plain Python: a function, or a class for a stage that keeps state or needs
set-up. sedamp runs each stage as a pool of processes, so a stage never shares memory
with another one; events travel between them as MessagePack values (dict, list, str,
bytes, int, float, bool, None; a tuple arrives as a list).

handler
    ``def f(event, **params)`` returns one event, ``None`` to drop it, or several: a
    generator (``yield``) or ``sedamp.Many([...])``. A returned list is ONE event. A class
    has ``setup(**params)`` (once per worker process), ``handle(event)`` with the same
    returns, and optionally ``handle_batch(events)`` (one result per event), ``finish()``
    (events to emit once the input has ended, for aggregations) and ``teardown()``.
source
    ``def f(**params)`` returns an iterable of events (if it has ``len()``, that is the
    total shown as progress), or a class with ``setup(**params)``, ``__iter__`` and
    optionally ``total()`` and ``teardown()``. A source runs in one process.
sink
    ``def f(event, **params)``, or a class with ``setup(**params)``, ``handle(event)`` (or
    ``handle_batch(events)``) and ``teardown()``, which runs once at the end: flush there.

``params:`` in the topology are the keyword arguments (of the function, or of
``setup()``; a class without ``setup`` gets them in ``__init__``). If a handler raises,
the run goes on: the event and the traceback go to the dead-letter file of the run
(``on_error:`` in the topology can retry, skip or fail instead).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def numbers(count: int) -> list[dict[str, Any]]:
    """Source: the events {"n": 0} .. {"n": count - 1}.

    A list has a length, so sedamp knows the total and shows progress. For a long or
    endless input, return a generator instead (``yield`` one event at a time)."""
    return [{"n": n} for n in range(int(count))]


def square(event: dict[str, Any], label: str) -> dict[str, Any]:
    """Handler: one event in, one event out. Return None to drop the event, or yield
    several to emit more than one."""
    n = event["n"]
    return {"n": n, "line": f"{n} {label} is {n * n}"}


class WriteLines:
    """Sink: collects the lines and writes them, in order of n, when the input has ended.

    ``setup`` runs once in the sink's worker process with the params; ``handle`` gets
    every event; ``teardown`` runs once at the end. A sink has one worker unless the
    topology gives it more (each would then write its own copy of the file)."""

    def setup(self, path: str) -> None:
        self.path = Path(path)
        self.lines: dict[int, str] = {}

    def handle(self, event: dict[str, Any]) -> None:
        self.lines[event["n"]] = event["line"]

    def teardown(self) -> None:
        # write aside, then rename: the file is never seen half-written
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(self.lines[n] + "\\n" for n in sorted(self.lines)), encoding="utf-8")
        os.replace(tmp, self.path)
'''


def stages_module(name: str) -> str:
    """The module name the topology imports its stages from."""
    return f"{name}_stages"


def output_name(name: str) -> str:
    """The file the starter topology writes, beside it (unless $OUT says otherwise)."""
    return f"{name}.txt"


def topology_yaml(name: str) -> str:
    """The text of ``NAME.yaml``. `name` must match `NAME_PATTERN`."""
    _check(name)
    return _TOPOLOGY.replace(_PLACEHOLDER, name)


def stages_py(name: str) -> str:
    """The text of ``NAME_stages.py``. `name` must match `NAME_PATTERN`."""
    _check(name)
    return _STAGES.replace(_PLACEHOLDER, name)


def _check(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise ValueError(f"invalid project name {name!r}: use a letter or _, then letters, digits and _")

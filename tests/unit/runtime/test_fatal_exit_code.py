"""The contract between a child that cannot go on and the controller: it reports FATAL,
then exits with EXIT_CHILD_FAILED, and only for that code does the controller wait
for the FATAL when the exit is seen first (`controller._await_last_words`). A worker
stopping the run (``on_error: then: fail``, a lease it lost in a stage that keeps
state) or failing at its end exited with 1: when its exit was read before its FATAL,
it was taken for a crash, restarted, and its event handled again."""

from __future__ import annotations

import ast
from pathlib import Path

import sedamp.runtime

RUNTIME = Path(sedamp.runtime.__file__).parent


def _fail_now_codes() -> list[tuple[str, str]]:
    """(file:line, the exit code's source) of every call of `fail_now` in the runtime."""
    calls = []
    for path in sorted(RUNTIME.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "fail_now":
                calls.append((f"{path.name}:{node.lineno}", ast.unparse(node.args[-1])))
    return calls


def test_every_child_that_reports_fatal_exits_with_exit_child_failed() -> None:
    calls = _fail_now_codes()
    assert len(calls) >= 5  # the worker's, the source's three, storage_failed's
    wrong = [(where, code) for where, code in calls if code not in ("lifeline.EXIT_CHILD_FAILED", "EXIT_CHILD_FAILED")]
    assert not wrong, wrong

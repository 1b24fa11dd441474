"""The `sedamp` command line. Each command lives in its own module and stays thin:
parse, call the library, print. Failures exit non-zero with one clear line on stderr.

Only the module of the command being run is imported: `sedamp run` does not pay for
the plotting, schema, key or live-table modules of the other commands. `sedamp --help`
(or no command, or an unknown one) loads them all, to list them.

This module imports nothing heavy (no typer, no sedamp.errors): `sedamp run` starts
the launcher of its processes first, so that it boots while the command line, the
topology and the controller are imported (`sedamp.cli.app` builds the typer app)."""

from __future__ import annotations

import atexit
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

# The word that asks for the version alone: nothing but the group is built for it.
VERSION_FLAG = "--version"


def _run() -> Callable[..., Any]:
    from sedamp.cli.run import run

    return run


def _validate() -> Callable[..., Any]:
    from sedamp.cli.validate import validate

    return validate


def _graph() -> Callable[..., Any]:
    from sedamp.cli.graph import graph

    return graph


def _status() -> Callable[..., Any]:
    from sedamp.cli.control import status

    return status


def _scale() -> Callable[..., Any]:
    from sedamp.cli.control import scale

    return scale


def _top() -> Callable[..., Any]:
    from sedamp.cli.control import top

    return top


def _keys() -> Callable[..., Any]:
    from sedamp.cli.keys import keys

    return keys


def _schema() -> Callable[..., Any]:
    from sedamp.cli.schema import schema

    return schema


def _init() -> Callable[..., Any]:
    from sedamp.cli.init import init

    return init


def _clean() -> Callable[..., Any]:
    from sedamp.cli.clean import clean

    return clean


def _report() -> Callable[..., Any]:
    from sedamp.cli.report import report

    return report


def _simulate() -> Callable[..., Any]:
    from sedamp.cli.simulate import simulate

    return simulate


def _trace() -> Callable[..., Any]:
    from sedamp.cli.trace import trace

    return trace


# Every command, in the order `sedamp --help` lists them: its name and how to load it.
COMMANDS: dict[str, Callable[[], Callable[..., Any]]] = {
    "run": _run,
    "validate": _validate,
    "graph": _graph,
    "status": _status,
    "scale": _scale,
    "top": _top,
    "keys": _keys,
    "schema": _schema,
    "init": _init,
    "report": _report,
    "simulate": _simulate,
    "trace": _trace,
    "clean": _clean,
}


def command_of(argv: list[str]) -> str | None:
    """The command `argv` runs, if it names one before any option (else None: all load;
    "" for ``--version``, which needs none)."""
    for word in argv:
        if word == VERSION_FLAG:
            return ""
        if word.startswith("-"):
            return None  # `sedamp --help`, `--install-completion`, ...: every command
        return word if word in COMMANDS else None
    return None


def main() -> None:
    # Until a run installs its own handlers (which drain in order), Ctrl-C and SIGTERM
    # end the command quietly with the conventional code; nothing has been started yet.
    signal.signal(signal.SIGTERM, _interrupted)
    command = command_of(sys.argv[1:])
    launcher = _start_launcher() if command == "run" else None
    try:
        code = _command(command, launcher)
    finally:
        if launcher is not None:
            launcher.close()  # a run closes it itself; this covers a usage error before the run
    leave(code)


def _command(command: str | None, launcher: Any) -> int:
    """Run the command; its exit status."""
    try:
        try:
            from sedamp.cli.app import make_app

            app = make_app(command)
            app(prog_name="sedamp", obj=launcher)  # also under python -m sedamp (completion scripts name the program)
        except KeyboardInterrupt:
            _interrupted(signal.SIGINT, None)
    except SystemExit as done:  # how every command ends, typer's usage errors included
        return exit_code(done.code)
    return 0


def exit_code(code: object) -> int:
    """The process exit status `sys.exit(code)` gives: None is 0, an int itself, and
    anything else (a message, which Python prints) 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def leave(code: int) -> NoReturn:
    """End the command now: run the exit handlers (logging's and any that code in
    this process registered), flush the standard streams, and exit without tearing
    down the interpreter's modules. The command's work is done by then (every file
    closed, every child gone); the teardown of typer, PyYAML, pyzmq and the runtime
    took ~17 ms, a tenth of a one-event job. Under a profiler or a debugger (`python
    -m cProfile -m sedamp ...`), which writes its results once the command returns, it
    ends the usual way."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        raise SystemExit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`sedamp run ... | head`), a closed stream
            code = code or 1
    os._exit(code)


def _start_launcher() -> Any:
    """Start the process launcher of a local run before anything else is imported: it
    imports the runtime in parallel with the command line, the topology and the
    controller, and is ready to fork the run's processes when the controller asks."""
    from sedamp.executor.local import LocalExecutor

    return LocalExecutor()


def _interrupted(signum: int, _frame: object) -> None:
    from sedamp.errors import EXIT_INTERRUPTED

    print(f"sedamp: {signal.Signals(signum).name}: stopped before the run started", file=sys.stderr)
    raise SystemExit(EXIT_INTERRUPTED)

"""The `sedamp` command line. Each command group lives in its own module and stays thin:
parse, call the library, print. Failures exit non-zero with one clear line on stderr."""

from __future__ import annotations

import signal

import typer

from sedamp.cli import control, graph, init, keys, report, run, schema, validate
from sedamp.errors import EXIT_INTERRUPTED

app = typer.Typer(
    name="sedamp",
    help="Run staged event-driven pipelines of Python stages as process pools joined by bounded queues.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
app.command("run")(run.run)
app.command("validate")(validate.validate)
app.command("graph")(graph.graph)
app.command("status")(control.status)
app.command("scale")(control.scale)
app.command("top")(control.top)
app.command("keys")(keys.keys)
app.command("schema")(schema.schema)
app.command("init")(init.init)
app.command("report")(report.report)


def main() -> None:
    # Until a run installs its own handlers (which drain in order), Ctrl-C and SIGTERM
    # end the command quietly with the conventional code; nothing has been started yet.
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        app(prog_name="sedamp")  # also under python -m sedamp (completion scripts name the program)
    except KeyboardInterrupt:
        _interrupted(signal.SIGINT, None)


def _interrupted(signum: int, _frame: object) -> None:
    typer.echo(f"sedamp: {signal.Signals(signum).name}: stopped before the run started", err=True)
    raise SystemExit(EXIT_INTERRUPTED)

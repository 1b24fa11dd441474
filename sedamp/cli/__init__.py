"""The `sedamp` command line. Each command group lives in its own module and stays thin:
parse, call the library, print. Failures exit non-zero with one clear line on stderr."""

from __future__ import annotations

import typer

from sedamp.cli import graph, run, validate

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


def main() -> None:
    app()

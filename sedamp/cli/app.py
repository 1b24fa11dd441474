"""The typer app of the command line: the group, its help and version, and each command
loaded from its own module (`sedamp.cli.COMMANDS`)."""

from __future__ import annotations

from typing import Annotated

import typer

from sedamp.cli import COMMANDS, VERSION_FLAG

HELP = """Run staged event-driven pipelines of Python stages as process pools
joined by bounded queues.

Example: sedamp run topologies/wordcount.yaml

Exit codes: 0 success; 1 some events failed (run), or the work could not
be done; 2 invalid topology or arguments; 3 the run failed; 130 interrupted.
Each command's --help lists its own.
"""


def make_app(only: str | None = None) -> typer.Typer:
    """The typer app with every command, or with just `only` (the one being run)."""
    app = typer.Typer(
        name="sedamp",
        help=HELP,
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
    )
    # a group callback keeps `sedamp COMMAND` a group of commands even when one is loaded
    app.callback(help=HELP)(_group)
    for name, load in COMMANDS.items():
        if only is None or name == only:
            app.command(name)(load())
    return app


def _show_version(value: bool) -> None:
    if value:
        from sedamp import __version__

        typer.echo(f"sedamp {__version__}")
        raise typer.Exit()


def _group(
    version: Annotated[
        bool,
        typer.Option(VERSION_FLAG, callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """The group's own options (the help is HELP)."""

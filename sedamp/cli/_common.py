"""What the commands share: logging set-up and the printing of topology problems."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sedamp.errors import EXIT_INVALID, TopologyError
from sedamp.observe.words import plural
from sedamp.spec import Topology, load_topology

if TYPE_CHECKING:  # rich loads only when a table is drawn
    from rich.console import Console

LOG_FORMAT = "sedamp: %(levelname)s: %(message)s"
# The width tables are drawn for when stdout is not a terminal: rich's default there,
# 80 columns, cut the numbers of wide tables off in a pipe or a log.
PIPE_WIDTH = 200


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    # the runtime's processes (queues, workers, sources: user code) log at the same level
    os.environ["SEDAMP_LOG_LEVEL"] = logging.getLevelName(level)


def stdout_console() -> Console:
    """A console on stdout that draws tables whole when stdout is a pipe or a file."""
    from rich.console import Console

    out = Console(highlight=False)
    return out if out.is_terminal else Console(highlight=False, width=PIPE_WIDTH)


def fail(message: str, code: int) -> typer.Exit:
    """Say on stderr, in one line, why the command cannot go on (``error: MESSAGE``);
    returns the Exit, with `code`, for the caller to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def load_or_exit(path: Path, overrides: Sequence[str] = (), check_handlers: bool = True) -> Topology:
    """Load a topology; on problems print each on stderr and exit with code 2."""
    try:
        return load_topology(path, overrides=overrides, check_handlers=check_handlers)
    except TopologyError as exc:
        for p in exc.problems:
            typer.echo(f"error: {p}", err=True)
        n = len(exc.problems)
        typer.echo(f"{path}: {plural(n, 'problem')}; nothing was started", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror}", EXIT_INVALID) from None

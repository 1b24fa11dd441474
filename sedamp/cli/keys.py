"""`sedamp keys`: make the CURVE key pairs a TCP topology can name in controller.keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sedamp.cli._common import fail
from sedamp.errors import EXIT_FAILED
from sedamp.runtime.security import make_keys


def keys(
    directory: Annotated[
        Path, typer.Argument(metavar="DIRECTORY", help="Where to write the keys (created with mode 0700).")
    ],
) -> None:
    """Make a server and a client CURVE key pair in DIRECTORY.

    Example: sedamp keys ~/.sedamp/keys    (then, in the topology: controller: {transport: tcp, keys: ~/.sedamp/keys})

    Writes server.key, server.key_secret, client.key and client.key_secret (secrets 0600).
    Without keys, a TCP run makes fresh keys for itself; named keys are for peers that
    must know them in advance. Existing keys are never overwritten.

    Exit codes: 0 written; 1 the keys exist already or cannot be written.
    """
    try:
        written = make_keys(directory.expanduser())
    except (FileExistsError, OSError) as exc:
        raise fail(str(exc), EXIT_FAILED) from None
    for path in written:
        typer.echo(str(path))

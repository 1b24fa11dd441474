"""Stage code the malformed topologies in this directory refer to."""

from __future__ import annotations

from typing import Any

NOT_CALLABLE = 42  # referenced as a handler: not a function or class


def fixed(event: Any, size: int) -> Any:
    """A handler with a fixed signature: it takes exactly one param, `size`."""
    return event


def numbers(count: int = 3) -> list[int]:
    """A valid source."""
    return list(range(count))


def passthrough(event: Any) -> Any:
    """A valid handler."""
    return event


def collect(event: Any) -> None:
    """A valid sink."""


class NoHandle:
    """A class with neither handle() nor handle_batch(): not a handler."""

    def setup(self) -> None:
        pass

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


class Scale:
    """A handler whose check_params refuses a value its setup() would refuse."""

    def setup(self, factor: float = 1.0, name: str = "") -> None:
        self.factor = factor

    @staticmethod
    def check_params(**params: Any) -> dict[str, str]:
        factor = params.get("factor", 1.0)
        if not isinstance(factor, int | float) or factor <= 0:
            return {"factor": f"Scale: factor must be a number above 0, got {factor!r}"}
        return {}

    def handle(self, event: Any) -> Any:
        return event

"""Small stage functions the good topologies of tests/unit/spec/test_topology.py refer to."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def list_files(root: str = ".", pattern: str = "*") -> list[dict[str, Any]]:
    """A source: one event per (pretend) file."""
    return [{"path": f"{root}/{i}.jpg", "pattern": pattern} for i in range(3)]


def decode(event: dict[str, Any]) -> dict[str, Any]:
    """A handler without params."""
    return {**event, "decoded": True}


def resize(event: dict[str, Any], size: int = 64) -> dict[str, Any]:
    """A handler with one keyword param."""
    return {**event, "size": size}


def explode(event: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A handler that fans out."""
    yield event
    yield event


class Counter:
    """A class handler routed by key."""

    def setup(self, field: str = "user") -> None:
        self.field = field
        self.counts: dict[Any, int] = {}

    def handle(self, event: dict[str, Any]) -> None:
        key = event.get(self.field)
        self.counts[key] = self.counts.get(key, 0) + 1

    def finish(self) -> list[dict[str, Any]]:
        return [{"key": k, "count": n} for k, n in self.counts.items()]


def write_files(event: dict[str, Any], out: str = "out") -> None:
    """A sink."""

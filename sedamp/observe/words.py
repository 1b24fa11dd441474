"""How a count reads in what a user sees: ``1 event``, ``2 events``, ``1,024 files``.
Pure."""

from __future__ import annotations

__all__ = ["plural"]


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """`n` (with thousands separators) and `noun`, or `nouns` (default `noun` + "s")
    when `n` is not 1: ``plural(1, "event")`` is ``1 event``."""
    return f"{n:,} {noun if n == 1 else nouns or noun + 's'}"

"""Text stages: split text into words, count them, write the counts.

Event shapes
    ``tokenize`` (handler): ``{"text": str, "path"?: str, ...}`` -> one ``{"word": str}``
    per word.
    ``Count`` (handler, route it by key so each value reaches one worker):
    ``{<field>: value, ...}`` -> nothing per event; at the end ``{<field>: value,
    "count": int}`` per distinct value, sorted by value.
    ``WriteCounts`` (sink): ``{<field>: value, "count": int}`` -> a TSV file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sedamp import Many
from stages.files import atomic_write

__all__ = ["Count", "WriteCounts", "tokenize"]

# A word: a run of letters, digits and apostrophes (Unicode letters and digits, so that
# "café" is one word; no underscores). Apostrophes at either end are stripped later.
WORD_RE = re.compile(r"(?:[^\W_]|')+")


def _words(text: str, lower: bool, min_length: int) -> Iterator[dict[str, Any]]:
    for match in WORD_RE.finditer(text):
        word = match.group().strip("'")
        if len(word) < min_length or not word:
            continue
        yield {"word": word.lower() if lower else word}


def tokenize(event: dict[str, Any], lower: bool = True, min_length: int = 1) -> Iterator[dict[str, Any]]:
    """Handler: ``{"text": str, ...}`` -> a generator of ``{"word": str}``, one per word in
    order of appearance (duplicates included).

    A word is a run of letters, digits and ``'``, with leading and trailing apostrophes
    stripped (``'tis`` -> ``tis``, ``don't`` stays). Params: `lower` lowercases the words;
    words shorter than `min_length` characters are skipped. Raises ValueError if the event
    has no str ``text``."""
    if not isinstance(event, dict) or not isinstance(event.get("text"), str):
        where = f" ({event['path']!r})" if isinstance(event, dict) and "path" in event else ""
        raise ValueError(f"tokenize: the event{where} must be a dict with a str 'text' field")
    return _words(event["text"], bool(lower), int(min_length))


def _sort_key(value: Any) -> tuple[str, Any]:
    # Groups values by type so a mix of str and int still sorts (str among str, ...).
    return (type(value).__name__, value)


class Count:
    """Handler: counts the values of one field; emits the counts once the input has ended.

    Param `field` (default ``"word"``): the field to count; its values must be str, int,
    float, bool or bytes (ValueError otherwise, or if the field is missing).
    ``handle`` returns None; ``finish()`` returns ``Many([{field: value, "count": n},
    ...])`` sorted by value. Route the stage by the same key (``to: {stage: count, key:
    word}``) so that each value is counted by exactly one worker.
    """

    def setup(self, field: str = "word") -> None:
        self.field = field
        self.counts: dict[Any, int] = {}

    def handle(self, event: dict[str, Any]) -> None:
        if not isinstance(event, dict) or self.field not in event:
            raise ValueError(f"Count: the event has no {self.field!r} field")
        value = event[self.field]
        if not isinstance(value, str | int | float | bytes):  # bool is an int
            raise ValueError(f"Count: field {self.field!r} must be a str, number or bytes, got {type(value).__name__}")
        self.counts[value] = self.counts.get(value, 0) + 1

    def finish(self) -> Many:
        items = sorted(self.counts.items(), key=lambda kv: _sort_key(kv[0]))
        return Many({self.field: value, "count": n} for value, n in items)


class WriteCounts:
    """Sink: collects ``{<field>: value, "count": int}`` events and, at ``teardown()``,
    writes them atomically to `out` as lines ``value<TAB>count``, sorted by count
    (descending) then value (ascending). Parent directories are created.

    Params: `out` (the file path), `field` (default ``"word"``). A value that arrives more
    than once (e.g. from an unrouted Count stage with several workers) has its counts
    added. ValueError for a missing field, a count that is not a non-negative int, or a
    value containing a tab or newline.
    """

    def setup(self, out: str | os.PathLike[str], field: str = "word") -> None:
        self.out = Path(out)
        self.field = field
        self.counts: dict[str, int] = {}
        self._written = False

    def handle(self, event: dict[str, Any]) -> None:
        if not isinstance(event, dict) or self.field not in event or "count" not in event:
            raise ValueError(f"WriteCounts: the event needs {self.field!r} and 'count' fields")
        value, count = event[self.field], event["count"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"WriteCounts: count of {value!r} must be a non-negative int")
        key = value if isinstance(value, str) else str(value)
        if "\t" in key or "\n" in key or "\r" in key:
            raise ValueError(f"WriteCounts: {key!r} contains a tab or newline")
        self.counts[key] = self.counts.get(key, 0) + count

    def teardown(self) -> None:
        if self._written:
            return
        self._written = True
        rows = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        text = "".join(f"{w}\t{n}\n" for w, n in rows)
        atomic_write(self.out, text.encode("utf-8"))

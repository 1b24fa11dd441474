"""The dead-letter file: one JSON line per event that could not be handled.

Each line holds: time, stage, event id, worker pid, exception type, message, traceback,
and the event itself (bytes as ``{"$bytes": "<base64>"}``, a NumPy array as
``{"$ndarray": {"dtype": ..., "shape": [...], "data": "<base64>"}}``, C order; `event_of`
turns a record's event back into the value it was). Every record is written with
one ``write`` to a file opened with ``O_APPEND``, so the worker processes of a run can
share the file without interleaving lines.

A record that cannot be written (a full disk, a read-only file system) raises
`StorageError`: a process that cannot record a failure stops the run (exit 3) instead of
going on as if the event had been handled. What a full disk cut short is at most the
last line of the file, which `read_dead_letters` skips with a warning.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from sedamp.errors import StorageError, WireError
from sedamp.runtime import payload, wire

log = logging.getLogger(__name__)

DEAD_LETTERS_FILE = "dead-letters.jsonl"


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if payload.carries(value):
        return _array_json(value)
    return repr(value)


def _array_json(a: Any) -> Any:
    if not hasattr(a, "shape"):  # a NumPy scalar
        return a.item()
    dtype = a.dtype.str if a.dtype.names is None else a.dtype.descr
    data = base64.b64encode(a.tobytes()).decode("ascii")
    return {"$ndarray": {"dtype": dtype, "shape": list(a.shape), "data": data}}


def event_of(record: dict[str, Any]) -> Any:
    """The event of a dead-letter record as it was: ``$bytes`` and ``$ndarray`` forms
    turned back into bytes and NumPy arrays (writable copies)."""
    return _restore(record.get("event"))


def _restore(value: Any) -> Any:
    if isinstance(value, list):
        return [_restore(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and isinstance(value.get("$bytes"), str):
        return base64.b64decode(value["$bytes"])
    if len(value) == 1 and isinstance(value.get("$ndarray"), dict):
        a = value["$ndarray"]
        return payload.array_of([a.get("dtype"), a.get("shape"), 0], base64.b64decode(a.get("data", ""))).copy()
    return {k: _restore(v) for k, v in value.items()}


class DeadLetters:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.count = 0

    def write(
        self,
        *,
        stage: str,
        event_id: Any,
        error_type: str,
        message: str,
        traceback: str | None,
        event: Any,
    ) -> None:
        record = {
            "time": time.time(),
            "stage": stage,
            "event_id": event_id,
            "pid": os.getpid(),
            "error_type": error_type,
            "message": message,
            "traceback": traceback,
            "event": event,
        }
        try:
            text = json.dumps(record, default=_jsonable, ensure_ascii=False)
        except (TypeError, ValueError):  # e.g. bytes or tuple dict keys: keep its repr
            record["event"] = repr(event)
            text = json.dumps(record, default=_jsonable, ensure_ascii=False)
        line = (text + "\n").encode()
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            done = os.write(self._fd, line)
            while done < len(line):  # a short write: the disk filled up mid-record
                done += os.write(self._fd, line[done:])
        except OSError as exc:
            raise StorageError.of("the dead-letter file", self.path, exc) from exc
        self.count += 1

    def write_packed(self, *, stage: str, event_id: Any, error_type: str, message: str, packed: bytes) -> None:
        """Write an event still in its wire form: decoded, or as raw bytes if it does
        not decode."""
        try:
            event: Any = wire.unpack_event(packed)
        except WireError:
            event = packed
        self.write(stage=stage, event_id=event_id, error_type=error_type, message=message, traceback=None, event=event)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_dead_letters(path: str | Path) -> list[dict[str, Any]]:
    """All records of a dead-letter file (an absent file has none). A last line cut short
    (the disk filled up, or the process died, mid-record) is skipped with a warning; a
    bad line anywhere else is a ValueError naming the file and line."""
    p = Path(path)
    if not p.exists():
        return []
    records = []
    with p.open("rb") as f:
        lines = f.read().split(b"\n")
    last = len(lines) - 1  # the text after the last newline: empty unless a record was cut
    for number, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            records.append(json.loads(raw))
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            if number == last:
                log.warning("%s:%d: skipped a record cut short (%d bytes, no newline)", p, number + 1, len(raw))
                continue
            raise ValueError(f"{p}:{number + 1}: not a dead-letter record: {exc}") from None
    return records


class DeadLetterTail:
    """The records appended to a dead-letter file since the last `read`, while the
    processes of a run write it (the controller follows the file so). Only whole lines
    are read: a record still being written, or cut short, waits for its newline. A line
    that is not a record is skipped with a warning."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.offset = 0  # where the next record starts

    def read(self, max_bytes: int) -> list[dict[str, Any]]:
        """The records that follow the last read, about `max_bytes` of them at most (a
        record larger than that is still read whole); none while the file is absent."""
        records: list[dict[str, Any]] = []
        try:
            f = self.path.open("rb")
        except OSError:
            return records
        with f:
            f.seek(self.offset)
            used = 0
            while used < max_bytes:
                line = f.readline()
                if not line.endswith(b"\n"):
                    break
                start, self.offset = self.offset, self.offset + len(line)
                used += len(line)
                try:
                    record = json.loads(line)
                except ValueError:  # JSONDecodeError and UnicodeDecodeError
                    record = None
                if isinstance(record, dict):
                    records.append(record)
                else:
                    log.warning("%s: skipped a line at byte %d that is not a dead-letter record", self.path, start)
        return records


def count_dead_letters(path: str | Path) -> int:
    """How many records a dead-letter file holds, as `read_dead_letters` reads them: its
    lines, and a last line without its newline if it is a whole record (a full disk
    can stop a write just before the newline); 0 if the file is absent (or cannot be
    read)."""
    lines, tail = 0, b""
    try:
        with Path(path).open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                lines += chunk.count(b"\n")
                end = chunk.rfind(b"\n")
                tail = chunk[end + 1 :] if end >= 0 else tail + chunk
    except OSError:
        return 0
    if tail.strip():
        try:
            json.loads(tail)
        except ValueError:  # cut short: not a record
            return lines
        return lines + 1
    return lines

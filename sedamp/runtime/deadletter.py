"""The dead-letter file: one JSON line per event that could not be handled.

Each line holds: time, stage, event id, worker pid, exception type, message, traceback,
and the event itself (bytes as ``{"$bytes": "<base64>"}``). Every record is written with
one ``write`` to a file opened with ``O_APPEND``, so the worker processes of a run can
share the file without interleaving lines.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

from sedamp.errors import WireError
from sedamp.runtime import wire

DEAD_LETTERS_FILE = "dead-letters.jsonl"


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    return repr(value)


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
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(self._fd, line)
        self.count += 1

    def write_packed(self, *, stage: str, event_id: Any, error_type: str, message: str, packed: bytes) -> None:
        """Write an event still in its wire form: decoded, or as raw bytes if it does
        not decode."""
        try:
            event: Any = wire.unpack_events([packed], 1)[0]
        except WireError:
            event = packed
        self.write(stage=stage, event_id=event_id, error_type=error_type, message=message, traceback=None, event=event)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_dead_letters(path: str | Path) -> list[dict[str, Any]]:
    """All records of a dead-letter file (an absent file has none)."""
    p = Path(path)
    if not p.exists():
        return []
    with p.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]

"""sedamp.runtime.deadletter.DeadLetterTail: the records appended to a dead-letter file
since the last read, as the controller follows the file while workers write it."""

from __future__ import annotations

import json
from pathlib import Path

from sedamp.runtime.deadletter import DeadLetters, DeadLetterTail


def write(path: Path, *ns: int) -> None:
    dead = DeadLetters(path)
    for n in ns:
        dead.write(stage="s", event_id=n, error_type="ValueError", message="m", traceback=None, event={"n": n})
    dead.close()


def test_each_read_gives_what_was_appended_since_the_last(tmp_path: Path) -> None:
    path = tmp_path / "dead-letters.jsonl"
    tail = DeadLetterTail(path)
    assert tail.read(1 << 20) == []  # no file yet
    write(path, 0, 1)
    assert [r["event_id"] for r in tail.read(1 << 20)] == [0, 1]
    assert tail.read(1 << 20) == []
    write(path, 2)
    assert [r["event_id"] for r in tail.read(1 << 20)] == [2]


def test_a_record_still_being_written_waits_for_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "dead-letters.jsonl"
    write(path, 0)
    line = json.dumps({"stage": "s", "event_id": 1}).encode()
    with path.open("ab") as f:
        f.write(line[:10])
    tail = DeadLetterTail(path)
    assert [r["event_id"] for r in tail.read(1 << 20)] == [0]
    with path.open("ab") as f:
        f.write(line[10:] + b"\n")
    assert [r["event_id"] for r in tail.read(1 << 20)] == [1]


def test_a_read_stops_near_its_byte_budget_and_the_next_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "dead-letters.jsonl"
    write(path, *range(10))
    tail = DeadLetterTail(path)
    first = tail.read(1)  # one record at least, however large
    rest = tail.read(1 << 20)
    assert [r["event_id"] for r in first + rest] == list(range(10))
    assert len(first) == 1


def test_a_line_that_is_not_a_record_is_skipped(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "dead-letters.jsonl"
    write(path, 0)
    with path.open("ab") as f:
        f.write(b"\xff{not json\n[1, 2]\n")
    write(path, 1)
    assert [r["event_id"] for r in DeadLetterTail(path).read(1 << 20)] == [0, 1]
    assert "not a dead-letter record" in caplog.text

"""Reading the dead-letter file: a last record cut short (a full disk) is skipped with a
warning, a bad line elsewhere is an error naming it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sedamp.runtime.deadletter import DeadLetters, count_dead_letters, read_dead_letters


def write_three(path: Path) -> None:
    dead = DeadLetters(path)
    for n in range(3):
        dead.write(stage="s", event_id=n, error_type="ValueError", message="m", traceback=None, event={"n": n})
    dead.close()


def test_a_record_cut_short_at_the_end_is_skipped_with_a_warning(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """A full disk leaves a last line without its end; read_dead_letters raised
    JSONDecodeError on it and gave nothing of the file."""
    path = tmp_path / "dead-letters.jsonl"
    write_three(path)
    whole = path.read_bytes()
    path.write_bytes(whole + whole.splitlines(keepends=True)[0][:40])
    with caplog.at_level(logging.WARNING, logger="sedamp.runtime.deadletter"):
        letters = read_dead_letters(path)
    assert [d["event_id"] for d in letters] == [0, 1, 2]
    assert f"{path}:4: skipped a record cut short (40 bytes, no newline)" in caplog.text
    assert count_dead_letters(path) == 3


def test_a_bad_line_before_the_end_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "dead-letters.jsonl"
    write_three(path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"\xff{not json\n" + lines[1])
    with pytest.raises(ValueError, match=rf"^{path}:2: not a dead-letter record: "):
        read_dead_letters(path)


def test_an_absent_file_has_no_records(tmp_path: Path) -> None:
    assert read_dead_letters(tmp_path / "none") == [] and count_dead_letters(tmp_path / "none") == 0

"""The dead-letter file, the journal and a worker's slot when the disk refuses a write:
StorageError naming the file and the errno. /dev/full is a real full device (every
write fails with ENOSPC from the kernel); a symlink puts it where the file goes."""

from __future__ import annotations

import errno
import logging
import os
from array import array
from pathlib import Path

import pytest

from sedamp.errors import StorageError
from sedamp.runtime.deadletter import DeadLetters, count_dead_letters, read_dead_letters
from sedamp.runtime.journal import Journal, read_ids
from sedamp.runtime.slot import Slot


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


def test_a_record_whose_newline_the_disk_refused_is_counted_as_it_is_read(tmp_path: Path) -> None:
    """A full disk (here a file-size limit) can stop a write just before the newline:
    the record is whole and `read_dead_letters` gives it, so the run's count of dead
    letters must include it (it counted lines, one fewer: the disk fault test saw its
    summary say 124 failed with 125 records on disk, once in a loaded suite)."""
    path = tmp_path / "dead-letters.jsonl"
    write_three(path)
    whole = path.read_bytes()
    path.write_bytes(whole + whole.splitlines(keepends=True)[0].rstrip(b"\n"))
    assert len(read_dead_letters(path)) == 4
    assert count_dead_letters(path) == 4
    big = tmp_path / "big.jsonl"  # the last record across the reads of a large file
    big.write_bytes(b"x" * (1 << 20) + b"\n" + b'{"event_id": 9, "pad": "' + b"y" * (1 << 20) + b'"}')
    assert count_dead_letters(big) == 2


def test_a_bad_line_before_the_end_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "dead-letters.jsonl"
    write_three(path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"\xff{not json\n" + lines[1])
    with pytest.raises(ValueError, match=rf"^{path}:2: not a dead-letter record: "):
        read_dead_letters(path)


def test_an_absent_file_has_no_records(tmp_path: Path) -> None:
    assert read_dead_letters(tmp_path / "none") == [] and count_dead_letters(tmp_path / "none") == 0


def test_a_dead_letter_the_disk_refuses_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "dead-letters.jsonl"
    path.symlink_to("/dev/full")
    dead = DeadLetters(path)
    with pytest.raises(StorageError) as err:
        dead.write(stage="s", event_id=1, error_type="E", message="m", traceback=None, event=None)
    dead.close()
    assert err.value.errno == errno.ENOSPC and dead.count == 0
    assert str(err.value).startswith(f"cannot write the dead-letter file {path}: No space left on device (ENOSPC); ")
    assert "is full" in str(err.value)


def test_a_journal_the_disk_refuses_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / f"out.{os.getpid()}.ids"
    path.symlink_to("/dev/full")
    journal = Journal(tmp_path, "out")
    journal.add([])  # nothing to write: nothing fails
    with pytest.raises(StorageError, match=rf"^cannot write the journal {path}: No space left on device \(ENOSPC\)"):
        journal.add([1, 2, "2.0"])
    journal.close()


def test_a_journal_record_cut_short_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "out.1.ids").write_bytes(array("q", [4, 5]).tobytes() + b"\x06\x00\x00")
    assert read_ids(tmp_path, "out") == {4, 5}


def test_a_slot_the_disk_refuses_is_a_storage_error_not_a_sigbus(tmp_path: Path) -> None:
    """The controller made a sparse slot file and stored into its mapping: on a full
    tmpfs that killed the controller with SIGBUS. It now writes the file first."""
    path = tmp_path / "slot1"
    path.symlink_to("/dev/full")
    with pytest.raises(StorageError, match=rf"^cannot write a worker's slot {path}: No space left on device"):
        Slot(path, create=True)
    slot = Slot(tmp_path / "slot2", create=True)
    assert os.path.getsize(tmp_path / "slot2") == 72 and slot.read() == (0.0, -1, -1) and slot.waits() == (0.0, 0.0)
    assert slot.busy_s() == 0.0
    slot.close()


def test_a_storage_error_names_the_errno_and_what_it_means(tmp_path: Path) -> None:
    def message(code: int) -> str:
        return str(StorageError.of("the journal", tmp_path / "x", OSError(code, os.strerror(code))))

    assert message(errno.EFBIG).endswith("File too large (EFBIG); the file size limit (ulimit -f) is reached")
    assert "Read-only file system (EROFS); the file system at /" in message(errno.EROFS)
    assert message(errno.EROFS).endswith(" is read-only")
    assert message(errno.EACCES).endswith(f"{tmp_path / 'x'}: Permission denied (EACCES)")

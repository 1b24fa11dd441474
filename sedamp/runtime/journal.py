"""The journal that lets `sedamp run --resume` skip what an earlier run already wrote.

A sink class (or function) marked ``resumable = True`` promises that once its
``handle`` returns, that event's output is complete on disk (``stages.files:WriteFiles``
writes each file atomically). The worker of such a sink appends the integer ids of the
events it handled, as little-endian int64, to ``<workdir>/journal/<topology>/<sink>.<pid>.ids``
after every batch and before acknowledging it. An id is the position of the event in
its source, so on ``--resume`` a source skips every position that every sink holds.

What is skipped is exact for one-to-one pipelines (file in, file out). Events that were
fanned out (ids ``"<id>.<i>"``) or dropped on the way are not journaled and are done
again, which is safe for sinks that write by name (the file is written again). A run
without --resume starts a fresh journal.

A journal that cannot be written (a full disk, a read-only directory) raises
`StorageError`, and the run stops: a sink that went on writing without journaling
would make a later --resume do its work again, and the journal's promise is that it
does not.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sedamp.errors import JournalError, StorageError
from sedamp.runtime.dedupe import IdSet
from sedamp.runtime.stage import load_ref

if TYPE_CHECKING:  # the worker imports this module: keep YAML parsing out of it
    from sedamp.spec import Topology

_ITEM = array("q").itemsize


def journal_dir(workdir: Path, name: str) -> Path:
    """The journal directory of topology `name` (a run without --resume empties it).
    The loader refuses names that are not plain file names; this refuses them again, so
    that nothing outside <workdir>/journal can ever be removed."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"{name!r} is not a topology name that can name a directory")
    return Path(workdir) / "journal" / name


def is_resumable(ref: str) -> bool:
    return bool(getattr(load_ref(ref), "resumable", False))


def resume_problem(top: Topology) -> str | None:
    """Why --resume cannot be used on `top`, or None."""
    sources = [s.name for s in top.stages.values() if s.kind == "source"]
    if len(sources) != 1:
        return f"it needs exactly one source (positions identify events), and {top.name!r} has {len(sources)}"
    bad = [s.name for s in top.stages.values() if s.kind == "sink" and not is_resumable(s.ref)]
    if bad:
        return (
            f"sink {', '.join(repr(b) for b in bad)} cannot tell what it wrote: a sink must be marked "
            "resumable = True (its output is complete when handle() returns), as stages.files:WriteFiles is"
        )
    joined = [s.name for s in top.stages.values() if s.kind == "sink" and top.paths_to(s.name) > 1]
    if joined:
        return (
            f"sink {', '.join(repr(j) for j in joined)} is reached along more than one path (edges that split "
            "and meet again): an event it wrote from one path may still be owed from the other, and a resumed "
            "run would skip it"
        )
    return None


FINGERPRINT_FILE = "topology.sha256"


def fingerprint(top: Topology) -> str:
    """What a journal was made for: a digest of the work the resolved topology does, its
    stages' handlers, params (after ${VAR} and --set) and edges. Pool sizes, batches,
    queues and controller settings may change between a run and its resumption."""
    work = [
        [s.name, s.kind, s.ref, dict(s.params), [[e.stage, e.key, e.when] for e in s.to]] for s in top.stages.values()
    ]
    return hashlib.sha256(json.dumps(work, sort_keys=True, default=str).encode()).hexdigest()


def start(directory: Path, resume: bool, made_for: str) -> int:
    """Take the journal of a run: lock it for the run's lifetime (another run of the same
    topology in the same workdir is refused rather than allowed to empty it), then empty
    it for a fresh run, or check that --resume continues the topology it was made for.
    Returns the lock's file descriptor (closing it, or exiting, releases the lock).
    Raises JournalError, or StorageError when the journal cannot be written."""
    try:
        directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = os.open(directory.parent / f"{directory.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StorageError.of("the journal", directory.parent, exc) from exc
    try:
        _take(lock, directory, resume, made_for)
    except BaseException:
        os.close(lock)
        raise
    return lock


def _take(lock: int, directory: Path, resume: bool, made_for: str) -> None:
    """Lock the journal (held open by `lock`), then empty or check it (see `start`)."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise JournalError(
            f"another run of topology {directory.name!r} is using this workdir ({directory.parent.parent}); "
            "wait for it to end, or give this run another --workdir"
        ) from None
    stamp = directory / FINGERPRINT_FILE
    found = stamp.read_text().strip() if resume and stamp.exists() else None
    if found is not None and found != made_for:
        raise JournalError(
            f"--resume: the journal of {directory.name!r} was made for a different topology (its stages, "
            "params or variables changed since): a resumed run would skip work it never did for this one; "
            "run without --resume to start afresh"
        )
    if not resume:
        shutil.rmtree(directory, ignore_errors=True)
    if found == made_for:
        return
    tmp = directory / f"{FINGERPRINT_FILE}.tmp"
    try:  # written whole or not at all: a full disk leaves no empty stamp to refuse later
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp.write_text(made_for + "\n")
        os.replace(tmp, stamp)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise StorageError.of("the journal", stamp, exc) from exc


class Journal:
    """The writer in a sink worker."""

    def __init__(self, directory: str | Path, stage: str) -> None:
        self.path = Path(directory) / f"{stage}.{os.getpid()}.ids"
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise StorageError.of("the journal", self.path, exc) from exc

    def add(self, ids: Iterable[Any]) -> None:
        """Journal `ids` (the integer ones). Raises StorageError; a record cut short by
        a full disk is ignored by `read_ids`."""
        data = array("q", (i for i in ids if type(i) is int)).tobytes()
        try:
            done = os.write(self.fd, data) if data else 0
            while done < len(data):
                done += os.write(self.fd, data[done:])
        except OSError as exc:
            raise StorageError.of("the journal", self.path, exc) from exc

    def close(self) -> None:
        os.close(self.fd)


def read_ids(directory: Path, stage: str) -> set[int]:
    ids: set[int] = set()
    for path in directory.glob(f"{stage}.*.ids"):
        data = path.read_bytes()
        a = array("q")
        a.frombytes(data[: len(data) - len(data) % _ITEM])  # a crash may cut the last record
        ids.update(a)
    return ids


def done_ids(directory: Path, top: Topology) -> list[int]:
    """Source positions every sink has journaled, sorted."""
    sinks = [s.name for s in top.stages.values() if s.kind == "sink"]
    if not sinks:
        return []
    done = read_ids(directory, sinks[0])
    for name in sinks[1:]:
        done &= read_ids(directory, name)
    return sorted(done)


def write_skip(path: Path, ids: list[int]) -> None:
    try:
        path.write_bytes(array("q", ids).tobytes())
    except OSError as exc:
        raise StorageError.of("the skip list of --resume", path, exc) from exc


def read_skip(path: str | Path) -> IdSet:
    a = array("q")
    a.frombytes(Path(path).read_bytes())
    skip = IdSet()
    for i in a:
        skip.add(i)
    return skip

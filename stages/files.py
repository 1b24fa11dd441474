"""File-system stages: list files, read them, write files atomically.

Event shapes
    ``ListFiles`` (source) yields ``{"path": str, "size": int}``.
    ``read_text`` (handler) takes ``{"path": str, ...}`` and returns the same dict plus
    ``"text": str``.
    ``WriteFiles`` (sink) takes ``{"name": str, "data": bytes | str, ...}``.

Helpers
    ``atomic_write(path, data)`` writes a whole file at once; ``AtomicFile`` streams into a
    temporary file that replaces the destination on ``commit()``. Either way a reader sees
    the old file or the complete new one, never a partial one, and no temporary file is
    left behind once the write has finished (committed or failed).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO, Any

__all__ = [
    "AtomicFile",
    "ListFiles",
    "WriteFiles",
    "atomic_write",
    "list_files",
    "read_text",
]

_umask: int | None = None


def _file_mode() -> int:
    """The permission bits a plain ``open(path, "w")`` would give a new file."""
    global _umask
    if _umask is None:
        _umask = os.umask(0)
        os.umask(_umask)
    return 0o666 & ~_umask


def _temp_in(directory: Path, name: str) -> tuple[int, str]:
    return tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False) -> None:
    """Write `data` to `path` atomically: a temporary file in the same directory, then
    ``os.replace``. Creates missing parent directories. With `fsync`, the file and its
    directory are flushed to disk before returning."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"atomic_write needs bytes, got {type(data).__name__}")
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_in(dest.parent, dest.name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, dest)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    if fsync:
        _fsync_dir(dest.parent)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class AtomicFile:
    """A file written by streaming into a temporary file next to `path`, which replaces
    `path` on ``commit()``; ``discard()`` removes the temporary file instead.

    `mode` is ``"w"`` (text, with `encoding` and `newline` as for ``open``) or ``"wb"``.
    Creates missing parent directories. Both ``commit`` and ``discard`` are idempotent."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        mode: str = "w",
        *,
        encoding: str = "utf-8",
        newline: str | None = None,
    ) -> None:
        if mode not in ("w", "wb"):
            raise ValueError(f"AtomicFile mode must be 'w' or 'wb', not {mode!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.temp_path = _temp_in(self.path.parent, self.path.name)
        try:
            if mode == "wb":
                self.file: IO[Any] = os.fdopen(fd, "wb")
            else:
                self.file = os.fdopen(fd, "w", encoding=encoding, newline=newline)
        except BaseException:
            os.close(fd)
            _unlink_quietly(self.temp_path)
            raise
        self.done = False

    def write(self, data: Any) -> None:
        self.file.write(data)

    def commit(self, *, fsync: bool = False) -> None:
        """Close the temporary file and move it onto the destination."""
        if self.done:
            return
        self.done = True
        try:
            self.file.flush()
            if fsync:
                os.fsync(self.file.fileno())
            self.file.close()
            os.chmod(self.temp_path, _file_mode())
            os.replace(self.temp_path, self.path)
        except BaseException:
            self.file.close()
            _unlink_quietly(self.temp_path)
            raise
        if fsync:
            _fsync_dir(self.path.parent)

    def discard(self) -> None:
        """Drop what was written; the destination is left untouched."""
        if self.done:
            return
        self.done = True
        self.file.close()
        _unlink_quietly(self.temp_path)


class ListFiles:
    """Source: the regular files under a directory, sorted by path.

    Params
        root: the directory to list (ValueError naming it if it does not exist or is not a
            directory).
        pattern: a shell-style pattern (``fnmatch``, case-sensitive) matched against each
            file's *name*; default ``"*"`` (every file, dot-files included).
        recursive: also list subdirectories (symlinked directories are not followed;
            symlinks to regular files are listed).

    Yields ``{"path": str, "size": int}`` where ``path`` is `root` joined with the file's
    path relative to it and ``size`` is in bytes. ``total()`` (and ``len()``) is the count.

    ``list_files = ListFiles`` is the same thing under a function-style name; both can be
    called with the params directly (``list_files(root="texts")``) or through ``setup``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        pattern: str = "*",
        recursive: bool = False,
    ) -> None:
        self._files: list[dict[str, Any]] | None = None
        if root is not None:
            self.setup(root, pattern, recursive)

    def setup(self, root: str | os.PathLike[str], pattern: str = "*", recursive: bool = False) -> None:
        root_str = os.fspath(root)
        if not os.path.exists(root_str):
            raise ValueError(f"ListFiles: root {root_str!r} does not exist")
        if not os.path.isdir(root_str):
            raise ValueError(f"ListFiles: root {root_str!r} is not a directory")
        self.root = root_str
        self.pattern = str(pattern)
        self.recursive = bool(recursive)
        self._files = None

    def _scan(self) -> list[dict[str, Any]]:
        if self._files is None:
            found: list[dict[str, Any]] = []
            for dirpath, dirnames, filenames in os.walk(self.root):
                if not self.recursive:
                    dirnames.clear()
                for name in filenames:
                    if not fnmatchcase(name, self.pattern):
                        continue
                    path = os.path.join(dirpath, name)
                    try:
                        st = os.stat(path)  # follows symlinks: a link to a file counts
                    except OSError:  # vanished, or a dangling symlink
                        continue
                    if os.path.isfile(path):
                        found.append({"path": path, "size": st.st_size})
            found.sort(key=lambda f: f["path"])
            self._files = found
        return self._files

    def total(self) -> int:
        return len(self._scan())

    def __len__(self) -> int:
        return self.total()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for f in self._scan():
            yield dict(f)


list_files = ListFiles


def read_text(event: dict[str, Any], encoding: str = "utf-8") -> dict[str, Any]:
    """Handler: ``{"path": str, ...}`` -> the same dict plus ``"text"``, the file's whole
    contents decoded with `encoding` (line endings kept as they are in the file).

    Raises ValueError naming the path if it cannot be read or decoded."""
    if not isinstance(event, dict) or not isinstance(event.get("path"), str):
        raise ValueError("read_text: the event must be a dict with a str 'path' field")
    path = event["path"]
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"read_text: cannot read {path!r}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(f"read_text: {path!r} is not valid {encoding} at byte {exc.start}: {exc.reason}") from exc
    return {**event, "text": text}


def _safe_relative(name: Any) -> Path:
    """`name` as a relative path that stays inside its base directory, or ValueError."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"WriteFiles: 'name' must be a non-empty str, got {name!r}")
    if "\x00" in name:
        raise ValueError(f"WriteFiles: name {name!r} contains a NUL byte")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or os.path.splitdrive(name)[0]:
        raise ValueError(f"WriteFiles: name {name!r} is absolute; it must stay inside out")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise ValueError(f"WriteFiles: name {name!r} contains '..'; it must stay inside out")
    rel = Path(*[p for p in parts if p not in ("", ".")])
    if rel == Path():
        raise ValueError(f"WriteFiles: name {name!r} does not name a file")
    return rel


class WriteFiles:
    """Sink: writes each event's ``data`` to ``<out>/<name>`` atomically.

    Event ``{"name": str, "data": bytes | str, ...}``; a str is encoded with `encoding`.
    ``name`` may contain subdirectories (created as needed) but must not be absolute or
    contain ``..`` (ValueError), nor lead outside `out` through a symlink.

    Params
        out: the output directory, created in ``setup``.
        overwrite: replace an existing file (default). When False, an existing file is a
            ValueError and is left untouched (the check and the write are one atomic step).
        fsync: flush each file and its directory to disk before moving on.
        encoding: for str data.

    Resumable: each file is complete once ``handle`` returns, so ``sedamp run --resume``
    skips the events it already wrote.
    """

    resumable = True

    def setup(
        self,
        out: str | os.PathLike[str],
        overwrite: bool = True,
        fsync: bool = False,
        encoding: str = "utf-8",
    ) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._out_resolved = self.out.resolve()
        self.overwrite = bool(overwrite)
        self.fsync = bool(fsync)
        self.encoding = encoding
        self.written = 0

    def handle(self, event: dict[str, Any]) -> None:
        if not isinstance(event, dict):
            raise ValueError(f"WriteFiles: the event must be a dict, got {type(event).__name__}")
        rel = _safe_relative(event.get("name"))
        data = event.get("data")
        if isinstance(data, str):
            data = data.encode(self.encoding)
        elif not isinstance(data, bytes):
            raise ValueError(
                f"WriteFiles: 'data' of {event.get('name')!r} must be bytes or str, got {type(data).__name__}"
            )
        dest = self.out / rel
        # Checked before creating anything: a symlinked directory must not lead outside.
        if not dest.parent.resolve().is_relative_to(self._out_resolved):
            raise ValueError(f"WriteFiles: name {event['name']!r} leads outside {str(self.out)!r}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_dir():
            raise ValueError(f"WriteFiles: {str(dest)!r} is a directory")
        if self.overwrite:
            atomic_write(dest, data, fsync=self.fsync)
        else:
            self._write_new(dest, data)
        self.written += 1

    def _write_new(self, dest: Path, data: bytes) -> None:
        fd, tmp = _temp_in(dest.parent, dest.name)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.chmod(tmp, _file_mode())
            try:
                os.link(tmp, dest)  # fails if dest exists: no check-then-write race
            except FileExistsError:
                raise ValueError(f"WriteFiles: {str(dest)!r} already exists and overwrite is false") from None
            except OSError:  # file systems without hard links
                if dest.exists():
                    raise ValueError(f"WriteFiles: {str(dest)!r} already exists and overwrite is false") from None
                os.replace(tmp, dest)
        finally:
            _unlink_quietly(tmp)
        if self.fsync:
            _fsync_dir(dest.parent)

    def teardown(self) -> None:
        pass

"""File-system stages: list files, read them, write files atomically.

Event shapes
    ``ListFiles`` (source) yields ``{"path": str, "size": int}``.
    ``read_text`` (handler) takes ``{"path": str, ...}`` and returns the same dict plus
    ``"text": str``.
    ``read_bytes`` (handler) takes ``{"path": str, ...}`` and returns the same dict plus
    ``"data": bytes``.
    ``WriteFiles`` (sink) takes ``{"name": str, "data": bytes | str, ...}``.

Doing only what is left
    ``ListFiles(skip_existing=TEMPLATE)`` leaves out every file whose output (the
    template formatted with the file's ``{relpath}``, ``{relstem}``, ``{name}``,
    ``{stem}``, ``{suffix}``) already exists, so re-running a job does only the rest;
    ``WriteFiles(skip_existing=true)`` leaves an existing output file as it is.

One output, one input
    Two events of one run that name the same output file (``a.jpg`` and ``a.png`` both
    thumbnailed to ``a.jpg``) would overwrite each other: ``WriteFiles`` writes the first
    and refuses the second with a ValueError naming both inputs and the output (the
    event is dead-lettered), whichever worker process each reaches. It notes every
    output it writes in the run directory's ``outputs/`` (one small file per output,
    made with an atomic link, so processes agree). The same input again (a retry, an
    event redelivered after a worker died) is no collision, nor is a file left by an
    earlier run: that is replaced (``overwrite``, the default) or kept
    (``skip_existing``) as usual, so a job run again behaves as it always did. Which
    of two inputs gets the output is the first to reach a writer; the other is in the
    run's dead-letter file and the run exits with 1. Run again with
    ``ListFiles(skip_existing=...)``, neither is listed (their one output exists), and
    ``ListFiles`` warns, naming them, at every listing: renaming one input, or
    ``stages.images:Thumbnail keep_ext: true`` (``a.png`` -> ``a.png.jpg``, with
    ``{relpath}`` in the template), gives each its own output.

Helpers
    ``atomic_write(path, data)`` writes a whole file at once; ``AtomicFile`` streams into a
    temporary file that replaces the destination on ``commit()``. Either way a reader sees
    the old file or the complete new one, never a partial one, and no temporary file is
    left behind once the write has finished (committed or failed).
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import string
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO, Any

from sedamp.runtime.stage import on_interrupt, run_dir

__all__ = [
    "AtomicFile",
    "ListFiles",
    "WriteFiles",
    "atomic_write",
    "list_files",
    "read_bytes",
    "read_text",
]

# The fields a ListFiles skip_existing template may use.
SKIP_FIELDS = ("relpath", "relstem", "name", "stem", "suffix")
# Under the run directory: one file per output WriteFiles wrote in the run, naming its input.
OUTPUTS_DIR = "outputs"

log = logging.getLogger("stages.files")

_umask: int | None = None


def _flag(stage: str, name: str, value: Any) -> bool:
    """A true/false param. ``${VAR}`` gives strings: "true"/"false" (or yes/no, 1/0,
    on/off) are read as such, never as "any non-empty string is true"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
        return value.strip().lower() in ("true", "yes", "1", "on")
    raise ValueError(f"{stage}: {name} must be true or false, got {value!r}")


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


# Every AtomicFile neither committed nor discarded: a worker stopped at once (a second
# Ctrl-C) discards them, so no temporary file is left next to the outputs.
_OPEN: weakref.WeakSet[AtomicFile] = weakref.WeakSet()


def _discard_open() -> None:
    for f in list(_OPEN):
        f.discard()


on_interrupt(_discard_open)


class AtomicFile:
    """A file written by streaming into a temporary file next to `path`, which replaces
    `path` on ``commit()``; ``discard()`` removes the temporary file instead.

    `mode` is ``"w"`` (text, with `encoding` and `newline` as for ``open``) or ``"wb"``.
    Creates missing parent directories. Both ``commit`` and ``discard`` are idempotent.
    A worker stopped at once (a second Ctrl-C) discards the ones still open."""

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
        _OPEN.add(self)

    def write(self, data: Any) -> None:
        self.file.write(data)

    def commit(self, *, fsync: bool = False) -> None:
        """Close the temporary file and move it onto the destination."""
        if self.done:
            return
        self.done = True
        _OPEN.discard(self)
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
        _OPEN.discard(self)
        self.file.close()
        _unlink_quietly(self.temp_path)


class ListFiles:
    """Source: the regular files under a directory, sorted by path.

    Params
        root: the directory to list (ValueError naming it if it does not exist or is not a
            directory).
        pattern: a shell-style pattern (``fnmatch``) matched against each file's *name*,
            or a list of them (a file matching any is listed, e.g.
            ``["*.jpg", "*.jpeg", "*.png"]``); default ``"*"`` (every file, dot-files
            included).
        ignore_case: match the patterns regardless of case (``*.jpg`` also lists
            ``IMG_1.JPG``); default false (case-sensitive).
        recursive: also list subdirectories (symlinked directories are not followed;
            symlinks to regular files are listed).
        skip_existing: a path template; a file whose formatted template names an
            existing path is left out (not yielded, not counted in ``total()``), so
            re-running a job does only what is left. The template is formatted with
            ``str.format`` fields of the file: ``{relpath}`` (its path relative to
            `root`, ``/`` separated), ``{relstem}`` (relpath without its last
            extension), ``{name}`` (its file name), ``{stem}`` (name without its last
            extension) and ``{suffix}`` (that extension with its dot, or ``""``); e.g.
            ``out/thumbs/{relstem}.jpg`` matches the names ``stages.images:Thumbnail``
            gives with the same `root`. A relative template is relative to the current
            directory, as ``WriteFiles``' `out` is (in a run: the topology's folder).
            An unknown field, or a template using none, is a ValueError in ``setup``.
            How many files it left out is in the attribute ``skipped``. Two files
            whose template names one path (``a.jpg`` and ``a.png`` with
            ``{relstem}.jpg``) can have only one output: a warning names them
            (``WriteFiles`` refuses the second of a run).

    Yields ``{"path": str, "size": int}`` where ``path`` is `root` joined with the file's
    path relative to it and ``size`` is in bytes. ``total()`` (and ``len()``) is the count.
    The directory is listed once, when ``total()`` or the iteration first needs it.

    Event ids are positions in this listing, so with `skip_existing` they change from run
    to run: do not combine it with ``sedamp run --resume``, which skips the positions the
    sinks held in the interrupted run (`skip_existing` does that job by itself).

    ``list_files = ListFiles`` is the same thing under a function-style name; both can be
    called with the params directly (``list_files(root="texts")``) or through ``setup``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        pattern: str | Sequence[str] = "*",
        recursive: bool = False,
        ignore_case: bool = False,
        skip_existing: str | None = None,
    ) -> None:
        self._files: list[dict[str, Any]] | None = None
        self.skipped = 0
        if root is not None:
            self.setup(root, pattern, recursive, ignore_case, skip_existing)

    def setup(
        self,
        root: str | os.PathLike[str],
        pattern: str | Sequence[str] = "*",
        recursive: bool = False,
        ignore_case: bool = False,
        skip_existing: str | None = None,
    ) -> None:
        root_str = os.fspath(root)
        where = ""
        if not os.path.isabs(root_str):
            where = f" (in {os.getcwd()}: relative paths of a topology are relative to its folder)"
        if not os.path.exists(root_str):
            raise ValueError(f"ListFiles: root {root_str!r} does not exist{where}")
        if not os.path.isdir(root_str):
            raise ValueError(f"ListFiles: root {root_str!r} is not a directory{where}")
        self.root = root_str
        if isinstance(pattern, str):
            patterns = [pattern]
        elif isinstance(pattern, list | tuple) and pattern and all(isinstance(p, str) for p in pattern):
            patterns = list(pattern)
        else:
            raise ValueError(f"ListFiles: pattern must be a pattern or a non-empty list of patterns, got {pattern!r}")
        self.pattern: str | list[str] = pattern if isinstance(pattern, str) else patterns
        self.ignore_case = _flag("ListFiles", "ignore_case", ignore_case)
        self._patterns = [p.lower() for p in patterns] if self.ignore_case else patterns
        self.recursive = _flag("ListFiles", "recursive", recursive)
        self.skip_existing = _skip_template(skip_existing)
        self._files = None
        self.skipped = 0

    def _matches(self, name: str) -> bool:
        key = name.lower() if self.ignore_case else name
        return any(fnmatchcase(key, p) for p in self._patterns)

    def _output_of(self, path: str) -> str | None:
        """The skip_existing template formatted for `path` (None without one)."""
        if self.skip_existing is None:
            return None
        rel = os.path.relpath(path, self.root).replace(os.sep, "/")
        name = os.path.basename(path)
        stem, suffix = os.path.splitext(name)
        fields = {"relpath": rel, "relstem": posixpath.splitext(rel)[0], "name": name, "stem": stem, "suffix": suffix}
        return self.skip_existing.format_map(fields)

    def _scan(self) -> list[dict[str, Any]]:
        if self._files is None:
            found: list[dict[str, Any]] = []
            skipped = 0
            outputs: dict[str, list[str]] = {}  # skip_existing path -> the files naming it
            for dirpath, dirnames, filenames in os.walk(self.root):
                if not self.recursive:
                    dirnames.clear()
                for name in filenames:
                    if not self._matches(name):
                        continue
                    path = os.path.join(dirpath, name)
                    try:
                        st = os.stat(path)  # follows symlinks: a link to a file counts
                    except OSError:  # vanished, or a dangling symlink
                        continue
                    if not os.path.isfile(path):
                        continue
                    output = self._output_of(path)
                    if output is not None:
                        outputs.setdefault(output, []).append(path)
                        if os.path.exists(output):
                            skipped += 1
                            continue
                    found.append({"path": path, "size": st.st_size})
            found.sort(key=lambda f: f["path"])
            self._files = found
            self.skipped = skipped
            _warn_shared(outputs)
        return self._files

    def total(self) -> int:
        return len(self._scan())

    def __len__(self) -> int:
        return self.total()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for f in self._scan():
            yield dict(f)


def _warn_shared(outputs: dict[str, list[str]]) -> None:
    """Warn once per output path that several listed files name (skip_existing)."""
    for output, paths in sorted(outputs.items()):
        if len(paths) > 1:
            shown = ", ".join(repr(p) for p in sorted(paths))
            log.warning(
                "ListFiles: %s all name the output %r (skip_existing): only one of them can be written "
                "(WriteFiles refuses the others); rename them, or keep their extensions in the output names",
                shown,
                output,
            )


def _skip_template(template: Any) -> str | None:
    """A ListFiles skip_existing template, checked: every field known, at least one."""
    if template is None:
        return None
    if not isinstance(template, str) or not template:
        raise ValueError(
            f"ListFiles: skip_existing must be a path template like 'out/{{relstem}}.jpg', got {template!r}"
        )
    try:
        used = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise ValueError(f"ListFiles: skip_existing {template!r} is not a valid template: {exc}") from None
    known = ", ".join("{" + f + "}" for f in SKIP_FIELDS)
    bad = [f for f in used if f not in SKIP_FIELDS]
    if bad:
        raise ValueError(f"ListFiles: skip_existing {template!r} has an unknown field {{{bad[0]}}}; use {known}")
    if not used:
        raise ValueError(
            f"ListFiles: skip_existing {template!r} uses no field, so it names one path for every file; "
            f"name each file's output with {known}"
        )
    return template


list_files = ListFiles


def read_text(event: dict[str, Any], encoding: str = "utf-8") -> dict[str, Any]:
    """Handler: ``{"path": str, ...}`` -> the same dict plus ``"text"``, the file's whole
    contents decoded with `encoding` (line endings kept as they are in the file).

    Raises ValueError naming the path if it cannot be read or decoded."""
    path, raw = _read("read_text", event)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(f"read_text: {path!r} is not valid {encoding} at byte {exc.start}: {exc.reason}") from exc
    return {**event, "text": text}


def read_bytes(event: dict[str, Any]) -> dict[str, Any]:
    """Handler: ``{"path": str, ...}`` -> the same dict plus ``"data"``, the file's whole
    contents as bytes.

    Raises ValueError naming the path if it cannot be read."""
    _, data = _read("read_bytes", event)
    return {**event, "data": data}


def _read(stage: str, event: Any) -> tuple[str, bytes]:
    """The path in `event` and the whole file's bytes; ValueError naming `stage` and path."""
    if not isinstance(event, dict) or not isinstance(event.get("path"), str):
        raise ValueError(f"{stage}: the event must be a dict with a str 'path' field")
    path = event["path"]
    try:
        return path, Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{stage}: cannot read {path!r}: {exc.strerror or exc}") from exc


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


class _Outputs:
    """The outputs written in this run and the input of each, shared by every process
    of the run: one file per output under ``<run dir>/outputs/``, named by a hash of the
    output's path and holding the input's name, made complete in one step (a link of a
    written temporary file), so two processes claiming one output cannot both succeed.
    Outside a run (`directory` None) this process's own claims are all there is."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.mine: dict[str, str] = {}  # output path -> input, without a run directory
        if directory is not None:
            try:
                directory.mkdir(mode=0o700, exist_ok=True)
            except OSError as exc:  # e.g. a cluster node that does not mount the run directory
                log.warning("WriteFiles: cannot make %s (%s): outputs are checked in this process only", directory, exc)
                self.directory = None

    def claim(self, dest: Path, source: str) -> str | None:
        """Claim `dest` for `source`. None when it is `source`'s (claimed now, or before
        by the same input: a retry, a redelivered event); else the input it belongs to."""
        key = os.path.join(os.path.realpath(dest.parent), dest.name)
        if self.directory is not None:
            owner = self._claim_shared(key, source)
        else:
            owner = self.mine.setdefault(key, source)
        return None if owner is None or owner == source else owner

    def _claim_shared(self, key: str, source: str) -> str | None:
        assert self.directory is not None
        path = self.directory / hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".claim.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(source)
            try:
                os.link(tmp, path)  # fails if another claimed it first: no check-then-write race
                return None
            except FileExistsError:
                return path.read_text(encoding="utf-8", errors="surrogateescape")
        finally:
            _unlink_quietly(tmp)


def _input_of(event: dict[str, Any], data: bytes) -> str:
    """What an output was made from: the event's ``source`` (``stages.images:Thumbnail``
    names it), else a digest of the data (the same data twice is no collision)."""
    source = event.get("source")
    if isinstance(source, str) and source:
        return source
    return "data sha256:" + hashlib.sha256(data).hexdigest()


def _collision(dest: Path, source: str, owner: str) -> ValueError:
    if source.startswith("data sha256:") or owner.startswith("data sha256:"):
        return ValueError(
            f"WriteFiles: two events of this run name one output {str(dest)!r} with different data; "
            "the first was kept and this one is not written (give each event its own name)"
        )
    return ValueError(
        f"WriteFiles: {source!r} and {owner!r} both name the output {str(dest)!r}; it is {owner!r}'s, "
        f"and {source!r} is not written (rename one, or keep the inputs' extensions in the output names: "
        "stages.images:Thumbnail keep_ext: true)"
    )


class WriteFiles:
    """Sink: writes each event's ``data`` to ``<out>/<name>`` atomically.

    Event ``{"name": str, "data": bytes | str, ...}``; a str is encoded with `encoding`.
    ``name`` may contain subdirectories (created as needed) but must not be absolute or
    contain ``..`` (ValueError), nor lead outside `out` through a symlink. An event
    naming an output that another input already has in this run is a ValueError
    naming both (see "One output, one input" in the module docstring); the input is
    the event's ``source`` when it has one (``Thumbnail`` gives it), else its data.

    Params
        out: the output directory, created in ``setup``.
        overwrite: replace an existing file (default). When False, an existing file is a
            ValueError and is left untouched (the check and the write are one atomic step).
        skip_existing: leave an existing file as it is and count the event as done (no
            error; counted in the attribute ``skipped``). Default false. Takes precedence
            over `overwrite`; the check and the write are one atomic step here too.
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
        skip_existing: bool = False,
    ) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._out_resolved = self.out.resolve()
        self.overwrite = _flag("WriteFiles", "overwrite", overwrite)
        self.fsync = _flag("WriteFiles", "fsync", fsync)
        self.encoding = encoding
        self.skip_existing = _flag("WriteFiles", "skip_existing", skip_existing)
        self.written = 0
        self.skipped = 0
        here = run_dir()
        self._outputs = _Outputs(here / OUTPUTS_DIR if here is not None else None)

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
        source = _input_of(event, data)
        owner = self._outputs.claim(dest, source)
        if owner is not None:
            raise _collision(dest, source, owner)
        if self.skip_existing:
            if os.path.lexists(dest) or not self._write_new(dest, data):
                self.skipped += 1
                return
        elif self.overwrite:
            atomic_write(dest, data, fsync=self.fsync)
        elif not self._write_new(dest, data):
            raise ValueError(f"WriteFiles: {str(dest)!r} already exists and overwrite is false")
        self.written += 1

    def _write_new(self, dest: Path, data: bytes) -> bool:
        """Write `dest` unless it exists; False, with nothing written, if it does."""
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
                return False
            except OSError:  # file systems without hard links
                if dest.exists():
                    return False
                os.replace(tmp, dest)
        finally:
            _unlink_quietly(tmp)
        if self.fsync:
            _fsync_dir(dest.parent)
        return True

    def teardown(self) -> None:
        pass

"""Shared-memory blocks: large buffers between processes of one host, written once.

A buffer of at least SHARE_BYTES in an event that leaves a process on a host with
``/dev/shm`` does not travel through the socket (where the kernel copies it in and out,
into fresh pages on both sides): the producer writes it into a block, a file in
``/dev/shm``, and the event's frame carries a *reference* (REF_MAGIC, the size, the
block's name). The consumer maps the block read-only and reads it in place. One copy
of the bytes in all.

Blocks are recycled, which is what makes them pay (fresh blocks were slower than
frames: their pages are new on both sides). A block is in one of three states, its
name saying which, and moves between them by `os.rename`, which is atomic, so no two
processes ever claim one block:

    sedamp-<run>-u<size>-<pid>-<n>   in use: an event names it (u: used)
    sedamp-<run>-f<size>-<pid>-<n>   free: any producer of the run may claim it
    sedamp-<run>-k<size>-<pid>-<n>   kept: the handler of consumer <pid> still holds an
                                     array over it after its event was acknowledged

- A producer claims a free block of the size class it needs (renaming it to a new
  used name), or makes one, and writes the buffer into it.
- The stage queue frees an event's blocks when the event is acknowledged (its worker
  is done with it and its outputs are delivered); until then the event can be leased
  again, after its worker dies, and its blocks are still there. A block is renamed to
  free, or removed when the run's free blocks already hold FREE_BYTES.
- A consumer closes its mapping before it acknowledges. If its handler kept an array
  over the block (a sink collecting arrays for `finish()`), the mapping cannot close;
  the block is renamed to kept, so the queue's free finds nothing, and the consumer
  frees it when the array is gone, or removes it when it exits; if it dies, the
  controller removes the blocks it kept (`drop_kept`).
- The controller removes every block of its run when the run ends; a run that did not
  end (kill -9 of the controller) leaves blocks named after a process that is gone, and
  the next run, or `sedamp clean`, removes them (`sweep_stale`).

A name's <run> is the controller's pid and start time (`run_token`), so a reused pid
is not taken for a live run. Reads: /dev/shm. Writes: blocks in /dev/shm.
"""

from __future__ import annotations

import itertools
import logging
import mmap
import os
import re
import struct
from typing import Any

log = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"
# The environment variable that turns blocks off ("0") or sets their threshold.
ENV = "SEDAMP_SHARED_MEMORY"
# Buffers of at least this many bytes go through a block. Measured on 2 cores against
# frames (scripts/measure_shm.py): recycled blocks moved 4 MB arrays at 1.35x the rate
# of frames and 48 MB ones at 2.3x; at 1 MB the two were level, and a block costs a
# rename and a mapping per event, so smaller buffers stay frames.
SHARE_BYTES = 4 * 1024 * 1024
# The most bytes of free blocks a run keeps for reuse; a block freed beyond it is
# removed. Pages of a free block are memory (tmpfs) even while no one maps them.
FREE_BYTES = 256 * 1024 * 1024
# A reference frame: magic, size (8 bytes, little-endian), name. Data frames are at
# least payload.OOB_BYTES (64 KiB) long, so a short frame with the magic is a reference.
REF_MAGIC = b"\x00sedamp-block\x00"
_REF_MAX = 256
_NAME = re.compile(r"sedamp-([0-9]+)\.([0-9a-f]+)-([ufk])([0-9a-f]+)-([0-9]+)-([0-9]+)\Z")


class BlockError(ValueError):
    """A reference names no block of this run, or a block that is gone."""


def available() -> bool:
    """True where blocks can be used: a writable /dev/shm (Linux)."""
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


def run_token(pid: int | None = None) -> str:
    """The <run> part of the names of a run's blocks: the controller's pid and start
    time in centiseconds (so that a later process with the same pid is not this run)."""
    import psutil

    p = psutil.Process(pid)
    return f"{p.pid}.{int(p.create_time() * 100):x}"


def size_class(nbytes: int) -> int:
    """The block size a buffer of `nbytes` goes in: the smallest 2^k or 1.5 x 2^k that
    holds it (at most a third is unused; tmpfs gives pages only where written)."""
    k = max(nbytes - 1, 1).bit_length()
    half = 3 << (k - 2) if k >= 2 else 2
    return half if half >= nbytes else 1 << k


def is_ref(frame: Any) -> bool:
    """True for a reference frame (see REF_MAGIC)."""
    try:
        view = memoryview(frame)
    except TypeError:
        return False
    return view.nbytes < _REF_MAX and view[: len(REF_MAGIC)] == REF_MAGIC


def ref_nbytes(frame: Any) -> int:
    """The size of the buffer a reference frame stands for."""
    at = len(REF_MAGIC)
    return int(struct.unpack_from("<Q", memoryview(frame), at)[0])


def _ref_name(frame: Any) -> str:
    return bytes(memoryview(frame)[len(REF_MAGIC) + 8 :]).decode("ascii", "replace")


def _ref(name: str, nbytes: int) -> bytes:
    return REF_MAGIC + struct.pack("<Q", nbytes) + name.encode("ascii")


class Blocks:
    """One process's side of the run's blocks (`token`: `run_token` of its controller)."""

    def __init__(self, token: str, directory: str = SHM_DIR) -> None:
        self.token = token
        self.dir = directory
        self.prefix = f"sedamp-{token}-"
        self._n = itertools.count()
        self.opened: list[tuple[str, mmap.mmap]] = []  # mapped by `open` since `take_opened`
        self.kept: list[tuple[str, mmap.mmap]] = []  # kept blocks with their mapping
        self.held: dict[Any, list[tuple[str, mmap.mmap]]] = {}  # mappings by the lease they came in
        self.shared = 0  # buffers written into blocks
        self.reused = 0  # of them, into a recycled block
        self.share_bytes = SHARE_BYTES  # buffers from this size up go through blocks
        self.failed = 0  # buffers that could not be written into a block (sent as frames)

    def _name(self, state: str, size: int) -> str:
        return f"{self.prefix}{state}{size:x}-{os.getpid()}-{next(self._n)}"

    # ------------------------------------------------------------ producer

    def share(self, buf: Any) -> bytes:
        """Write `buf` into a block (a recycled one if any is free) and return the
        reference frame that stands for it."""
        view = memoryview(buf).cast("B")
        nbytes = view.nbytes
        size = size_class(nbytes)
        name = self._name("u", size)
        fd = self._claim(size, name)
        try:
            done = 0
            while done < nbytes:
                done += os.pwrite(fd, view[done:], done)
        except OSError:
            _unlink(os.path.join(self.dir, name))  # /dev/shm is full: the caller sends a frame
            raise
        finally:
            os.close(fd)
        self.shared += 1
        return _ref(name, nbytes)

    def _claim(self, size: int, name: str) -> int:
        """An open descriptor of a block of `size` now called `name`: a free one
        renamed, else a new one."""
        free = f"{self.prefix}f{size:x}-"
        path = os.path.join(self.dir, name)
        with os.scandir(self.dir) as it:
            candidates = [e.name for e in it if e.name.startswith(free)]
        for cand in candidates:
            try:
                os.rename(os.path.join(self.dir, cand), path)
            except FileNotFoundError:
                continue  # another producer claimed it first
            self.reused += 1
            return os.open(path, os.O_RDWR)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        return fd

    # ------------------------------------------------------------ consumer

    def open(self, frame: Any) -> memoryview:
        """The bytes a reference frame names, mapped read-only (no copy). The mapping
        is remembered (`take_opened`) so that it can be closed once the event is done."""
        name = _ref_name(frame)
        nbytes = ref_nbytes(frame)
        if not name.startswith(self.prefix) or _NAME.match(name) is None:
            raise BlockError(f"a reference to {name!r}, which is not a block of this run")
        try:
            fd = os.open(os.path.join(self.dir, name), os.O_RDONLY)
        except FileNotFoundError:
            raise BlockError(f"block {name!r} is gone (its event was acknowledged already)") from None
        try:
            if os.fstat(fd).st_size < nbytes:
                raise BlockError(f"block {name!r} is smaller than the {nbytes} bytes its reference says")
            if nbytes == 0:
                return memoryview(b"")
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            m = mmap.mmap(fd, nbytes, flags=flags, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self.opened.append((name, m))
        return memoryview(m)

    def take_opened(self) -> list[tuple[str, mmap.mmap]]:
        """The mappings made since the last call (those of one batch)."""
        out, self.opened = self.opened, []
        return out

    def hold(self, lease: Any) -> None:
        """The mappings made since the last call belong to `lease` (a batch just decoded)."""
        maps = self.take_opened()
        if maps:
            self.held[lease] = maps

    def done(self, lease: Any) -> None:
        """`lease` is about to be acknowledged: `settle` its mappings."""
        maps = self.held.pop(lease, None)
        if maps:
            self.settle(maps)

    def settle(self, maps: list[tuple[str, mmap.mmap]]) -> None:
        """Close the mappings of an event that is done, before it is acknowledged. A
        block whose mapping a handler still holds (an array over it) is renamed to kept,
        so that the queue's free does not hand it to a producer; it is freed here later,
        once nothing holds it (`settle` and `close` look again)."""
        for name, m in maps:
            try:
                m.close()
            except BufferError:
                size = int(name[len(self.prefix) + 1 :].split("-")[0], 16)
                kept = self._name("k", size)  # named after this process, the one keeping it
                try:
                    os.rename(os.path.join(self.dir, name), os.path.join(self.dir, kept))
                except FileNotFoundError:
                    log.warning("block %s was freed while a handler still held an array over it", name)
                    continue
                self.kept.append((kept, m))
        if self.kept:
            self._free_kept(remove=False)

    def _free_kept(self, remove: bool) -> None:
        still = []
        for name, m in self.kept:
            try:
                m.close()
            except BufferError:
                if not remove:
                    still.append((name, m))
                    continue
            if remove:
                _unlink(os.path.join(self.dir, name))
            else:
                self._release(name)
        self.kept = still

    def close(self) -> None:
        """At exit: close what is still mapped and remove the kept blocks."""
        for _name, m in self.take_opened() + [x for maps in self.held.values() for x in maps]:
            try:
                m.close()
            except BufferError:
                pass
        self._free_kept(remove=True)

    # ------------------------------------------------------------ queue

    def free(self, frames: list[Any]) -> int:
        """Free the blocks the reference frames among `frames` name (an acknowledged
        event's buffers); returns how many were freed. A block already kept or gone is
        skipped."""
        freed = 0
        for f in frames:
            if is_ref(f):
                name = _ref_name(f)
                if name.startswith(self.prefix) and _NAME.match(name) and name[len(self.prefix)] == "u":
                    freed += self._release(name)
        return freed

    def _release(self, name: str) -> int:
        """Rename an in-use or kept block to free, or remove it when the run's free
        blocks already hold FREE_BYTES."""
        m = _NAME.match(name)
        if m is None:
            return 0
        size = int(m.group(4), 16)
        path = os.path.join(self.dir, name)
        try:
            if self._free_bytes() + size > FREE_BYTES:
                os.unlink(path)
            else:
                os.rename(path, os.path.join(self.dir, self._name("f", size)))
        except FileNotFoundError:
            return 0
        return 1

    def _free_bytes(self) -> int:
        free = f"{self.prefix}f"
        total = 0
        with os.scandir(self.dir) as it:
            for e in it:
                if e.name.startswith(free):
                    m = _NAME.match(e.name)
                    total += int(m.group(4), 16) if m else 0
        return total


def sweep(token: str, directory: str = SHM_DIR) -> int:
    """Remove every block of the run `token` (at its end); returns how many."""
    prefix = f"sedamp-{token}-"
    return _remove(directory, lambda name: name.startswith(prefix))


def drop_kept(token: str, pid: int, directory: str = SHM_DIR) -> int:
    """Remove the blocks worker `pid` kept, once it has died (its arrays died with it);
    returns how many. The events of blocks it was reading are still in their queue."""
    kept = f"sedamp-{token}-k"

    def theirs(name: str) -> bool:
        m = _NAME.match(name)
        return name.startswith(kept) and m is not None and m.group(5) == str(pid)

    return _remove(directory, theirs)


def sweep_stale(directory: str = SHM_DIR) -> int:
    """Remove the blocks of runs whose controller is gone (killed, so it could not
    sweep its own); returns how many."""
    if not os.path.isdir(directory):
        return 0
    live: dict[str, bool] = {}

    def stale(name: str) -> bool:
        m = _NAME.match(name)
        if m is None:
            return False
        token = f"{m.group(1)}.{m.group(2)}"
        if token not in live:
            live[token] = _alive(token)
        return not live[token]

    return _remove(directory, stale)


def held_bytes(controller_pid: int, directory: str = SHM_DIR) -> int:
    """The memory the blocks of the run of `controller_pid` take in /dev/shm (pages
    written, free blocks included): what a measure of the run's memory adds to the
    RSS of its processes."""
    prefix = f"sedamp-{controller_pid}."
    total = 0
    try:
        with os.scandir(directory) as it:
            for e in it:
                if e.name.startswith(prefix):
                    try:
                        total += e.stat().st_blocks * 512
                    except FileNotFoundError:
                        pass
    except OSError:
        return 0
    return total


def _alive(token: str) -> bool:
    import psutil

    try:
        return run_token(int(token.split(".")[0])) == token
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # not ours to look at: taken for alive
        return True


def _remove(directory: str, which: Any) -> int:
    n = 0
    try:
        with os.scandir(directory) as it:
            names = [e.name for e in it if e.name.startswith("sedamp-") and which(e.name)]
    except OSError:
        return 0
    for name in names:
        n += _unlink(os.path.join(directory, name))
    return n


def _unlink(path: str) -> int:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return 1


def usable(token: str | None) -> Blocks | None:
    """This process's Blocks for run `token`, or None when the run uses none (no token:
    another executor, or blocks turned off) or this host has no /dev/shm. The
    environment's SEDAMP_SHARED_MEMORY may set the threshold (`threshold`)."""
    if not token or not available():
        return None
    b = Blocks(token)
    b.share_bytes = threshold(os.environ.get(ENV, ""))
    return b


def threshold(setting: str) -> int:
    """SHARE_BYTES, or the size SEDAMP_SHARED_MEMORY gives (``8MiB``, ``65536``): buffers
    from that size up go through blocks ("0" turns blocks off before a run starts)."""
    m = re.fullmatch(r"\s*([0-9]+)\s*(KiB|MiB|GiB)?\s*", setting)
    if m is None or int(m.group(1)) == 0:
        return SHARE_BYTES
    return int(m.group(1)) * {None: 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m.group(2)]

"""Shared-memory blocks: large buffers between processes of one host, written once.

A buffer of at least SHARE_BYTES in an event that leaves a process on a host with
``/dev/shm`` does not travel through the socket (where the kernel copies it in and out,
into fresh pages on both sides): the producer writes it into a block, a file in
``/dev/shm``, and the event's frame carries a *reference* (REF_MAGIC, the size, the
block's name). The consumer maps the block read-only and reads it in place. One copy
of the bytes in all.

Blocks are recycled, which is what makes them pay (fresh blocks were slower than
frames: their pages are new on both sides). A block's names say its state, and it
moves between them by `os.rename`, which is atomic, so no two processes ever claim one
block:

    sedamp-<run>-u<size>-<pid>-<n>   in use: an event names it (u: used)
    sedamp-<run>-f<size>-<pid>-<n>   free: any producer of the run may claim it
    sedamp-<run>-k<size>-<pid>-<n>   kept: the handler of consumer <pid> still holds an
                                     array over it after its event was acknowledged

- A producer claims a free block of the size class it needs (renaming it to a new
  used name), or makes one, and writes the buffer into it.
- The stage queue frees an event's blocks when it accepts the event's ACK (its worker
  is done with it and its outputs are delivered); until then the event can be leased
  again, after its worker dies, and its blocks are still there. A block is renamed to
  free, or removed when the run's free blocks would hold more than FREE_BYTES. The
  blocks of an event whose lease expired are never freed during the run: the worker
  the lease was taken from may still be reading them.
- A consumer closes its mapping before it acknowledges. If its handler kept an array
  over the block (a sink collecting arrays for `finish()`), the mapping cannot close:
  the consumer gives the block a second, kept name (a hard link), so that the queue's
  free removes only the in-use name and the pages live on under the kept one. The
  consumer frees it when the array is gone (it looks at every batch), or removes it
  when it exits; if it dies, the controller removes the blocks it kept (`drop_kept`).
  A block with two names is never recycled, only unnamed.
- The controller removes every block of its run when the run ends; a run that did not
  end (kill -9 of the controller) leaves blocks named after a process that is gone, and
  the next run, or `sedamp clean`, removes them (`sweep_stale`).

A name's <run> is the controller's pid, its start (clock ticks since boot, which a
change of the wall clock does not move) and a random part (`run_token`): a reused pid
is not taken for a live run, and two runs in one process are apart. Reads and writes
blocks in /dev/shm; removes only the user's own.
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
# frames between two processes (scripts/measure_shm.py): these blocks moved 4 MB arrays
# at 1.9x the rate of frames and 48 MB ones at 3.4x; at 1 MB recycled blocks and frames
# were level, and a block costs a rename, a scan and a mapping per buffer, so smaller
# buffers stay frames.
SHARE_BYTES = 4 * 1024 * 1024
# The most bytes of free blocks a run keeps for reuse; a block freed beyond it is
# removed. Pages of a free block are memory (tmpfs) even while no one maps them.
FREE_BYTES = 256 * 1024 * 1024
# A reference frame: magic, size (8 bytes, little-endian), name. Data frames are at
# least payload.OOB_BYTES (64 KiB) long, so a short frame with the magic is a reference.
REF_MAGIC = b"\x00sedamp-block\x00"
_REF_MAX = 256
_REF_MIN = len(REF_MAGIC) + 8 + len("sedamp-")
# sedamp-<pid>.<start>.<nonce>-<state><size>-<pid>-<n>
_NAME = re.compile(r"sedamp-([0-9]+)\.([0-9a-f]+)\.([0-9a-f]+)-([ufk])([0-9a-f]+)-([0-9]+)-([0-9a-f]+)\Z")
_STATE, _SIZE, _PID = 4, 5, 6  # groups of _NAME


class BlockError(ValueError):
    """A reference names no block of this run, or a block that is gone."""


def available() -> bool:
    """True where blocks can be used: a writable /dev/shm (Linux)."""
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


def run_token(pid: int | None = None) -> str:
    """The <run> part of the names of a run's blocks: the controller's pid, its start
    and a random part (see the module's docstring)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}.{_start_of(pid):x}.{os.urandom(4).hex()}"


def _start_of(pid: int) -> int:
    """When process `pid` started, in clock ticks since boot (Linux /proc), else its
    start time in centiseconds. Raises ProcessLookupError when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    except OSError:
        import psutil

        try:
            return int(psutil.Process(pid).create_time() * 100)
        except psutil.NoSuchProcess:
            raise ProcessLookupError(pid) from None
    return int(stat[stat.rindex(b")") + 2 :].split()[19])  # field 22, starttime


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
    return _REF_MIN <= view.nbytes < _REF_MAX and view[: len(REF_MAGIC)] == REF_MAGIC


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
        self._nonce = os.urandom(4).hex()  # names stay unique if this pid is reused
        self.opened: list[tuple[str, mmap.mmap]] = []  # mapped by `open` since `take_opened`
        self.kept: list[tuple[str, mmap.mmap]] = []  # kept blocks with their mapping
        self.held: dict[Any, list[tuple[str, mmap.mmap]]] = {}  # mappings by the lease they came in
        self.reused = 0  # buffers written into a recycled block
        self.share_bytes = SHARE_BYTES  # buffers from this size up go through blocks
        self.failed = 0  # buffers that could not be written into a block (sent as frames)

    def _name(self, state: str, size: int) -> str:
        return f"{self.prefix}{state}{size:x}-{os.getpid()}-{self._nonce}{next(self._n):x}"

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
        if self.kept:
            self._free_kept(remove=False)  # a handler may have let go of a kept array

    def done(self, lease: Any) -> None:
        """`lease` is about to be acknowledged: `settle` its mappings."""
        maps = self.held.pop(lease, None)
        if maps:
            self.settle(maps)

    def settle(self, maps: list[tuple[str, mmap.mmap]]) -> None:
        """Close the mappings of an event that is done, before it is acknowledged. A
        block whose mapping a handler still holds (an array over it) gets a kept name
        as well, so that the queue's free only unnames it and no producer gets its
        pages; it is freed here later, once nothing holds it."""
        for name, m in maps:
            try:
                m.close()
            except BufferError:
                m_ = _NAME.match(name)
                kept = self._name("k", int(m_.group(_SIZE), 16) if m_ else 0)  # named after this process
                try:
                    os.link(os.path.join(self.dir, name), os.path.join(self.dir, kept))
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

    def free(self, frames: list[Any], unsafe: set[bytes] | frozenset[bytes] = frozenset()) -> int:
        """Free the blocks the reference frames among `frames` name (an acknowledged
        event's buffers) but those in `unsafe`; returns how many were freed. A block
        already gone is skipped."""
        freed = 0
        for f in frames:
            if is_ref(f) and not (unsafe and bytes(f) in unsafe):
                name = _ref_name(f)
                m = _NAME.match(name)
                if name.startswith(self.prefix) and m is not None and m.group(_STATE) == "u":
                    freed += self._release(name)
        return freed

    def _release(self, name: str) -> int:
        """Take `name` off a block: rename it to free, or only remove the name when the
        block has another (a consumer keeps it) or the run's free blocks would hold more
        than FREE_BYTES (those of other sizes go first)."""
        m = _NAME.match(name)
        if m is None:
            return 0
        size = int(m.group(_SIZE), 16)
        path = os.path.join(self.dir, name)
        try:
            if os.stat(path).st_nlink > 1 or not self._room(size):
                os.unlink(path)
            else:
                os.rename(path, os.path.join(self.dir, self._name("f", size)))
        except FileNotFoundError:
            return 0
        return 1

    def _room(self, size: int) -> bool:
        """Whether a free block of `size` fits in FREE_BYTES, after removing free blocks
        of other sizes if need be (the pool follows the sizes in use)."""
        free = f"{self.prefix}f"
        with os.scandir(self.dir) as it:
            names = [e.name for e in it if e.name.startswith(free)]
        pool = [(name, int(m.group(_SIZE), 16)) for name in names if (m := _NAME.match(name))]
        total = sum(n for _, n in pool)
        for name, n in pool:
            if total + size <= FREE_BYTES:
                break
            if n != size:
                total -= n * _unlink(os.path.join(self.dir, name))
        return total + size <= FREE_BYTES


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
        return name.startswith(kept) and m is not None and m.group(_PID) == str(pid)

    return _remove(directory, theirs)


def sweep_stale(directory: str = SHM_DIR) -> int:
    """Remove the blocks of runs whose controller is gone (killed, so it could not
    sweep its own); returns how many."""
    if not os.path.isdir(directory):
        return 0
    live: dict[tuple[str, str], bool] = {}

    def stale(name: str) -> bool:
        m = _NAME.match(name)
        if m is None:
            return False
        key = (m.group(1), m.group(2))
        if key not in live:
            live[key] = _alive(int(key[0]), int(key[1], 16))
        return not live[key]

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


def _alive(pid: int, start: int) -> bool:
    try:
        return _start_of(pid) == start
    except ProcessLookupError:
        return False
    except Exception:  # not ours to look at: taken for alive
        return True


def _remove(directory: str, which: Any) -> int:
    """Remove this user's blocks in `directory` that `which` names; returns how many."""
    uid = os.getuid()
    names = []
    try:
        with os.scandir(directory) as it:
            for e in it:
                if e.name.startswith("sedamp-") and which(e.name):
                    try:
                        if e.stat(follow_symlinks=False).st_uid == uid:
                            names.append(e.name)
                    except OSError:
                        pass
    except OSError:
        return 0
    return sum(_unlink(os.path.join(directory, name)) for name in names)


def _unlink(path: str) -> int:
    try:
        os.unlink(path)
    except OSError:  # gone already, or not ours
        return 0
    return 1


def usable(token: str | None) -> Blocks | None:
    """This process's Blocks for run `token`, or None when the run uses none (no token:
    another executor, or blocks turned off) or this host has no /dev/shm. The
    environment's SEDAMP_SHARED_MEMORY may set the threshold (`threshold`)."""
    if not token or not available():
        return None
    b = Blocks(token)
    b.share_bytes = threshold(os.environ.get(ENV, "")) or SHARE_BYTES
    return b


_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}


def threshold(setting: str) -> int:
    """What SEDAMP_SHARED_MEMORY says: 0 for off (``0``, ``off``, ``false``, ``no``), the
    size from which buffers go through blocks (``8MiB``, ``65536``), or SHARE_BYTES when
    it is unset or not understood (with a warning)."""
    text = setting.strip().lower()
    if not text:
        return SHARE_BYTES
    if text in ("off", "false", "no"):
        return 0
    m = re.fullmatch(r"([0-9]+)\s*([a-z]*)", text)
    if m is None or m.group(2) not in _UNITS:
        log.warning("%s=%r is not a size or 'off': buffers from %d bytes go through blocks", ENV, setting, SHARE_BYTES)
        return SHARE_BYTES
    return int(m.group(1)) * _UNITS[m.group(2)]

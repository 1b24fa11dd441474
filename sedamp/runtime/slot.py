"""What a worker is doing right now, in shared memory the controller can read.

Each worker has a slot: a few numbers in a small file in the run's private socket
directory, mapped by both the worker and the controller.

- ``lease``: the lease whose batch it is handling (-1 between batches, IN_USER_CODE
  during setup, finish and teardown);
- ``position``: the index in that batch of the event in the handler (-1 unknown);
- ``deadline``: with ``timeout_s``, when the current handler call must be over
  (system-wide monotonic clock; 0.0 when none);
- ``since``: when the batch in hand was taken (the same clock; 0.0 between batches), so
  that the controller counts a batch longer than its period as busy time while it runs,
  not only once it is done;
- ``busy``: the seconds spent on the batches done so far, written as each one ends, so
  that the controller reads a worker's busy time as it accrues rather than once a
  period in its STATS (which left a pool's first period reading idle);
- per kind of wait (BLOCKED: no credit downstream for what it has to send; WAITING:
  nothing to handle), the seconds spent in the waits that ended and the start of the
  one in progress (0.0: none), so that a wait counts as it accrues, in every period it
  spans (`Waits` keeps them; a source has a slot for these alone).

A handler stuck in a loop, in C code holding the GIL, or in a blocking call cannot
answer a message, but it cannot stop the controller from reading memory. The controller
reads the deadline every period and kills an overdue worker; when any worker dies it
reads lease and position, so the queue knows which one event was in the handler:
that event alone is suspect (`sedamp.runtime.flow`), not its whole batch.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import time
from pathlib import Path

from sedamp.errors import StorageError

# `lease` while the worker runs setup, finish or teardown: no batch, but user code that
# may run long without a heartbeat
IN_USER_CODE = -2

_LAYOUT = struct.Struct("dqqd")  # deadline, lease, position, since
_DEADLINE = struct.Struct("d")  # at offset 0
_POSITION = struct.Struct("q")  # at offset 16
# Kinds of wait. BLOCKED: what it has to send waits for credit from a downstream queue.
# WAITING: it has nothing to handle (a source: it is inside its iterator, which cannot
# tell reading from waiting for its input).
BLOCKED = 0
WAITING = 1
_WAITS = struct.Struct("dddd")  # per kind: seconds in waits that ended, start of the one in progress
_WAITS_AT = _LAYOUT.size
_SECONDS = struct.Struct("d")
_BUSY_AT = _WAITS_AT + _WAITS.size
_SIZE = _BUSY_AT + _SECONDS.size


class Slot:
    """A worker's slot; `create` makes its file (the controller, before starting the
    worker), which raises StorageError when the disk has no room for it."""

    def __init__(self, path: str | Path, create: bool = False) -> None:
        self.path = str(path)
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0), 0o600)
            try:
                if create:
                    # written, not ftruncate'd: a sparse file on a full tmpfs maps fine,
                    # then the first store into it kills the process with SIGBUS
                    blank = _LAYOUT.pack(0.0, -1, -1, 0.0) + _WAITS.pack(0.0, 0.0, 0.0, 0.0) + _SECONDS.pack(0.0)
                    if os.pwrite(fd, blank, 0) < _SIZE:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self._mm = mmap.mmap(fd, _SIZE)
            finally:
                os.close(fd)
        except OSError as exc:
            if not create:
                raise
            raise StorageError.of("a worker's slot", path, exc) from exc
        self.timeout_s: float | None = None  # set by the worker of a stage with timeout_s
        self._position: memoryview | None = None

    # ------------------------------------------------------------ worker side

    def begin(self, lease: int) -> None:
        _LAYOUT.pack_into(self._mm, 0, 0.0, lease, -1, time.monotonic() if lease >= 0 else 0.0)

    @property
    def position(self) -> memoryview:
        """The position field as a one-item int64 view: ``slot.position[0] = i`` is the
        cheapest way to note the event in the handler (no call, no packing)."""
        if self._position is None:
            self._position = memoryview(self._mm)[16:24].cast("q")
        return self._position

    def at(self, position: int, n: int = 1) -> None:
        """The handler is about to be called on event `position` (and `n` events from
        there, for a class's own handle_batch)."""
        _POSITION.pack_into(self._mm, 16, position)
        if self.timeout_s:
            _DEADLINE.pack_into(self._mm, 0, time.monotonic() + self.timeout_s * n)

    def pause(self) -> None:
        """Not in a handler call (e.g. sleeping before a retry): no deadline."""
        _DEADLINE.pack_into(self._mm, 0, 0.0)

    def end(self, busy_s: float | None = None) -> None:
        """Between batches; `busy_s`: all the time spent on batches so far, this one's
        included. The batch's start is cleared first: a reader in between misses the
        batch (counted in its next period), never counts it twice."""
        _LAYOUT.pack_into(self._mm, 0, 0.0, -1, -1, 0.0)
        if busy_s is not None:
            _SECONDS.pack_into(self._mm, _BUSY_AT, busy_s)

    def wait_begin(self, kind: int, t: float) -> None:
        """A wait of `kind` (BLOCKED, WAITING) began at `t` (monotonic clock)."""
        _SECONDS.pack_into(self._mm, _WAITS_AT + 16 * kind + 8, t)

    def wait_end(self, kind: int, total_s: float) -> None:
        """The wait in progress ended; `total_s`: all the waits of `kind` so far. The
        start is cleared first: a reader in between sees the wait missing (counted in
        its next period), never counted twice."""
        _SECONDS.pack_into(self._mm, _WAITS_AT + 16 * kind + 8, 0.0)
        _SECONDS.pack_into(self._mm, _WAITS_AT + 16 * kind, total_s)

    # ------------------------------------------------------------ controller side

    def read(self) -> tuple[float, int, int]:
        deadline, lease, position, _ = _LAYOUT.unpack_from(self._mm, 0)
        return deadline, lease, position

    def in_batch_s(self, now: float | None = None) -> float:
        """How long the worker has been on the batch in hand (0.0 between batches)."""
        since = _LAYOUT.unpack_from(self._mm, 0)[3]
        return max(0.0, (time.monotonic() if now is None else now) - since) if since > 0.0 else 0.0

    def busy_s(self) -> float:
        """Seconds spent on the batches done so far (the one in hand: `in_batch_s`)."""
        return float(_SECONDS.unpack_from(self._mm, _BUSY_AT)[0])

    def waits(self, now: float | None = None) -> tuple[float, float]:
        """Seconds spent blocked and waiting so far, the wait in progress up to `now`."""
        t = time.monotonic() if now is None else now
        blocked, blocked_at, waiting, waiting_at = _WAITS.unpack_from(self._mm, _WAITS_AT)
        if blocked_at > 0.0:
            blocked += max(0.0, t - blocked_at)
        if waiting_at > 0.0:
            waiting += max(0.0, t - waiting_at)
        return blocked, waiting

    def overdue(self, now: float | None = None) -> float:
        """Seconds past the deadline (0.0 when none is set or it has not passed)."""
        deadline = self.read()[0]
        if deadline <= 0.0:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - deadline)

    def close(self) -> None:
        if self._position is not None:
            self._position.release()
            self._position = None
        self._mm.close()

    def discard(self) -> None:
        """Close it and remove its file (the controller, once the worker is gone)."""
        self.close()
        Path(self.path).unlink(missing_ok=True)


class Waits:
    """A process's seconds blocked and waiting (BLOCKED, WAITING), for its STATS, and
    published in its slot as they accrue (when it has one). Around a wait that happens
    anyway: one clock read as it begins, one as it ends; nothing for a wait not counted."""

    def __init__(self, slot: Slot | None) -> None:
        self.slot = slot
        self.total_s = [0.0, 0.0]  # by kind
        self.kind: int | None = None  # of the wait in progress (None: none, or not counted)
        self.since = 0.0  # when it began (monotonic clock)

    @property
    def blocked_s(self) -> float:
        return self.total_s[BLOCKED]

    @property
    def waiting_s(self) -> float:
        return self.total_s[WAITING]

    def begin(self, kind: int | None) -> None:
        """A wait of `kind` begins now (None: a wait not counted)."""
        self.kind = kind
        if kind is not None:
            self.since = time.monotonic()
            if self.slot is not None:
                self.slot.wait_begin(kind, self.since)

    def end(self, now: float | None = None) -> None:
        """The wait in progress ends now (or at `now`)."""
        kind = self.kind
        if kind is None:
            return
        self.kind = None
        t = time.monotonic() if now is None else now
        total = self.total_s[kind] = self.total_s[kind] + max(0.0, t - self.since)
        if self.slot is not None:
            self.slot.wait_end(kind, total)

"""What a worker is doing right now, in shared memory the controller can read.

Each worker has a slot: three numbers in a small file in the run's private socket
directory, mapped by both the worker and the controller.

- ``lease``: the lease whose batch it is handling (-1 between batches, IN_USER_CODE
  during setup, finish and teardown);
- ``position``: the index in that batch of the event in the handler (-1 unknown);
- ``deadline``: with ``timeout_s``, when the current handler call must be over
  (system-wide monotonic clock; 0.0 when none);
- ``since``: when the batch in hand was taken (the same clock; 0.0 between batches), so
  that the controller counts a batch longer than its period as busy time while it runs,
  not only once it is done.

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
                    if os.pwrite(fd, _LAYOUT.pack(0.0, -1, -1, 0.0), 0) < _LAYOUT.size:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self._mm = mmap.mmap(fd, _LAYOUT.size)
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

    def end(self) -> None:
        _LAYOUT.pack_into(self._mm, 0, 0.0, -1, -1, 0.0)

    # ------------------------------------------------------------ controller side

    def read(self) -> tuple[float, int, int]:
        deadline, lease, position, _ = _LAYOUT.unpack_from(self._mm, 0)
        return deadline, lease, position

    def in_batch_s(self, now: float | None = None) -> float:
        """How long the worker has been on the batch in hand (0.0 between batches)."""
        since = _LAYOUT.unpack_from(self._mm, 0)[3]
        return max(0.0, (time.monotonic() if now is None else now) - since) if since > 0.0 else 0.0

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

"""The executor seam: where runtime processes run. The controller asks an executor to
`start` a role with its config and gets back a `Proc` handle: pid, a sentinel file
descriptor that becomes readable when the process ends (so the controller notices a
death at once, beside its sockets), the exit code, terminate/kill, and for a worker
on another host the view of its slot (what it is handling, its deadline). `close` ends
whatever the executor itself runs. `sedamp.executor.local.LocalExecutor` runs processes
on this machine, `sedamp.executor.ray.RayExecutor` on a Ray cluster; a fake that
implements these two protocols drives the controller's roster in unit tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class SlotView(Protocol):
    """What a worker is doing: `sedamp.runtime.slot.Slot`, mapped by the controller, or
    the image of one on another host that its executor keeps up to date."""

    def read(self) -> tuple[float, int, int]:
        """(deadline on this machine's monotonic clock or 0.0, lease, position)"""
        ...

    def overdue(self, now: float | None = None) -> float: ...
    def in_batch_s(self, now: float | None = None) -> float:
        """How long the worker has been on the batch in hand (0.0 between batches)."""
        ...

    def busy_s(self) -> float | None:
        """Seconds it has spent on the batches done so far (None: not known here; its
        STATS say)."""
        ...

    def waits(self, now: float | None = None) -> tuple[float, float] | None:
        """Seconds it has spent blocked and waiting so far, the wait in progress
        included (None: not known here; its STATS say)."""
        ...

    def close(self) -> None: ...
    def discard(self) -> None: ...


class Proc(Protocol):
    name: str
    # on this machine: psutil can read its pid
    local: bool
    # it could not be started at all, and a replacement would fail the same way
    unplaceable: bool

    @property
    def reason(self) -> str | None:
        """Why it ended, when the executor knows better than its exit code (a lost node,
        the local launcher that died under it)."""
        ...

    @property
    def pending(self) -> bool:
        """Started but not yet running: a cluster executor is still placing it."""
        ...

    @property
    def slot(self) -> SlotView | None:
        """A worker's slot as its executor reads it where the worker runs; None: the
        controller maps the slot file it made itself."""
        ...

    @property
    def pid(self) -> int: ...
    @property
    def sentinel(self) -> int: ...
    @property
    def exitcode(self) -> int | None: ...
    def is_alive(self) -> bool: ...
    def terminate(self) -> None: ...
    def interrupt(self) -> None:
        """Ask a worker to stop at once, unwinding user code first (its cleanup runs);
        `kill` follows for one that does not go."""
        ...

    def kill(self) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...


class Executor(Protocol):
    # may place processes on other hosts: the run's sockets must then be tcp
    remote: bool

    def start(self, name: str, role: str, config: Any) -> Proc: ...
    def start_many(self, requests: Sequence[tuple[str, str, Any]]) -> list[Proc]:
        """Start a process for each (name, role, config), in order; the same as `start`
        for each, but an executor may overlap them (the local one asks its launcher for
        all at once, so the forks do not wait for one round trip each)."""
        ...

    def cores(self) -> int:
        """The core budget when the user sets none: the CPUs processes can be placed on."""
        ...

    def worker_slots(self) -> int | None:
        """How many workers can run at once (None: no limit but the machine's)."""
        ...

    def helper_pids(self) -> list[int]:
        """The executor's own processes on this machine (the local launcher): their CPU
        is the run's, not another program's."""
        ...

    def close(self) -> None: ...

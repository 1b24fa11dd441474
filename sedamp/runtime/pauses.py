"""Pure: notices the time a process was not running, so that it is not held against
the others.

When the whole job stops and goes on (Ctrl-Z then `fg`, a laptop's lid closed and
opened, a virtual machine its host stalled), every process stops at once, but each
measures time by a clock that went on. Without this, the first to wake would judge
the others by that clock: a queue would take back every lease no worker could renew
(the events are handled twice), and the controller would find every process silent and
fail the run, or find a handler call past its `timeout_s` and kill it.

Each process's loop comes round at least once per its poll timeout. A loop that
comes round much later than that was not running (the job was paused, or the machine
starved it of CPU): it could not have heard from anyone in that time, so its
deadlines move on by as much (a lease's term, a heartbeat's silence, a handler's
`timeout_s`). A real failure is still found: one pause later at most.
"""

from __future__ import annotations

from collections import deque

# A loop that comes round this much later than its poll timeout allows was paused (less
# is a loaded machine's scheduling, which the deadlines' own margins absorb).
PAUSE_MIN_S = 1.0

# The pauses remembered, to excuse the handler calls that were running through them.
KEEP = 64


class Pauses:
    """The pauses of one process's loop, from the times it comes round."""

    def __init__(self, now: float) -> None:
        self.last = now
        self.recent: deque[tuple[float, float]] = deque(maxlen=KEEP)  # (ended at, seconds)
        self.total = 0.0

    def observe(self, now: float, allowed_s: float) -> float:
        """The loop came round at `now`, having been allowed `allowed_s` since it last
        did (its poll timeout): the seconds it was paused beyond that (0.0: none)."""
        gap = now - self.last - max(0.0, allowed_s)
        self.last = now
        if gap < PAUSE_MIN_S:
            return 0.0
        self.recent.append((now, gap))
        self.total += gap
        return gap

    def since(self, t: float) -> float:
        """The seconds of the remembered pauses that fell after `t`."""
        return sum(max(0.0, min(gap, end - t)) for end, gap in self.recent)

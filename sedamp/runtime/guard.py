"""A worker's memory limit (``max_rss_mb``) enforced while it handles a batch. Pure:
the clock, the memory reading and what to do past the limit are given to it.

Between batches a worker past ``max_rss_mb`` finishes what it holds and is replaced
(`sedamp.runtime.worker.recycle_reason`). That is enough for memory that creeps up (a
library that leaks), not for memory that runs away inside one batch: a generator that
fans out without end, a handler whose outputs pile up over a long batch. The handler
loop calls `MemoryGuard.tick` after every event and every few outputs of a generator;
at most every CHECK_EVERY_S it reads the process's memory, and past
HARD_LIMIT_FACTOR x ``max_rss_mb`` it calls `on_exceeded` with the reason (the worker
then exits at once, see `sedamp.runtime.worker`).

The hard limit sits above ``max_rss_mb`` so that memory creeping past the limit in
the middle of a batch still ends in the graceful replacement after the batch: only a
worker that keeps growing well past its limit inside a batch is stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# How often the memory is read while a batch is handled. A reading (psutil, /proc) costs
# about 12 us, so 0.25% of a core at this period; memory that grows at 1 GB/s overshoots
# by 5 MB between readings.
CHECK_EVERY_S = 0.005

# A worker is stopped inside a batch past this multiple of max_rss_mb (and at least
# HARD_HEADROOM_MB above it). Lower and a leak that crosses max_rss_mb mid-batch would
# kill the worker instead of letting it finish the batch and leave; higher and a runaway
# takes more of the machine's memory before it is stopped.
HARD_LIMIT_FACTOR = 1.25
HARD_HEADROOM_MB = 64


def hard_limit_mb(max_rss_mb: int) -> float:
    """Where a worker is stopped inside a batch, for a given ``max_rss_mb``."""
    return max(max_rss_mb * HARD_LIMIT_FACTOR, max_rss_mb + HARD_HEADROOM_MB)


class MemoryGuard:
    """`tick` is cheap (a clock read) except once every CHECK_EVERY_S. The guard is
    armed by `arm` with a reading taken between batches: a worker already past its
    limit then is left to finish the batch and leave, not stopped in it."""

    def __init__(
        self,
        max_rss_mb: int,
        rss_mb: Callable[[], float],
        on_exceeded: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        every_s: float = CHECK_EVERY_S,
    ) -> None:
        self.max_rss_mb = max_rss_mb
        self.hard_mb = hard_limit_mb(max_rss_mb)
        self.rss_mb = rss_mb
        self.on_exceeded = on_exceeded
        self.clock = clock
        self.every_s = every_s
        self.armed = False
        self.next_s = 0.0
        self.checks = 0  # readings taken

    def arm(self, rss_mb: float | None) -> None:
        """Watch the next batch, unless the worker was already past max_rss_mb when
        last read between batches (`rss_mb`; None: not read)."""
        self.armed = rss_mb is None or rss_mb <= self.max_rss_mb

    def tick(self) -> None:
        if not self.armed:
            return
        now = self.clock()
        if now < self.next_s:
            return
        self.next_s = now + self.every_s
        self.checks += 1
        rss = self.rss_mb()
        if rss > self.hard_mb:
            self.armed = False
            self.on_exceeded(
                f"its memory reached {rss:,.0f} MiB while it handled an event, past max_rss_mb "
                f"({self.max_rss_mb:,} MiB) by more than it may grow within a batch ({self.hard_mb:,.0f} MiB)"
            )

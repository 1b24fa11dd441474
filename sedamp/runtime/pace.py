"""The pace of a worker: its adaptive batch size and the timings of its batches; and
how many events a source reads at once (`next_read`). Pure.

The worker asks its queue for `batch_n` events at a time. With a fixed ``batch:`` that
is the number; otherwise it follows a moving average of the time per event so that a
batch takes about TARGET_BATCH_S, between the stage's floor and ceiling. The timings
(service time per event, time since the source read each event, busy time) are kept
for the worker's next STATS.
"""

from __future__ import annotations

from collections.abc import Sequence

from sedamp.observe import metrics

# The adaptive batch size aims at batches that take about this long to handle. Every
# batch costs about ten message hand-overs across the queue and worker processes, and on
# a busy machine each wakes a process: at 20 ms those processes took 11% of all CPU in
# the heavy benchmark, at 50 ms 8%, and sedamp went from 0.91x to 1.00x of
# multiprocessing.Pool. The price is the tail: at the end of a job a worker may sit on
# up to two batches (the worker's PREFETCH_BATCHES) of this length while another is idle.
TARGET_BATCH_S = 0.05
INITIAL_BATCH_EVENTS = 8
# Events that take at least this long each are taken one at a time through a chain that
# ends in a sink (`Chain.run`'s one_by_one): what that costs per event (tens of µs) is
# lost in them, and a request/response route answers each request as soon as it is made
# instead of after the whole batch (p90 at 4 clients, 5 ms requests in batches of up to 8).
SLOW_EVENT_S = 0.001
# A source sends what it read in one message, so a read holds its first event until
# its last is read: a full read takes about this long at most, and a read is at most
# READ_GROWTH times the one before (a read's pace is known only once it is done: a
# generator that sleeps between events sleeps when asked for the next). At 4096 events
# a read, a source of one event a millisecond held all but its first for three seconds
# (a job of 3,000), and sent them together.
SOURCE_READ_S = 0.01
READ_GROWTH = 8


def next_read(last: int, n: int, elapsed_s: float, ceiling: int) -> int:
    """How many events a source reads next, after asking for `last` and getting `n` in
    `elapsed_s`: at most READ_GROWTH x `last` and `ceiling`, and, after a full read,
    no more than its pace reads in SOURCE_READ_S; at least one. A read cut short (the
    source was idle or ended) says nothing of its pace: its time was spent waiting."""
    cap = min(ceiling, READ_GROWTH * last)
    if n >= last and elapsed_s > 0:
        cap = min(cap, int(SOURCE_READ_S * n / elapsed_s))
    return max(1, cap)


class Pace:
    def __init__(self, batch: int | None, batch_min: int, batch_max: int) -> None:
        self.fixed = batch  # a fixed batch size, or None = adaptive
        self.batch_min = batch_min
        self.batch_max = batch_max
        self.batch_n = batch or max(batch_min, min(batch_max, INITIAL_BATCH_EVENTS))
        self.per_event_s: float | None = None
        self.busy_s = 0.0
        self.batches = 0
        self.service: list[tuple[float, int]] = []  # (ms per event, events) per batch, this period
        self.path: list[tuple[float, int]] = []  # (ms since the source read it, events), sinks only

    def record(
        self, elapsed_s: float, n: int, t_srcs: Sequence[float], counts: Sequence[int], now_s: float | None
    ) -> float:
        """Note a batch of `n` events handled in `elapsed_s`, whose bodies were read by
        their source at `t_srcs` (0 = unknown) and hold `counts` events; `now_s`, the
        wall clock, only where the path to here is measured (sinks). Returns the
        source time of the batch's oldest event (0.0 if unknown)."""
        self.busy_s += elapsed_s
        self.batches += 1
        self._adapt(elapsed_s, n)
        self.service.append((elapsed_s * 1000 / n, n))
        known = [t for t in t_srcs if t > 0]
        if now_s is not None and known:
            self.path.extend(((now_s - t) * 1000, c) for t, c in zip(t_srcs, counts, strict=True) if t > 0)
        return min(known) if known else 0.0

    def _adapt(self, elapsed_s: float, n: int) -> None:
        if n == 0:
            return
        per_event = elapsed_s / n
        # a moving average: the latest batch weighs 0.3
        self.per_event_s = per_event if self.per_event_s is None else 0.7 * self.per_event_s + 0.3 * per_event
        if self.fixed is None:
            want = TARGET_BATCH_S / max(self.per_event_s, 1e-7)
            self.batch_n = max(self.batch_min, min(self.batch_max, int(want)))

    @property
    def slow_events(self) -> bool:
        """Whether this stage's events are slow (see SLOW_EVENT_S); unknown: not."""
        return self.per_event_s is not None and self.per_event_s >= SLOW_EVENT_S

    def take_samples(self) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
        """The service and path samples since the last call, thinned; then forget them."""
        service, self.service = metrics.thin(self.service), []
        path, self.path = metrics.thin(self.path), []
        return service, path

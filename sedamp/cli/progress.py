"""Progress of `sedamp run` on stderr when it is not a terminal: a logged line at a fixed
interval (`LogProgress`); on a terminal, a live bar (`sedamp.cli.live`). Fed by the
controller every period (`RunOptions.on_tick`). Each new kind of failure a record
carries is printed as a line of its own when it comes. No rich here: a run whose
stderr is a pipe or a file does not pay for importing it (a tenth of a one-event job).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from sedamp.observe.failures import FailureLines
from sedamp.observe.progress import Tracker, View, duration, headline, stage_line


def idle(v: View) -> bool:
    """No handler or sink took an event and nothing failed: a run that stopped before
    it began, say when a setup() raised (its error says why; a bar of zeros adds nothing)."""
    return not v.failed and not any(s.done for s in v.stages if s.kind != "source")


class LogProgress:
    """One line every `interval_s` (and a last one at the end) for logs and CI."""

    def __init__(
        self, interval_s: float = 10.0, stream: TextIO | None = None, copies: bool = False, verbose: bool = False
    ) -> None:
        self.interval_s = interval_s
        self.stream = stream or sys.stderr
        self.tracker = Tracker(copies=copies)
        self.failures = FailureLines(verbose, self.stream)
        self.next_t = time.monotonic() + interval_s
        self.printed = False

    def __call__(self, record: dict[str, Any]) -> None:
        self.failures(record)
        v = self.tracker.update(record)
        now = time.monotonic()
        if now >= self.next_t or (record.get("final") and (self.printed or not idle(v))):
            self.next_t = now + self.interval_s
            self.printed = True
            print(f"sedamp: progress [{duration(v.elapsed_s)}] {headline(v)} | {stage_line(v)}", file=self.stream)
            self.stream.flush()

    def close(self) -> None:
        pass

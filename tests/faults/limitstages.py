"""Handlers for the limit tests (importable as tests.faults.limitstages): outputs too
large to send, and a generator whose memory runs away."""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MIB = 2**20


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


class Blobs:
    """Each output carries `mb` MiB of text (a string travels inside the packed event,
    where max_event_bytes bounds it; bytes that large would go beside it). At teardown, writes to `report/<pid>` the
    worker's memory after setup and its peak (MiB), to see what a batch cost."""

    def setup(self, mb: int, report: str) -> None:
        self.size = int(mb * MIB)
        self.report = Path(report)
        self.base = _rss_mib()

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        return {**event, "blob": "x" * self.size}

    def teardown(self) -> None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        (self.report / str(os.getpid())).write_text(json.dumps({"base": self.base, "peak": peak}))


def runaway(event: dict[str, Any], at: int, cap_mb: int) -> Iterator[dict[str, Any]]:
    """At event `at`, hold ever more memory inside the generator (a MiB more per output
    it yields: a leak of its own, which sending outputs as they come cannot free).
    Capped at `cap_mb`, then it raises, so that a runtime that does not stop it still
    ends the test cheaply; every other event passes through."""
    if event["n"] != at:
        yield event
        return
    hoard = []
    for i in range(cap_mb):
        hoard.append(b"x" * MIB)
        yield {"n": at, "i": i, "held": len(hoard)}
    raise RuntimeError(f"held {cap_mb} MiB for one event and nothing stopped it")

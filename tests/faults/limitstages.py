"""Handlers for the limit tests (importable as tests.faults.limitstages): outputs too
large to send."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Any

MIB = 2**20


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


class Blobs:
    """Each output carries `mb` MiB of bytes. At teardown, writes to `report/<pid>` the
    worker's memory after setup and its peak (MiB), to see what a batch cost."""

    def setup(self, mb: int, report: str) -> None:
        self.size = int(mb * MIB)
        self.report = Path(report)
        self.base = _rss_mib()

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        return {**event, "blob": b"x" * self.size}

    def teardown(self) -> None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        (self.report / str(os.getpid())).write_text(json.dumps({"base": self.base, "peak": peak}))

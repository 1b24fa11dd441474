"""Used by the controller's recorder: the CPU each of the run's processes used between
two records, from psutil's cumulative CPU times.

Not `psutil.Process.cpu_percent`: its first reading of a process is 0.0 by design (it
needs two), so in a run's first period, when every process is new, all of the run's
CPU read as other programs' and the core budget fell to its floor for seconds; and a
worker started mid-run read idle in its first period. Here a process first seen is
charged all the CPU it has used: the run's processes start during the run (a forked
process starts with no CPU time of its own). Processes that were running before (the
controller itself) are named when the meter is made, and charged from then on. A
process that ends between two samples takes its last CPU with it: `gone_percent`
counts it at its last rate (an upper bound), so that it is not read as another
program's load (which makes the pools yield cores).
"""

from __future__ import annotations

from collections.abc import Iterable

import psutil


class CpuMeter:
    """The CPU of a changing set of processes, period by period."""

    def __init__(self, running: Iterable[int] = ()) -> None:
        self.procs: dict[int, psutil.Process] = {}
        self.totals: dict[int, float] = {}  # pid -> user + system seconds at the last sample
        self.rates: dict[int, float] = {}  # pid -> its CPU % in the last sample
        # the CPU % (at their last rates) of the processes that were there at the last
        # sample and are gone now: what they used before they ended cannot be read
        self.gone_percent = 0.0
        for pid in running:
            try:
                t = self.procs.setdefault(pid, psutil.Process(pid)).cpu_times()
                self.totals[pid] = t.user + t.system
            except psutil.Error:
                self.procs.pop(pid, None)

    def sample(self, pids: Iterable[int], dt: float) -> dict[int, float]:
        """Each process's CPU since the last sample, in percent of one core over `dt`
        seconds. A process that cannot be read (gone, not ours) is left out."""
        out: dict[int, float] = {}
        totals: dict[int, float] = {}
        for pid in pids:
            try:
                p = self.procs.get(pid) or self.procs.setdefault(pid, psutil.Process(pid))
                t = p.cpu_times()
                total = t.user + t.system
                before = self.totals.get(pid, 0.0)
            except psutil.Error:
                self.procs.pop(pid, None)
                continue
            totals[pid] = total
            out[pid] = max(0.0, total - before) / max(dt, 1e-6) * 100
        self.gone_percent = sum(rate for pid, rate in self.rates.items() if pid not in out)
        self.totals, self.rates = totals, out
        for pid in set(self.procs) - set(totals):
            del self.procs[pid]
        return out

"""Pure decision functions of the controller: how many workers each stage gets.

No process, socket or clock here: every function takes plain values and returns a
decision, so each can be unit-tested on recorded numbers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from sedamp.topology import StageSpec, Topology


def usable_cores() -> int:
    """Cores this process may run on (respects CPU affinity and cgroup-limited sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def worker_bounds(spec: StageSpec, cores: int) -> tuple[int, int]:
    """A stage's pool bounds with `max: None` resolved to the core budget."""
    lo = spec.workers.min
    hi = spec.workers.max if spec.workers.max is not None else max(lo, cores)
    return lo, hi


def initial_targets(topology: Topology, cores: int) -> Mapping[str, int]:
    """Pool sizes to start with, before anything is measured.

    Fixed pools get their size. The core budget left after them is shared evenly among
    the stages with a range, each clamped to its bounds: with nothing measured yet an
    even share is the guess that is least wrong, and it uses every core from the start.
    """
    targets: dict[str, int] = {}
    ranged = []
    fixed_total = 0
    for s in topology.stages.values():
        if s.kind == "source" or topology.is_member(s.name):
            continue  # grouped stages after the first share the first's pool
        lo, hi = worker_bounds(s, cores)
        if lo == hi:
            targets[s.name] = lo
            fixed_total += lo
        else:
            ranged.append(s)
    if ranged:
        share = max(1, (cores - fixed_total) // len(ranged))
        for s in ranged:
            lo, hi = worker_bounds(s, cores)
            targets[s.name] = min(hi, max(lo, share))
    return targets

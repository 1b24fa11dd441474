"""scripts/bench_neighbour.py: when the pool shrank and grew back, and how long the
demand stayed over the cores, from a metrics stream."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_neighbour  # noqa: E402


def _record(t: float, target: int, busy: list[float]) -> dict[str, Any]:
    work = {"workers": target, "target": target, "worker_detail": [{"busy": b} for b in busy]}
    return {"elapsed_s": t, "stages": {"work": work}, "system": {"other_cores": 0.0, "budget": 2}}


def test_the_stretch_over_the_cores_counts_only_the_time_the_neighbour_ran() -> None:
    """Two workers busy; the neighbour starts 0.255 s before the record at 10.255, so the
    period 9.75-10.255 and the next are over the cores: 0.255 + 0.5 s, not 1.005 s."""
    records = [
        _record(9.25, 2, [1.0, 1.0]),
        _record(9.75, 2, [1.0, 1.0]),
        _record(10.255, 2, [1.0, 1.0]),  # the neighbour from 10.0: half the period
        _record(10.755, 2, [1.0, 1.0]),
        _record(11.255, 1, [1.0]),  # shrunk
        _record(20.5, 1, [1.0]),
        _record(21.0, 2, [1.0, 1.0]),  # grew back
        _record(22.0, 0, []),
    ]
    res = bench_neighbour.analyse(records, started=10.0, stopped=20.0, cores=2.0)
    assert res["longest_over_cores_s"] == 0.76
    assert (res["pool_before"], res["pool_during"]) == (2, 1)
    assert (res["shrunk_after_s"], res["grew_back_after_s"]) == (1.26, 1.0)


def test_a_period_over_the_cores_without_the_neighbour_counts_whole() -> None:
    records = [_record(0.5, 3, [1.0, 1.0, 1.0]), _record(1.0, 3, [1.0, 1.0, 1.0]), _record(1.5, 0, [])]
    res = bench_neighbour.analyse(records, started=10.0, stopped=20.0, cores=2.0)
    assert res["longest_over_cores_s"] == 1.0

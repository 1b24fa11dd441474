"""scripts/bench_shift.py: when the shift reached stage c and when the controller grew it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_shift  # noqa: E402


def _record(t: float, queue: int, grow: bool = False) -> dict[str, Any]:
    c = {"queue": {"length": queue, "capacity": 4096}, "latency_ms": {"service": {"p50": 0.5}}}
    decisions = [{"stage": "c", "from": 1, "to": 2, "reason": "grow"}] if grow else []
    return {"elapsed_s": t, "stages": {"c": c}, "decisions": decisions}


def test_a_growth_one_period_after_the_shift_counts_one_period(tmp_path: Path) -> None:
    """Records at 0.1 s, 0.25 s, then every 0.5 s: the gap between the first two is not
    the period (it read a growth one period late as 3.4 periods)."""
    records = [_record(0.1, 0), _record(0.25, 0), _record(0.75, 0), _record(1.25, 300), _record(1.75, 900, grow=True)]
    metrics = tmp_path / "m.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    rb = bench_shift.rebalance(metrics)
    assert (rb["shift_s"], rb["grow_c_s"], rb["periods"]) == (1.25, 1.75, 1.0)

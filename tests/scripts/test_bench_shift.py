"""scripts/bench_shift.py: when the shift reached stage c and when the controller grew it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_shift  # noqa: E402


def _record(t: float, queue: int, grow: bool = False, capacity: int = 4096) -> dict[str, Any]:
    c = {"queue": {"length": queue, "capacity": capacity}, "latency_ms": {"service": {"p50": 0.5}}}
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


def test_the_shift_is_read_from_cs_queue_whatever_its_capacity(tmp_path: Path) -> None:
    """The records of a real run (2026-12-07 14:53, round 7): c's queue, of 32,768, took
    408 events, and c grew in the next record, before its queue reached 5% of the
    capacity; the shift was read only after the growth, and the growth as never."""
    records = [
        _record(4.24, 0, capacity=32768),
        _record(4.74, 408, capacity=32768),
        _record(5.072, 1368, grow=True, capacity=32768),
        _record(5.572, 1117, capacity=32768),
        _record(6.072, 842, capacity=32768),
    ]
    metrics = tmp_path / "m.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    rb = bench_shift.rebalance(metrics)
    assert (rb["shift_s"], rb["grow_c_s"]) == (4.74, 5.072)
    assert rb["periods"] == 0.7


def test_a_cold_first_batch_is_not_the_shift(tmp_path: Path) -> None:
    """The first record of a real run (14:53, round 2) had c's first batch at 2.8 ms an
    event: read as the shift at 0.21 s, and c's growth as 11.3 periods late."""
    cold = _record(0.21, 0)
    cold["stages"]["c"]["latency_ms"]["service"]["p50"] = 2.801
    cold["stages"]["c"]["events_in"] = 8
    records = [cold, _record(0.36, 0), _record(4.7, 500), _record(5.2, 1300, grow=True)]
    metrics = tmp_path / "m.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    rb = bench_shift.rebalance(metrics)
    assert (rb["shift_s"], rb["grow_c_s"]) == (4.7, 5.2)

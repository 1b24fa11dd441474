"""Blocked time and the bottleneck through real processes: a slow sink holds back a
fast middle stage, and the metrics stream and `sedamp status` say so."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.integration.util import TESTSTAGES, run_sedamp, start_run

COUNT = 400
HELD = f"""
name: held
stages:
  src:
    source: {TESTSTAGES}:Numbers
    params: {{count: {COUNT}}}
    to: mid
  mid:
    handler: {TESTSTAGES}:pause
    params: {{delay_s: 0.0}}
    workers: 1
    queue: {{capacity: 8}}
    to: sink
  sink:
    sink: {TESTSTAGES}:pause
    params: {{delay_s: 0.02}}
    workers: 1
    queue: {{capacity: 8}}
controller:
  period_s: 0.2
  policy: static
"""


def _share(stage: dict) -> float:
    """A stage's blocked seconds per second as the share of its mean process."""
    return stage["blocked_s_per_s"] / max(1, len(stage["worker_detail"]))


@pytest.mark.slow  # 400 events at 20 ms in the sink: ~10 s
def test_a_slow_sink_holding_back_a_fast_middle_stage_is_named_bottleneck(tmp_path: Path) -> None:
    topo = tmp_path / "held.yaml"
    topo.write_text(HELD)
    work, metrics = tmp_path / "w", tmp_path / "m.jsonl"
    proc = start_run(topo, work, "--metrics", str(metrics))
    try:

        def status() -> dict | None:
            r = run_sedamp("status", "held", "--workdir", str(work), "--json")
            return json.loads(r.stdout) if r.returncode == 0 else None

        def held_back() -> dict | None:
            # a period on a loaded machine may fall short: wait for one that shows it
            record = status()
            named = record and (record["bottleneck"] or {}).get("stage") == "sink"
            return record if named and _share(record["stages"]["mid"]) > 0.5 else None

        record = wait_until(held_back, 30, "status to name the sink as the bottleneck, mid blocked most of the time")
        assert "mid was blocked" in record["bottleneck"]["reason"]
        mid_detail = record["stages"]["mid"]["worker_detail"]
        assert [set(w) >= {"busy", "blocked", "waiting"} for w in mid_detail] == [True]

        def table() -> str | None:
            r = run_sedamp("status", "held", "--workdir", str(work), env={"COLUMNS": "200"})
            return r.stdout if r.returncode == 0 and "bottleneck: sink" in r.stdout else None

        shown = wait_until(table, 30, "the status table to mark the sink")
        rows = {line.split()[1]: line for line in shown.splitlines() if re.match(r"^\W+(src|mid|sink) ", line)}
        assert "< bottleneck" in rows["sink"] and "bottleneck" not in rows["mid"], shown
        assert "blocked" in shown and "waiting" in shown
        mid_blocked = int(re.findall(r"(\d+)%", rows["mid"])[-2])  # the blocked column, before waiting
        assert mid_blocked > 50, shown
    finally:
        stdout, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["stages"][2]["events_in"] == COUNT
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    # the periods while the sink works through the run: it has started and not finished
    steady = [r for r in records if not r["final"] and 0 < r["stages"]["sink"]["events_in"] < COUNT - 8]
    assert len(steady) >= 5, records
    mid = [_share(r["stages"]["mid"]) for r in steady]
    assert statistics.median(mid) > 0.5, mid
    named = [(r["bottleneck"] or {}).get("stage") for r in steady]
    assert named.count("sink") > len(steady) / 2 and "mid" not in named, named
    # the source is held back too (by mid's full queue); the sink is never blocked (no outputs)
    assert statistics.median(_share(r["stages"]["src"]) for r in steady) > 0.5
    assert all(r["stages"]["sink"]["blocked_s_per_s"] == 0.0 for r in records)

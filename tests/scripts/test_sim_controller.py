"""scripts/sim_controller.py: the runtime's own pool controller on a model of a machine."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import sim_controller as sim  # noqa: E402


def test_a_static_pipeline_runs_at_its_bottleneck_rate() -> None:
    """No controller, 6 cores, workers 1 / 4 / 1. First half, 1 / 4 / 0.5 ms: a and b
    both sustain 1,000 events/s, so 1,500 events take 1.5 s; second half, c costs 4 ms
    on one worker: 250 events/s, 6 s. About 7.5 s in all."""
    run = sim.simulate([1, 4, 1], cores=6, events=3000, adaptive=False, spawn_s=0.05)
    assert 7.4 <= run["wall_s"] <= 7.8 and run["decisions"] == 0


def test_the_controller_follows_the_load_at_64_cores() -> None:
    """The shift workload at 64 cores: the controller ends well ahead of the split that
    suits the first half, and every event is done (the run ends)."""
    events = 30_000
    adaptive = sim.simulate([21, 21, 21], 64, events, True, 0.05)
    static = sim.simulate(sim.static_split(64), 64, events, False, 0.05)
    assert sim.static_split(64) == [12, 46, 6]
    assert static["wall_s"] / adaptive["wall_s"] >= 1.3
    assert adaptive["decisions"] > 0 and adaptive["wall_s"] >= adaptive["limit_s"]


def test_the_oracle_runs_each_half_on_the_pools_that_suit_it() -> None:
    """6 cores: the first half's pools are ceil(6 x 1 / 5.5) / ceil(6 x 4 / 5.5) /
    ceil(6 x 0.5 / 5.5) = 2 / 5 / 1, so each half of 3,000 events runs at the
    machine's limit, 6 / 5.5 ms = 1,091 events/s: about 1.4 s a half, 2.75 s in all,
    against 7.5 s for the split 1 / 4 / 1 above."""
    wall = sim.oracle(6, 3000, 0.05)
    assert 2.7 <= wall <= 3.1


def test_the_staircase_oracle_keeps_up_where_the_first_steps_pool_falls_behind() -> None:
    """8 cores: the first step's pool (1 worker) cannot take 1,520 events/s of 4 ms, so
    the run ends long after the source's 15 s; the oracle, sized for each step as it
    begins, ends with it and its queue stays short; the controller ends with it too."""
    runs = sim.staircase(8, 0.05)
    assert runs["static"]["wall_s"] > 25 and runs["static"]["max_queue"] >= 2000
    assert runs["oracle"]["wall_s"] < 15.5 and runs["oracle"]["max_queue"] < 50
    assert runs["adaptive"]["wall_s"] < 15.5
    assert runs["oracle"]["worker_s"] < runs["adaptive"]["worker_s"]

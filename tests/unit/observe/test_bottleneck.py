"""sedamp.observe.metrics.bottleneck and fraction_of: which stage held the others back,
from the share of a period each stage's processes spent blocked."""

from __future__ import annotations

from sedamp.observe.metrics import HELD_BACK, bottleneck, fraction_of

CHAIN = {"src": ["mid"], "mid": ["sink"], "sink": []}


def test_a_slow_sink_holding_back_a_fast_middle_stage_is_the_bottleneck() -> None:
    held = bottleneck({"src": 0.97, "mid": 0.9, "sink": 0.0}, CHAIN, {"mid": 1.0, "sink": 1.0})
    assert held is not None and held["stage"] == "sink"  # not mid: mid is held back itself
    assert held["reason"] == "mid was blocked 90% of the period: the queue of sink had no room for its outputs"


def test_the_stage_under_the_last_blocked_one_is_named() -> None:
    # src is held back by mid, which is not blocked: mid is where the pipeline is slow
    held = bottleneck({"src": 0.8, "mid": 0.1, "sink": 0.0}, CHAIN, {})
    assert held is not None and held["stage"] == "mid" and held["reason"].startswith("src was blocked 80%")


def test_no_bottleneck_when_nothing_is_held_back_most_of_the_period() -> None:
    assert bottleneck({"src": 0.0, "mid": 0.0, "sink": 0.0}, CHAIN, {}) is None
    assert bottleneck({"src": HELD_BACK - 0.01, "mid": 0.2, "sink": 0.0}, CHAIN, {}) is None
    assert bottleneck({"src": HELD_BACK, "mid": 0.2, "sink": 0.0}, CHAIN, {}) is not None
    # every stage blocked (a pipeline stuck at its end): none can be named from this
    assert bottleneck({"a": 0.9, "b": 0.9}, {"a": ["b"], "b": []}, {}) is None


def test_unmeasured_stages_are_not_taken_as_blocked_nor_held_back() -> None:
    assert bottleneck({"src": None, "mid": 0.9, "sink": None}, CHAIN, {}) == bottleneck(
        {"src": 0.0, "mid": 0.9, "sink": 0.0}, CHAIN, {}
    )
    assert bottleneck({}, CHAIN, {}) is None


def test_of_several_held_back_stages_the_most_blocked_neighbour_names_it() -> None:
    # two branches: a -> x (a blocked 60%), b -> y (b blocked 95%)
    graph = {"s": ["a", "b"], "a": ["x"], "b": ["y"], "x": [], "y": []}
    held = bottleneck({"s": 0.0, "a": 0.6, "b": 0.95, "x": 0.0, "y": 0.0}, graph, {})
    assert held is not None and held["stage"] == "y"


def test_a_fan_out_names_the_next_stage_whose_queue_ran_out_of_room() -> None:
    graph = {"s": ["fast", "slow"], "fast": [], "slow": []}
    blocked = {"s": 0.9, "fast": 0.0, "slow": 0.0}
    held = bottleneck(blocked, graph, {"fast": 0.1, "slow": 1.0})
    assert held is not None and held["stage"] == "slow"
    held = bottleneck(blocked, graph, {"fast": 1.0, "slow": 0.0})
    assert held is not None and held["stage"] == "fast"


def test_fraction_of_a_pool_is_the_mean_process_share() -> None:
    assert fraction_of(1.5, 2) == 0.75  # two workers, 1.5 s blocked per second between them
    assert fraction_of(0.4, 0) == 0.4  # a source: one process, no worker detail
    assert fraction_of(2.5, 2) == 1.0 and fraction_of(-0.1, 1) == 0.0
    assert fraction_of(None, 3) is None

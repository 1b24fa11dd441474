"""sedamp.runtime.pace and the worker's recycling rule: pure, no processes."""

from __future__ import annotations

import pytest

from sedamp.runtime.pace import INITIAL_BATCH_EVENTS, READ_GROWTH, SOURCE_READ_S, TARGET_BATCH_S, Pace, next_read
from sedamp.runtime.worker import recycle_reason


def test_the_adaptive_batch_aims_at_the_target_time_within_its_bounds() -> None:
    pace = Pace(None, batch_min=1, batch_max=256)
    assert pace.batch_n == INITIAL_BATCH_EVENTS
    pace.record(elapsed_s=0.01, n=10, t_srcs=[0.0], counts=[10], now_s=None)  # 1 ms per event
    assert pace.batch_n == int(TARGET_BATCH_S / 0.001)
    pace.record(elapsed_s=10.0, n=10, t_srcs=[0.0], counts=[10], now_s=None)  # slow: the floor
    assert pace.batch_n == 1
    fast = Pace(None, batch_min=4, batch_max=64)
    fast.record(elapsed_s=1e-6, n=10, t_srcs=[0.0], counts=[10], now_s=None)
    assert fast.batch_n == 64
    fixed = Pace(5, batch_min=1, batch_max=256)
    fixed.record(elapsed_s=0.01, n=10, t_srcs=[0.0], counts=[10], now_s=None)
    assert fixed.batch_n == 5


def test_record_keeps_service_and_path_samples_until_taken() -> None:
    pace = Pace(None, batch_min=1, batch_max=256)
    t_src = pace.record(elapsed_s=0.02, n=4, t_srcs=[100.0, 0.0, 99.0], counts=[1, 2, 1], now_s=100.5)
    assert t_src == 99.0
    assert pace.busy_s == pytest.approx(0.02) and pace.batches == 1
    service, path = pace.take_samples()
    assert service == [(pytest.approx(5.0), 4)]
    assert sorted(path) == [(pytest.approx(500.0), 1), (pytest.approx(1500.0), 1)]
    assert pace.take_samples() == ([], [])
    assert pace.record(elapsed_s=0.01, n=1, t_srcs=[0.0], counts=[1], now_s=None) == 0.0
    assert pace.take_samples()[1] == []


def test_a_worker_is_recycled_past_its_event_or_memory_limit() -> None:
    assert recycle_reason(None, None, 10**9, 10**6) is None
    assert recycle_reason(100, None, 100, None) == "handled 100 events (max_events: 100)"
    assert recycle_reason(100, 50, 99, 51.2) == "uses 51 MiB (max_rss_mb: 50)"
    assert recycle_reason(100, 50, 99, 49.0) is None


def test_a_source_reads_grow_step_by_step_to_the_ceiling_for_a_fast_iterator() -> None:
    sizes = [1]
    while sizes[-1] < 4096:
        last = sizes[-1]
        sizes.append(next_read(last, last, last * 1e-7, 4096))  # 0.1 us per event
    assert sizes == [1, 8, 64, 512, 4096]
    assert next_read(4096, 4096, 4096 * 1e-7, 4096) == 4096


def test_a_source_read_takes_about_its_time_share_for_a_slow_iterator() -> None:
    # one event a millisecond: a read of 64 took 64 ms; the next holds SOURCE_READ_S' worth
    assert next_read(64, 64, 0.064, 4096) == int(SOURCE_READ_S / 0.001) == 10
    assert next_read(1, 1, 2.0, 4096) == 1  # never below one
    # a first read of one event says little (a generator sleeps when asked for the next):
    # the next grows by READ_GROWTH at most, not to the ceiling
    assert next_read(1, 1, 1e-6, 4096) == READ_GROWTH


def test_a_read_cut_short_by_an_idle_source_keeps_its_size() -> None:
    # 3 of 512 came before the source said it was idle: that time was spent waiting
    assert next_read(512, 3, 0.05, 4096) == min(4096, READ_GROWTH * 512)

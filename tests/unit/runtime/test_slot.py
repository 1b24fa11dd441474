"""sedamp.runtime.slot: the time a process spends blocked and waiting, as its slot
shows it to the controller while it accrues."""

from __future__ import annotations

from pathlib import Path

import pytest

from sedamp.runtime.slot import BLOCKED, WAITING, Slot, Waits


def test_a_wait_in_progress_counts_up_to_now_and_once_when_it_ends(tmp_path: Path) -> None:
    mine = Slot(tmp_path / "slot", create=True)  # the controller's mapping
    waits = Waits(Slot(mine.path))  # the process's
    assert mine.waits() == (0.0, 0.0)
    waits.begin(BLOCKED)
    t0 = waits.since
    assert mine.waits(t0 + 0.25) == pytest.approx((0.25, 0.0))
    assert mine.waits(t0 + 0.75) == pytest.approx((0.75, 0.0))  # still accruing: every period sees its share
    waits.end(t0 + 1.0)
    assert waits.blocked_s == pytest.approx(1.0)
    assert mine.waits(t0 + 5.0) == pytest.approx((1.0, 0.0))  # over: no longer growing
    waits.begin(WAITING)
    waits.end(waits.since + 0.5)
    waits.begin(BLOCKED)
    t2 = waits.since
    assert mine.waits(t2 + 0.5) == pytest.approx((1.5, 0.5))
    waits.end(t2 + 0.5)
    assert (waits.blocked_s, waits.waiting_s) == pytest.approx((1.5, 0.5))
    assert mine.read() == (0.0, -1, -1)  # the batch fields are untouched
    mine.begin(7)
    assert mine.waits(t2 + 0.5) == pytest.approx((1.5, 0.5))  # and they leave the waits alone


def test_a_wait_not_counted_and_a_process_without_a_slot() -> None:
    waits = Waits(None)
    waits.begin(None)  # e.g. a poll that does not wait
    waits.end()
    waits.begin(WAITING)
    waits.end(waits.since + 0.2)
    waits.end(waits.since + 5.0)  # no wait in progress: nothing more
    waits.begin(BLOCKED)
    waits.end(waits.since - 1.0)  # a clock that went nowhere adds nothing
    assert (waits.blocked_s, waits.waiting_s) == pytest.approx((0.0, 0.2))


def test_the_busy_time_is_written_as_a_batch_ends_and_kept_across_batches(tmp_path: Path) -> None:
    slot = Slot(tmp_path / "s", create=True)
    reader = Slot(tmp_path / "s")
    assert reader.busy_s() == 0.0
    slot.begin(1)
    slot.end(busy_s=0.5)
    slot.begin(2)
    assert reader.busy_s() == 0.5 and reader.in_batch_s() >= 0.0
    slot.end()  # no figure (setup, teardown): the last one stays
    assert reader.busy_s() == 0.5
    slot.end(busy_s=0.75)
    assert reader.busy_s() == 0.75
    slot.close()
    reader.close()

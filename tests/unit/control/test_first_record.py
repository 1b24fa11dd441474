"""When records are due: the first two come early (`policy.record_gap`), and the
reports each reads are asked for once there is something to report
(`controller.record_due`)."""

from __future__ import annotations

import pytest

from sedamp.control import policy
from sedamp.control.controller import REPORT_AHEAD, record_due


@pytest.mark.parametrize("period_s", [0.1, 0.5, 1.0, 5.0])
def test_the_first_records_come_early_and_the_others_a_period_apart(period_s: float) -> None:
    gaps = [policy.record_gap(n, period_s) for n in range(5)]
    assert gaps[0] == pytest.approx(policy.FIRST_PERIOD * period_s)
    assert gaps[0] + gaps[1] == pytest.approx(policy.SECOND_RECORD * period_s)
    assert gaps[2:] == [period_s] * 3
    assert 0 < gaps[0] < policy.SECOND_RECORD * period_s < period_s


@pytest.mark.parametrize("period_s", [0.1, 0.5, 1.0, 5.0])
@pytest.mark.parametrize("n", [0, 1, 2])
def test_the_reports_are_asked_for_after_the_last_record_and_before_the_next(period_s: float, n: int) -> None:
    gap = policy.record_gap(n, period_s)
    due, ask = record_due(100.0, gap, period_s)
    assert due == pytest.approx(100.0 + gap)
    assert 100.0 + gap / 2 <= ask < due  # not at once: the queues would report nothing new yet
    assert due - ask <= REPORT_AHEAD * period_s + 1e-9  # nor earlier than a full period's lead

"""sedamp.control.controller.first_record: the first record comes early, and the
reports it reads are asked for once there is something to report."""

from __future__ import annotations

import pytest

from sedamp.control import policy
from sedamp.control.controller import REPORT_AHEAD, first_record


@pytest.mark.parametrize("period_s", [0.1, 0.5, 1.0, 5.0])
def test_the_first_record_is_due_after_a_share_of_a_period(period_s: float) -> None:
    due, _ = first_record(100.0, period_s)
    assert due == pytest.approx(100.0 + policy.FIRST_PERIOD * period_s)


@pytest.mark.parametrize("period_s", [0.1, 0.5, 1.0, 5.0])
def test_the_reports_are_asked_for_after_the_start_and_before_the_record(period_s: float) -> None:
    due, ask = first_record(100.0, period_s)
    first = due - 100.0
    assert 100.0 + first / 2 <= ask < due  # not at the start: the queues would report nothing yet
    assert due - ask <= REPORT_AHEAD * period_s + 1e-9  # no earlier than later records ask

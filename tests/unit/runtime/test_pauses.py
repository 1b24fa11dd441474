"""Noticing the time a process was not running (`sedamp.runtime.pauses`)."""

from __future__ import annotations

import pytest

from sedamp.runtime.pauses import PAUSE_MIN_S, Pauses


def test_a_loop_that_comes_round_in_time_was_not_paused() -> None:
    p = Pauses(100.0)
    assert p.observe(100.5, 0.5) == 0.0
    assert p.observe(100.5 + PAUSE_MIN_S - 0.01, 0.0) == 0.0  # a loaded machine's lateness
    assert p.total == 0.0 and p.since(0.0) == 0.0


def test_the_time_beyond_the_poll_timeout_is_a_pause() -> None:
    p = Pauses(100.0)
    assert p.observe(130.5, 0.5) == pytest.approx(30.0)
    assert p.observe(131.0, 0.5) == 0.0
    assert p.observe(141.0, 0.0) == pytest.approx(10.0)
    assert p.total == pytest.approx(40.0)


def test_since_counts_only_what_fell_after_a_moment() -> None:
    p = Pauses(0.0)
    p.observe(30.0, 0.0)  # paused from 0 to 30
    p.observe(60.0, 10.0)  # paused from 40 to 60
    assert p.since(-5.0) == pytest.approx(50.0)
    assert p.since(20.0) == pytest.approx(10.0 + 20.0)  # the last 10 s of the first
    assert p.since(50.0) == pytest.approx(10.0)
    assert p.since(60.0) == 0.0

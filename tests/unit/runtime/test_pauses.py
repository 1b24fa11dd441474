"""Noticing the time a process was not running (`sedamp.runtime.pauses`)."""

from __future__ import annotations

import threading
import time

import pytest
import zmq

from sedamp.runtime import lifeline, wire
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


class Jumping:
    """A clock that jumps `by` seconds at its second reading: the whole job was paused
    just after a wait began."""

    def __init__(self, by: float) -> None:
        self.readings = 0
        self.by = by

    def __call__(self) -> float:
        self.readings += 1
        return time.monotonic() + (self.by if self.readings > 1 else 0.0)


def test_a_wait_for_the_controllers_answer_outlasts_a_pause_in_it() -> None:
    """A worker or source waits up to 5 s for the answer to its DONE. A pause of 30 s
    just after the wait began ended it before: the answer, on its way, was never read
    (and the source then closed its socket at once, dropping what it had not sent)."""
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://done")
        b.connect("inproc://done")
        answer = threading.Timer(0.3, lambda: b.send_multipart(wire.simple(wire.STOP, 0)))
        answer.start()
        assert lifeline.wait_for_stop(a, 5.0, clock=Jumping(30.0))
        answer.join(5)
        answer = threading.Timer(0.3, lambda: b.send_multipart(wire.simple(wire.STOP, 0)))
        answer.start()
        assert lifeline.await_answer(a, 5.0, clock=Jumping(30.0))
        answer.join(5)
        assert wire.parse(a.recv_multipart()).kind == wire.STOP  # left there to be read
        t0 = time.monotonic()  # and with nothing coming, each ends at its time
        assert not lifeline.await_answer(a, 0.3) and not lifeline.wait_for_stop(a, 0.3)
        assert 0.5 <= time.monotonic() - t0 < 5
    finally:
        a.close(0)
        b.close(0)
        ctx.term()

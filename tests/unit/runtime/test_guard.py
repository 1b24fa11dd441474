"""sedamp.runtime.guard: max_rss_mb inside a batch, on a fake clock and fake readings;
and the handler loop calling it (sedamp.runtime.stage)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from sedamp.runtime.guard import CHECK_EVERY_S, MemoryGuard, hard_limit_mb
from sedamp.runtime.stage import OUTPUTS_PER_TICK, HandlerRunner, outputs_of


class Exceeded(BaseException):  # like the exit the worker makes: not caught as a handler error
    pass


class Fake:
    def __init__(self, rss: float) -> None:
        self.t = 0.0
        self.rss = rss
        self.reads = 0

    def clock(self) -> float:
        return self.t

    def read(self) -> float:
        self.reads += 1
        return self.rss


def stop(why: str) -> None:
    raise Exceeded(why)


def guard(fake: Fake, limit: int = 1000) -> MemoryGuard:
    g = MemoryGuard(limit, fake.read, stop, fake.clock)
    g.arm(fake.rss)
    return g


def test_the_hard_limit_leaves_room_for_a_slow_leak_to_finish_its_batch() -> None:
    assert hard_limit_mb(1000) == 1250
    assert hard_limit_mb(100) == 164  # at least 64 MiB of room


def test_memory_is_read_at_most_every_check_period() -> None:
    fake = Fake(100.0)
    g = guard(fake)
    for _ in range(1000):
        g.tick()
    assert fake.reads == 1
    fake.t += CHECK_EVERY_S
    g.tick()
    assert fake.reads == 2


def test_past_the_hard_limit_the_worker_is_stopped_with_the_figures() -> None:
    fake = Fake(900.0)
    g = guard(fake)
    g.tick()
    fake.rss = 1200.0  # past max_rss_mb, within the room of a batch
    fake.t += 1
    g.tick()
    fake.rss = 1300.0
    fake.t += 1
    with pytest.raises(Exceeded, match=r"reached 1,300 MiB .* past max_rss_mb \(1,000 MiB\)"):
        g.tick()


def test_a_worker_already_past_its_limit_between_batches_is_left_to_leave() -> None:
    fake = Fake(2000.0)
    g = guard(fake)  # read between batches: over max_rss_mb, so it retires after the batch
    fake.t += 1
    g.tick()
    assert fake.reads == 0
    fake.rss = 500.0  # a fresh worker
    g.arm(fake.rss)
    g.tick()
    assert fake.reads == 1


def test_a_generator_is_read_a_few_outputs_at_a_time_with_ticks_between() -> None:
    ticks: list[int] = []
    made = [0]

    def gen() -> Iterator[int]:
        for i in range(100):
            made[0] = i + 1
            yield i

    def tick() -> None:
        ticks.append(made[0])

    assert outputs_of(gen(), tick) == list(range(100))
    assert ticks[:3] == [OUTPUTS_PER_TICK, 2 * OUTPUTS_PER_TICK, 3 * OUTPUTS_PER_TICK]


def test_a_runaway_generator_is_stopped_inside_the_handler_call() -> None:
    m = types.ModuleType("guardstages")

    def runaway(event: int) -> Iterator[bytes]:
        while True:  # never ends: only the tick can stop it
            yield b"x" * 1024

    m.runaway = runaway  # type: ignore[attr-defined]
    sys.modules["guardstages"] = m
    try:
        fake = Fake(100.0)
        g = guard(fake, limit=100)
        pulled = [0]

        def tick() -> None:
            pulled[0] += 1
            fake.t += CHECK_EVERY_S
            fake.rss += 1.0  # grows with each chunk of outputs
            g.tick()

        runner = HandlerRunner("guardstages:runaway", {})
        runner.setup()
        with pytest.raises(Exceeded):
            runner.handle_batch([1, 2], tick=tick)
        assert pulled[0] == 65  # 100 MiB + 64 MiB of room, a MiB per chunk
    finally:
        del sys.modules["guardstages"]


def test_the_handler_loop_ticks_after_every_event() -> None:
    m = types.ModuleType("guardstages")
    m.double = lambda e: 2 * e  # type: ignore[attr-defined]
    sys.modules["guardstages"] = m
    try:
        ticks: list[Any] = []
        runner = HandlerRunner("guardstages:double", {})
        runner.setup()
        assert runner.handle_batch([1, 2, 3], tick=lambda: ticks.append(1)) == [[2], [4], [6]]
        assert len(ticks) == 3
    finally:
        del sys.modules["guardstages"]

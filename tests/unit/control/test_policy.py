"""sedamp.control.policy: initial pool sizes from the topology and the core budget."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from sedamp.control import policy
from sedamp.spec import Edge, StageSpec, Topology, WorkersSpec


def top(**workers: WorkersSpec) -> Topology:
    stages = {"src": StageSpec("src", "source", "m:f", to=(Edge(next(iter(workers))),))}
    names = list(workers)
    for i, (name, w) in enumerate(workers.items()):
        to = (Edge(names[i + 1]),) if i + 1 < len(names) else ()
        stages[name] = StageSpec(name, "handler" if to else "sink", "m:f", workers=w, to=to)
    return Topology(name="t", stages=stages)


def test_fixed_pools_get_their_size() -> None:
    t = top(a=WorkersSpec(3, 3), b=WorkersSpec(1, 1))
    assert policy.initial_targets(t, 2) == {"a": 3, "b": 1}


def test_ranged_pools_share_the_rest_within_bounds() -> None:
    t = top(a=WorkersSpec(1, None), b=WorkersSpec(1, 2), c=WorkersSpec(1, 1))
    assert policy.initial_targets(t, 8) == {"a": 3, "b": 2, "c": 1}
    assert policy.initial_targets(t, 2) == {"a": 1, "b": 1, "c": 1}
    t = top(a=WorkersSpec(4, 8), c=WorkersSpec(1, 1))
    assert policy.initial_targets(t, 2) == {"a": 4, "c": 1}  # min wins over the budget


def test_bounds_resolve_auto_max() -> None:
    s = StageSpec("a", "handler", "m:f", workers=WorkersSpec(2, None))
    assert policy.worker_bounds(s, 6) == (2, 6)
    assert policy.worker_bounds(s, 1) == (2, 2)


def test_a_pool_is_resizable_with_room_between_its_bounds_no_key_and_no_state() -> None:
    t = top(a=WorkersSpec(1, None), b=WorkersSpec(2, 2), c=WorkersSpec(1, 4))
    assert policy.resizable(t, "a", 4) and policy.resizable(t, "c", 4)
    assert not policy.resizable(t, "b", 4)  # fixed
    assert not policy.resizable(t, "a", 1)  # auto max resolves to its min on one core
    assert not policy.resizable(t, "c", 4, stateful=True)  # its workers keep state
    keyed = dataclasses.replace(t.stages["a"], to=(Edge("c", key="word"),))
    assert not policy.resizable(dataclasses.replace(t, stages={**t.stages, "a": keyed}), "c", 4)


def test_usable_cores_is_positive() -> None:
    assert policy.usable_cores() >= 1


# ---------------------------------------------------------------- the pool controller

from sedamp.control.policy import IDLE_TIMEOUT_S, PolicyState, StageView, decide  # noqa: E402


def view(
    name: str,
    target: int,
    *,
    q: int = 0,
    busy: float = 0.5,
    rate: float = 100.0,
    lo: int = 1,
    hi: int = 8,
    cap: int = 1000,
    batch: float = 8,
    resizable: bool = True,
    arrivals: float = 0.0,
    downstream: float = 0.0,
    starting: int = 0,
) -> StageView:
    return StageView(name, target, lo, hi, q, cap, batch, busy, rate, resizable, arrivals, downstream, starting)


def test_grows_the_bottleneck_within_budget() -> None:
    st = PolicyState()
    d = decide([view("slow", 1, q=800, busy=0.98), view("fast", 1, q=0, busy=0.4)], budget=4, now_s=0, state=st)
    # in one step to its share: 4 cores x 0.98 / 1.38 cores used, within the 2.6 cores free
    assert [(x.stage, x.old, x.new) for x in d] == [("slow", 1, 3)]
    assert "queue 800/1000" in d[0].reason and "grow to 3" in d[0].reason


def test_the_bottleneck_grows_to_its_share_of_the_budget_in_one_step() -> None:
    """1 / 4 / 0.5 ms stages on 8 cores, started 2 / 2 / 2: b is the bottleneck, and at
    its rate a uses 0.5 cores and c 0.25, so b's share is 8 x 2 / 2.75 = 5.8: 6 workers
    at once, not one per period."""
    st = PolicyState()
    views = [view("a", 2, busy=0.25), view("b", 2, q=900, busy=1.0), view("c", 2, busy=0.125)]
    d = decide(views, budget=8, now_s=0, state=st)
    assert [(x.stage, x.old, x.new) for x in d] == [("b", 2, 6)]


def test_respects_max_and_budget() -> None:
    st = PolicyState()
    assert decide([view("slow", 8, q=900, busy=1.0, hi=8)], budget=16, now_s=0, state=st) == []
    st = PolicyState()
    # budget spent (2 + 1.2 cores busy of 3), queue not nearly full, nobody idle: no growth
    assert decide([view("a", 2, q=500, busy=1.0), view("b", 2, q=0, busy=0.6)], budget=3, now_s=0, state=st) == []


def test_a_nearly_full_queue_grows_even_when_cores_are_busy_within_the_process_cap() -> None:
    st = PolicyState()
    d = decide([view("up", 1, busy=1.0), view("b", 1, q=900, busy=1.0)], budget=2, now_s=0, state=st)
    assert [(x.stage, x.new) for x in d] == [("b", 2)] and "nearly full" in d[0].reason
    st = PolicyState()
    assert decide([view("up", 2, busy=1.0), view("b", 2, q=900, busy=1.0)], budget=2, now_s=0, state=st) == []


def test_budget_counts_busy_cores_not_processes() -> None:
    # four stages of one worker on 2 cores: only 1.3 cores busy, so the bottleneck grows
    st = PolicyState()
    views = [view("a", 1, busy=0.2), view("b", 1, q=900, busy=1.0), view("c", 1, busy=0.1), view("s", 1, busy=0.0)]
    d = decide(views, budget=2, now_s=0, state=st)
    assert [(x.stage, x.new) for x in d] == [("b", 2)] and "1.3 of 2 cores busy" in d[0].reason


def test_takes_a_core_from_an_idle_stage_when_the_budget_is_spent() -> None:
    st = PolicyState()
    d = decide([view("a", 2, q=500, busy=1.0), view("b", 2, q=0, busy=0.05)], budget=2, now_s=0, state=st)
    assert [(x.stage, x.new) for x in d] == [("b", 1), ("a", 3)]
    assert "gives 1 to 'a'" in d[0].reason


def test_shrinks_only_after_the_idle_timeout_and_not_below_min() -> None:
    st = PolicyState()
    idle = [view("a", 3, busy=0.05, lo=2)]
    assert decide(idle, budget=8, now_s=0.0, state=st) == []
    assert decide(idle, budget=8, now_s=IDLE_TIMEOUT_S / 2, state=st) == []
    d = decide(idle, budget=8, now_s=IDLE_TIMEOUT_S + 0.1, state=st)
    assert [(x.old, x.new) for x in d] == [(3, 2)] and "idle for" in d[0].reason
    assert decide([view("a", 2, busy=0.0, lo=2)], budget=8, now_s=60, state=st) == []


def test_noisy_input_does_not_make_the_pool_oscillate() -> None:
    st = PolicyState()
    target = 2
    history = []
    for i in range(40):
        busy = 0.9 if i % 2 else 0.2
        q = 600 if i % 2 else 0
        d = decide([view("a", target, q=q, busy=busy, rate=100 + i)], budget=8, now_s=i * 0.5, state=st)
        for x in d:
            target = x.new
            history.append((i, x.new))
    # at most one change per cooldown window, and never shrinks while it keeps growing into noise
    periods = [i for i, _ in history]
    assert all(b - a >= 3 for a, b in zip(periods, periods[1:], strict=False)), history
    assert len(history) <= 40 // 3


def test_thrashing_guard_reverts_a_growth_that_did_not_pay() -> None:
    st = PolicyState()
    d = decide([view("a", 2, q=900, busy=1.0, rate=100), view("b", 2, busy=1.0)], budget=8, now_s=0, state=st)
    assert d[0].new == 4  # its share: half of the budget
    for t in (0.5, 1.0):
        assert decide([view("a", 4, q=900, busy=1.0, rate=101)], budget=8, now_s=t, state=st) == []
    d = decide([view("a", 4, q=900, busy=1.0, rate=101)], budget=8, now_s=1.5, state=st)
    assert [(x.old, x.new) for x in d] == [(4, 2)] and "did not pay" in d[0].reason
    # and growth stays barred for a while
    for t in range(4, 12):
        assert all(x.new <= 2 for x in decide([view("a", 2, q=900, busy=1.0, rate=100)], 8, t, st))


def test_a_growth_is_judged_from_when_its_worker_is_ready() -> None:
    """A worker whose setup() takes longer than the guard's wait (loading a model) has
    not had its chance to pay: the guard waits for it, and the stage does not grow again
    meanwhile; once it is ready, a growth that pays is kept."""
    st = PolicyState()
    assert decide([view("a", 2, q=900, busy=1.0, rate=100)], budget=8, now_s=0, state=st)[0].new == 8
    for t in range(1, 12):  # 11 periods of setup, the rate unchanged
        assert decide([view("a", 8, q=900, busy=1.0, rate=100, starting=6)], 8, t, st) == []
    for t in (12, 13, 14, 15):
        d = decide([view("a", 8, q=900, busy=1.0, rate=350)], 8, t, st)
        assert all(x.new >= 8 for x in d), d


def test_a_growth_that_pays_is_kept() -> None:
    st = PolicyState()
    decide([view("a", 2, q=900, busy=1.0, rate=100)], budget=8, now_s=0, state=st)
    for t in (0.5, 1.0, 1.5):
        d = decide([view("a", 3, q=400, busy=1.0, rate=150)], budget=8, now_s=t, state=st)
        assert all(x.new >= 3 for x in d)


def test_fixed_or_stateful_stages_are_never_resized() -> None:
    st = PolicyState()
    assert decide([view("k", 2, q=900, busy=1.0, resizable=False)], budget=8, now_s=0, state=st) == []


def test_a_queue_filling_faster_than_it_drains_grows_on_busy_cores() -> None:
    st = PolicyState()
    views = [view("up", 1, busy=1.0), view("b", 1, q=300, busy=1.0, rate=250, arrivals=900)]
    d = decide(views, budget=2, now_s=0, state=st)
    assert [(x.stage, x.new) for x in d] == [("b", 2)] and "filling (900/s in, 250/s out)" in d[0].reason


def test_of_several_backed_up_stages_the_slowest_grows_one_per_period() -> None:
    st = PolicyState()
    views = [view("a", 1, q=950, busy=1.0, rate=640), view("b", 1, q=450, busy=1.0, rate=174, arrivals=650)]
    d = decide(views, budget=2, now_s=0, state=st)
    assert [(x.stage, x.new) for x in d] == [("b", 2)]


def test_a_stage_whose_next_queue_is_half_full_does_not_grow() -> None:
    st = PolicyState()
    views = [view("a", 1, q=950, busy=1.0, rate=640, downstream=0.6), view("b", 2, q=600, busy=1.0, rate=300)]
    assert all(x.stage != "a" for x in decide(views, budget=2, now_s=0, state=st))


def test_a_queue_needs_two_events_of_room_per_producer() -> None:
    from sedamp.control.policy import capacity_problems
    from sedamp.spec import parse_topology

    def top(capacity: int, workers: str) -> Any:
        return parse_topology(
            f"""
stages:
  src: {{source: "m:src", to: a}}
  a: {{handler: "m:a", workers: {workers}, to: b}}
  b: {{sink: "m:b", queue: {{capacity: {capacity}}}}}
""",
            file="t.yaml",
            base_dir=Path("."),
            check_handlers=False,
        )

    assert capacity_problems(top(8, "4"), cores=2) == []
    [problem] = capacity_problems(top(7, "4"), cores=2)
    assert "holds 7 events but up to 4 processes" in problem and "capacity: 8" in problem
    assert capacity_problems(top(8, "{min: 1, max: auto}"), cores=4) == []
    assert capacity_problems(top(8, "{min: 1, max: auto}"), cores=16)  # auto = the core budget


def test_the_budget_yields_to_other_programs_and_takes_cores_back() -> None:
    """8 cores, capped at 8: another job starts using 6, so the budget falls (smoothed)
    towards 2, never below one core; when it ends, the budget climbs back to 8."""
    from sedamp.control.policy import machine_budget

    seen = None
    budgets = []
    for others in [0.0] * 2 + [6.0] * 12 + [0.0] * 12:
        budget, seen = machine_budget(8, 8, others, seen)
        budgets.append(budget)
    assert budgets[0] == 8 and 2.0 <= budgets[13] < 2.2 and budgets[-1] > 7.9
    assert budgets[2] == 5.0  # one busy period from nothing takes half of what it used, not every core
    assert budgets[3] == pytest.approx(8 - (0.3 * 3 + 0.7 * 6))  # a rise that goes on is followed faster
    assert budgets[14] == pytest.approx(8 - 0.7 * 5.9985, abs=0.01)  # a fall is followed more slowly
    assert machine_budget(4, 64, 10.0, None)[0] == 4  # the cap holds on a large machine
    assert machine_budget(8, 8, 20.0, None)[0] == 1.0  # never below one core


def test_a_program_that_starts_beside_the_run_makes_the_machine_shared_by_the_second_record() -> None:
    """On 2 cores a neighbour wanting a core reads about 0.6 of one while it contends
    with the pool, and the record in which it starts only part of that: by the next
    record the run must count the machine as shared (and yield), within 1 s at a
    period of 0.5 s."""
    from sedamp.control.policy import SHARED_MACHINE_CORES, machine_budget

    seen = None
    for others in (0.0, 0.3, 0.6):
        _, seen = machine_budget(2, 2, others, seen)
    assert seen is not None and seen >= SHARED_MACHINE_CORES
    # one period's burst from nothing is not a neighbour: the machine stays unshared
    for before in (0.0, 0.03):
        _, burst = machine_budget(2, 2, 0.6, machine_budget(2, 2, before, None)[1])
        assert burst < SHARED_MACHINE_CORES, before


def test_a_growth_whose_workers_run_on_cpu_is_not_taken_for_thrashing() -> None:
    """c grows while the load moves to it (its events cost 8x more): its rate after is no
    better than the mixed rate before, but its workers run (CPU close to busy time), so
    the new workers are not contending for cores: the growth stays."""
    st = PolicyState()
    assert decide([view("c", 8, q=900, busy=1.0, rate=4000, hi=64)], budget=32, now_s=0, state=st)[0].new == 32
    for t in (1, 2, 3, 4):
        d = decide([StageView("c", 32, 1, 64, 900, 1000, 8, 1.0, 4000, cpu=0.97)], 32, t, st)
        assert all(x.new >= 32 for x in d), d


def test_visits_per_event_read() -> None:
    from sedamp.control.policy import visits_of

    # src -> a -> b (a emits 3 per event) -> c, a filter that keeps a tenth
    feeds = {"c": {"b"}, "b": {"a"}, "a": {"src"}, "d": {"c"}}  # not in topological order
    arrivals = {"a": 900.0, "b": 2400.0, "c": 3000.0, "d": 300.0}
    completions = {"src": 1000.0, "a": 800.0, "b": 3000.0, "c": 3000.0}
    assert visits_of(feeds, arrivals, completions, ["src"]) == pytest.approx({"a": 1, "b": 3, "c": 3, "d": 0.3})
    # a copy down two branches that join arrives twice; a split by route arrives once
    feeds = {"l": {"src"}, "r": {"src"}, "j": {"l", "r"}}
    both = visits_of(feeds, {"j": 2000.0}, {"src": 1000.0, "l": 1000.0, "r": 1000.0}, ["src"])
    assert both["j"] == pytest.approx(2.0)
    feeds = {"x": {"src"}, "l": {"x"}, "r": {"x"}, "j": {"l", "r"}}
    split = visits_of(
        feeds, {"l": 250.0, "r": 750.0, "j": 1000.0}, {"src": 1000.0, "x": 1000.0, "l": 250.0, "r": 750.0}, ["src"]
    )
    assert split == pytest.approx({"x": 1.0, "l": 0.25, "r": 0.75, "j": 1.0})
    # a producer that completed nothing this period: not known
    assert "b" not in visits_of({"a": {"src"}, "b": {"a"}}, {"b": 10.0}, {"src": 5.0, "a": 0.0}, ["src"])


def _shift_view(name: str, target: int, *, q: int, busy: float, done: float, arrivals: float) -> StageView:
    return StageView(name, target, 1, 16, q, 2048, 8, busy, done, True, arrivals, 0.0, 0, cpu=busy, visits=1.0)


def test_the_first_period_is_sized_by_the_work_per_event_not_the_cores_used() -> None:
    """1 / 4 / 0.5 ms stages on 16 cores, started 5 / 5 / 5. In the first period a runs
    at its own rate (5,000/s), filling b's queue, so the cores a uses (5) overstate its
    need fourfold; b's share by the work per event is 16 x 4 / 5.5 = 11.6, taken in
    one period (from the unused cores and from c), not 7 now and the rest 1.5 s later."""
    views = [
        _shift_view("a", 5, q=0, busy=1.0, done=5000, arrivals=5000),
        _shift_view("b", 5, q=1862, busy=1.0, done=1250, arrivals=5000),
        _shift_view("c", 5, q=0, busy=0.125, done=1250, arrivals=1250),
    ]
    d = decide(views, budget=16, now_s=0.5, state=PolicyState())
    assert [(x.stage, x.new) for x in d] == [("c", 1), ("b", 12)], d


def test_a_growth_sized_on_a_change_of_phase_grows_on() -> None:
    """c's events turn from 0.5 ms to 4 ms: the period that saw it mixed both, so c grew
    to 3 only. The next period shows 4 ms an event: c grows on to its share at once
    instead of waiting out the cooldown; a growth into nothing new still waits."""
    st = PolicyState()
    first = [
        _shift_view("b", 13, q=0, busy=0.9, done=2600, arrivals=2600),
        _shift_view("c", 2, q=1299, busy=0.83, done=2635, arrivals=5201),
    ]
    assert [(x.stage, x.old, x.new) for x in decide(first, 16, 4.5, st)] == [("c", 2, 3)]
    changed = [
        _shift_view("b", 13, q=0, busy=0.09, done=720, arrivals=720),
        _shift_view("c", 3, q=2044, busy=0.96, done=720, arrivals=720),
    ]
    d = decide(changed, 16, 5.0, st)
    # its share: 16 x 4 ms / (4 ms + b's 13 x 0.09 / 720 = 1.6 ms) = 11.4
    assert [(x.stage, x.old, x.new) for x in d] == [("c", 3, 11)], d
    st = PolicyState()
    decide(first, 16, 4.5, st)
    same = [first[0], _shift_view("c", 3, q=1299, busy=0.83, done=2700, arrivals=5201)]
    assert decide(same, 16, 5.0, st) == []


def test_an_idle_pool_gives_back_what_its_load_does_not_need_in_one_step() -> None:
    """64 workers 8% busy after the arrival rate fell: 64 x 0.08 / 0.75 = 6.8, so 7 stay,
    all the others leave after one idle timeout (one a timeout took two minutes)."""
    st = PolicyState()
    assert decide([view("a", 64, busy=0.08, hi=64)], budget=64, now_s=0.0, state=st) == []
    d = decide([view("a", 64, busy=0.08, hi=64)], budget=64, now_s=IDLE_TIMEOUT_S, state=st)
    assert [(x.old, x.new) for x in d] == [(64, 7)], d
    st = PolicyState()  # an idle pool of 2 at its min of 1 gives back one
    decide([view("a", 2, busy=0.0)], budget=4, now_s=0.0, state=st)
    assert [(x.old, x.new) for x in decide([view("a", 2, busy=0.0)], 4, IDLE_TIMEOUT_S, st)] == [(2, 1)]


def test_pools_yield_cores_when_another_program_takes_some() -> None:
    """2 cores; a CPU-bound program starts and takes one: the budget falls to 1, and the
    two workers, each getting 2/3 of a core, give one back at once; no growth past the
    budget while the other program runs; when it ends the pool may grow again."""
    busy = [StageView("w", 2, 1, 2, 2000, 2048, 8, 1.0, 160.0, True, 250.0, 0.0, 0, cpu=0.67, visits=1.0)]
    d = decide(busy, budget=1, now_s=0.0, state=PolicyState(), others=0.9)
    assert [(x.old, x.new) for x in d] == [(2, 1)] and "other programs" in d[0].reason, d
    one = [StageView("w", 1, 1, 2, 2000, 2048, 8, 1.0, 120.0, True, 250.0, 0.0, 0, cpu=0.98, visits=1.0)]
    assert decide(one, budget=1, now_s=0.0, state=PolicyState(), others=0.9) == []  # no growth past it
    d = decide(one, budget=2, now_s=0.0, state=PolicyState(), others=0.4)  # it ended: the budget is back
    assert [(x.old, x.new) for x in d] == [(1, 2)], d
    # the run's own use within the budget, or a machine of its own: nothing to yield
    assert decide(busy, budget=2, now_s=0.0, state=PolicyState(), others=0.9) == []


def test_pools_yield_by_the_cores_they_want_not_the_share_they_get() -> None:
    """The neighbour benchmark: two busy workers got 0.6 of a core each while a program
    that wanted a whole one got 0.6 of one too. Counted by their CPU the pools used 1.2
    cores, within a budget of 1 and its slack, and kept both workers; and a neighbour
    reading 0.47 of a core (smoothed) did not yet make the machine shared. Busy
    CPU-bound workers want a core each: the pool yields."""
    busy = [StageView("w", 2, 1, 2, 2000, 2048, 8, 0.96, 160.0, True, 250.0, 0.0, 0, cpu=0.6, visits=1.0)]
    d = decide(busy, budget=1, now_s=0.0, state=PolicyState(), others=0.47)
    assert [(x.old, x.new) for x in d] == [(2, 1)] and "other programs" in d[0].reason, d
    # a program using a third of a core does not make the machine shared
    assert decide(busy, budget=1, now_s=0.0, state=PolicyState(), others=0.3) == []


def test_a_stage_that_has_its_share_does_not_grow_past_the_budget() -> None:
    """shift on 2 cores: a (1 ms) has a full queue only because the source runs ahead of
    it; its share by need is 2 x 1 / 5.5 = 0.36 core, so it stays at 1 worker instead
    of adding a fourth busy process on two cores (a real run did: 1.61 s, a 1 -> 2);
    nor does b, whose 2 workers cover its share of 1.45 cores."""
    views = [
        _shift_view("a", 1, q=1910, busy=1.0, done=1000, arrivals=1000),
        _shift_view("b", 2, q=600, busy=1.0, done=500, arrivals=1000),
        _shift_view("c", 1, q=0, busy=0.12, done=500, arrivals=500),
    ]
    st = PolicyState()
    st.changed_at["b"] = -10
    assert decide(views, budget=2, now_s=1.6, state=st) == []
    # in the first period c has completed nothing yet: its need is not known, but it can
    # only make a's share smaller, so a still does not grow
    first = [*views[:2], _shift_view("c", 1, q=40, busy=0.12, done=0, arrivals=80)]
    assert first[2].need is None
    assert decide(first, budget=2, now_s=1.1, state=PolicyState()) == []


def test_a_pool_that_waits_on_io_neither_yields_nor_is_held_at_a_core_per_worker() -> None:
    """16 workers busy all the time but on CPU 5% of it (0.8 of a core): on a shared
    machine over budget the CPU-bound stage yields and the I/O-bound one keeps its
    workers (it went 16 -> 1); and a full I/O-bound queue still grows past the budget."""
    cpu = StageView("cpu", 6, 1, 16, 0, 1000, 8, 0.95, 100.0, cpu=0.9, visits=1.0)
    io = StageView("io", 16, 1, 32, 300, 1000, 8, 1.0, 100.0, cpu=0.05, visits=1.0)
    d = decide([cpu, io], 4, 100.0, PolicyState(period=10), others=1.0)
    assert [x.stage for x in d] == ["cpu"], d
    cpu = StageView("cpu", 6, 1, 32, 900, 1000, 8, 0.95, 400.0, cpu=0.95, visits=1.0)
    io = StageView("io", 4, 1, 32, 900, 1000, 8, 1.0, 40.0, True, 400.0, cpu=0.05, visits=1.0)
    assert [(x.stage, x.old, x.new) for x in decide([cpu, io], 6, 100.0, PolicyState(period=10))] == [("io", 4, 5)]


def test_on_a_shared_machine_growth_and_yielding_do_not_undo_each_other() -> None:
    """b's share of a budget of 2 is 1.45 cores: it grows to 2 (its share rounded up)
    and, at 2, the yield leaves it there (it cut it back to 1 every 1.5 s)."""
    views = [  # 1 / 4 / 0.5 ms an event at 500/s; the pools use 2.75 cores of a budget of 2
        StageView("a", 1, 1, 4, 0, 2048, 8, 0.5, 500.0, True, 500.0, cpu=0.5, visits=1.0),
        StageView("b", 2, 1, 4, 2000, 2048, 8, 1.0, 500.0, True, 500.0, cpu=1.0, visits=1.0),
        StageView("c", 1, 1, 4, 0, 2048, 8, 0.25, 500.0, True, 500.0, cpu=0.25, visits=1.0),
    ]
    assert decide(views, 2, 100.0, PolicyState(period=10), others=1.5) == []


def test_needs_are_not_compared_across_sources() -> None:
    from sedamp.control.policy import visits_of

    # s1 at 100/s feeds a, s2 at 10/s feeds b: an event of s1 is not one of s2
    assert visits_of({"a": {"s1"}, "b": {"s2"}}, {"a": 100.0, "b": 10.0}, {"s1": 100.0, "s2": 10.0}, ["s1", "s2"]) == {}


def test_a_stage_that_finishes_within_two_periods_leaves_its_cores_to_the_bottleneck() -> None:
    """The shift benchmark as the load reaches c: a and b will be done in under a second
    (the sources have ended), but busy now, so growing c went past the process cap and
    waited a period, one core idle once b was done. Counted as finishing, they leave
    their cores to c, which grows at once."""

    def views(finishing: bool) -> list[StageView]:
        return [
            dataclasses.replace(_shift_view("a", 1, q=160, busy=0.94, done=330, arrivals=0), finishing=finishing),
            dataclasses.replace(_shift_view("b", 2, q=573, busy=0.93, done=1300, arrivals=330), finishing=finishing),
            _shift_view("c", 1, q=543, busy=0.97, done=150, arrivals=1300),
        ]

    assert decide(views(False), budget=2, now_s=5.8, state=PolicyState()) == []
    d = decide(views(True), budget=2, now_s=5.8, state=PolicyState())
    assert [(x.stage, x.old, x.new) for x in d] == [("c", 1, 2)], d
    # nor does a finishing stage grow: a worker started for the last half second of its work
    late = [dataclasses.replace(_shift_view("a", 1, q=900, busy=1.0, done=1300, arrivals=0), finishing=True)]
    assert decide(late, budget=2, now_s=5.8, state=PolicyState()) == []


def test_a_queue_that_filled_within_the_period_grows_at_a_lower_busy_bar() -> None:
    """The shift benchmark's record at 4.72 s (2026-12-07 14:53, round 4): b (two workers)
    ends its backlog within two periods, a has ended; c's queue went from 0 to 395 at
    2.8x its rate, its one worker 73% busy over a period whose start it spent on light
    events. It waited for the next record, one core idle once b ended. It grows now; a
    queue backed up but not filling still needs GROW_BUSY."""

    def views(c_arrivals: float) -> list[StageView]:
        return [
            dataclasses.replace(_shift_view("b", 2, q=862, busy=0.95, done=1472, arrivals=0), finishing=True),
            _shift_view("c", 1, q=395, busy=0.73, done=460, arrivals=c_arrivals),
        ]

    d = decide(views(1300), budget=2, now_s=4.72, state=PolicyState())
    assert [(x.stage, x.old, x.new) for x in d] == [("c", 1, 2)], d
    assert decide(views(500), budget=2, now_s=4.72, state=PolicyState()) == []
    half_idle = [views(1300)[0], _shift_view("c", 1, q=395, busy=0.4, done=460, arrivals=1300)]
    assert decide(half_idle, budget=2, now_s=4.72, state=PolicyState()) == []


def test_a_growth_undone_on_contended_cores_is_tried_again_when_cores_fall_idle() -> None:
    """c grew beside a busy a on 2 cores and did not pay: undone and barred. Once a has
    ended, a core is idle: c grows onto it within its bar, after the cooldown. (Barred
    with cores idle, a stage stays barred: the thrashing guard's own test.)"""
    st = PolicyState()
    busy_a = view("a", 1, busy=1.0)
    assert [(x.stage, x.new) for x in decide([busy_a, view("c", 1, q=900, busy=1.0)], 2, 0, st)] == [("c", 2)]
    for t in (0.5, 1.0):
        assert decide([busy_a, view("c", 2, q=900, busy=1.0)], 2, t, st) == []
    d = decide([busy_a, view("c", 2, q=900, busy=1.0)], 2, 1.5, st)
    assert [(x.stage, x.new) for x in d] == [("c", 1)] and "did not pay" in d[0].reason
    grown = []
    for t in (2.0, 2.5, 3.0, 3.5):  # a has ended; the bar lasts THRASH_BAR_PERIODS (5 s)
        grown += decide([view("c", 1, q=900, busy=1.0)], 2, t, st)
    assert [(x.stage, x.new) for x in grown] == [("c", 2)] and "1.0 of 2 cores busy" in grown[0].reason


def test_a_pool_finishes_when_its_backlog_and_all_upstream_of_it_take_under_two_periods() -> None:
    feeds = {"a": {"src"}, "b": {"a"}, "c": {"b"}, "j": {"b", "c"}}
    backlog = {"a": 100.0, "b": 300.0, "c": 0.0, "j": 0.0}
    rates = {"a": 500.0, "b": 1000.0, "c": 150.0, "j": 0.0}
    arrivals = {"a": 0.0, "b": 500.0, "c": 1000.0, "j": 0.0}
    # a: 100 / 500 = 0.2 s; b: (300 + 100) / 1000 = 0.4 s; c: 400 / 150 = 2.7 s; j: no rate
    assert policy.finishing(feeds, backlog, rates, arrivals, period_s=0.5) == {"a", "b"}
    assert policy.finishing(feeds, backlog, rates, arrivals, period_s=0.15) == {"a"}  # b needs 0.4 s of 0.3
    # c's queue fills (its events turned dear as the last input reached it): not finishing
    fast_c = {**rates, "c": 800.0}  # 400 / 800 = 0.5 s
    assert policy.finishing(feeds, backlog, fast_c, arrivals, period_s=0.5) == {"a", "b"}
    assert policy.finishing(feeds, backlog, fast_c, {**arrivals, "c": 700.0}, period_s=0.5) == {"a", "b", "c"}


def test_the_first_record_grows_only_a_pool_with_none_resizable_after_it() -> None:
    """0.1 s in, the queue after the source holds its first burst and the pools after it
    have barely begun: the shift benchmark's 1 ms stage a read backed up and busy while
    the 4 ms stage b after it had an empty queue, and a grew and took a core from b."""
    import dataclasses

    def shift(**b: Any) -> list[StageView]:
        a = dataclasses.replace(view("a", 1, q=1900, busy=0.93, rate=468.0), downstream=("b",))
        return [
            a,
            dataclasses.replace(view("b", 1, busy=0.8, rate=73.0, **b), downstream=("c",)),
            view("c", 1, busy=0.1),
        ]

    st = PolicyState()
    assert decide(shift(), budget=2, now_s=0.1, state=st) == []  # the first record: a waits
    d = decide(shift(q=150, arrivals=600.0), budget=2, now_s=0.25, state=st)  # the second: b backs up
    assert [(x.stage, x.new) for x in d] == [("b", 2)], d
    # a pool with only a fixed pool after it (the heavy benchmark's fused pool, then its sink)
    heavy = dataclasses.replace(view("abc", 1, q=280, busy=0.95, rate=95.0), downstream=("sink",))
    sink = view("sink", 1, busy=0.02, lo=1, hi=1, resizable=False)
    d = decide([heavy, sink], budget=2, now_s=0.1, state=PolicyState())
    assert [(x.stage, x.new) for x in d] == [("abc", 2)], d

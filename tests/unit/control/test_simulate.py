"""The simulator (sedamp.control.simulate, simmodel, simprofile, simrecord): the real
pool policy on a fluid model of the stages. Pure: no process starts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sedamp.control import simprofile
from sedamp.control.simmodel import SimPool
from sedamp.control.simprofile import Phase, Profile, StageCost, with_flags
from sedamp.control.simulate import simulate
from sedamp.errors import SimulationError
from sedamp.observe.report import summarize
from sedamp.spec import Topology, build_topology

REPO = Path(__file__).resolve().parents[3]
SHIFT = REPO / "topologies" / "shift.yaml"
SHIFT_COSTS = {"a": "1ms", "b": "4ms,0.5ms@50%", "c": "0.5ms,4ms@50%"}


def build(tree: dict[str, object]) -> Topology:
    return build_topology(tree, file="<test>", base_dir=REPO, check_handlers=False)


def chain(*middle: str, workers: dict[str, object] | None = None, policy: str = "adaptive") -> Topology:
    """src -> the `middle` handlers -> sink, built in code (no stage is imported)."""
    names = [*middle, "sink"]
    stages: dict[str, object] = {"src": {"source": "m:Src", "params": {"count": 1000}, "to": names[0]}}
    for name, nxt in zip(middle, names[1:], strict=False):
        stages[name] = {"handler": f"m:{name}", "to": nxt, "workers": (workers or {}).get(name, {"min": 1, "max": "auto"})}
    stages["sink"] = {"sink": "m:Sink"}
    return build({"name": "t", "stages": stages, "controller": {"policy": policy}})


# ---------------------------------------------------------------- the flags' forms


def test_times_costs_and_rates_parse() -> None:
    assert simprofile.parse_time("4ms", "x") == pytest.approx(0.004)
    assert simprofile.parse_time("250us", "x") == pytest.approx(0.00025)
    assert simprofile.parse_cost("4ms,0.5ms@50%", "x") == (Phase(0.004), Phase(0.0005, at_share=0.5))
    assert simprofile.parse_cost("1ms,3ms@1500,2ms@10s", "x")[1:] == (Phase(0.003, at_events=1500), Phase(0.002, at_s=10))
    assert simprofile.parse_rate("unlimited", "x") is None
    steps = simprofile.parse_rate("40/s:3s,380/s:4s", "x")
    assert steps is not None and [(s.per_s, s.seconds) for s in steps] == [(40, 3), (380, 4)]
    assert simprofile.parse_rate("100/s", "x")[0].seconds == math.inf  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("4", "'4' is not a time (write it with a unit"),
        ("4ms@10%,1ms", "the first cost holds from the start"),
        ("4ms,1ms", "say from when '1ms' holds"),
        ("4ms,1ms@150%", "'@150%' is not N% (0-100)"),
    ],
)
def test_a_bad_cost_is_named_with_the_form_expected(text: str, fragment: str) -> None:
    with pytest.raises(SimulationError, match="--cost b") as e:
        simprofile.parse_cost(text, "--cost b")
    assert fragment in str(e.value)


def test_a_cost_for_a_stage_the_topology_lacks_lists_its_stages() -> None:
    with pytest.raises(SimulationError, match=r"no stage 'zz' in shift .* \(its stages: a, b, c, collect\)"):
        simulate(SHIFT, 2, with_flags(Profile(), costs={"zz": "1ms"}))


def test_a_profile_file_and_the_flags_over_it(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("events: 500\nrate: 100/s\nstages:\n  b: {cost: [4ms, 1ms@50%], setup: 2s}\n  c: {cost: 1ms}\n")
    p = with_flags(simprofile.load_profile(f), costs={"c": "2ms"}, noise=0.1)
    assert p.events == 500 and p.noise == 0.1 and p.rate is not None and p.rate[0].per_s == 100
    assert p.of("b") == StageCost((Phase(0.004), Phase(0.001, at_share=0.5)), 2.0)
    assert p.of("c").phases == (Phase(0.002),)
    f.write_text("stages: {}\nsped: 1\n")
    with pytest.raises(SimulationError, match=r"p.yaml: unknown key 'sped'"):
        simprofile.load_profile(f)


def test_the_events_default_to_the_source_count_param() -> None:
    assert simulate(SHIFT, 2, with_flags(Profile(), costs={"a": "0.1ms"})).events == 3000
    with pytest.raises(SimulationError, match="give --events N"):
        simprofile.events_of(Profile(), build({"name": "t", "stages": {"s": {"source": "m:S", "to": "k"}, "k": {"sink": "m:K"}}}))


# ---------------------------------------------------------------- the model


def test_a_static_pipeline_runs_at_its_bottleneck_rate() -> None:
    """No controller, 6 cores, 1 / 4 / 1 workers at 1 / 4 / 0.5 ms then c at 4 ms: the
    first half at 1,000 events/s (1.5 s), the second at c's 250/s (6 s)."""
    p = with_flags(Profile(), costs=SHIFT_COSTS, events=3000)
    run = simulate(SHIFT, 6, p, split={"a": 1, "b": 4, "c": 1}, adaptive=False)
    assert 7.4 <= run.wall_s <= 7.8 and run.decisions == ()
    assert run.limit_s == pytest.approx(3000 * 5.5e-3 / 6, rel=1e-3)  # 5.5 ms of CPU per event, either half


def test_processor_sharing_slows_every_worker_when_cores_are_short() -> None:
    """Two 1 ms stages, 2 workers each, on 2 cores: 4 workers share 2 cores, so 1,000
    events take 2 x 1,000 x 1 ms / 2 cores = 1 s, not the 0.5 s 4 cores would take."""
    top = chain("x", "y")
    p = with_flags(Profile(), costs={"x": "1ms", "y": "1ms"})
    two = simulate(top, 2, p, split={"x": 2, "y": 2}, adaptive=False)
    four = simulate(top, 4, p, split={"x": 2, "y": 2}, adaptive=False)
    assert two.wall_s == pytest.approx(1.0, abs=0.05) and four.wall_s == pytest.approx(0.5, abs=0.05)


def test_a_paced_source_sets_the_pace() -> None:
    run = simulate(chain("x"), 2, with_flags(Profile(), costs={"x": "1ms"}, rate=simprofile.parse_rate("100/s", "r")))
    assert run.wall_s == pytest.approx(10.0, abs=0.1)
    mid = run.records[len(run.records) // 2]["stages"]
    assert mid["x"]["completions_per_s"] == pytest.approx(100, rel=0.05)
    assert mid["src"]["waiting_s_per_s"] > 0.9  # the source waits for its next slot


def test_the_controller_follows_the_load_at_64_cores() -> None:
    """The shift workload at 64 cores: well ahead of the split that suits the first half."""
    p = with_flags(Profile(), costs=SHIFT_COSTS, events=30_000)
    adaptive = simulate(SHIFT, 64, p, split={"a": 21, "b": 21, "c": 21})
    static = simulate(SHIFT, 64, p, split={"a": 12, "b": 46, "c": 6}, adaptive=False)
    assert static.wall_s / adaptive.wall_s >= 1.3
    assert adaptive.decisions and adaptive.wall_s >= adaptive.limit_s


def test_a_slow_setup_is_waited_for_and_not_taken_for_thrashing() -> None:
    """b costs 20 ms and a new worker's setup() takes 2 s: the growth is decided, its
    workers count as starting (workers > ready) until set up, and the thrashing guard
    does not undo it."""
    p = with_flags(Profile(), costs={"a": "0.1ms", "b": "20ms", "c": "0.1ms"}, setups={"b": "2s"}, events=600)
    run = simulate(SHIFT, 4, p)
    grows = [d for d in run.decisions if d["stage"] == "b" and d["to"] > d["from"]]
    assert grows and not [d for d in run.decisions if "did not pay" in d["reason"]]
    at = grows[0]["elapsed_s"]
    starting = [r for r in run.records if at < r["elapsed_s"] < at + 2.0]
    assert starting and all(r["stages"]["b"]["ready"] < r["stages"]["b"]["workers"] for r in starting)


def test_noise_is_seeded() -> None:
    def run(seed: int) -> list[float]:
        p = with_flags(Profile(), costs=SHIFT_COSTS, events=1000, noise=0.2, seed=seed)
        return [r["stages"]["b"]["completions_per_s"] for r in simulate(SHIFT, 4, p).records]

    assert run(1) == run(1) and run(1) != run(2)


def test_a_pool_whose_input_ended_lets_its_workers_go() -> None:
    run = simulate(SHIFT, 2, with_flags(Profile(), costs=SHIFT_COSTS, events=500))
    final = run.records[-1]
    assert final["final"] and all(final["stages"][n]["workers"] == 0 for n in ("a", "b", "c", "collect"))
    assert final["stages"]["collect"]["events_in"] == 500


def test_a_fused_chain_is_one_pool_whose_cost_is_its_stages() -> None:
    """x -> y, both cheap and without pools of their own: the runtime fuses them, and so
    does the simulation: one pool, x's queue, 2 ms per event."""
    top = build(
        {"name": "t", "stages": {
            "src": {"source": "m:S", "params": {"count": 1000}, "to": "x"},
            "x": {"handler": "m:x", "to": "y"}, "y": {"handler": "m:y", "to": "k"}, "k": {"sink": "m:K"},
        }},
    )  # fmt: skip
    run = simulate(top, 1, with_flags(Profile(), costs={"x": "1ms", "y": "1ms"}))
    assert run.pools == ("x", "k")
    assert run.wall_s == pytest.approx(2.0, abs=0.05)
    assert run.records[0]["stages"]["y"]["worker_detail"] == [] and run.records[0]["stages"]["y"]["group"]


def test_other_programs_take_cores_and_budget() -> None:
    p = with_flags(Profile(), costs={"x": "1ms"}, other_cores=1.0)
    run = simulate(chain("x"), 2, p, split={"x": 2}, adaptive=False)
    assert run.wall_s == pytest.approx(1.0, abs=0.05)  # 1,000 ms of CPU on the one core left
    assert run.records[0]["system"]["budget"] == 1.0 and run.records[0]["system"]["other_cores"] == 1.0
    # a neighbour that takes a core for the first second only
    steps = simprofile.parse_load("1:1s,0:1s", "--others")
    stepped = simulate(chain("x"), 2, with_flags(p, other_cores=steps, events=2000), split={"x": 2}, adaptive=False)
    assert stepped.wall_s == pytest.approx(1.5, abs=0.05)  # 1 core for 1 s: 1,000 events; 1,000 more on 2
    # records at 0.1, 0.25, 0.75 and 1.25 s
    assert [r["system"]["other_cores"] for r in stepped.records[:4]] == [1.0, 1.0, 1.0, 0.0]
    with pytest.raises(SimulationError, match=r"--others: 'x:1s' is not a load"):
        simprofile.parse_load("x:1s", "--others")


def test_shrinking_stops_starting_workers_first() -> None:
    pool = SimPool("x", ("x",), (StageCost(),), (), 10, ready=2)
    pool.resize(5, ready_at=1.0)
    pool.resize(3, ready_at=1.0)
    assert (pool.ready, pool.starting, pool.goal) == (2, 1, 3)
    pool.resize(1, ready_at=1.0)
    assert (pool.ready, pool.starting, pool.goal) == (1, 0, 1)


# ---------------------------------------------------------------- the records


def test_the_records_are_metrics_lines_the_readers_read() -> None:
    """Same keys as a real run's record, and what `sedamp report` and `sedamp top` read."""
    from sedamp.cli.control import table
    from sedamp.control.recorder import Period, StageCounts, StageRecord

    run = simulate(SHIFT, 2, with_flags(Profile(), costs=SHIFT_COSTS, events=1000))
    counts = StageCounts("handler", None, 1, 1, None, {}, 0, 0, 0, 0, 0, 0)
    real_stage = StageRecord(counts, (1, 1), 0.0, 0.0, {}, None, None, ()).as_dict()
    real = Period(0.0, 0.0, False, 2, 0.0, 0.0, {"a": StageRecord(counts, (1, 1), 0, 0, {}, None, None, ())}, []).as_dict()
    for r in run.records:
        assert set(r) == set(real)
        assert set(r["system"]) == set(real["system"])
        assert set(r["stages"]["b"]) == set(real_stage)
    assert any(r["decisions"] for r in run.records)
    assert all({"stage", "from", "to", "reason"} == set(d) for r in run.records for d in r["decisions"])
    totals = summarize(list(run.records))
    by_name = {s.name: s for s in totals.stages}
    assert totals.finished and by_name["collect"].events_in == 1000 and by_name["b"].peak_workers >= 1
    assert len(totals.decisions) == len(run.decisions)
    table({"name": "shift", "pid": 0, "run_dir": "(simulated)"}, run.records[2])


def test_a_schedule_sets_the_pools_at_its_times_with_their_workers_ready() -> None:
    """An oracle's sizes: x has 1 worker, then 3 from 1 s, then 1 again from 2 s; with
    no controller nothing else resizes it."""
    top = chain("x")
    p = with_flags(Profile(), costs={"x": "1ms"}, rate=simprofile.parse_rate("1000/s", "r"), events=3000)
    run = simulate(top, 4, p, split={"x": 1}, adaptive=False, schedule=[(2.0, {"x": 1}), (1.0, {"x": 3})])
    seen = [(r["elapsed_s"], r["stages"]["x"]["workers"]) for r in run.records if not r["final"]]
    assert {w for t, w in seen if t < 1.0} == {1}
    assert {w for t, w in seen if 1.0 < t < 2.0} == {3}
    assert {w for t, w in seen if 2.0 < t < 2.9} == {1}
    assert run.decisions == ()


def test_a_pool_that_ends_brings_the_next_record_forward() -> None:
    """x (1 ms, then 0.1 ms) ends while y (0.1 ms, then 4 ms) has a backlog: the record
    that sees x ended comes a tenth of a period after, not on the period's schedule, and
    y grows onto x's core in it, as in a real run (`policy.END_RECORD`)."""
    p = with_flags(Profile(), costs={"x": "1ms,0.1ms@50%", "y": "0.1ms,4ms@50%"}, events=2000)
    run = simulate(chain("x", "y"), 2, p)
    i = next(i for i, r in enumerate(run.records) if r["stages"]["x"]["workers"] == 0)
    gap = run.records[i]["elapsed_s"] - run.records[i - 1]["elapsed_s"]
    assert i > 1 and gap < 0.5 * 0.5, [r["elapsed_s"] for r in run.records]
    assert [(d["stage"], d["to"]) for d in run.records[i]["decisions"]] == [("y", 2)]

"""scripts/bench_cores.py: the roles of a run's processes, the bound on N cores, and
the estimate drawn from runs on the cores this machine has."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_cores as bc  # noqa: E402


def test_each_process_of_a_sedamp_run_is_named_for_its_role() -> None:
    launcher = ["/venv/bin/python", "-P", "-m", "sedamp.runtime.launcher", "3", "6", "100"]
    assert (
        bc.role_of("sedamp", "python", ["python", "-m", "sedamp", "run"], is_root=True) == "command line + controller"
    )
    assert bc.role_of("sedamp", "python", launcher, is_root=False) == "launcher"
    assert bc.role_of("sedamp", "sdq:collect", launcher, is_root=False) == "queue collect"
    assert bc.role_of("sedamp", "sdw:a:3", launcher, is_root=False) == "pool a"
    assert bc.role_of("sedamp", "sds:seeds", launcher, is_root=False) == "source seeds"
    assert bc.role_of("pool", "python", ["python", "x.py"], is_root=True) == "main"
    assert bc.role_of("pool", "python", ["python", "x.py"], is_root=False) == "workers"


def test_a_role_is_read_again_until_the_process_has_its_own() -> None:
    """The launcher is a fork of the command line until it execs, and each child of the
    launcher is the launcher until it names itself: a process first read in between
    was counted under the wrong role for good (the launcher went missing from a table
    once, in a loaded suite)."""
    early = bc.role_of("sedamp", "python", ["python", "-m", "sedamp", "run", "t.yaml"], is_root=False)
    assert early == "other python" and not bc.settled(early)
    assert not bc.settled("launcher") and not bc.settled("")
    assert bc.settled("pool a") and bc.settled("queue a") and bc.settled("main") and bc.settled("workers")


def test_a_pool_spreads_over_its_largest_size_and_a_process_alone_over_one() -> None:
    pools = {"a": None, "collect": 1, "fixed": 4}  # a ranges up to the budget
    assert bc.spread("sedamp", "pool a", pools) is None
    assert bc.spread("sedamp", "pool collect", pools) == 1  # a sink of one worker
    assert bc.spread("sedamp", "pool fixed", pools) == 4
    assert bc.spread("sedamp", "queue a", pools) == 1
    assert bc.spread("sedamp", "command line + controller", pools) == 1
    assert bc.spread("pool", "workers", pools) is None
    assert bc.spread("pool", "main", pools) == 1


def test_the_pools_are_read_from_the_topology_as_sedamp_runs_it(tmp_path: Path) -> None:
    """tiny with no worker counts: a and b run fused, as one pool named a that ranges up
    to the budget; the sink keeps one worker."""
    import bench_whole

    assert bc.pool_sizes(bench_whole.topology("tiny", tmp_path)) == {"a": None, "collect": 1}


def test_a_run_is_pinned_to_cores_this_process_may_use() -> None:
    assert bc.cores_for([3, 2], 1) == [2]
    assert bc.cores_for([2, 3], 2) == [2, 3]


def test_the_bound_is_the_cpu_over_the_cores_or_the_largest_serial_part() -> None:
    groups = {"main": 0.7, "workers": 0.3}
    spreads = {"main": 1, "workers": None}
    assert bc.bound(1.0, groups, spreads, 1) == pytest.approx(1.0)
    assert bc.bound(1.0, groups, spreads, 2) == pytest.approx(0.7)  # main cannot use the second core
    assert bc.bound(1.0, {"workers": 1.0}, {"workers": None}, 4) == pytest.approx(0.25)


def _usage(wall: float, cpu: float, roles: dict[str, float]) -> bc.Usage:
    return bc.Usage(wall, cpu, {i: (r, c) for i, (r, c) in enumerate(roles.items())})


def test_the_estimate_scales_the_bound_by_how_far_each_system_was_from_it_here() -> None:
    """sedamp: 2.0 s of CPU, 0.5 of it in a source that cannot spread; `pool`: 1.0 s, 0.7
    of it in its main process. Measured on 2 cores 1.2 s and 0.77 s: 1.2x and 1.1x their
    bounds (1.0, 0.7). On 8 cores the bounds are 0.5 (the source) and 0.7 (main)."""
    sedamp = {"source seeds": 0.5, "pool a": 1.5}
    pool = {"main": 0.7, "workers": 0.3}
    usages = {
        1: {"sedamp": [_usage(2.0, 2.0, sedamp)], "pool": [_usage(1.0, 1.0, pool)]},
        2: {"sedamp": [_usage(1.2, 2.0, sedamp)], "pool": [_usage(0.77, 1.0, pool)]},
    }
    table = bc.summarise(usages, {"a": None}, 1000)
    assert table["measured"]["sedamp"][2]["over"] == pytest.approx(1.2)
    assert table["measured"]["pool"][2]["over"] == pytest.approx(1.1)
    assert table["estimate"]["sedamp"][8]["wall_s"] == pytest.approx(0.5 * 1.2)
    assert table["estimate"]["pool"][8]["wall_s"] == pytest.approx(0.7 * 1.1)
    assert table["estimate"]["sedamp"][4]["wall_s"] == pytest.approx(0.5 * 1.2)  # 2.0 / 4 = 0.5 too


def test_a_short_run_on_one_core_reads_every_role_and_checks_the_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    """The real thing, small: both systems pinned to one core of those this process may
    use (the last: pinning to core 0 would escape a `taskset` that excludes it), their
    outputs checked, their processes read while they ran."""
    import os

    usable = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, usable[-1:])
    try:
        assert bc.main(["--events-tiny", "3000", "--rounds", "1", "--cores", "1", "--sample-ms", "5"]) == 0
    finally:
        os.sched_setaffinity(0, usable)
    out = capsys.readouterr().out
    assert "round 1 1 core(s) sedamp" in out and "round 1 1 core(s) pool" in out
    for role in ("command line + controller", "launcher", "queue a", "source seeds", "main"):
        assert role in out

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


def test_only_pools_that_grow_with_the_cores_spread_over_them() -> None:
    growing = {"a"}
    assert bc.spread("sedamp", "pool a", growing) is None
    assert bc.spread("sedamp", "pool collect", growing) == 1  # a sink of one worker
    assert bc.spread("sedamp", "queue a", growing) == 1
    assert bc.spread("sedamp", "command line + controller", growing) == 1
    assert bc.spread("pool", "workers", growing) is None
    assert bc.spread("pool", "main", growing) == 1


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
    table = bc.summarise(usages, {"a"}, 1000)
    assert table["measured"]["sedamp"][2]["over"] == pytest.approx(1.2)
    assert table["measured"]["pool"][2]["over"] == pytest.approx(1.1)
    assert table["estimate"]["sedamp"][8]["wall_s"] == pytest.approx(0.5 * 1.2)
    assert table["estimate"]["pool"][8]["wall_s"] == pytest.approx(0.7 * 1.1)
    assert table["estimate"]["sedamp"][4]["wall_s"] == pytest.approx(0.5 * 1.2)  # 2.0 / 4 = 0.5 too


def test_a_short_run_on_one_core_reads_every_role_and_checks_the_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    """The real thing, small: both systems pinned to one core, their outputs checked,
    their processes read while they ran."""
    assert bc.main(["--events-tiny", "3000", "--rounds", "1", "--cores", "1", "--sample-ms", "5"]) == 0
    out = capsys.readouterr().out
    assert "round 1 1 core(s) sedamp" in out and "round 1 1 core(s) pool" in out
    for role in ("command line + controller", "launcher", "queue a", "source seeds", "main"):
        assert role in out

"""`sedamp simulate` run as a user runs it: a real process, its stdout, stderr and exit
code. It starts no runtime process (the simulation is pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.util import REPO, run_sedamp

SHIFT = str(REPO / "topologies" / "shift.yaml")
COSTS = ["--cost", "a=1ms", "--cost", "b=4ms,0.5ms@50%", "--cost", "c=0.5ms,4ms@50%"]


def test_simulate_prints_the_metrics_stream_and_a_summary() -> None:
    r = run_sedamp("simulate", SHIFT, "--cores", "2", *COSTS, "--events", "1500", timeout=120)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert records[-1]["final"] and not any(x["final"] for x in records[:-1])
    decisions = [d for x in records for d in x["decisions"]]
    assert decisions and all(d["reason"] for d in decisions)
    for x in records:
        for name in ("a", "b", "c"):
            s = x["stages"][name]
            assert {"workers", "target", "queue", "completions_per_s", "worker_detail"} <= set(s)
            assert all("busy" in w for w in s["worker_detail"])
    assert records[-1]["stages"]["collect"]["events_in"] == 1500
    assert r.stderr.startswith("shift: simulated on 2 cores, 1,500 events per source:")
    assert f"{decisions[0]['stage']}: {decisions[0]['from']} -> {decisions[0]['to']}" in r.stderr


def test_simulate_writes_the_metrics_file_and_the_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    profile = tmp_path / "shift.yaml"
    profile.write_text("events: 600\nstages:\n  a: {cost: 1ms}\n  b: {cost: 4ms, setup: 1s}\n  c: {cost: 0.5ms}\n")
    out, png = tmp_path / "m.jsonl", tmp_path / "p.png"
    r = run_sedamp("simulate", SHIFT, "--cores", "4", "--profile", str(profile), "--metrics", str(out), "--plot", str(png), "-q")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""
    assert json.loads(out.read_text().splitlines()[-1])["final"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cost", "b=4xs"], "error: --cost b: '4xs' is not a time (write it with a unit: 250us, 4ms, 2s)"),
        (["--cost", "zz=1ms"], "error: no stage 'zz' in shift to give a cost to (its stages: a, b, c, collect)"),
        (["--cost", "b"], "error: --cost b: expected STAGE=VALUE, e.g. --cost b=4ms,0.5ms@50%"),
        (["--rate", "fast"], "error: --rate: 'fast' is not a rate: write unlimited, 100/s, or steps 40/s:3s,380/s:4s"),
        (["--profile", "/nonexistent/p.yaml"], "error: cannot read the profile /nonexistent/p.yaml: No such file"),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    r = run_sedamp("simulate", SHIFT, "--cores", "2", *args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().startswith(message) and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_a_bad_topology_is_refused_with_exit_2(tmp_path: Path) -> None:
    r = run_sedamp("simulate", str(tmp_path / "none.yaml"), "--cores", "2")
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr

"""The run's life: failures in user code, interrupts, deaths. Real processes throughout;
the autouse fixture in conftest.py fails any test that leaves a process behind."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from sedamp.control.wiring import SOURCE_BATCH_EVENTS
from sedamp.runtime.configs import MAX_BATCH_EVENTS
from sedamp.runtime.deadletter import read_dead_letters
from tests.conftest import tagged_processes, wait_until
from tests.integration.teststages import read_records
from tests.integration.util import (
    chain_yaml,
    run_sedamp,
    stage_count,
    stage_of,
    start_run,
    start_run_logged,
    summary_of,
)

T = "tests.integration.teststages"


def topology(tmp: Path, body: str, name: str = "t") -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(f"name: {name}\n{body}")
    return path


def chain(out: Path, middle: str, count: int = 200, delay_s: float = 0.0, extra: str = "") -> str:
    return chain_yaml(out, middle, count=count, delay_s=delay_s, extra=extra)


def test_handler_exception_goes_to_dead_letters(tmp_path: Path, workdir: Path) -> None:
    out = tmp_path / "out.jsonl"
    topo = topology(tmp_path, chain(out, f"    handler: {T}:fail_on\n    params: {{modulo: 7}}\n    workers: 2"))
    proc = run_sedamp("run", str(topo), "--workdir", str(workdir), "--json")
    assert proc.returncode == 1, proc.stderr
    s = summary_of(proc)
    failing = [n for n in range(200) if n % 7 == 0]
    assert s["failed"] == len(failing) == stage_of(s, "mid")["failed"]
    assert sorted(e["n"] for e in read_records(out)) == [n for n in range(200) if n % 7]
    dead = read_dead_letters(s["dead_letters"])
    assert sorted(d["event"]["n"] for d in dead) == failing
    d = dead[0]
    assert d["stage"] == "mid" and d["error_type"] == "ValueError"
    assert "is a multiple of 7" in d["message"] and "fail_on" in d["traceback"]
    assert d["event_id"] == d["event"]["n"]  # ids are the source positions
    assert (Path(s["dead_letters"]).stat().st_mode & 0o777) == 0o600
    assert (Path(s["run_dir"]).stat().st_mode & 0o777) == 0o700


def test_unserializable_output_names_stage_and_type(tmp_path: Path, workdir: Path) -> None:
    out = tmp_path / "out.jsonl"
    topo = topology(tmp_path, chain(out, f"    handler: {T}:unserializable\n    params: {{modulo: 50}}"))
    proc = run_sedamp("run", str(topo), "--workdir", str(workdir), "--json")
    assert proc.returncode == 1, proc.stderr
    s = summary_of(proc)
    assert s["failed"] == 4
    dead = read_dead_letters(s["dead_letters"])
    assert {d["event"]["n"] for d in dead} == {0, 50, 100, 150}
    for d in dead:
        assert "stage 'mid'" in d["message"] and "builtins.object" in d["message"], d["message"]
    assert len(read_records(out)) == 196


def test_fan_out_and_list_events(tmp_path: Path, workdir: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    topo = topology(
        tmp_path,
        f"""
stages:
  src:
    source: {T}:Numbers
    params: {{count: 100}}
    to: [twice, listed]
  twice:
    handler: {T}:split
    to: a
  listed:
    handler: {T}:as_list
    to: b
  a:
    sink: {T}:Record
    params: {{out: "{a}"}}
  b:
    sink: {T}:Record
    params: {{out: "{b}"}}
""",
    )
    proc = run_sedamp("run", str(topo), "--workdir", str(workdir), "--json")
    assert proc.returncode == 0, proc.stderr
    got_a = sorted((e["n"], e["half"]) for e in read_records(a))
    assert got_a == [(n, h) for n in range(100) for h in (0, 1)]
    assert sorted(read_records(b)) == [[n, n] for n in range(100)]


def test_setup_failure_stops_the_run(tmp_path: Path, workdir: Path) -> None:
    out = tmp_path / "out.jsonl"
    topo = topology(tmp_path, chain(out, f"    handler: {T}:BadSetup"))
    proc = run_sedamp("run", str(topo), "--workdir", str(workdir))
    assert proc.returncode == 3
    assert "setup of stage 'mid'" in proc.stderr
    assert "RuntimeError: no model file at /nonexistent/model.bin" in proc.stderr


def test_backpressure_bounds_what_is_in_flight(tmp_path: Path) -> None:
    """A slow sink behind small queues holds the source back: at every moment the events
    read but not yet consumed stay within the queues' bounds, whatever the input size."""
    from sedamp.api import load
    from sedamp.control.controller import run_topology
    from sedamp.control.summary import RunOptions

    out = tmp_path / "out.jsonl"
    topo = topology(
        tmp_path,
        f"""
stages:
  src:
    source: {T}:Numbers
    params: {{count: 100}}
    to: mid
  mid:
    handler: json:dumps
    workers: {{min: 1, max: 2}}   # the sink's queue of 8 takes at most 4 producers
    queue: {{capacity: 8}}
    batch: 4
    to: sink
  sink:
    sink: json:dumps
    queue: {{capacity: 8}}
    batch: 4
""",
    )
    # --set overrides reach every kind of field
    top = load(
        topo,
        overrides=[
            f"mid.handler={T}:pause",
            "mid.params={delay_s: 0.001}",
            f"sink.sink={T}:Record",
            f"sink.params.out={out}",
            "src.params.count=1500",
            "controller.period_s=0.1",
        ],
    )
    assert top.stages["mid"].ref == f"{T}:pause"
    assert top.stages["sink"].params == {"out": str(out)}
    ticks: list[dict[str, Any]] = []
    summary = run_topology(top, RunOptions(workdir=tmp_path / "w", on_tick=ticks.append, handle_signals=False))
    assert summary.exit_code == 0, summary.error
    assert sorted(e["n"] for e in read_records(out)) == list(range(1500))
    assert ticks, "no tick was observed"
    for snap in ticks:
        for name in ("mid", "sink"):
            q = snap["stages"][name]["queue"]
            if q:
                assert q["length"] + q["leased"] + q["credit"] <= q["capacity"] == 8
        ahead = snap["stages"]["src"]["events_out"] - snap["stages"]["sink"]["events_in"]
        # two queues of 8, plus at most one batch of outputs waiting in each producer
        assert ahead <= 2 * 8 + SOURCE_BATCH_EVENTS + MAX_BATCH_EVENTS, snap


def wait_for_output_start(proc: subprocess.Popen[str], count: int) -> None:
    def workers_up() -> bool:
        return len(psutil.Process(proc.pid).children(recursive=True)) >= count

    wait_until(workers_up, 30, "the run's processes to start")


def test_ctrl_c_drains_in_flight_work(tmp_path: Path, workdir: Path) -> None:
    out = tmp_path / "out.jsonl"
    topo = topology(
        tmp_path,
        # a small queue, so what is in flight drains well within the 10 s deadline
        chain(
            out,
            f"    handler: {T}:pause\n    params: {{delay_s: 0.01}}\n    queue: {{capacity: 64}}",
            count=100_000,
            delay_s=0.001,
        ),
    )
    proc = start_run(topo, workdir)
    wait_for_output_start(proc, 5)
    wait_until(lambda: stage_count(workdir, "sink") >= 50, 30, "events to flow: the interrupt lands mid-job")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "draining" in stderr
    s = json.loads(stdout)
    assert s["interrupted"] is True and s["error"] is None
    got = [e["n"] for e in read_records(out)]
    # what the workers held went through, each once; what waited in the queues was
    # dropped, and counted: nothing read is unaccounted for
    assert 0 < len(got) == len(set(got)) == s["done"] < s["events"] < 100_000
    assert s["done"] + s["discarded"] == s["events"] and set(got) <= set(range(s["events"]))


def test_second_ctrl_c_stops_at_once(tmp_path: Path, workdir: Path) -> None:
    out = tmp_path / "out.jsonl"
    topo = topology(tmp_path, chain(out, f"    handler: {T}:pause\n    params: {{delay_s: 5}}", count=1000))
    log = tmp_path / "stderr.txt"
    proc = start_run_logged(topo, workdir, log, "--drain-timeout", "60")
    wait_for_output_start(proc, 5)
    wait_until(lambda: stage_count(workdir, "mid", "queue", "leased") > 0, 30, "a worker inside its 5 s handler call")
    proc.send_signal(signal.SIGINT)
    wait_until(lambda: "draining" in log.read_text(), 30, "the first Ctrl-C to be taken")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=20)
    stderr = log.read_text()
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 130
    assert "stopping every process now" in stderr


def test_drain_deadline(tmp_path: Path, workdir: Path) -> None:
    out = tmp_path / "out.jsonl"
    topo = topology(tmp_path, chain(out, f"    handler: {T}:pause\n    params: {{delay_s: 30}}", count=10))
    proc = start_run(topo, workdir, "--drain-timeout", "1")
    wait_for_output_start(proc, 5)
    wait_until(lambda: stage_count(workdir, "mid", "queue", "leased") > 0, 30, "a worker inside its 30 s handler call")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert "did not drain within 1 s" in stderr


def test_controller_sigkill_leaves_no_process(tmp_path: Path, workdir: Path) -> None:
    out = tmp_path / "out.jsonl"
    topo = topology(
        tmp_path, chain(out, f"    handler: {T}:pause\n    params: {{delay_s: 0.01}}\n    workers: 2", count=100_000)
    )
    proc = start_run(topo, workdir)
    wait_for_output_start(proc, 6)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 6
    proc.kill()
    proc.communicate(timeout=10)
    wait_until(
        lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children), 5, "orphans to exit"
    )
    assert not tagged_processes()


def test_killed_worker_is_replaced_and_nothing_is_lost(tmp_path: Path, workdir: Path) -> None:
    out = tmp_path / "out.jsonl"
    marker = tmp_path / "died"
    topo = topology(
        tmp_path,
        chain(
            out, f'    handler: {T}:die_once\n    params: {{at: 500, marker: "{marker}"}}\n    workers: 2', count=2000
        ),
    )
    proc = run_sedamp("run", str(topo), "--workdir", str(workdir), "--json")
    assert marker.exists(), "the worker never died: the test proves nothing"
    assert proc.returncode == 0, proc.stderr
    assert "was killed by SIGKILL" in proc.stderr
    s = summary_of(proc)
    got = [e["n"] for e in read_records(out)]
    assert set(got) == set(range(2000))  # at least once: redelivery may duplicate
    assert stage_of(s, "mid")["restarts"] == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_before_start_completes_cleanly(tmp_path: Path, workdir: Path, sig: int) -> None:
    out = tmp_path / "out.jsonl"
    topo = topology(tmp_path, chain(out, f"    handler: {T}:pause\n    params: {{delay_s: 0}}", count=50, delay_s=0.05))
    proc = start_run(topo, workdir)
    wait_for_output_start(proc, 3)  # launcher and first processes up: the run has begun, the rest are starting
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    s = json.loads(stdout)
    if out.exists():
        got = [e["n"] for e in read_records(out)]
        assert len(got) == len(set(got)) == s["done"] and s["done"] + s["discarded"] == s["events"]


def test_run_dir_and_no_socket_left(tmp_path: Path, workdir: Path) -> None:
    out = tmp_path / "out.jsonl"
    topo = topology(tmp_path, chain(out, "    handler: json:dumps"))
    tmp = tmp_path / "tmp"  # the runs' own TMPDIR: other runs on the machine cannot blur what is left
    tmp.mkdir()
    procs = [run_sedamp("run", str(topo), "--workdir", str(workdir), "--json", env={"TMPDIR": str(tmp)}) for _ in range(2)]
    assert all(p.returncode == 0 for p in procs), procs[0].stderr
    run_dirs = [Path(summary_of(p)["run_dir"]) for p in procs]
    assert run_dirs[0] != run_dirs[1]  # runs of one topology never share a directory
    for d in run_dirs:
        assert d.is_dir() and (d.stat().st_mode & 0o777) == 0o700
        assert not (d / "sock").exists()  # sockets are removed at the end
    assert list(tmp.iterdir()) == []
    assert sorted(json.loads(x)["n"] for x in read_records(out)) == list(range(200))


@pytest.mark.parametrize("policy", ["drop", "reject"])
def test_full_queue_sheds_by_policy_and_counts_it(tmp_path: Path, workdir: Path, policy: str) -> None:
    """A fast source before a slow stage with a tiny queue: with drop or reject, the
    source never waits; every event is either handled, counted as dropped, or
    dead-lettered as rejected (never silently lost)."""
    out = tmp_path / "out.jsonl"
    topo = topology(
        tmp_path,
        chain(
            out,
            f"    handler: {T}:pause\n    params: {{delay_s: 0.002}}\n    workers: 1\n    batch: 1\n    queue: {{capacity: 4, on_full: {policy}}}",
            count=3000,
        ),
    )
    proc = run_sedamp("run", str(topo), "--workdir", str(workdir), "--json")
    s = summary_of(proc)
    mid = stage_of(s, "mid")
    handled = len(read_records(out))
    assert handled == mid["events_in"]
    shed = mid["dropped"] if policy == "drop" else mid["rejected"]
    assert shed > 0, "the queue never filled: the test proves nothing"
    assert handled + shed == 3000
    if policy == "reject":
        assert proc.returncode == 1
        dead = read_dead_letters(s["dead_letters"])
        assert len(dead) == shed and all(d["error_type"] == "Rejected" and d["stage"] == "mid" for d in dead)
        assert sorted([d["event"]["n"] for d in dead] + [e["n"] for e in read_records(out)]) == list(range(3000))
    else:
        assert proc.returncode == 0, proc.stderr
        assert mid["rejected"] == 0


def test_python_api_runs_a_topology_and_returns_the_summary(tmp_path: Path) -> None:
    import sedamp

    out = tmp_path / "out.jsonl"
    topo = topology(tmp_path, chain(out, "    handler: json:dumps", count=300))
    s = sedamp.run(topo, overrides=["mid.workers=2"], workdir=tmp_path / "w")
    assert s.exit_code == 0 and s.events == 300 and s.stage("mid").workers == 2
    assert s.stage("sink").events_in == 300 and s.events_per_s > 0
    with pytest.raises(sedamp.TopologyError) as info:
        sedamp.run(topo, overrides=["mid.workers=0"], workdir=tmp_path / "w")
    assert "mid.workers" in str(info.value)


def test_batch_bounds_floor_and_ceiling(tmp_path: Path) -> None:
    """An adaptive batch stays within batch: {min, max}: near-free events would ask for
    256 at a time; a ceiling of 5 holds every batch at 5 events or fewer."""
    from sedamp.api import load
    from sedamp.control.controller import run_topology
    from sedamp.control.summary import RunOptions

    out = tmp_path / "out.jsonl"
    topo = topology(tmp_path, chain(out, "    handler: json:dumps\n    batch: {min: 2, max: 5}", count=3000))
    top = load(topo, ["controller.period_s=0.05"])
    assert top.stages["mid"].batch_bounds == (2, 5) and top.stages["mid"].batch is None
    seen: list[float] = []
    summary = run_topology(
        top,
        RunOptions(
            workdir=tmp_path / "w",
            handle_signals=False,
            on_tick=lambda r: seen.append(r["stages"]["mid"]["batch_size"] or 0),
        ),
    )
    assert summary.exit_code == 0
    assert len(read_records(out)) == 3000
    assert seen and all(b <= 5 for b in seen) and max(seen) == 5


def test_repeated_worker_deaths_lose_nothing(tmp_path: Path, workdir: Path) -> None:
    """Six deaths of a stage's only worker: each is replaced, its leases come back, and
    every event arrives. (That the credit a dead worker held downstream is freed is
    shown on the queue core itself: test_flow.test_gone_producer_gives_its_credit_back.)"""
    out = tmp_path / "out.jsonl"
    markers = tmp_path / "markers"
    markers.mkdir()
    deaths = [100, 300, 500, 700, 900, 1100]
    topo = topology(
        tmp_path,
        chain(
            out,
            f'    handler: {T}:die_at_each\n    params: {{at: {deaths}, marker_dir: "{markers}"}}\n    workers: 1',
            count=1500,
        ),
    )
    proc = run_sedamp("run", str(topo), "--workdir", str(workdir), "--json", timeout=60)
    assert sorted(p.name for p in markers.iterdir()) == sorted(map(str, deaths)), "not every death happened"
    assert proc.returncode == 0, proc.stderr
    assert set(e["n"] for e in read_records(out)) == set(range(1500))
    assert stage_of(summary_of(proc), "mid")["restarts"] == len(deaths)


def test_a_slow_source_sends_its_events_as_they_come(tmp_path: Path) -> None:
    """A source sends each read in one message; a slow iterator's events must not wait
    for a whole read (at 4096 events a read, all but the first of these 150, one every
    20 ms, went out together three seconds after the run began)."""
    out = tmp_path / "out.jsonl"
    topo = topology(tmp_path, chain_yaml(out, f"    handler: {T}:parity", sink="Append", count=150, delay_s=0.02))
    proc = start_run(topo, tmp_path / "w")

    def lines() -> int:
        return len(out.read_text().splitlines()) if out.exists() else 0

    try:
        wait_until(lambda: lines() >= 50, 60, "50 events at the sink")
        third = time.monotonic()
        _, err = proc.communicate(timeout=60)
        ended = time.monotonic()
    except BaseException:
        proc.kill()
        proc.communicate(timeout=10)
        raise
    assert proc.returncode == 0, err
    # the source reads the other 100 events over two seconds after the 50th
    assert ended - third > 1.0, f"a third of the events reached the sink {ended - third:.2f} s before the end"
    assert lines() == 150

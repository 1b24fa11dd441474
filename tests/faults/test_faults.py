"""Fault injection through the real CLI: crashing, raising, hanging and leaking handlers,
killed processes of every kind, and interrupts at random moments. Each test checks
where every event went, and (through the autouse fixture) that no process is left."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from sedamp.runtime.deadletter import read_dead_letters
from tests.conftest import wait_until
from tests.integration.teststages import read_records
from tests.integration.util import (
    REPO,
    chain_yaml,
    run_sedamp,
    sedamp_cmd,
    stage_count,
    stage_of,
    start_run,
    summary_of,
)

T = "tests.integration.teststages"


def topology(tmp: Path, middle: str, count: int = 300, delay_s: float = 0.0, sink: str = "", name: str = "t") -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(
        f"name: {name}" + chain_yaml(tmp / "out.jsonl", middle, sink="Append", count=count, delay_s=delay_s, extra=sink)
    )
    return path


def run(tmp: Path, topo: Path, *extra: str, timeout: float = 90) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc = run_sedamp("run", str(topo), "--workdir", str(tmp / "w"), "--json", *extra, timeout=timeout)
    return proc, summary_of(proc)


def outputs(tmp: Path) -> list[int]:
    return [e["n"] for e in read_records(tmp / "out.jsonl")]


@pytest.mark.parametrize(("how", "reason"), [("exit", "exited with code 7"), ("kill", "SIGKILL"), ("segv", "SIGSEGV")])
def test_a_poison_event_is_dead_lettered_with_the_reason(tmp_path: Path, how: str, reason: str) -> None:
    topo = topology(
        tmp_path,
        f"    handler: {T}:crash_on\n    params: {{at: 123, how: {how}}}\n    workers: 2",
        sink="    dedupe: true",
    )
    proc, s = run(tmp_path, topo)
    assert proc.returncode == 1, proc.stderr  # the run finished; one event failed
    assert sorted(outputs(tmp_path)) == [n for n in range(300) if n != 123]
    mid = stage_of(s, "mid")
    assert mid["poisoned"] == 1 and mid["restarts"] == 2 and s["failed"] == 1
    [letter] = read_dead_letters(s["dead_letters"])
    assert letter["event_id"] == 123 and letter["event"] == {"n": 123} and letter["stage"] == "mid"
    assert letter["error_type"] == "WorkerDied" and reason in letter["message"]


def test_retry_with_backoff_then_success(tmp_path: Path) -> None:
    markers = tmp_path / "m"
    markers.mkdir()
    topo = topology(
        tmp_path,
        f'    handler: {T}:flaky\n    params: {{modulo: 10, failures: 2, marker_dir: "{markers}"}}\n'
        "    on_error: {retry: 2, backoff_s: 0.01}",
    )
    proc, s = run(tmp_path, topo)
    assert proc.returncode == 0, proc.stderr
    assert sorted(outputs(tmp_path)) == list(range(300))
    assert stage_of(s, "mid")["retried"] == 30 * 2 and s["failed"] == 0


def test_retries_exhausted_go_to_dead_letters(tmp_path: Path) -> None:
    markers = tmp_path / "m"
    markers.mkdir()
    topo = topology(
        tmp_path,
        f'    handler: {T}:flaky\n    params: {{modulo: 10, failures: 5, marker_dir: "{markers}"}}\n'
        "    on_error: {retry: 1}",
    )
    proc, s = run(tmp_path, topo)
    assert proc.returncode == 1
    assert sorted(outputs(tmp_path)) == [n for n in range(300) if n % 10]
    letters = read_dead_letters(s["dead_letters"])
    assert sorted(d["event_id"] for d in letters) == list(range(0, 300, 10))
    assert all(d["error_type"] == "ConnectionError" and "attempt 2" in d["message"] for d in letters)


def test_skip_counts_and_drops(tmp_path: Path) -> None:
    topo = topology(tmp_path, f"    handler: {T}:fail_on\n    params: {{modulo: 7}}\n    on_error: skip")
    proc, s = run(tmp_path, topo)
    assert proc.returncode == 0, proc.stderr
    assert stage_of(s, "mid")["skipped"] == len(range(0, 300, 7)) and s["failed"] == 0
    assert sorted(outputs(tmp_path)) == [n for n in range(300) if n % 7]
    assert read_dead_letters(s["dead_letters"]) == []


def test_fail_stops_the_run_naming_stage_event_and_exception(tmp_path: Path) -> None:
    topo = topology(tmp_path, f"    handler: {T}:fail_on\n    params: {{modulo: 250}}\n    on_error: {{then: fail}}")
    proc, s = run(tmp_path, topo)
    assert proc.returncode == 3
    assert "stage 'mid' failed on event 0: ValueError: n=0 is a multiple of 250" in proc.stderr
    assert "stage 'mid' failed on event 0" in s["error"]
    assert [d["event_id"] for d in read_dead_letters(s["dead_letters"])] == [0]


def test_a_poison_event_under_fail_stops_the_run(tmp_path: Path) -> None:
    topo = topology(tmp_path, f"    handler: {T}:crash_on\n    params: {{at: 5, how: exit}}\n    on_error: fail")
    proc, s = run(tmp_path, topo)
    assert proc.returncode == 3
    assert "event 5 killed 2 workers" in s["error"] and "on_error: fail" in s["error"]


def test_a_hung_handler_is_killed_and_its_event_dead_lettered(tmp_path: Path) -> None:
    topo = topology(
        tmp_path,
        f"    handler: {T}:hang_on\n    params: {{at: 37}}\n    timeout_s: 0.5\n    workers: 2",
        sink="    dedupe: true",
    )
    proc, s = run(tmp_path, topo, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert sorted(outputs(tmp_path)) == [n for n in range(300) if n != 37]
    mid = stage_of(s, "mid")
    assert mid["timeouts"] == 2 and mid["poisoned"] == 1
    [letter] = read_dead_letters(s["dead_letters"])
    assert letter["event_id"] == 37 and "timeout_s (0.5 s" in letter["message"]


def test_max_events_replaces_workers_without_loss_or_duplicates(tmp_path: Path) -> None:
    topo = topology(tmp_path, f"    handler: {T}:with_pid\n    max_events: 40\n    batch: 8\n    workers: 2")
    proc, s = run(tmp_path, topo)
    assert proc.returncode == 0, proc.stderr
    got = read_records(tmp_path / "out.jsonl")
    assert sorted(e["n"] for e in got) == list(range(300))  # each exactly once
    pids = {e["pid"] for e in got}
    assert len(pids) >= 300 // 48  # every worker left after 40 (+ one batch) events
    assert stage_of(s, "mid")["recycled"] >= len(pids) - 2


def test_max_rss_replaces_a_leaking_worker(tmp_path: Path) -> None:
    topo = topology(
        tmp_path, f"    handler: {T}:hoard\n    params: {{mb: 2}}\n    max_rss_mb: 120\n    batch: 4", count=200
    )
    proc, s = run(tmp_path, topo)
    assert proc.returncode == 0, proc.stderr
    got = read_records(tmp_path / "out.jsonl")
    assert sorted(e["n"] for e in got) == list(range(200))
    assert stage_of(s, "mid")["recycled"] >= 2 and len({e["pid"] for e in got}) >= 3


def test_an_oversized_output_is_dead_lettered_with_its_size(tmp_path: Path) -> None:
    topo = topology(
        tmp_path, f"    handler: {T}:bloat\n    params: {{modulo: 50, size: 5000}}\n    max_event_bytes: 4096"
    )
    proc, s = run(tmp_path, topo)
    assert proc.returncode == 1
    assert sorted(outputs(tmp_path)) == [n for n in range(300) if n % 50]
    letters = read_dead_letters(s["dead_letters"])
    assert len(letters) == 6 and all("exceeds the limit of 4,096 bytes" in d["message"] for d in letters)
    assert all(d["stage"] == "mid" for d in letters)


def test_a_dead_worker_of_a_stateful_stage_fails_the_run(tmp_path: Path) -> None:
    out = tmp_path / "total.txt"
    path = tmp_path / "t.yaml"
    path.write_text(
        f"""name: t
stages:
  src:
    source: {T}:Numbers
    params: {{count: 100000, delay_s: 0.0005}}
    to: total
  total:
    sink: {T}:Total
    params: {{out: "{out}"}}
"""
    )
    proc = start(path, tmp_path)
    victim = wait_until(lambda: find(proc, "sdw:total"), 30, "the sink worker")
    wait_until(lambda: stage_count(tmp_path / "w", "total") > 0, 30, "the sink to hold some state")
    victim.kill()
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert "stage 'total' keeps state (finish()) that died with it" in json.loads(stdout)["error"]
    assert not out.exists()


# ------------------------------------------------------------------ killing processes


def start(topo: Path, tmp: Path) -> subprocess.Popen[str]:
    return start_run(topo, tmp / "w")


def find(proc: subprocess.Popen[str], prefix: str) -> psutil.Process | None:
    try:
        for c in psutil.Process(proc.pid).children(recursive=True):
            if c.name().startswith(prefix) and c.status() != psutil.STATUS_ZOMBIE:
                return c
    except psutil.Error:
        pass
    return None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_killing_workers_at_random_moments_loses_nothing(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    count = 3000
    topo = topology(
        tmp_path,
        f"    handler: {T}:with_pid\n    workers: 2",
        count=count,
        delay_s=0.0005,
        sink="    dedupe: true",
    )
    proc = start(topo, tmp_path)
    kills = []

    def killer() -> None:
        while proc.poll() is None and len(kills) < 4:
            time.sleep(rng.uniform(0.2, 0.6))
            victim = find(proc, "sdw:mid")
            if victim is not None:
                victim.kill()
                kills.append(victim.pid)

    t = threading.Thread(target=killer)
    t.start()
    stdout, stderr = proc.communicate(timeout=90)
    t.join()
    assert proc.returncode == 0, stderr
    assert kills, "no worker was killed: the test proves nothing"
    got = outputs(tmp_path)
    assert sorted(got) == list(range(count))  # every event, and (dedupe) each once
    s = json.loads(stdout)
    assert stage_of(s, "mid")["restarts"] == len(kills)


@pytest.mark.parametrize(("prefix", "what"), [("sdq:mid", "the queue of stage 'mid'"), ("sds:src", "source 'src'")])
def test_a_dead_queue_or_source_fails_the_run_fast(tmp_path: Path, prefix: str, what: str) -> None:
    topo = topology(tmp_path, f"    handler: {T}:with_pid", count=1_000_000, delay_s=0.0005)
    proc = start(topo, tmp_path)
    victim = wait_until(lambda: find(proc, prefix), 30, prefix)
    wait_until(lambda: stage_count(tmp_path / "w", "mid") > 0, 30, "events to flow")
    victim.kill()
    t0 = time.monotonic()
    stdout, _ = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 3
    error = json.loads(stdout)["error"]
    assert what in error and "SIGKILL" in error


@pytest.mark.parametrize(("seed", "sig"), [(11, signal.SIGINT), (12, signal.SIGTERM), (13, signal.SIGINT)])
def test_an_interrupt_at_a_random_moment_leaves_a_consistent_output(tmp_path: Path, seed: int, sig: int) -> None:
    count = 20_000
    topo = topology(tmp_path, f"    handler: {T}:with_pid\n    workers: 2", count=count, delay_s=0.0002)
    proc = start(topo, tmp_path)
    wait_until(lambda: find(proc, "sdw:mid"), 30, "the workers")
    time.sleep(random.Random(seed).uniform(0.0, 2.0))
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    s = json.loads(stdout)
    got = outputs(tmp_path) if (tmp_path / "out.jsonl").exists() else []
    if proc.returncode == 0:  # the job finished before the interrupt landed
        assert sorted(got) == list(range(count))
        return
    assert proc.returncode == 130, stderr
    # what the workers held went through, each once; what waited in queues was dropped, and counted
    assert len(set(got)) == len(got) == s["done"] and s["done"] + s["discarded"] == s["events"]
    assert set(got) <= set(range(s["events"]))


def test_a_silent_queue_fails_the_run(tmp_path: Path) -> None:
    topo = topology(
        tmp_path, f"    handler: {T}:with_pid", count=1_000_000, delay_s=0.0005, sink="controller: {period_s: 0.1}"
    )
    proc = start(topo, tmp_path)
    victim = wait_until(lambda: find(proc, "sdq:mid"), 30, "the queue")
    wait_until(lambda: stage_count(tmp_path / "w", "mid") > 0, 30, "events to flow")
    victim.suspend()  # alive, but it answers nothing and reports nothing
    t0 = time.monotonic()
    stdout, _ = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 15  # the bound is max(3 s, 20 periods)
    assert proc.returncode == 3
    assert "the queue of stage 'mid'" in json.loads(stdout)["error"] and "silent" in json.loads(stdout)["error"]


def test_a_silent_idle_worker_is_replaced(tmp_path: Path) -> None:
    count = 600
    topo = topology(
        tmp_path,
        f"    handler: {T}:with_pid\n    workers: 2",
        count=count,
        delay_s=0.01,
        sink="    dedupe: true\ncontroller: {period_s: 0.1}",
    )
    proc = start(topo, tmp_path)
    victim = wait_until(lambda: find(proc, "sdw:mid"), 30, "a worker")
    wait_until(lambda: stage_count(tmp_path / "w", "mid") > 0, 30, "events to flow")
    victim.suspend()  # between batches (its events take microseconds): silent and idle
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "outside any handler call" in stderr
    assert sorted(outputs(tmp_path)) == list(range(count))
    assert stage_of(json.loads(stdout), "mid")["restarts"] == 1


def test_a_queue_too_small_for_its_producers_is_refused_before_anything_starts(tmp_path: Path) -> None:
    topo = topology(tmp_path, f"    handler: {T}:with_pid\n    workers: 3", sink="    queue: {capacity: 5}")
    proc, s = run(tmp_path, topo)
    assert proc.returncode == 3
    assert "the queue of stage 'sink' holds 5 events but up to 3 processes produce into it" in s["error"]
    assert s["events"] == 0


def test_a_keyed_stage_recycles_its_workers_into_the_same_partitions(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "t.yaml"
    path.write_text(
        f"""name: t
stages:
  src: {{source: "{T}:Numbers", params: {{count: 300}}, to: {{stage: sink, key: n}}}}
  sink:
    sink: {T}:Append
    params: {{out: "{out}"}}
    workers: 2
    batch: 8
    max_events: 40
"""
    )
    proc, s = run(tmp_path, path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(outputs(tmp_path)) == list(range(300))
    assert stage_of(s, "sink")["recycled"] >= 4


def test_the_timeout_covers_handler_calls_only_not_a_groups_finish(tmp_path: Path) -> None:
    """A deadline left armed after the last call would kill the worker during a long
    finish() of a later stage in its group."""
    path = tmp_path / "t.yaml"
    path.write_text(
        f"""name: t
stages:
  src: {{source: "{T}:Numbers", params: {{count: 50}}, to: a}}
  a: {{handler: "{T}:SlowFinish", params: {{finish_s: 0}}, group: g, timeout_s: 0.3, to: b}}
  b: {{handler: "{T}:SlowFinish", params: {{finish_s: 1.5}}, group: g, to: sink}}
  sink: {{sink: "{T}:Append", params: {{out: "{tmp_path / "out.jsonl"}"}}}}
controller: {{period_s: 0.1}}
"""
    )
    proc, s = run(tmp_path, path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = read_records(tmp_path / "out.jsonl")
    # a's finish() output passes through b (a handler call, with a deadline), then b's
    # finish() runs for 1.5 s: five times timeout_s, and not a handler call
    assert sorted(e["n"] for e in got) == [-1, -1, *range(50)] and stage_of(s, "a")["timeouts"] == 0
    assert {e.get("count") for e in got if e["n"] == -1} == {50, 51}


def test_a_topology_name_from_the_environment_never_removes_a_directory(tmp_path: Path) -> None:
    """A run empties <workdir>/journal/NAME: with name: "${NM}" and NM a path (or '..'),
    that was a directory outside the run's own. Such a name is refused, exit 2."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    topo = tmp_path / "t.yaml"
    topo.write_text('name: "${NM}"' + chain_yaml(tmp_path / "out.jsonl", f"    handler: {T}:with_pid", count=3))
    for nm in (str(victim), "..", "../victim"):
        r = run_sedamp("run", str(topo), "--workdir", str(tmp_path / "w" / "x"), env={"NM": nm})
        assert r.returncode == 2, r.stderr
        assert "cannot name the run's directories" in r.stderr and "Traceback" not in r.stderr
    assert (victim / "precious.txt").read_text() == "keep me"


def test_a_few_poison_events_close_together_do_not_fail_the_job(tmp_path: Path) -> None:
    """Five poison events in a fast job (each kills a worker twice before it is dead-
    lettered): ten deaths within a period, while the queue's counters, read once a
    period, showed no event finished between them. Deaths with an event in the handler
    are that event's doing, not a stage that cannot work: the job goes on and exits 1."""
    count = 5000
    topo = topology(
        tmp_path,
        f"    handler: {T}:crash_every\n    params: {{modulo: 1000}}\n    workers: 2",
        count=count,
        sink="    dedupe: true",
    )
    proc, s = run(tmp_path, topo)
    assert proc.returncode == 1, proc.stderr
    poison = [n for n in range(count) if n % 1000 == 999]
    assert sorted(outputs(tmp_path)) == [n for n in range(count) if n not in poison]
    assert sorted(d["event_id"] for d in read_dead_letters(s["dead_letters"])) == poison


def test_sigterm_to_the_whole_process_group_drains_and_exits(tmp_path: Path) -> None:
    """`timeout`, service managers and container runtimes send SIGTERM to every process
    of the group at once. The children must live on to drain as the controller directs:
    before, they died of it, and the controller spun at 100% CPU past any deadline."""
    count = 20_000
    topo = topology(tmp_path, f"    handler: {T}:with_pid\n    workers: 2", count=count, delay_s=0.0002)
    proc = subprocess.Popen(
        sedamp_cmd("run", str(topo), "--workdir", str(tmp_path / "w"), "--json"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    wait_until(lambda: stage_count(tmp_path / "w", "mid") > 0, 30, "events to flow")
    os.killpg(proc.pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)  # the drain deadline is 10 s
    assert proc.returncode == 130, stderr
    s = json.loads(stdout)
    assert s["interrupted"] is True and s["error"] is None, stderr
    got = outputs(tmp_path)  # what the workers held went through, once; the rest is counted as dropped
    assert len(set(got)) == len(got) == s["done"] and s["done"] + s["discarded"] == s["events"]


def test_a_dead_launcher_is_named_and_ends_the_run_at_once(tmp_path: Path) -> None:
    """Every local process is forked by the launcher and dies with it. Before, kill -9 of
    the launcher left the controller waiting 5 s per child, then blaming a queue, or
    ending with exit 1 and a traceback; now it is named and the run ends with exit 3."""
    topo = topology(tmp_path, f"    handler: {T}:with_pid\n    workers: 2", count=1_000_000, delay_s=0.0005)
    proc = start(topo, tmp_path)
    wait_until(lambda: stage_count(tmp_path / "w", "mid") > 0, 30, "events to flow")
    [launcher] = [
        c for c in psutil.Process(proc.pid).children() if "sedamp.runtime.launcher" in " ".join(c.cmdline())
    ]
    launcher.kill()
    t0 = time.monotonic()
    stdout, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr
    error = json.loads(stdout)["error"]
    # named, by itself or as what a queue died with
    assert f"process launcher (pid {launcher.pid})" in error and "killed by SIGKILL" in error


def test_processes_user_code_starts_are_gone_when_the_run_ends(tmp_path: Path) -> None:
    """A subprocess a handler never waits for, a child it forks, and one that left the
    process group (setsid): none outlives `sedamp run`."""
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    topo = topology(tmp_path, f"    handler: {T}:leave_processes\n    params: {{pid_dir: {str(pid_dir)!r}}}")
    proc, s = run(tmp_path, topo)
    assert proc.returncode == 0, proc.stderr
    pids = [int(f.name) for f in pid_dir.iterdir()]
    assert len(pids) == 3

    def gone() -> bool:
        return not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)

    wait_until(gone, 5, "the processes user code started to be gone")


def test_a_worker_killed_for_its_timeout_takes_the_tool_it_ran_with_it(tmp_path: Path) -> None:
    """A handler waits on a tool that hangs; timeout_s kills the worker. The tool was
    left running, re-parented, until the run ended: in a long run (a service) such
    tools piled up. Now it dies with the worker, while the run goes on."""
    pids = tmp_path / "pids"
    pids.mkdir()
    middle = f"    handler: {T}:hang_in_tool\n    params: {{at: 3, pid_dir: \"{pids}\"}}\n    timeout_s: 1"
    proc = start_run(topology(tmp_path, middle, count=400, delay_s=0.05), tmp_path / "w")  # ~20 s of input
    try:
        tool = psutil.Process(int(wait_until(lambda: next(pids.iterdir(), None), 60, "the tool to start").name))

        def tool_gone() -> bool:
            try:
                return tool.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        wait_until(tool_gone, 15, "the tool to die with the worker killed for its timeout")
        assert proc.poll() is None, "the run ended before the tool did"
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 1, stderr  # the event that hung was dead-lettered; the rest were done
    assert "event 3" in stderr and "killed 2 workers" in stderr, stderr

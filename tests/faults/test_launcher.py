"""The process launcher stopped (SIGSTOP) under a live run: it forks every local process
and reports their exits, so the controller must not wait on it in vain."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psutil

from tests.conftest import wait_until
from tests.faults.test_leases import find, stop
from tests.integration.util import chain_yaml, run_sedamp, stage_count, start_run

T = "tests.integration.teststages"


def test_a_stopped_launcher_is_named_and_ends_the_run_at_once(tmp_path: Path) -> None:
    """A stopped launcher starts nothing and reports nothing: before, the controller
    waited 5 s for a dead worker's exit, then 30 s in vain to start its replacement."""
    topo = tmp_path / "t.yaml"
    topo.write_text("name: t" + chain_yaml(tmp_path / "out.jsonl", f"    handler: {T}:with_pid\n    workers: 2",
                                           sink="Append", count=1_000_000, delay_s=0.0005))  # fmt: skip
    proc = start_run(topo, tmp_path / "w")
    try:
        wait_until(lambda: stage_count(tmp_path / "w", "mid") > 0, 30, "events to flow")
        [launcher] = [c for c in psutil.Process(proc.pid).children() if "sedamp.runtime.launcher" in " ".join(c.cmdline())]  # fmt: skip
        victim = wait_until(lambda: find(proc, "sdw:mid"), 30, "a worker")
        launcher.suspend()
        victim.kill()  # its exit must be reported, and its replacement started, by the launcher
        t0 = time.monotonic()
        stdout, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 10
    finally:
        stop(proc)
    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr
    error = json.loads(stdout)["error"]
    assert f"process launcher (pid {launcher.pid})" in error and "stopped (SIGSTOP)" in error, error
    assert not psutil.pid_exists(launcher.pid) or launcher.status() == psutil.STATUS_ZOMBIE


def test_forks_that_fail_end_the_run_in_one_line(tmp_path: Path) -> None:
    """Two forks of one batch fail (EAGAIN). The first failure ended the start; the
    second, read later by a join in the run's cleanup, raised from there: a traceback,
    exit 1, and the cleanup skipped (the launcher and the processes that had started
    were left running, when the run was called from Python). Now: one line, exit 3."""
    topo = tmp_path / "t.yaml"
    topo.write_text("name: t" + chain_yaml(tmp_path / "out.jsonl", f"    handler: {T}:with_pid\n    workers: 4",
                                           count=200))  # fmt: skip
    env = {"PYTHONPATH": f"{Path(__file__).parent / 'forkfail'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for fail in ("4,5", "3,4,5,6"):
        proc = run_sedamp("run", str(topo), "--workdir", str(tmp_path / "w"),
                          env={**env, "SEDAMP_TEST_FORKFAIL": fail})  # fmt: skip
        assert proc.returncode == 3, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: cannot fork sd"), proc.stderr
        assert "Resource temporarily unavailable" in lines[0]

"""Whether a run directory's run is still going: read from run.json and its controller's pid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sedamp.control.rundir import read_run, run_is_live


def test_a_run_is_live_while_its_controller_is_and_until_it_ends() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)  # reaped: its pid names no process now
    assert run_is_live({"pid": os.getpid()})
    assert not run_is_live({"pid": os.getpid(), "ended": True})
    assert not run_is_live({"pid": child.pid})
    assert not run_is_live({"pid": "x"}) and not run_is_live({}) and not run_is_live({"pid": 0})


def test_read_run_gives_the_file_with_its_directory_or_none(tmp_path: Path) -> None:
    assert read_run(tmp_path) is None
    (tmp_path / "run.json").write_text('{"name": "t", "pid": 1}')
    assert read_run(tmp_path) == {"name": "t", "pid": 1, "run_dir": str(tmp_path)}
    (tmp_path / "run.json").write_text("[1]")
    assert read_run(tmp_path) is None

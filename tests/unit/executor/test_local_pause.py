"""The local executor's wait for the launcher's word, across a pause of the whole job."""

from __future__ import annotations

import time
import types
from pathlib import Path

import pytest

from sedamp.executor import local
from sedamp.executor.local import LAUNCH_TIMEOUT_S, LocalExecutor
from tests.unit.executor.sinks import sink_config
from tests.unit.runtime.test_pauses import Jumping


def test_starting_a_process_outlasts_a_pause_in_the_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-Z while the controller waits for the launcher to start a worker, and `fg`
    a minute later: the launcher's answer is in the pipe, but the wait's deadline had
    passed by the clock, and the run failed with "the process launcher did not start"."""
    cfg = sink_config(tmp_path)
    executor = LocalExecutor()
    # the executor's clock jumps just after the wait began: paused a minute and a half
    clock = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
    clock.monotonic = Jumping(LAUNCH_TIMEOUT_S + 60)
    monkeypatch.setattr(local, "time", clock)
    try:
        proc = executor.start("test-sink", "worker", cfg)
        assert proc.pid > 0
        proc.kill()
        proc.join(5)
    finally:
        executor.close()

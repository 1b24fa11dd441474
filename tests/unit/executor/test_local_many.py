"""The local executor starts several processes with one request to its launcher."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from sedamp.executor import local
from sedamp.executor.local import LocalExecutor
from tests.unit.executor.sinks import sink_config


def test_start_many_gives_each_request_its_own_process_in_order(tmp_path: Path) -> None:
    executor = LocalExecutor()
    try:
        names = [f"sdw:sink:{i}" for i in range(4)]
        procs = executor.start_many([(n, "worker", sink_config(tmp_path, i)) for i, n in enumerate(names)])
        assert [p.name for p in procs] == names  # type: ignore[attr-defined]
        assert len({p.pid for p in procs}) == 4
        for p, name in zip(procs, names, strict=True):  # each pid is the process of its request
            assert p.is_alive()
            deadline = time.monotonic() + 10  # the child names itself just after the fork
            while psutil.Process(p.pid).name() != name and time.monotonic() < deadline:
                time.sleep(0.01)
            assert psutil.Process(p.pid).name() == name
        for p in procs:
            p.kill()
            p.join(5)
            assert p.exitcode is not None
        assert executor.start_many([]) == []
    finally:
        executor.close()


def test_start_many_sends_every_request_when_a_write_takes_only_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write to a pipe that a signal interrupts returns what it wrote so far; the
    requests of a large pool are longer than a pipe holds. Each write here takes at
    most 1,000 bytes: every request must still reach the launcher whole."""
    real_write = local.os.write
    monkeypatch.setattr(local.os, "write", lambda fd, data: real_write(fd, data[:1000]))
    monkeypatch.setattr(local, "LAUNCH_TIMEOUT_S", 10.0)
    executor = LocalExecutor()
    try:
        procs = executor.start_many([(f"sdw:sink:{i}", "worker", sink_config(tmp_path, i)) for i in range(3)])
        assert len({p.pid for p in procs}) == 3
        for p in procs:
            p.kill()
            p.join(5)
    finally:
        executor.close()


def test_an_op_to_a_launcher_that_died_says_how_it_died() -> None:
    """`-v` tells the launcher the log level in a message of its own: when the launcher
    had died, that write raised BrokenPipeError (a traceback) instead of noting how it
    died, as a start request's write does."""
    executor = LocalExecutor()
    try:
        executor.log_level("INFO")  # starts it
        zygote = executor._zygote
        assert zygote is not None
        zygote.kill()
        zygote.wait(10)
        executor.log_level("DEBUG")
        assert executor._lost == "was killed by SIGKILL"
    finally:
        executor.close()

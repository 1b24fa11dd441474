"""How a child forked by the launcher ends when its entry function raises: the exit
code, and what it prints. Each case runs `_run_child` in a fresh interpreter (it ends
with os._exit), with an entry function standing in for a role's."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO

PROGRAM = textwrap.dedent(
    """
    import sys
    from sedamp.runtime import child, launcher, lifeline

    def entry(cfg):
        raise {exc}

    child.config_of = lambda role, config: (entry, None)
    launcher._run_child({{"name": "sdw:t:0", "role": "worker", "config": {{}}}}, ())
    """
)


def _end_of(exc: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROGRAM.format(exc=exc)], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_an_interrupt_as_it_leaves_is_exit_130_and_no_traceback() -> None:
    """A worker stopped at once just as it left on its own (its interrupt taken again
    after a finalizer, `lifeline.take_interrupts`) printed a traceback."""
    proc = _end_of("lifeline.Interrupted")
    assert (proc.returncode, proc.stderr) == (130, "")


def test_an_unexpected_exception_is_exit_1_with_its_traceback() -> None:
    proc = _end_of("RuntimeError('a bug in the runtime')")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "RuntimeError: a bug in the runtime" in proc.stderr


def test_system_exit_keeps_its_code() -> None:
    proc = _end_of("SystemExit(3)")
    assert (proc.returncode, proc.stderr) == (3, "")

"""scripts/_benchlib.py: what the benchmarks' timed children run with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import _benchlib as bl  # noqa: E402


def test_a_timed_child_writes_and_reads_bytecode_as_a_users_install_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With PYTHONDONTWRITEBYTECODE set here (as in a developer's shell), a child started
    with `user_env` still caches what it compiles: a benchmark must not time a run that
    compiles every changed module on every start, which no installed package does."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    (tmp_path / "probe_module.py").write_text("VALUE = 42\n")
    env = bl.user_env(PYTHONPATH=str(tmp_path))
    assert "PYTHONDONTWRITEBYTECODE" not in env and env["PYTHONPATH"] == str(tmp_path)
    cmd = [sys.executable, "-c", "import probe_module; print(probe_module.VALUE)"]
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "42"
    assert list((tmp_path / "__pycache__").glob("probe_module.*.pyc")), "the child compiled without caching"

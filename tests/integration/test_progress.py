"""`sedamp run` shows its progress: a bar redrawn in place on a terminal, a logged line
at an interval otherwise, nothing with -q."""

from __future__ import annotations

import os
import pty
import re
import subprocess
from pathlib import Path

from tests.integration.test_control import _reader
from tests.integration.util import REPO, TOPOLOGIES, run_sedamp, sedamp_cmd

# 400 events of ~5.5 ms of CPU each: a run of a second or more, several periods long
SLOW = ["--set", "seeds.params.count=400"]


def test_a_terminal_gets_a_bar_redrawn_in_place(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        sedamp_cmd("run", str(TOPOLOGIES / "burn.yaml"), "--workdir", str(tmp_path), *SLOW),
        cwd=REPO,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "COLUMNS": "160", "TERM": "xterm", "OUT": str(tmp_path / "burn.json")},
    )
    os.close(slave)
    reader, chunks = _reader(master)
    assert proc.wait(timeout=90) == 0
    reader.join(10)
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    frames = re.findall(r"(\d+)/400 done \((\d+)%\)", drawn)
    assert len(frames) >= 2, drawn  # redrawn, not printed once
    assert frames[-1] == ("400", "100")
    assert "0 failed" in drawn and "seeds 400 read" in drawn
    assert "━" in drawn  # the bar


def test_a_log_gets_a_line_at_each_interval_and_at_the_end(tmp_path: Path) -> None:
    proc = run_sedamp(
        "run", str(TOPOLOGIES / "burn.yaml"), "--workdir", str(tmp_path), "--json", "--progress-interval", "0.2",
        *SLOW, env={"OUT": str(tmp_path / "burn.json")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("sedamp: progress ")]
    assert len(lines) >= 2, proc.stderr
    assert re.search(r"400/400 done \(100%\), [\d.,]+/s, ETA 0s, 0 failed \| seeds 400 read \| ", lines[-1])
    assert proc.stdout.lstrip().startswith("{")  # the summary on stdout stays JSON only


def test_quiet_and_no_progress_print_none(tmp_path: Path) -> None:
    for flag in ("-q", "--no-progress"):
        proc = run_sedamp(
            "run", str(TOPOLOGIES / "csv-clean.yaml"), "--workdir", str(tmp_path), flag,
            env={"OUT": str(tmp_path / "clean.jsonl")},
        )  # fmt: skip
        assert proc.returncode == 1  # csv-clean has bad rows
        assert "sedamp: progress" not in proc.stderr

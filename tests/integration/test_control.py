"""`sedamp status`, `sedamp scale` and `sedamp top` against a live run."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.integration.teststages import read_records
from tests.integration.util import REPO, run_sedamp, sedamp_cmd

T = "tests.integration.teststages"


def _reader(fd: int) -> tuple[threading.Thread, list[bytes]]:
    """Read a pty's master side until the other side closes (keeps the writer from blocking)."""
    chunks: list[bytes] = []

    def run() -> None:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO once the other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(fd)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, chunks


@pytest.mark.slow  # a live run steered through status, scale and top: ~10 s
def test_status_scale_and_top_on_a_live_run(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    topo = tmp_path / "live.yaml"
    topo.write_text(
        f"""
name: live
stages:
  src:
    source: {T}:Numbers
    params: {{count: 4000}}
    to: mid
  mid:
    handler: {T}:pause
    params: {{delay_s: 0.005}}
    workers: {{min: 1, max: 3}}
    to: sink
  sink:
    sink: {T}:Record
    params: {{out: "{out}"}}
controller:
  period_s: 0.2
  policy: static
"""
    )
    work = tmp_path / "w"
    metrics = tmp_path / "m.jsonl"
    proc = subprocess.Popen(
        sedamp_cmd("run", str(topo), "--workdir", str(work), "--metrics", str(metrics), "--json"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def status() -> dict | None:
            r = run_sedamp("status", "live", "--workdir", str(work), "--json")
            return json.loads(r.stdout) if r.returncode == 0 else None

        first = wait_until(status, 30, "the run to answer status")
        assert first["stages"]["mid"]["target"] == 1
        r = run_sedamp("status", "--workdir", str(work), env={"COLUMNS": "160"})
        assert r.returncode == 0 and "mid" in r.stdout and "workers" in r.stdout and "live" in r.stdout
        r = run_sedamp("scale", "mid=3", "--workdir", str(work))
        assert r.returncode == 0, r.stderr
        assert "mid: 1 -> 3 workers" in r.stdout
        for bad, why in (
            ("mid=9", "within 1..3"),
            ("nope=1", "no stage 'nope'"),
            ("src=2", "is a source"),
            ("mid", "STAGE=N"),
        ):
            r = run_sedamp("scale", bad, "--workdir", str(work))
            assert r.returncode == 1 and why in r.stderr, (bad, r.stderr)
        wait_until(lambda: (s := status()) and s["stages"]["mid"]["workers"] == 3, 20, "the pool to reach 3")
        # top draws the live table (its output is not a terminal here) until stopped
        top = subprocess.Popen(
            sedamp_cmd("top", "--workdir", str(work)),
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "160"},
        )
        # and on a terminal it redraws in place every period, then leaves when the run ends
        master, slave = pty.openpty()
        tty_top = subprocess.Popen(
            sedamp_cmd("top", "--workdir", str(work)),
            cwd=REPO,
            stdout=slave,
            stderr=slave,
            env={**os.environ, "COLUMNS": "160", "TERM": "xterm"},
        )
        os.close(slave)
        reader, chunks = _reader(master)
        # two frames (its title twice): one frame names mid twice already (its row, the bottleneck line)
        wait_until(lambda: b"".join(chunks).count(b"live (pid") >= 2, 30, "top on a terminal to redraw")
        top.terminate()
        shown, _ = top.communicate(timeout=10)
        assert "mid" in shown and "live" in shown
    finally:
        stdout, stderr = proc.communicate(timeout=60)
    assert tty_top.wait(timeout=30) == 0  # it noticed the end of the run by itself
    reader.join(10)
    drawn = b"".join(chunks).decode(errors="replace")
    assert "\x1b[" in drawn and drawn.count("mid") >= 2  # cursor moves: redrawn in place
    assert "live: the run has ended" in drawn
    assert proc.returncode == 0, stderr
    assert sorted(e["n"] for e in read_records(out)) == list(range(4000))
    decisions = [d for line in metrics.read_text().splitlines() for d in json.loads(line)["decisions"]]
    assert decisions == [{"stage": "mid", "from": 1, "to": 3, "reason": decisions[0]["reason"]}]
    assert "sedamp scale" in decisions[0]["reason"]
    assert json.loads(stdout)["stages"][1]["workers"] == 3
    r = run_sedamp("status", "live", "--workdir", str(work))
    assert r.returncode == 1 and "no running topology named 'live'" in r.stderr

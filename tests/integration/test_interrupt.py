"""Ctrl-C on a batch job, through the real CLI: the work the workers hold is finished,
what waits in queues is dropped (a re-run or --resume does it), the run ends at once
with exit 130 and a summary that counts only what was done, no temporary file is left
next to the outputs, and on a terminal the word on Ctrl-C stays above the bar."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import wait_until
from tests.integration.test_control import _reader
from tests.integration.util import (
    REPO,
    TESTSTAGES,
    run_sedamp,
    screen,
    sedamp_cmd,
    stage_count,
    stage_of,
    start_run,
    summary_of,
)

COUNT = 1500  # at 10 ms a file on 2 workers, ~8 s of work: more than a default queue holds
DRAIN_S = 10  # the default drain deadline


def file_job(tmp: Path, delay_s: float = 0.01) -> tuple[Path, Path, Path]:
    """The thumbnail job's shape: ListFiles -> a slow handler -> WriteFiles, the last
    two in one pool; returns (topology, input folder, output folder)."""
    src, out = tmp / "in", tmp / "out"
    (src / "sub").mkdir(parents=True)
    for i in range(COUNT):
        (src / ("sub" if i % 3 == 0 else "") / f"f{i:04d}.txt").write_text(f"file {i}\n" * 20)
    topo = tmp / "files.yaml"
    topo.write_text(
        f"""name: files
stages:
  files:
    source: stages.files:ListFiles
    params: {{root: "{src}", pattern: "*.txt", recursive: true}}
    to: work
  work:
    handler: {TESTSTAGES}:slow_copy
    params: {{root: "{src}", delay_s: {delay_s}}}
    group: work
    workers: 2
    to: write
  write:
    sink: stages.files:WriteFiles
    group: work
    params: {{out: "{out}"}}
"""
    )
    return topo, src, out


def outputs(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def test_ctrl_c_finishes_what_workers_hold_and_resume_does_the_rest(tmp_path: Path) -> None:
    topo, src, out = file_job(tmp_path)
    work = tmp_path / "w"
    proc = start_run(topo, work)
    wait_until(lambda: out.exists() and len(outputs(out)) >= 50, 60, "50 files written")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=3 * DRAIN_S)
    took = time.monotonic() - t0
    assert proc.returncode == 130, stderr
    # what waited in the queue (about a thousand files) is not drained: only the
    # batches in the workers' hands are finished
    assert took < DRAIN_S / 2, f"Ctrl-C took {took:.1f} s: {stderr}"
    assert "draining" in stderr and "did not drain" not in stderr
    s = summary_of(subprocess.CompletedProcess(proc.args, 130, stdout, stderr))
    assert s["interrupted"] is True and s["error"] is None
    written = outputs(out)
    assert not list(out.rglob("*.tmp")) and not [p for p in out.rglob(".*") if p.is_file()]
    assert 50 <= len(written) < COUNT, "the job was not interrupted mid-way: the test proves nothing"
    # the summary counts what was done, not what was read; the rest is accounted for
    assert s["done"] == len(written) == stage_of(s, "write")["events_in"]
    assert s["done"] + s["discarded"] == s["events"] < COUNT + 1
    assert s["discarded"] > 0
    for name in written:
        assert (out / name).read_bytes() == (src / name).read_bytes()  # each file whole

    again = run_sedamp("run", str(topo), "--workdir", str(work), "--json", "--resume", timeout=120)
    assert again.returncode == 0, again.stderr
    r = summary_of(again)
    # exactly what was not done is done again
    assert stage_of(r, "files")["skipped"] == len(written)
    assert stage_of(r, "write")["events_in"] == COUNT - len(written)
    assert outputs(out) == outputs(src)
    assert all((out / n).read_bytes() == (src / n).read_bytes() for n in outputs(src))
    assert not list(out.rglob("*.tmp"))


def redraws_after(raw: bytes, word: bytes) -> int:
    """How often the bar was redrawn (the cursor sent up) after `word` was written."""
    at = raw.find(word)
    return -1 if at < 0 else raw.count(b"\x1b[1A", at)


def test_a_double_ctrl_c_on_a_terminal(tmp_path: Path) -> None:
    """The word on the first Ctrl-C stays on screen above the bar; the second stops at
    once, leaves no temporary file of the sink that streams its output, and the
    summary does not count the events read as done."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02d}.txt").write_text("x")
    out = tmp_path / "out"
    topo = tmp_path / "lines.yaml"
    topo.write_text(
        f"""name: lines
stages:
  files: {{source: stages.files:ListFiles, params: {{root: "{src}"}}, to: mid}}
  mid:
    handler: {TESTSTAGES}:slow_line
    params: {{delay_s: 20}}
    workers: 1
    to: write
  write:
    sink: stages.records:WriteJsonl
    params: {{path: "{out / "lines.jsonl"}"}}
"""
    )
    work = tmp_path / "w"
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        sedamp_cmd("run", str(topo), "--workdir", str(work), "--drain-timeout", "60"),
        cwd=REPO, stdout=slave, stderr=slave, env={**os.environ, "COLUMNS": "160", "TERM": "xterm"},
    )  # fmt: skip
    os.close(slave)
    reader, chunks = _reader(master)
    try:
        # the sink's temporary file is open, and a worker is inside its 20 s handler call
        wait_until(lambda: list(out.glob(".*.tmp")), 60, "the sink to open its temporary file")
        wait_until(lambda: stage_count(work, "mid", "queue", "leased") > 0, 60, "a worker inside its handler call")
        proc.send_signal(signal.SIGINT)
        # the bar is redrawn every period: the word on Ctrl-C must survive a few redraws
        wait_until(lambda: redraws_after(b"".join(chunks), b"draining") >= 3, 30, "redraws after the first Ctrl-C")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        assert time.monotonic() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(10)
    shown = screen(b"".join(chunks))
    first = [i for i, line in enumerate(shown) if "SIGINT: " in line and "interrupt again to stop at once" in line]
    second = [i for i, line in enumerate(shown) if "second interrupt: stopping every process now" in line]
    assert first and second and first[0] < second[0], "\n".join(shown)
    text = " ".join(line.strip() for line in shown)
    assert re.search(r"lines: 0 of 40 events done in [\d.]+ s \(interrupted\)", text), "\n".join(shown)
    assert any("interrupted: 40 of the events read were not done" in line for line in shown)
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*")), list(out.iterdir())

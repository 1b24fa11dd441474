"""Ctrl-C on a batch job, through the real CLI: the work the workers hold is finished,
what waits in queues is dropped (a re-run or --resume does it), and the run ends at
once with exit 130 and a summary that accounts for every event read."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import wait_until
from tests.integration.util import (
    TESTSTAGES,
    run_sedamp,
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

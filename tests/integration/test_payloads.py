"""Large payloads through real runs: arrays cross stages, fused or not, failed or not,
and a run's memory stays within its queues' byte bounds."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from sedamp.runtime.blocks import held_bytes
from sedamp.runtime.deadletter import event_of, read_dead_letters
from tests.integration.util import run_sedamp, stage_of, start_run, summary_of

np = pytest.importorskip("numpy")

STAGES = "tests.integration.arraystages"
# Every out-of-band buffer (64 KiB and up) through a shared block, so that small arrays
# test that path too (sedamp.runtime.blocks); the default sends them as frames.
THROUGH_BLOCKS = {"SEDAMP_SHARED_MEMORY": "64KiB"}
WAYS = pytest.mark.parametrize("env", [{}, THROUGH_BLOCKS], ids=["frames", "blocks"])


def topology(
    tmp: Path, out: Path, *, count: int, nbytes: int, fuse: bool, fail_modulo: int = 0, extra: str = ""
) -> Path:
    group = "    group: g\n" if fuse else ""
    text = f"""
name: arrays
stages:
  src:
    source: {STAGES}:Arrays
    params: {{count: {count}, nbytes: {nbytes}}}
    to: touch
  touch:
    handler: {STAGES}:touch
    params: {{fail_modulo: {fail_modulo}}}
{group}{"" if fuse else "    workers: 2" + chr(10)}    to: shape
  shape:
    handler: {STAGES}:reshape
{group}    to: sink
  sink:
    sink: {STAGES}:Digest
    params: {{out: "{out}"}}
controller: {{period_s: 0.2}}
{extra}"""
    path = tmp / f"arrays-{'fused' if fuse else 'apart'}.yaml"
    path.write_text(text)
    return path


def digest(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_arrays_cross_stages_and_arrive_the_same_fused_or_not(tmp_path: Path, workdir: Path) -> None:
    rows = {}
    for fuse in (False, True):
        out = tmp_path / f"digest-{fuse}.jsonl"
        proc = run_sedamp("run", str(topology(tmp_path, out, count=24, nbytes=2_000_000, fuse=fuse)),
                          "--workdir", str(workdir), "--json", timeout=120)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        rows[fuse] = digest(out)
    apart = rows[False]
    assert [r["n"] for r in apart] == list(range(24))
    side = int((2_000_000 // 8) ** 0.5)
    for r in apart:
        n = r["n"]
        # touch made a new array (n + 1); reshape sent a strided view, which arrived in C order
        assert r["shape"] == [side, side] and r["dtype"] == "<f8" and r["sum"] == (n + 1) * side * side
        assert r["corner"] == n + 1 and r["head"] == 128
        assert r["writeable"] is False and r["was_writeable"] is False  # received arrays are read-only
    assert rows[True] == apart  # fused, an array crosses as it would between processes


@WAYS
def test_an_array_that_fails_is_dead_lettered_in_a_form_read_back_whole(
    tmp_path: Path, workdir: Path, env: dict[str, str]
) -> None:
    out = tmp_path / "digest.jsonl"
    topo = topology(tmp_path, out, count=12, nbytes=200_000, fuse=False, fail_modulo=5)
    proc = run_sedamp("run", str(topo), "--workdir", str(workdir), "--json", env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr  # some events failed
    [run_dir] = (workdir / "runs").iterdir()
    records = read_dead_letters(run_dir / "dead-letters.jsonl")
    assert sorted(r["event"]["n"] for r in records) == [0, 5, 10]
    for r in records:
        event = event_of(r)
        a = event["a"]
        assert isinstance(a, np.ndarray) and a.dtype == np.float64 and a.shape == (25_000,)
        assert (a == event["n"]).all()
    assert [r["n"] for r in digest(out)] == [n for n in range(12) if n % 5]
    assert summary_of(proc)["stages"]


def _tree_rss(root: psutil.Process) -> int:
    """The RSS of `root` and its descendants, and its shared blocks; 0 when one ended while the tree was read
    (the sample is skipped: the watcher thread used to die of it, and stop measuring)."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = held_bytes(root.pid)  # the run's shared blocks, mapped or free
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def test_memory_stays_within_the_byte_bounds_whatever_the_number_of_large_events(tmp_path: Path, workdir: Path) -> None:
    """48 MB events through queues bounded at 96 MiB: the run's memory is the bounds, the
    events in hand and the interpreters, not the number of events (the benchmark script
    runs 2,000 of them; 40 here, 1.9 GB in all, keep the suite short)."""
    out = tmp_path / "digest.jsonl"
    extra = ""
    topo = topology(tmp_path, out, count=40, nbytes=48_000_000, fuse=False, extra=extra)
    text = topo.read_text().replace("    to: shape\n", "    queue: {max_bytes: 96MiB}\n    to: shape\n", 1)
    text = text.replace("    handler: tests.integration.arraystages:reshape\n",
                        "    handler: tests.integration.arraystages:reshape\n    queue: {max_bytes: 96MiB}\n")  # fmt: skip
    text = text.replace("    sink: tests.integration.arraystages:Digest\n",
                        "    sink: tests.integration.arraystages:Digest\n    queue: {max_bytes: 96MiB}\n")  # fmt: skip
    topo.write_text(text)
    proc = start_run(topo, workdir)
    root = psutil.Process(proc.pid)
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(root))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        _, err = proc.communicate(timeout=240)
    finally:
        done.set()
        watcher.join(timeout=5)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert [r["n"] for r in digest(out)] == list(range(40))
    gib = 1024**3
    assert peak < 1.5 * gib, f"peak RSS of the run's processes {peak / gib:.2f} GiB"


def test_a_generator_is_consumed_as_its_outputs_are_sent(tmp_path: Path, workdir: Path) -> None:
    """300 outputs of 1 MB for one event (300 MB) into a queue bounded at 16 MiB: the
    worker sends them as the generator makes them, so it never holds them all."""
    out = tmp_path / "digest.jsonl"
    report = tmp_path / "report"
    report.mkdir()
    topo = tmp_path / "frames.yaml"
    topo.write_text(f"""
name: frames
stages:
  src:
    source: {STAGES}:Arrays
    params: {{count: 2, nbytes: 8}}
    to: split
  split:
    handler: {STAGES}:Frames
    params: {{count: 300, nbytes: 1000000, report: "{report}"}}
    workers: 1
    fuse: never
    to: sink
  sink:
    sink: {STAGES}:Digest
    params: {{out: "{out}"}}
    queue: {{max_bytes: 16MiB}}
""")
    proc = run_sedamp("run", str(topo), "--workdir", str(workdir), "--json", timeout=180)
    assert proc.returncode == 0, proc.stderr
    rows = digest(out)
    assert [(r["n"], r["i"]) for r in rows] == [(n, i) for n in range(2) for i in range(300)]
    assert all(r["sum"] == r["i"] * 125_000 for r in rows)
    [m] = [json.loads(p.read_text()) for p in report.iterdir()]
    # held whole, the outputs of one event took 300 MB; sent as they come, a few chunks
    assert m["peak"] - m["base"] < 100, m


@WAYS
def test_arrays_survive_a_retry_and_a_killed_worker(tmp_path: Path, workdir: Path, env: dict[str, str]) -> None:
    """The lease of a killed worker comes back with its arrays (the queue holds the
    frames until the lease is acknowledged); a retried event is handed its arrays again."""
    out = tmp_path / "digest.jsonl"
    markers = tmp_path / "markers"
    markers.mkdir()
    topo = topology(tmp_path, out, count=30, nbytes=400_000, fuse=False)
    text = topo.read_text().replace(
        f"    handler: {STAGES}:touch\n    params: {{fail_modulo: 0}}\n",
        f'    handler: {STAGES}:once\n    params: {{die_at: 7, fail_at: 12, marker_dir: "{markers}"}}\n'
        "    on_error: {retry: 1}\n",
    )
    topo.write_text(text)
    proc = run_sedamp("run", str(topo), "--workdir", str(workdir), "--json", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in markers.iterdir()) == ["die", "fail"]
    rows = digest(out)
    assert sorted({r["n"] for r in rows}) == list(range(30))  # a redelivered event may arrive twice
    side = int((400_000 // 8) ** 0.5)
    assert all(r["sum"] == (r["n"] + 1) * side * side for r in rows)


@WAYS
def test_a_resumed_run_does_only_the_arrays_no_sink_wrote(tmp_path: Path, workdir: Path, env: dict[str, str]) -> None:
    """kill -9 of `sedamp run` mid-job, then --resume: the arrays already saved are
    skipped, the others cross the stages again whole (and the blocks the killed run
    left are gone)."""
    from tests.conftest import wait_until

    out = tmp_path / "saved"
    count, nbytes = 60, 400_000
    topo = topology(tmp_path, out, count=count, nbytes=nbytes, fuse=False)
    topo.write_text(
        topo.read_text().replace(f"{STAGES}:Digest\n    params: {{out: \"{out}\"}}",
                                 f"{STAGES}:SaveArrays\n    params: {{out: \"{out}\", delay_s: 0.05}}")
    )  # fmt: skip
    assert "SaveArrays" in topo.read_text()
    proc = start_run(topo, workdir, env=env)
    try:
        wait_until(lambda: out.exists() and len(list(out.glob("*.npy"))) >= 15, 60, "15 arrays saved")
    finally:
        proc.kill()  # every process of the run goes with it
        proc.communicate(timeout=10)
    saved = len(list(out.glob("*.npy")))
    assert 15 <= saved < count, "the job was not interrupted mid-way: the test proves nothing"

    again = run_sedamp("run", str(topo), "--workdir", str(workdir), "--json", "--resume", env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"sedamp-{proc.pid}.")]
    summary = summary_of(again)
    skipped = stage_of(summary, "src")["skipped"]
    assert 0 < skipped <= saved
    assert stage_of(summary, "touch")["events_in"] == count - skipped
    side = int((nbytes // 8) ** 0.5)  # touch adds one, reshape keeps a square
    files = sorted(out.glob("*.npy"))
    assert [f.stem for f in files] == [f"{n:04d}" for n in range(count)]
    for f in files:
        a = np.load(f)
        assert a.shape == (side, side) and a.dtype == np.float64 and float(a.sum()) == (int(f.stem) + 1) * side**2
    assert not list(out.glob("*.tmp"))

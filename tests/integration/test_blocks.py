"""Shared-memory blocks in real runs (sedamp.runtime.blocks): arrays cross stages
through /dev/shm and arrive as they do through frames; a sink that keeps arrays reads
them whole; and no block outlives its run, whether it ends, is interrupted, loses a
worker or a queue to kill -9, or its controller is killed (the next run, or `sedamp
clean`, removes what that one left)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import psutil
import pytest

from sedamp.runtime import blocks
from sedamp.runtime.deadletter import event_of, read_dead_letters
from tests.conftest import wait_until
from tests.integration.test_payloads import STAGES, THROUGH_BLOCKS, digest, topology
from tests.integration.util import run_sedamp, start_run

pytest.importorskip("numpy")
pytestmark = pytest.mark.skipif(not blocks.available(), reason="no /dev/shm on this host")

THROUGH_FRAMES = {blocks.ENV: "0"}  # frames only


def blocks_of(pid: int) -> list[str]:
    """The blocks in /dev/shm of the run whose `sedamp run` has this pid."""
    return sorted(n for n in os.listdir(blocks.SHM_DIR) if n.startswith(f"sedamp-{pid}."))


def start(topo: Path, workdir: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return start_run(topo, workdir, env=env)


class Watch:
    """The most blocks the run of `pid` had at once, sampled until `stop`."""

    def __init__(self, pid: int) -> None:
        self.pid, self.most, self.kept = pid, 0, False
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            now = blocks_of(self.pid)
            self.most = max(self.most, len(now))
            self.kept = self.kept or any(n.split("-")[2].startswith("k") for n in now)
            self.done.wait(0.01)

    def stop(self) -> int:
        self.done.set()
        self.thread.join(timeout=5)
        return self.most


def slow(topo: Path) -> Path:
    """The topology with `touch` taking 20 ms an event: a run long enough to interrupt."""
    topo.write_text(topo.read_text().replace("{fail_modulo: 0}", "{fail_modulo: 0, delay_s: 0.02}"))
    return topo


def test_arrays_cross_through_blocks_as_through_frames_and_no_block_is_left(tmp_path: Path, workdir: Path) -> None:
    rows, most = {}, {}
    for way, env in (("blocks", THROUGH_BLOCKS), ("frames", THROUGH_FRAMES)):
        out = tmp_path / f"digest-{way}.jsonl"
        proc = start(topology(tmp_path, out, count=24, nbytes=2_000_000, fuse=False), workdir, env)
        watch = Watch(proc.pid)
        _, err = proc.communicate(timeout=120)
        most[way] = watch.stop()
        assert proc.returncode == 0, err
        assert blocks_of(proc.pid) == []
        rows[way] = digest(out)
    assert most["blocks"] > 0 and most["frames"] == 0
    side = int((2_000_000 // 8) ** 0.5)
    assert [r["n"] for r in rows["blocks"]] == list(range(24))
    for r in rows["blocks"]:  # touch made n + 1; reshape sent a strided view, which arrived in C order
        assert r["shape"] == [side, side] and r["sum"] == (r["n"] + 1) * side * side and r["head"] == 128
        assert r["writeable"] is False and r["was_writeable"] is False  # mapped read-only
    assert rows["blocks"] == rows["frames"]


def test_a_sink_that_keeps_arrays_until_finish_reads_every_one_whole(tmp_path: Path, workdir: Path) -> None:
    """KeepArrays holds every array it was handed until finish(): their blocks must not
    be freed and written again by a producer meanwhile (they are kept, not freed)."""
    out = tmp_path / "kept.jsonl"
    count, nbytes = 40, 400_000
    topo = topology(tmp_path, out, count=count, nbytes=nbytes, fuse=False)
    topo.write_text(topo.read_text().replace(f'{STAGES}:Digest\n    params: {{out: "{out}"}}',
                                             f'{STAGES}:KeepArrays\n    params: {{out: "{out}"}}'))  # fmt: skip
    assert "KeepArrays" in topo.read_text()
    proc = start(topo, workdir, THROUGH_BLOCKS)
    watch = Watch(proc.pid)
    _, err = proc.communicate(timeout=120)
    watch.stop()
    assert proc.returncode == 0, err
    assert watch.kept, "no block was seen kept: the test proves nothing"
    side = int((nbytes // 8) ** 0.5)
    got = digest(out)
    assert [r["n"] for r in got] == list(range(count))
    assert [r["sum"] for r in got] == [(n + 1) * side * side for n in range(count)]
    assert blocks_of(proc.pid) == []


def test_no_block_is_left_after_ctrl_c(tmp_path: Path, workdir: Path) -> None:
    proc = start(slow(topology(tmp_path, tmp_path / "d.jsonl", count=2_000, nbytes=200_000, fuse=False)),
                 workdir, THROUGH_BLOCKS)  # fmt: skip
    try:
        wait_until(lambda: len(blocks_of(proc.pid)) > 0, 60, "blocks in use")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 130, err
    assert blocks_of(proc.pid) == []


@pytest.mark.parametrize(("victim", "code"), [("sdw:touch", 0), ("sdq:touch", 3)])
def test_no_block_is_left_after_kill_9_of_a_worker_or_a_queue(
    tmp_path: Path, workdir: Path, victim: str, code: int
) -> None:
    """A killed worker's lease comes back with its blocks and the run ends whole; a
    killed queue fails the run. Either way the run's blocks go with it."""
    out = tmp_path / "d.jsonl"
    count = 300
    proc = start(slow(topology(tmp_path, out, count=count, nbytes=200_000, fuse=False)), workdir, THROUGH_BLOCKS)
    try:
        wait_until(lambda: len(blocks_of(proc.pid)) > 0, 60, "blocks in use")
        target = wait_until(lambda: _child(proc.pid, victim), 30, victim)
        target.kill()
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == code, err
    if code == 0:
        assert sorted({r["n"] for r in digest(out)}) == list(range(count))
    assert blocks_of(proc.pid) == []


@pytest.mark.parametrize("then", ["clean", "next run"])
def test_blocks_of_a_killed_controller_go_with_the_next_run_or_sedamp_clean(
    tmp_path: Path, workdir: Path, then: str
) -> None:
    proc = start(slow(topology(tmp_path, tmp_path / "d.jsonl", count=2_000, nbytes=200_000, fuse=False)),
                 workdir, THROUGH_BLOCKS)  # fmt: skip
    try:
        wait_until(lambda: len(blocks_of(proc.pid)) > 0, 60, "blocks in use")
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()  # kill -9 of the controller: it cannot sweep
        proc.communicate(timeout=10)
        _, alive = psutil.wait_procs(children, timeout=30)  # they see their parent gone and exit
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    left = blocks_of(proc.pid)
    assert left, "the killed run left no block: the test proves nothing"
    if then == "clean":
        done = run_sedamp("clean", "--workdir", str(workdir), timeout=60)
        assert done.returncode == 0, done.stderr
        removed = re.search(r"removed ([0-9]+) shared-memory block", done.stderr)
        assert removed and int(removed.group(1)) >= len(left), done.stderr  # other killed runs' may go too
    else:
        small = topology(tmp_path, tmp_path / "d2.jsonl", count=2, nbytes=8_000, fuse=False)
        done = run_sedamp("run", str(small), "--workdir", str(workdir), "--json", timeout=60)
        assert done.returncode == 0, done.stderr
    assert blocks_of(proc.pid) == []


def test_an_array_that_kills_its_workers_is_dead_lettered_by_its_queue_whole(tmp_path: Path, workdir: Path) -> None:
    """The queue writes a poison event's dead letter from the event as it holds it: its
    array is read out of the shared block, and the block is freed."""
    out = tmp_path / "d.jsonl"
    topo = topology(tmp_path, out, count=10, nbytes=200_000, fuse=False)
    topo.write_text(topo.read_text().replace(f"{STAGES}:touch\n", f"{STAGES}:kill_at\n")
                    .replace("{fail_modulo: 0}", "{n: 4}"))  # fmt: skip
    proc = start(topo, workdir, THROUGH_BLOCKS)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err  # an event was dead-lettered
    [run_dir] = (workdir / "runs").iterdir()
    [record] = read_dead_letters(run_dir / "dead-letters.jsonl")
    assert record["error_type"] == "WorkerDied"
    event = event_of(record)
    assert event["n"] == 4 and event["a"].shape == (25_000,) and (event["a"] == 4).all()
    # the others arrive, some more than once (redelivered with the poison's batch: at least once)
    assert sorted({r["n"] for r in digest(out)}) == [n for n in range(10) if n != 4]
    assert blocks_of(proc.pid) == []


def _child(pid: int, prefix: str) -> psutil.Process | None:
    try:
        for c in psutil.Process(pid).children(recursive=True):
            if c.name().startswith(prefix) and c.status() != psutil.STATUS_ZOMBIE:
                return c
    except psutil.Error:
        pass
    return None

"""sedamp.control.recorder against a fake executor: the metrics line, the policy's
views and the summary, from given counters and samples."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from sedamp.control.recorder import Recorder
from sedamp.control.roster import Roster
from sedamp.runtime.slot import BLOCKED, Slot
from tests.unit.control.fakes import roster

# The keys of a stage in the metrics line, in order (docs/controller.md, "Metrics stream").
STAGE_KEYS = [
    "kind",
    "group",
    "workers",
    "ready",
    "target",
    "bounds",
    "queue",
    "events_in",
    "events_out",
    "failed",
    "dropped",
    "rejected",
    "retried",
    "skipped",
    "duplicates",
    "poisoned",
    "discarded",
    "timeouts",
    "recycled",
    "restarts",
    "arrivals_per_s",
    "completions_per_s",
    "latency_ms",
    "batch_size",
    "events_per_batch",
    "blocked_s_per_s",
    "waiting_s_per_s",
    "worker_detail",
]


def running() -> tuple[Roster, Recorder]:
    """The pipeline with two /work workers and one /out worker that have reported."""
    r, _, _ = roster()
    r.start_sources()
    r.stages["work"].target = 2
    r.reconcile()
    rec = Recorder(r.top, r)
    src = r.stages["src"].source
    assert src is not None
    r.on_stats(src, {"total": 100, "in": 40, "out": 40, "failed": 0, "skipped": 0, "shed": {"work": [0, 0]}})
    work = r.stages["work"]
    assert work.queue is not None
    r.on_stats(
        work.queue, {"length": 6, "capacity": 64, "leased": 2, "credit": 8, "expired": 3, "arrived": 40, "poisoned": 1}
    )
    rec.gather(work.queue, {"wait": [[2.0, 1]]})
    for i, w in work.workers.items():
        stats = {"in": 15 + i, "out": 15 + i, "failed": i, "busy_s": 0.0, "batches": 3, "batch_size": 8 + 8 * i}
        r.on_stats(w, stats)
        rec.gather(w, {"service": [[1.0, 3]], "path": [[4.0, 3]]})
    return r, rec


def test_a_period_carries_the_documented_keys() -> None:
    r, rec = running()
    line = rec.period(cores=2, decisions=[{"stage": "work", "from": 1, "to": 2, "reason": "x"}]).as_dict()
    assert list(line) == ["t", "elapsed_s", "final", "system", "stages", "bottleneck", "decisions"]
    assert line["system"]["cores"] == 2
    assert set(line["system"]) == {"cores", "cpu_percent", "load1", "own_cores", "other_cores", "budget", "runtime_cores"}
    assert line["decisions"] == [{"stage": "work", "from": 1, "to": 2, "reason": "x"}]
    work = line["stages"]["work"]
    assert list(work) == STAGE_KEYS
    assert list(line["stages"]["src"]) == [*STAGE_KEYS[:20], "total", *STAGE_KEYS[20:]]
    assert line["stages"]["src"]["total"] == 100 and line["stages"]["src"]["bounds"] == [1, 1]
    assert work["queue"] == {"length": 6, "capacity": 64, "leased": 2, "credit": 8, "expired": 3}
    assert (work["events_in"], work["events_out"], work["failed"], work["poisoned"]) == (31, 31, 1, 1)
    assert (work["workers"], work["target"], work["bounds"]) == (2, 2, [1, 4])
    assert work["latency_ms"]["queue_wait"]["p50"] == 2.0 and work["latency_ms"]["service"]["p99"] == 1.0
    assert work["batch_size"] == 12.0  # the mean of what the workers ask for
    assert work["events_per_batch"] == round(31 / 6, 2)
    assert [w["index"] for w in work["worker_detail"]] == [0, 1]
    assert list(work["worker_detail"][0]) == ["index", "pid", "cpu_percent", "rss_mb", "busy", "blocked", "waiting"]
    assert work["worker_detail"][0]["cpu_percent"] is None  # not on this machine: no psutil


def test_rates_and_samples_are_per_period() -> None:
    r, rec = running()
    rec.period(cores=2, decisions=[])
    again = rec.period(cores=2, decisions=[]).as_dict()["stages"]["work"]
    assert again["completions_per_s"] == 0.0 and again["arrivals_per_s"] == 0.0
    assert again["events_per_batch"] is None  # no batch since the last record
    assert again["latency_ms"] == {"queue_wait": None, "service": None, "path": None}
    assert again["events_in"] == 31  # counts are cumulative


def test_views_are_built_from_the_record() -> None:
    r, rec = running()
    period = rec.period(cores=2, decisions=[])
    [work, out] = rec.views(period, cores=2, pinned=set())
    assert (work.name, work.target, work.lo, work.hi) == ("work", 2, 1, 4)
    assert (work.queue_length, work.capacity, work.batch_size) == (6, 64, 12.0)
    assert work.resizable and not out.resizable  # out is a fixed pool of 1
    assert work.downstream_fill == 0.0
    assert [v.name for v in rec.views(period, cores=2, pinned={"work"})] == ["out"]


def test_the_summary_counts_exited_workers_and_failures() -> None:
    r, rec = running()
    w = r.stages["work"].workers[1]
    r.on_done(w, {"in": 16, "out": 16, "failed": 1})
    w.proc.exit(0)  # type: ignore[attr-defined]
    r.on_exit(w)
    rec.forget(w)
    s = rec.summary(r.top.path or r.top.base_dir, r.top.base_dir / "dead", 2.0, False, None)
    work = s.stage("work")
    assert (work.events_in, work.failed, work.poisoned, work.workers) == (31, 1, 1, 2)
    assert s.events == 40 and s.failed == 2  # a failed event and a poisoned one
    assert s.exit_code == 1 and s.events_per_s == 20.0


def test_the_summary_counts_every_dead_letter_on_disk(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A worker that died (its disk full) took the count of what it dead-lettered since
    its last report: the summary said `failed: 0` with dead letters on disk."""
    r, rec = running()
    dead = tmp_path / "dead-letters.jsonl"
    dead.write_text('{"event_id": 1}\n' * 7 + '{"event_id": 8, "mes')  # the last one cut short
    s = rec.summary(r.top.base_dir, dead, 2.0, False, "the disk is full")
    assert s.failed == 7 and s.exit_code == 3
    assert rec.summary(r.top.base_dir, tmp_path / "none", 2.0, False, None).failed == 2  # as reported


def _a_second_later(rec: Recorder) -> None:
    """The next record is taken one second after the last (a period of 1 s)."""
    rec.last_record_t = time.monotonic() - 1.0


def test_blocked_and_waiting_time_from_the_stats_name_the_bottleneck() -> None:
    """Workers without a slot (on another host): their STATS totals, per period. Both
    /work workers held back 80% of the period by /out: out is the bottleneck."""
    r, rec = running()
    work, out = r.stages["work"], r.stages["out"]
    rec.period(cores=2, decisions=[])
    for w in work.workers.values():
        r.on_stats(w, {**w.stats, "blocked_s": 0.8, "waiting_s": 0.1})
    for w in out.workers.values():
        r.on_stats(w, {**w.stats, "blocked_s": 0.0, "waiting_s": 0.3})
    _a_second_later(rec)
    line = rec.period(cores=2, decisions=[]).as_dict()
    stages = line["stages"]
    assert [(d["blocked"], d["waiting"]) for d in stages["work"]["worker_detail"]] == [(0.8, 0.1), (0.8, 0.1)]
    assert stages["work"]["blocked_s_per_s"] == pytest.approx(1.6, abs=0.02)  # summed over the pool
    assert stages["work"]["waiting_s_per_s"] == pytest.approx(0.2, abs=0.01)
    assert (stages["out"]["blocked_s_per_s"], stages["out"]["waiting_s_per_s"]) == (0.0, pytest.approx(0.3, abs=0.01))
    assert stages["src"]["blocked_s_per_s"] == 0.0  # its slot (none here) and STATS said nothing
    assert line["bottleneck"] == {
        "stage": "out",
        "reason": "work was blocked 80% of the period: the queue of out had no room for its outputs",
    }
    _a_second_later(rec)
    again = rec.period(cores=2, decisions=[]).as_dict()  # no new report: nothing more blocked
    assert again["stages"]["work"]["blocked_s_per_s"] == 0.0 and again["bottleneck"] is None


def test_a_wait_longer_than_a_period_counts_in_every_period_it_spans(tmp_path: Path) -> None:
    """The slot shows a wait as it accrues: a source held back for 2.5 s reads blocked
    in each period of it, not 0 until its wait ends and then everything at once."""
    r, _, _ = roster(slot_dir=tmp_path)
    r.start_sources()
    r.reconcile()
    rec = Recorder(r.top, r)
    src = r.stages["src"].source
    assert src is not None and isinstance(src.slot, Slot)
    mine = Slot(src.slot.path)  # the source's side of its slot
    rec.period(cores=2, decisions=[])
    start = time.monotonic() - 0.5
    mine.wait_begin(BLOCKED, start)  # blocked since half a period ago
    _a_second_later(rec)
    first = rec.period(cores=2, decisions=[]).as_dict()
    assert first["stages"]["src"]["blocked_s_per_s"] == pytest.approx(0.5, abs=0.05)
    assert first["bottleneck"] is not None and first["bottleneck"]["stage"] == "work"
    mine.wait_begin(BLOCKED, start - 1.0)  # a second passes, still blocked
    _a_second_later(rec)
    second = rec.period(cores=2, decisions=[]).as_dict()
    assert second["stages"]["src"]["blocked_s_per_s"] == pytest.approx(1.0, abs=0.05)
    mine.wait_end(BLOCKED, 2.5)  # it ended after 2.5 s in all: the last second's share
    _a_second_later(rec)
    third = rec.period(cores=2, decisions=[]).as_dict()
    assert third["stages"]["src"]["blocked_s_per_s"] == pytest.approx(1.0, abs=0.05)
    _a_second_later(rec)
    assert rec.period(cores=2, decisions=[]).as_dict()["stages"]["src"]["blocked_s_per_s"] == 0.0


def test_a_worker_reads_busy_for_the_time_it_has_been_ready_from_its_slot(tmp_path: Path) -> None:
    """A pool's first period read nearly idle, so the bottleneck grew a period late (in
    the heavy benchmark one core sat idle for it): busy time came only in STATS, a
    period apart, and was divided by the whole period though the worker had been
    ready for part of it. Its slot now carries the time of the batches done as each
    ends, read over the time since its first STATS (its setup done)."""
    r, _, _ = roster(slot_dir=tmp_path)
    r.start_sources()
    r.stages["work"].target = 1
    r.reconcile()
    rec = Recorder(r.top, r)
    (w,) = r.stages["work"].workers.values()
    assert isinstance(w.slot, Slot)
    first = {"in": 0, "out": 0, "failed": 0, "busy_s": 0.0, "batches": 0, "batch_size": 8}
    ready = time.monotonic()
    rec.gather(w, first)  # its first STATS: ready from now
    r.on_stats(w, first)
    time.sleep(0.3)
    mine = Slot(w.slot.path)  # the worker's side: batches took 90% of the time since
    busy = 0.9 * (time.monotonic() - ready)
    mine.begin(1)
    mine.end(busy_s=busy)
    mine.begin(2)  # and it is on the next batch
    assert mine.busy_s() == busy
    _a_second_later(rec)
    (detail,) = rec.period(cores=2, decisions=[]).as_dict()["stages"]["work"]["worker_detail"]
    assert 0.75 <= detail["busy"] <= 1.0  # 0.0 before: its STATS said 0 and the period was 1 s
    mine.close()


def test_the_runtime_cpu_leaves_out_workers_that_just_exited() -> None:
    """`runtime_cores` was the run's CPU less its live workers': the last rate of a
    worker that exited during the period (`CpuMeter.gone_percent`) stayed in the run's,
    so a pool of two ending read as 2 cores of runtime (seen in a shift run: 1.7 and
    2.0) and the budget fell by as much. It is now the CPU of the controller, queues
    and sources themselves."""
    import os

    from sedamp.control.recorder import runtime_cores

    r, _ = running()
    for c in r.children.values():
        c.proc.local = True
        c.pid = c.proc.pid
    queue = r.stages["work"].queue
    src = r.stages["src"].source
    assert queue is not None and src is not None
    worker = next(iter(r.stages["work"].workers.values()))
    gone = 1  # a worker that exited since the last sample: in the run's CPU, not in the roster
    cpu_now = {os.getpid(): 5.0, queue.pid: 20.0, src.pid: 10.0, worker.pid: 100.0, gone: 100.0}
    assert runtime_cores(cpu_now, r) == pytest.approx(0.35)


def test_the_launcher_s_cpu_is_the_run_s_and_not_runtime_load() -> None:
    """The launcher was in no pid list: its own start (0.1 s of CPU within the first
    record, 0.1 s long) read as another program using half a core, and the first
    decision found a budget of one core. It is the run's CPU now, but not the
    runtime's steady load that the pools must leave room for."""
    import subprocess
    import sys

    from sedamp.control.recorder import runtime_cores

    r, rec = running()
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ntime.sleep(60)\n"
    launcher = subprocess.Popen([sys.executable, "-c", burn])
    try:
        assert r.executor is not None
        r.executor.helpers = [launcher.pid]  # type: ignore[attr-defined]
        start = time.monotonic()
        while sum(psutil.Process(launcher.pid).cpu_times()[:2]) < 0.3:
            assert time.monotonic() - start < 30, "the child did not burn its CPU in 30 s"
            time.sleep(0.05)
        dt = time.monotonic() - rec.last_record_t  # the record's period, give or take
        record = rec.period(cores=2, decisions=[]).as_dict()["system"]
        assert record["own_cores"] >= 0.3 / dt * 0.9, (record, dt)
        assert runtime_cores({launcher.pid: 100.0}, r) == 0.0
    finally:
        launcher.kill()
        launcher.wait(timeout=10)


def test_a_pool_is_finishing_once_the_sources_ended_and_its_backlog_is_short() -> None:
    r, rec = running()
    [work, _] = rec.views(rec.period(cores=2, decisions=[]), cores=2, pinned=set())
    assert not work.finishing  # the source still reads
    src = r.stages["src"].source
    assert src is not None
    r.on_done(src, dict(src.stats))
    work_stage = r.stages["work"]
    for i, w in work_stage.workers.items():  # 30 more events each, in the period
        r.on_stats(w, {**w.stats, "in": 45 + i, "out": 45 + i})
    [work, _] = rec.views(rec.period(cores=2, decisions=[]), cores=2, pinned=set())
    assert work.finishing  # 8 events left (6 waiting, 2 leased), at its rate of the period
    assert work_stage.queue is not None
    r.on_stats(work_stage.queue, {**work_stage.queue.stats, "length": 10**9})
    for i, w in work_stage.workers.items():
        r.on_stats(w, {**w.stats, "in": 75 + i, "out": 75 + i})
    [work, _] = rec.views(rec.period(cores=2, decisions=[]), cores=2, pinned=set())
    assert not work.finishing

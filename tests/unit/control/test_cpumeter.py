"""The CPU of the run's processes, period by period: a process seen for the first time
is charged what it has used; one named as running when the meter was made, from then."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from sedamp.control.cpumeter import CpuMeter

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\ntime.sleep(60)\n"


def _burner(seconds: float) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", BURN.format(s=seconds)])
    deadline = time.monotonic() + 30
    while sum(psutil.Process(proc.pid).cpu_times()[:2]) < seconds:  # user + system: its loop is done
        assert time.monotonic() < deadline, "the child did not burn its CPU in 30 s"
        time.sleep(0.05)
    return proc


def test_a_process_started_within_the_period_is_charged_its_cpu_at_first_sight() -> None:
    meter = CpuMeter()
    t0 = time.monotonic()
    proc = _burner(0.4)
    try:
        dt = time.monotonic() - t0
        first = meter.sample([proc.pid], dt)
        assert first[proc.pid] >= 0.4 / dt * 100 * 0.9, (first, dt)  # cpu_percent read 0.0 here
        time.sleep(0.2)
        second = meter.sample([proc.pid], 0.2)
        assert second[proc.pid] < 25.0, second  # it sleeps now
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert meter.sample([proc.pid], 0.1) == {}  # gone: left out
    assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE


def test_a_process_running_before_the_meter_is_not_charged_its_past() -> None:
    proc = _burner(0.3)
    try:
        meter = CpuMeter(running=[proc.pid])  # made after the child burned its CPU
        time.sleep(0.5)
        assert meter.sample([proc.pid], 0.5)[proc.pid] < 5.0  # asleep: what it burned before is not charged
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_process_that_ends_is_counted_at_its_last_rate() -> None:
    """Its CPU since the last sample cannot be read once it is gone; counted at its last
    rate, it is not taken for another program's load."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        meter = CpuMeter()
        meter.sample([proc.pid], 0.3)
        time.sleep(0.3)
        busy = meter.sample([proc.pid], 0.3)[proc.pid]
        assert busy > 30.0, busy  # it spins (a loaded machine gives it less than a core)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert meter.sample([proc.pid], 0.3) == {} and meter.gone_percent == busy
    meter.sample([], 0.3)
    assert meter.gone_percent == 0.0  # once only


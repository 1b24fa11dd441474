"""sedamp.observe.prometheus: the Exporter scraped over real HTTP, and a live run's endpoint
(`sedamp run --metrics-port PORT`) scraped while the run goes on."""

from __future__ import annotations

import copy
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import sedamp
from sedamp.errors import ExporterError
from sedamp.observe.prometheus import Exporter
from sedamp.spec import DEFAULT_CAPACITY_EVENTS
from tests.conftest import wait_until
from tests.integration.util import TESTSTAGES, chain_yaml, stage_of, start_run, summary_of
from tests.unit.observe.test_report import N_RECORDS, synthetic_record

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> tuple[dict[str, str], Samples]:
    """(type of each family, value of each sample by name and sorted labels)."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    types: dict[str, str] = {}
    samples: Samples = {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return types, samples


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def exporter() -> Any:
    ex = Exporter("127.0.0.1", 0, topology="made-up")
    yield ex
    ex.close()


def test_port_zero_reports_the_real_port(exporter: Exporter) -> None:
    assert exporter.port > 0
    assert exporter.url == f"http://127.0.0.1:{exporter.port}/metrics"


def test_before_the_first_record_only_run_info(exporter: Exporter) -> None:
    types, samples = scrape(exporter.url)
    assert types == {"sedamp_run_info": "gauge"}  # the text format serves an info metric as a gauge
    assert samples == {
        ("sedamp_run_info", (("topology", "made-up"), ("version", sedamp.__version__))): 1.0,
    }


def test_metrics_mirror_the_record(exporter: Exporter) -> None:
    for i in range(4):
        exporter.update(synthetic_record(i))
    rec = synthetic_record(3)
    types, s = scrape(exporter.url)
    # counters, with the record's totals
    for family in ("sedamp_stage_events_in", "sedamp_stage_events_out", "sedamp_stage_events_failed"):
        assert types[family] == "counter"
    for name in ("src", "work", "save", "audit"):
        assert sample(s, "sedamp_stage_events_in_total", stage=name) == rec["stages"][name]["events_in"]
        assert sample(s, "sedamp_stage_events_out_total", stage=name) == rec["stages"][name]["events_out"]
        assert sample(s, "sedamp_stage_worker_restarts_total", stage=name) == 0.0
    assert sample(s, "sedamp_stage_resizes_total", stage="work", direction="grow") == 1.0
    assert types["sedamp_stage_resizes"] == "counter"
    # gauges
    assert types["sedamp_stage_queue_length"] == "gauge"
    assert sample(s, "sedamp_stage_queue_length", stage="work") == rec["stages"]["work"]["queue"]["length"]
    assert sample(s, "sedamp_stage_queue_capacity", stage="work") == 64.0
    assert sample(s, "sedamp_stage_queue_length", stage="src") is None  # a source has no queue
    assert sample(s, "sedamp_stage_workers", stage="work") == 2.0
    assert sample(s, "sedamp_stage_workers_max", stage="work") == 2.0
    assert sample(s, "sedamp_stage_workers", stage="src") is None  # a source is one process, not a pool
    assert sample(s, "sedamp_stage_completions_per_second", stage="work") == 27.0
    assert sample(s, "sedamp_stage_batch_size", stage="work") == 8.0
    assert sample(s, "sedamp_stage_events_per_batch", stage="work") == 6.5
    assert sample(s, "sedamp_stage_events_per_batch", stage="save") is None  # no batch in the period
    assert sample(s, "sedamp_source_total_events", stage="src") == 100.0
    # latency in seconds, one sample per kind and quantile; none where nothing was measured
    assert types["sedamp_stage_latency_seconds"] == "gauge"
    assert sample(s, "sedamp_stage_latency_seconds", stage="work", kind="service", quantile="0.9") == 0.013
    assert sample(s, "sedamp_stage_latency_seconds", stage="save", kind="path", quantile="0.99") == 0.48
    assert sample(s, "sedamp_stage_latency_seconds", stage="work", kind="path", quantile="0.5") is None
    assert not [k for k in s if k[0] == "sedamp_stage_latency_seconds" and ("stage", "audit") in k[1]]
    # per worker, in bytes
    assert sample(s, "sedamp_worker_cpu_percent", stage="work", worker="1") == 95.0
    assert sample(s, "sedamp_worker_resident_memory_bytes", stage="work", worker="1") == 31.0 * 2**20
    assert sample(s, "sedamp_worker_busy_ratio", stage="save", worker="0") == 0.1
    # the machine and the run
    assert sample(s, "sedamp_system_cpu_percent") == 69.0
    assert sample(s, "sedamp_system_cores") == 2.0
    assert sample(s, "sedamp_run_elapsed_seconds") == 2.0
    assert sample(s, "sedamp_run_finished") == 0.0
    assert sample(s, "sedamp_stage_info", stage="work", stage_kind="handler", group="") == 1.0
    assert sample(s, "sedamp_stage_info", stage="src", stage_kind="source", group="") == 1.0


def test_blocked_time_and_the_bottleneck(exporter: Exporter) -> None:
    rec = copy.deepcopy(synthetic_record(3))  # src held back by work
    for w in rec["stages"]["work"]["worker_detail"]:
        w.update(blocked=0.0, waiting=0.25)
    exporter.update(rec)
    types, s = scrape(exporter.url)
    assert types["sedamp_stage_blocked_seconds_per_second"] == "gauge"
    assert sample(s, "sedamp_stage_blocked_seconds_per_second", stage="src") == 0.9  # a source too
    assert sample(s, "sedamp_stage_waiting_seconds_per_second", stage="save") == 0.8
    assert sample(s, "sedamp_stage_blocked_seconds_per_second", stage="audit") is None  # not in its record
    assert sample(s, "sedamp_worker_waiting_ratio", stage="work", worker="1") == 0.25
    assert sample(s, "sedamp_worker_blocked_ratio", stage="work", worker="0") == 0.0
    assert sample(s, "sedamp_worker_blocked_ratio", stage="save", worker="0") is None  # not reported
    bottleneck = {name: sample(s, "sedamp_stage_bottleneck", stage=name) for name in rec["stages"]}
    assert bottleneck == {"src": 0.0, "work": 1.0, "save": 0.0, "audit": 0.0}
    exporter.update(synthetic_record(0))  # a period without one
    _, s = scrape(exporter.url)
    assert sample(s, "sedamp_stage_bottleneck", stage="work") == 0.0


def test_counters_never_go_down(exporter: Exporter) -> None:
    exporter.update(synthetic_record(5))
    lower = copy.deepcopy(synthetic_record(6))
    lower["stages"]["work"]["events_in"] = 3  # a total that fell (a worker died before reporting)
    exporter.update(lower)
    _, s = scrape(exporter.url)
    assert sample(s, "sedamp_stage_events_in_total", stage="work") == synthetic_record(5)["stages"]["work"]["events_in"]
    assert sample(s, "sedamp_stage_events_in_total", stage="save") == lower["stages"]["save"]["events_in"]


def test_final_record_and_nulls(exporter: Exporter) -> None:
    final = synthetic_record(N_RECORDS - 1)
    final["system"]["cpu_percent"] = None
    final["stages"]["work"]["worker_detail"][0]["cpu_percent"] = None
    exporter.update(final)
    _, s = scrape(exporter.url)
    assert sample(s, "sedamp_run_finished") == 1.0
    assert sample(s, "sedamp_system_cpu_percent") is None
    assert sample(s, "sedamp_worker_cpu_percent", stage="work", worker="0") is None
    assert sample(s, "sedamp_worker_resident_memory_bytes", stage="work", worker="0") == 30.0 * 2**20
    assert sample(s, "sedamp_stage_events_failed_total", stage="work") == 2.0


def test_update_copies_the_record(exporter: Exporter) -> None:
    rec = synthetic_record(3)
    exporter.update(rec)
    rec["stages"]["work"]["queue"]["length"] = 999_999  # the run's own dict, changed afterwards
    _, s = scrape(exporter.url)
    assert (
        sample(s, "sedamp_stage_queue_length", stage="work") == synthetic_record(3)["stages"]["work"]["queue"]["length"]
    )


def test_close_frees_the_port_and_stops_the_thread() -> None:
    before = set(threading.enumerate())
    ex = Exporter("127.0.0.1", 0)
    port = ex.port
    scrape(ex.url)
    assert not refused(port)
    ex.close()
    ex.close()  # idempotent
    assert refused(port)
    wait_until(lambda: set(threading.enumerate()) <= before, 5, "the server's threads to end")
    with Exporter("127.0.0.1", port) as again:  # the same port is free to listen on again
        assert again.port == port
        scrape(again.url)
    assert refused(port)


def test_busy_port_is_an_oserror_naming_the_fix(exporter: Exporter) -> None:
    with pytest.raises(OSError) as err:
        Exporter("127.0.0.1", exporter.port)
    assert str(err.value) == (
        f"cannot listen on 127.0.0.1:{exporter.port}: Address already in use (choose another port, or 0 for any free one)"
    )


@pytest.mark.parametrize("port", [-1, 65536, True, 1.5])
def test_bad_port_is_a_value_error(port: Any) -> None:
    with pytest.raises(ValueError, match=r"^port must be an integer from 0 to 65535"):
        Exporter("127.0.0.1", port)


def test_empty_host_is_a_value_error() -> None:
    with pytest.raises(ExporterError, match=r"^host must be an address"):
        Exporter(" ", 0)


def test_without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import prometheus_client now raises
    with pytest.raises(ExporterError) as err:
        Exporter("127.0.0.1", 0)
    assert str(err.value) == "serving Prometheus metrics needs prometheus-client: pip install 'sedamp[prometheus]'"
    assert isinstance(err.value, ValueError)  # what `sedamp run` reports as a bad --metrics-port


def test_ipv6_loopback_url() -> None:
    try:
        ex = Exporter("::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with ex:
        assert ex.url == f"http://[::1]:{ex.port}/metrics"
        with urllib.request.urlopen(ex.url, timeout=5) as resp:
            assert b"sedamp_run_info" in resp.read()


# --- a live run ---------------------------------------------------------------------------


def test_live_run_serves_growing_counters(tmp_path: Path, workdir: Path) -> None:
    out = tmp_path / "out.jsonl"
    topo = tmp_path / "slow.yaml"
    count = 600
    # one worker spending 5 ms per event: about 3 s, in batches of about 10 events, so the
    # sink's count grows over several periods
    topo.write_text(
        f"""
stages:
  src:
    source: {TESTSTAGES}:Numbers
    params: {{count: {count}}}
    to: mid
  mid:
    handler: {TESTSTAGES}:pause
    params: {{delay_s: 0.005}}
    workers: 1
    to: sink
  sink:
    sink: {TESTSTAGES}:Record
    params: {{out: "{out}"}}
controller: {{period_s: 0.1, policy: static}}
"""
    )
    # port 0: the run picks a free port and says which before it starts (no window in
    # which another process could take a port chosen here)
    proc = start_run(topo, workdir, "--metrics-port", "0")
    assert proc.stderr is not None
    announced = proc.stderr.readline()  # a hang here is failed by pytest-timeout
    found = re.fullmatch(r"sedamp: Prometheus metrics at (http://127\.0\.0\.1:(\d+)/metrics)\n", announced)
    assert found, announced
    url, port = found.group(1), int(found.group(2))
    scrapes: list[Samples] = []  # each successful scrape that served the sink's counter
    try:

        def sink_count() -> float:
            try:
                _, samples = scrape(url)
            except (urllib.error.URLError, ConnectionError):
                return 0.0  # not listening yet
            value = sample(samples, "sedamp_stage_events_in_total", stage="sink")
            if value is None:
                return 0.0  # no record yet
            scrapes.append(samples)
            return value

        first = wait_until(sink_count, 30, "the sink's counter to be served")
        later = wait_until(lambda: (n := sink_count()) > first and n, 30, "the sink's counter to grow")
        assert 0 < first < later <= count
        last = scrapes[-1]
        assert sample(last, "sedamp_run_info", topology="slow", version=sedamp.__version__) == 1.0
        assert sample(last, "sedamp_stage_workers", stage="mid") == 1.0
        assert sample(last, "sedamp_stage_queue_capacity", stage="mid") == DEFAULT_CAPACITY_EVENTS  # the default
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    summary = summary_of(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    assert stage_of(summary, "sink")["events_in"] == count
    assert refused(port), "the endpoint must be closed when the run ends"
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # and its port free


def test_run_refuses_a_busy_port_before_starting(tmp_path: Path, workdir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        topo = tmp_path / "t.yaml"
        topo.write_text(
            chain_yaml(tmp_path / "out.jsonl", f"    handler: {TESTSTAGES}:pause\n    params: {{delay_s: 0}}")
        )
        proc = start_run(topo, workdir, "--metrics-port", str(port))
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert stderr == (
        f"error: --metrics-port {port}: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(choose another port, or 0 for any free one)\n"
    )
    assert not (workdir / "runs").exists()

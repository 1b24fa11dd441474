"""The Prometheus endpoint of a run: `sedamp run --metrics-port PORT [--metrics-host HOST]`.

Runs in the `sedamp run` process. `Exporter.update` receives the controller's metrics
record of every period (the same record `--metrics FILE` writes; see docs/controller.md, "Metrics
stream") and keeps the latest; a thread of prometheus-client's own HTTP server answers
each scrape (GET on any path; conventionally ``/metrics``, which is what `Exporter.url`
names) from a private registry whose one collector turns that record into metric
families. Nothing else is read or written: the endpoint never touches the run.

The endpoint listens on loopback (127.0.0.1) unless another host is given; any other
address (``0.0.0.0`` for every interface) is allowed and serves the figures without
authentication to whoever can reach it. Port 0 picks a free port; `Exporter.url` gives
the real one. `Exporter.close` shuts the server down and frees the port.

Metrics (labels in braces; ``stage`` is the stage name):

  counters (the record's cumulative totals; a total never goes down, see below)
    sedamp_stage_events_in_total{stage}         events the stage handled (a source: read)
    sedamp_stage_events_out_total{stage}        events it passed on
    sedamp_stage_events_failed_total{stage}     dead-lettered because the handler failed
    sedamp_stage_events_dropped_total{stage}    dropped by the stage's full queue (on_full: drop)
    sedamp_stage_events_rejected_total{stage}   refused by its full queue (on_full: reject)
    sedamp_stage_events_retried_total{stage}    handler calls tried again (on_error.retry)
    sedamp_stage_events_skipped_total{stage}    skipped after failing (on_error.then: skip)
    sedamp_stage_events_duplicate_total{stage}  redelivered copies a dedupe sink skipped
    sedamp_stage_events_poisoned_total{stage}   events that killed two workers
    sedamp_stage_worker_timeouts_total{stage}   workers killed past timeout_s
    sedamp_stage_workers_recycled_total{stage}  workers replaced after max_events/max_rss_mb
    sedamp_stage_worker_restarts_total{stage}   workers that died and were replaced
    sedamp_stage_resizes_total{stage,direction} pool decisions of the controller
                                                (direction: grow | shrink)
  gauges
    sedamp_stage_workers{stage}                 worker processes now (not for sources, nor
                                                are the target and bounds below)
    sedamp_stage_workers_target{stage}          the pool size the controller aims at
    sedamp_stage_workers_min{stage}, sedamp_stage_workers_max{stage}   the pool's bounds
    sedamp_stage_queue_length{stage}            events waiting in the stage's queue
    sedamp_stage_queue_capacity{stage}          the queue's bound (queue.capacity)
    sedamp_stage_queue_leased{stage}            events handed to workers, not yet acknowledged
    sedamp_stage_queue_credit{stage}            room granted to producers
    sedamp_stage_arrivals_per_second{stage}     arrivals over the last period
    sedamp_stage_completions_per_second{stage}  completions over the last period
    sedamp_stage_batch_size{stage}              the batch size the workers ask for (mean)
    sedamp_stage_events_per_batch{stage}        events a batch carried over the last period
    sedamp_stage_blocked_seconds_per_second{stage}   seconds per second the stage's processes
                                                could not send (no credit from a queue
                                                downstream), summed over them (a source too)
    sedamp_stage_waiting_seconds_per_second{stage}   the same for waiting for input (a
                                                source: inside its iterator)
    sedamp_stage_bottleneck{stage}              1 for the stage that held the others back
                                                over the last period (its upstream
                                                neighbours were blocked on it), else 0
    sedamp_stage_latency_seconds{stage,kind,quantile}
        kind: queue_wait (in the queue) | service (in the handler) | path (source to
        sink, at sinks); quantile: 0.5 | 0.9 | 0.99 over the last period; a stage that
        measured nothing in the period has no sample
    sedamp_source_total_events{stage}           what a source's total() said (if it has one)
    sedamp_worker_cpu_percent{stage,worker}     a worker's CPU (% of one core); the
                                                pool's: sum by (stage) (...)
    sedamp_worker_resident_memory_bytes{stage,worker}   a worker's RSS
    sedamp_worker_busy_ratio{stage,worker}      fraction of the period spent handling events
    sedamp_worker_blocked_ratio{stage,worker}   fraction of the period blocked (see above)
    sedamp_worker_waiting_ratio{stage,worker}   fraction of the period waiting for input
    sedamp_system_cpu_percent                   the machine's CPU (% of all cores)
    sedamp_system_load1                         the machine's 1-minute load average
    sedamp_system_cores                         the run's core budget
    sedamp_run_elapsed_seconds                  time since the run started
    sedamp_run_finished                         1 once the final record has arrived (for
                                                an embedding program: `sedamp run` closes
                                                the endpoint as the run ends)
  info
    sedamp_run_info{topology,version}           1
    sedamp_stage_info{stage,stage_kind,group}   1 (stage_kind: source | handler | sink;
                                                group: "" outside a group)

``worker`` is the worker's index in its pool (a replacement takes a free index, so the
label set stays small). A group has one queue, at its entry, and one pool: every stage
of the group reports that queue and pool size, and the workers' figures are under the
stage whose record carries them (its first). Before the first record only
sedamp_run_info is served.

Counters are monotonic, as Prometheus requires: the record gives cumulative totals, and
should a reported total ever fall, the exporter keeps serving the highest value it has
seen rather than let Prometheus read a counter reset.

Needs prometheus-client >= 0.20 (``pip install 'sedamp[prometheus]'``): earlier versions
give no handle to stop their server, so the port could not be freed.
"""

from __future__ import annotations

import copy
import errno
import ipaddress
import threading
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import sedamp
from sedamp.errors import ExporterError
from sedamp.observe.metrics import as_dict, dig, is_number

__all__ = ["Exporter"]

INSTALL_HINT = "pip install 'sedamp[prometheus]'"
MIN_CLIENT_VERSION = (0, 20)  # start_http_server returns (server, thread) from 0.20 on

# record key -> (metric name without _total, help)
STAGE_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("events_in", "sedamp_stage_events_in", "Events the stage handled (a source: events it read)."),
    ("events_out", "sedamp_stage_events_out", "Events the stage passed on to its next queues."),
    ("failed", "sedamp_stage_events_failed", "Events dead-lettered because the handler failed (after retries)."),
    ("dropped", "sedamp_stage_events_dropped", "Events dropped because the stage's queue was full (on_full: drop)."),
    ("rejected", "sedamp_stage_events_rejected", "Events the stage's full queue refused (on_full: reject)."),
    ("retried", "sedamp_stage_events_retried", "Handler calls tried again (on_error.retry)."),
    ("skipped", "sedamp_stage_events_skipped", "Events skipped after failing (on_error.then: skip)."),
    ("duplicates", "sedamp_stage_events_duplicate", "Redelivered copies a dedupe sink skipped."),
    ("poisoned", "sedamp_stage_events_poisoned", "Events that killed two workers (poison events)."),
    ("timeouts", "sedamp_stage_worker_timeouts", "Workers killed for running past timeout_s."),
    ("recycled", "sedamp_stage_workers_recycled", "Workers replaced after max_events or max_rss_mb."),
    ("restarts", "sedamp_stage_worker_restarts", "Workers that died and were replaced."),
)

# record key (a path) -> (metric name, help)
STAGE_GAUGES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("workers",), "sedamp_stage_workers", "Worker processes of the stage's pool now."),
    (("target",), "sedamp_stage_workers_target", "The pool size the controller aims at."),
    (("queue", "length"), "sedamp_stage_queue_length", "Events waiting in the stage's queue."),
    (("queue", "capacity"), "sedamp_stage_queue_capacity", "The bound of the stage's queue (queue.capacity)."),
    (("queue", "leased"), "sedamp_stage_queue_leased", "Events handed to workers and not yet acknowledged."),
    (("queue", "credit"), "sedamp_stage_queue_credit", "Room in the queue granted to producers."),
    (("arrivals_per_s",), "sedamp_stage_arrivals_per_second", "Events arriving per second over the last period."),
    (("completions_per_s",), "sedamp_stage_completions_per_second", "Events completed per second, last period."),
    (("batch_size",), "sedamp_stage_batch_size", "The batch size the stage's workers ask for (mean)."),
    (("events_per_batch",), "sedamp_stage_events_per_batch", "Events a batch carried, last period."),
    (
        ("blocked_s_per_s",),
        "sedamp_stage_blocked_seconds_per_second",
        "Seconds per second the stage's processes could not send for want of credit downstream, summed over them.",
    ),
    (
        ("waiting_s_per_s",),
        "sedamp_stage_waiting_seconds_per_second",
        "Seconds per second the stage's processes waited for input, summed over them.",
    ),
)

POOL_KEYS = frozenset({"workers", "target"})  # not served for sources
LATENCY_KINDS = ("queue_wait", "service", "path")
QUANTILES = (("p50", "0.5"), ("p90", "0.9"), ("p99", "0.99"))
MIB = 2**20
_LISTEN_HINTS = {
    errno.EADDRINUSE: " (choose another port, or 0 for any free one)",
    errno.EADDRNOTAVAIL: " (not an address of this machine: 127.0.0.1 is loopback, 0.0.0.0 every interface)",
    errno.EACCES: " (ports below 1024 need privileges: choose a higher one)",
}


class Exporter:
    """Serves the latest metrics record of a run over HTTP in the Prometheus format.

    ``Exporter(host, port)`` starts listening at once (OSError if it cannot: the port is
    taken or the host is not an address of this machine; ExporterError, a ValueError, for
    a bad port or host or a missing prometheus-client). Feed it with `update(record)`;
    `close()` stops the server and frees the port (idempotent; also on ``with`` exit).
    ``topology`` names the run in sedamp_run_info.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, topology: str | None = None) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ExporterError(f"port must be an integer from 0 to 65535 (0: any free port), got {port!r}")
        if not isinstance(host, str) or not host.strip():
            raise ExporterError("host must be an address such as 127.0.0.1 (loopback) or 0.0.0.0 (every interface)")
        prometheus_client = _client()
        self.collector = RecordCollector(topology)
        self.registry = prometheus_client.CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        try:
            self._server, self._thread = prometheus_client.start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            hint = _LISTEN_HINTS.get(exc.errno or 0, "")
            err = OSError(f"cannot listen on {_hostport(host, port)}: {exc.strerror or exc}{hint}")
            err.errno = exc.errno
            raise err from None
        self._closed = False
        self._lock = threading.Lock()
        bound = self._server.server_address
        self.host = host
        self.port: int = int(bound[1])
        self.url = f"http://{_hostport(host, self.port)}/metrics"

    def update(self, record: dict[str, Any]) -> None:
        """Serve `record` (a metrics record of the run) from now on."""
        self.collector.update(record)

    def close(self) -> None:
        """Stop answering, close the listening socket and wait for the server thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._server.shutdown()  # returns once serve_forever has left its loop
        self._server.server_close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordCollector:
    """A prometheus-client collector serving the latest record it was given.

    `update` runs in the run's thread and `collect` in the server's: the record is copied
    on update and never changed afterwards, and the monotonic totals are replaced, not
    mutated, so a scrape always sees one consistent period."""

    def __init__(self, topology: str | None = None) -> None:
        self.topology = topology
        self._lock = threading.Lock()
        self._record: dict[str, Any] | None = None
        self._totals: dict[tuple[str, str], float] = {}  # (stage, record key) -> highest total seen
        self._resizes: dict[tuple[str, str], int] = {}  # (stage, grow|shrink) -> decisions

    def update(self, record: dict[str, Any]) -> None:
        rec = copy.deepcopy(record)
        stages = as_dict(rec.get("stages"))
        with self._lock:
            totals = dict(self._totals)
            for name, st in stages.items():
                if not isinstance(st, dict):
                    continue
                for key, _, _ in STAGE_COUNTERS:
                    value = _number(st.get(key))
                    if value is not None:
                        totals[(name, key)] = max(totals.get((name, key), 0.0), value)
            resizes = dict(self._resizes)
            for d in rec.get("decisions") or ():
                if isinstance(d, dict) and is_number(d.get("from")) and is_number(d.get("to")):
                    direction = "grow" if d["to"] > d["from"] else "shrink"
                    k = (str(d.get("stage")), direction)
                    resizes[k] = resizes.get(k, 0) + 1
            self._record, self._totals, self._resizes = rec, totals, resizes

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import InfoMetricFamily

        with self._lock:
            record, totals, resizes = self._record, self._totals, self._resizes
        info = {"topology": self.topology or "", "version": sedamp.__version__}
        yield InfoMetricFamily("sedamp_run", "The run this endpoint belongs to.", value=info)
        if record is None:
            return
        stages = {n: s for n, s in (record.get("stages") or {}).items() if isinstance(s, dict)}
        yield from _stage_families(stages, totals, resizes)
        yield from _pool_families(stages)
        yield _bottleneck_family(stages, as_dict(record.get("bottleneck")).get("stage"))
        yield from _latency_families(stages)
        yield from _worker_families(stages)
        yield from _run_families(record)


def _stage_families(
    stages: dict[str, dict[str, Any]], totals: dict[tuple[str, str], float], resizes: dict[tuple[str, str], int]
) -> Iterator[Any]:
    """Each stage's kind and group, its counters, and the controller's resizes."""
    from prometheus_client.core import CounterMetricFamily, InfoMetricFamily

    stage_info = InfoMetricFamily("sedamp_stage", "A stage: its kind and group.", labels=["stage"])
    for name, st in stages.items():
        group, kind = st.get("group"), st.get("kind")
        labels = {
            "stage_kind": kind if isinstance(kind, str) else "",
            "group": group if isinstance(group, str) else "",
        }
        stage_info.add_metric([name], labels)
    yield stage_info

    for key, metric, doc in STAGE_COUNTERS:
        counter = CounterMetricFamily(metric, doc, labels=["stage"])
        for name in stages:
            if (name, key) in totals:
                counter.add_metric([name], totals[(name, key)])
        yield counter
    counter = CounterMetricFamily(
        "sedamp_stage_resizes", "Pool resizes decided by the controller.", labels=["stage", "direction"]
    )
    for (name, direction), n in sorted(resizes.items()):
        counter.add_metric([name, direction], n)
    yield counter


def _pool_families(stages: dict[str, dict[str, Any]]) -> Iterator[Any]:
    """The gauges of each stage (those of a pool only for stages with one: a source is
    one process), and the bounds of each pool."""
    from prometheus_client.core import GaugeMetricFamily

    pools = {n: s for n, s in stages.items() if s.get("kind") != "source"}  # a source is one process
    for path, metric, doc in STAGE_GAUGES:
        gauge = GaugeMetricFamily(metric, doc, labels=["stage"])
        for name, st in (pools if path[0] in POOL_KEYS else stages).items():
            value = dig(st, *path)
            if is_number(value):
                gauge.add_metric([name], float(value))
        yield gauge
    lo = GaugeMetricFamily("sedamp_stage_workers_min", "The least workers of the stage's pool.", labels=["stage"])
    hi = GaugeMetricFamily("sedamp_stage_workers_max", "The most workers of the stage's pool.", labels=["stage"])
    for name, st in pools.items():
        bounds = st.get("bounds")
        if isinstance(bounds, list) and len(bounds) == 2 and all(is_number(b) for b in bounds):
            lo.add_metric([name], float(bounds[0]))
            hi.add_metric([name], float(bounds[1]))
    yield lo
    yield hi


def _bottleneck_family(stages: dict[str, dict[str, Any]], held_by: Any) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    gauge = GaugeMetricFamily(
        "sedamp_stage_bottleneck",
        "1 for the stage whose upstream neighbours were blocked on it over the last period, else 0.",
        labels=["stage"],
    )
    for name in stages:
        gauge.add_metric([name], 1.0 if name == held_by else 0.0)
    return gauge


def _latency_families(stages: dict[str, dict[str, Any]]) -> Iterator[Any]:
    """The latency percentiles of each stage, and the events each source will read."""
    from prometheus_client.core import GaugeMetricFamily

    latency = GaugeMetricFamily(
        "sedamp_stage_latency_seconds",
        "Latency percentiles over the last period: queue_wait (in the queue), service (in the handler), "
        "path (from the source, at sinks).",
        labels=["stage", "kind", "quantile"],
    )
    for name, st in stages.items():
        for kind in LATENCY_KINDS:
            for key, q in QUANTILES:
                value = dig(st, "latency_ms", kind, key)
                if is_number(value):
                    latency.add_metric([name, kind, q], round(float(value) / 1000.0, 9))
    yield latency

    total = GaugeMetricFamily("sedamp_source_total_events", "Events a source said it will read.", labels=["stage"])
    for name, st in stages.items():
        if st.get("kind") == "source" and is_number(st.get("total")):
            total.add_metric([name], float(st["total"]))
    yield total


def _worker_families(stages: dict[str, dict[str, Any]]) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    labels = ["stage", "worker"]
    cpu = GaugeMetricFamily(
        "sedamp_worker_cpu_percent", "A worker's CPU over the last period (% of one core).", labels=labels
    )
    rss = GaugeMetricFamily("sedamp_worker_resident_memory_bytes", "A worker's resident memory.", labels=labels)
    busy = GaugeMetricFamily(
        "sedamp_worker_busy_ratio", "Fraction of the last period a worker spent handling events.", labels=labels
    )
    blocked = GaugeMetricFamily(
        "sedamp_worker_blocked_ratio",
        "Fraction of the last period a worker could not send for want of credit downstream.",
        labels=labels,
    )
    waiting = GaugeMetricFamily(
        "sedamp_worker_waiting_ratio", "Fraction of the last period a worker waited for input.", labels=labels
    )
    shares = (("busy", busy), ("blocked", blocked), ("waiting", waiting))
    for name, st in stages.items():
        for w in st.get("worker_detail") or ():
            if not isinstance(w, dict) or not is_number(w.get("index")):
                continue
            key = [name, str(int(w["index"]))]
            if is_number(w.get("cpu_percent")):
                cpu.add_metric(key, float(w["cpu_percent"]))
            if is_number(w.get("rss_mb")):
                rss.add_metric(key, float(w["rss_mb"]) * MIB)
            for field, family in shares:
                if is_number(w.get(field)):
                    family.add_metric(key, float(w[field]))
    yield from (cpu, rss, busy, blocked, waiting)


def _run_families(record: dict[str, Any]) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    system = as_dict(record.get("system"))
    for key, metric, doc in (
        ("cpu_percent", "sedamp_system_cpu_percent", "The machine's CPU over the last period (% of all cores)."),
        ("load1", "sedamp_system_load1", "The machine's 1-minute load average."),
        ("cores", "sedamp_system_cores", "The run's core budget (controller.cores)."),
    ):
        value = _number(system.get(key))
        if value is not None:
            yield GaugeMetricFamily(metric, doc, value=value)
    elapsed = _number(record.get("elapsed_s"))
    if elapsed is not None:
        yield GaugeMetricFamily("sedamp_run_elapsed_seconds", "Time since the run started.", value=elapsed)
    yield GaugeMetricFamily(
        "sedamp_run_finished", "1 once the run's final record has arrived.", value=1.0 if record.get("final") else 0.0
    )


def _client() -> Any:
    """prometheus_client, checked to be there and recent enough."""
    try:
        import prometheus_client
    except ImportError:
        raise ExporterError(f"serving Prometheus metrics needs prometheus-client: {INSTALL_HINT}") from None
    try:
        found = metadata.version("prometheus-client")
    except metadata.PackageNotFoundError:
        found = None  # importable but not installed as a distribution (a checkout): trust it
    if found is not None and _version_tuple(found) < MIN_CLIENT_VERSION:
        need = ".".join(map(str, MIN_CLIENT_VERSION))
        raise ExporterError(
            f"serving Prometheus metrics needs prometheus-client >= {need} (found {found}): {INSTALL_HINT}"
        )
    return prometheus_client


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _hostport(host: str, port: int) -> str:
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = False
    return f"[{host}]:{port}" if is_v6 else f"{host}:{port}"


def _number(x: Any) -> float | None:
    return float(x) if is_number(x) else None

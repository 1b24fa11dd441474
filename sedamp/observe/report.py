"""Run reports: plots of a run over time, drawn from its metrics stream, and a summary page.

Runs in the process of `sedamp report METRICS.jsonl` or, after the run, of
`sedamp run --report DIR`. Reads a metrics file (one JSON object per controller period,
the last one with ``"final": true``; see docs/controller.md, "Metrics stream") and writes into a
directory:

  queue_length.png        events waiting in each stage's queue (a group has one, at its
                          entry); its capacity dashed when the queue filled past a quarter
  workers.png             workers in each pool (a step plot; a group is one pool)
  throughput.png          events completed per second by each stage (a source: read), one
                          panel per stage on its own scale (a fast source would flatten a
                          slow stage), and the sinks' total when there are several sinks
  blocked.png             the share of each period the processes of each source and pool
                          spent blocked (no credit downstream) and waiting for input, the
                          bottleneck of each period marked
  latency_path.png        p50/p90/p99 of the time from the source to each sink (named by
                          the sink)
  latency_service.png     p50/p90/p99 of the handler's time per event, per stage
  latency_queue_wait.png  p50/p90/p99 of the time events waited in each stage's queue
  cpu.png                 the machine's CPU (% of all cores) and each pool's CPU (cores:
                          the sum over its workers), with the run's core budget
  memory.png              each pool's resident memory (MiB, the sum over its workers; none
                          where the pool has no worker, as at the end of the run)
  index.html              the plots and a table of per-stage totals, the run's duration
                          and throughput, the stage named bottleneck most often, and the
                          controller's pool decisions
  summary.md              the same table and decisions in Markdown, linking the plots

Every plot has time since the run started on x and one line (one colour, the same in
every plot) per stage; the pool plots (queue, workers, CPU, memory) have one line per
pool, a group's in the colour of its first stage. A line that lies on an earlier one for
much of the run (`overlaps`) is drawn dashed and narrower over it, so neither hides the
other; in the latency plots each stage also has its own marker. Percentiles are per period: a stage
that measured nothing in a period leaves a gap, and a stage that never measured anything
is left out. A pool's CPU and memory are the sums over the workers that reported them.

Tolerated in the input: a last line cut short (a run stopped while writing it: skipped
with a warning), stages that appear only in later records, and null values (gaps).
Refused with `ReportError` (the CLI exits 2): a missing, unreadable or empty file, and a
line that is not a metrics record anywhere but last.

Reading and summing (`read_records`, `summarize`) need only the standard library; the
plots need matplotlib (``pip install 'sedamp[plot]'``), imported when first drawing and
used through its Agg backend (no display, no pyplot state). `plotting_problem` says
whether it is there.
"""

from __future__ import annotations

import html
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sedamp.errors import ReportError
from sedamp.observe.metrics import as_dict, dig, fraction_of, is_number
from sedamp.observe.words import plural

__all__ = [
    "PLOTS",
    "RunTotals",
    "StageTotals",
    "plotting_problem",
    "read_records",
    "summarize",
    "write_report",
]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'sedamp[plot]'"

# The plots a report holds, in page order: file name and caption.
PLOTS: tuple[tuple[str, str], ...] = (
    ("queue_length.png", "Queue length per stage"),
    ("workers.png", "Workers per pool"),
    ("throughput.png", "Throughput"),
    ("blocked.png", "Blocked and waiting"),
    ("latency_path.png", "Latency from the source to each sink"),
    ("latency_service.png", "Service time per event"),
    ("latency_queue_wait.png", "Queue wait"),
    ("cpu.png", "CPU"),
    ("memory.png", "Memory"),
)

# A queue's capacity is drawn (dashed) only when the queue filled past this fraction of
# it: a 1024-event bound over a queue that never held 50 would flatten its line to zero.
CAPACITY_SHOWN_FROM = 0.25
# Latency plots switch to a log scale when the largest value is this many times the
# smallest: a sink's path (seconds) and a cheap stage's service time (tenths of a ms)
# then both stay readable.
LOG_SCALE_RATIO = 30.0
# Most decisions listed on the page (a long adaptive run can take hundreds).
MAX_DECISIONS_LISTED = 100
PERCENTILES = ("p50", "p90", "p99")
FIGSIZE_IN = (9.0, 4.6)
# The height of each panel of the throughput plot (one per stage), and of its title and
# axis labels: two stages make a plot of the usual height.
PANEL_IN = 1.6
PANEL_MARGIN_IN = 1.2
# Lines closer than this share of a plot's height at OVERLAP_SHARE of their times or
# more are drawn on top of each other (`overlaps`): the later is dashed and narrower.
OVERLAP_TOLERANCE = 0.015
OVERLAP_SHARE = 0.2
DASHES = ((6.0, 3.0), (2.0, 2.0), (6.0, 2.0, 1.5, 2.0), (1.0, 3.0))
# Marker shapes of the stages in the latency plots, where line styles mark percentiles.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DPI = 110


@dataclass(frozen=True)
class StageTotals:
    """One stage's totals, the last known of each count; `peak_workers` is the
    largest pool size seen in any record (a source runs in one process: 1), and the p90s
    are those of the last period that measured any (None: never measured)."""

    name: str
    kind: str | None
    group: str | None
    events_in: int
    events_out: int
    failed: int
    dropped: int
    rejected: int
    peak_workers: int
    service_p90_ms: float | None
    path_p90_ms: float | None


@dataclass(frozen=True)
class RunTotals:
    """A run as its metrics file tells it. `finished` is whether the last record is the
    run's final one; `events_read` is what the sources read, and `events_per_s` that over
    `duration_s` (None for a zero duration)."""

    records: int
    started_at: float | None  # unix time of the first record
    duration_s: float
    finished: bool
    events_read: int
    events_per_s: float | None
    stages: tuple[StageTotals, ...]
    decisions: tuple[dict[str, Any], ...]  # each {"elapsed_s", "stage", "from", "to", "reason"}
    # the stage named bottleneck in the most records, and in how many (None: never one)
    bottleneck: tuple[str, int] | None = None


def plotting_problem() -> str | None:
    """None when plots can be drawn, else one line saying why not and how to fix it."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError:
        return f"plotting needs matplotlib: {INSTALL_HINT}"
    except Exception as exc:  # a broken install raises anything at import
        return f"matplotlib is installed but cannot be imported ({type(exc).__name__}: {exc}): reinstall it"
    return None


def read_records(path: Path) -> list[dict[str, Any]]:
    """The metrics records of `path`, in file order. A last line that is not JSON (a run
    stopped while writing it) is skipped with a warning; any other line that is not a
    metrics record, an empty file, or a missing one raises ReportError."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file (write one with: sedamp run TOPOLOGY --metrics {path})") from None
    except IsADirectoryError:
        raise ReportError(f"{path}: is a directory; give the metrics file (e.g. {path}/metrics.jsonl)") from None
    except OSError as exc:
        raise ReportError(f"{path}: cannot read: {exc.strerror}") from None
    lines = [(n, line) for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line.strip()]
    if not lines:
        raise ReportError(f"{path}: the file is empty: no metrics records (did the run stop before its first period?)")
    records: list[dict[str, Any]] = []
    last = lines[-1][0]
    for n, line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if n == last:
                log.warning("%s:%d: skipped an incomplete last line (the run stopped while writing it)", path, n)
                continue
            raise ReportError(
                f"{path}:{n}: not JSON ({exc.msg}); a metrics file holds one JSON object per line, "
                "as written by sedamp run --metrics FILE"
            ) from None
        if not _is_record(rec):
            raise ReportError(
                f'{path}:{n}: not a metrics record (expected a JSON object with "elapsed_s" and "stages", '
                "as written by sedamp run --metrics FILE)"
            )
        records.append(rec)
    if not records:
        raise ReportError(
            f"{path}: no metrics record: its only line is not JSON "
            "(not a metrics file, or the run stopped while writing its first record)"
        )
    return records


def _is_record(rec: Any) -> bool:
    return isinstance(rec, dict) and _is_number(rec.get("elapsed_s")) and isinstance(rec.get("stages"), dict)


def summarize(records: Sequence[dict[str, Any]]) -> RunTotals:
    """Per-stage totals and the run's duration and throughput (records from read_records)."""
    if not records:
        raise ReportError("no metrics records to summarize")
    names = _stage_names(records)
    stages = []
    events_read = 0
    for name in names:
        seen = [r["stages"][name] for r in records if isinstance(r["stages"].get(name), dict)]
        last = seen[-1]
        kind = _str(last.get("kind"))
        peak = max((_int(s.get("workers")) for s in seen), default=0)
        st = StageTotals(
            name=name,
            kind=kind,
            group=_str(last.get("group")),
            events_in=_last_count(seen, "events_in"),
            events_out=_last_count(seen, "events_out"),
            failed=_last_count(seen, "failed"),
            dropped=_last_count(seen, "dropped"),
            rejected=_last_count(seen, "rejected"),
            peak_workers=1 if kind == "source" else peak,
            service_p90_ms=_last_measured(seen, "service"),
            path_p90_ms=_last_measured(seen, "path"),
        )
        if kind == "source":
            events_read += st.events_in
        stages.append(st)
    duration = float(records[-1]["elapsed_s"])
    decisions = []
    for r in records:
        for d in r.get("decisions") or ():
            if isinstance(d, dict):
                decisions.append({"elapsed_s": float(r["elapsed_s"]), **d})
    started = _num(records[0].get("t"))
    named = [str(b) for r in records if (b := dig(r, "bottleneck", "stage")) is not None]
    most = max(dict.fromkeys(named), key=named.count) if named else None
    return RunTotals(
        records=len(records),
        started_at=None if math.isnan(started) else started,
        duration_s=duration,
        finished=records[-1].get("final") is True,
        events_read=events_read,
        events_per_s=events_read / duration if duration > 0 else None,
        stages=tuple(stages),
        decisions=tuple(decisions),
        bottleneck=(most, named.count(most)) if most is not None else None,
    )


def write_report(metrics_path: Path, out_dir: Path) -> Path:
    """Draw the plots of `metrics_path` and write index.html and summary.md into
    `out_dir` (made if missing; files already there are replaced). Returns the path of
    index.html. Raises ReportError for a file that is not metrics, or without matplotlib."""
    problem = plotting_problem()
    if problem is not None:
        raise ReportError(problem)
    metrics_path = Path(metrics_path)
    try:
        return _write(metrics_path, Path(out_dir))
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        if isinstance(exc, ReportError):
            raise
        # a record of the right shape holding values of the wrong type (hand-edited,
        # or from another program): name the file, not a traceback
        raise ReportError(f"{metrics_path}: not a sedamp metrics file: {type(exc).__name__}: {exc}") from exc


def _write(metrics_path: Path, out_dir: Path) -> Path:
    records = read_records(metrics_path)
    totals = summarize(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    view = _View.of(records)
    drawers: dict[str, Callable[[_View], Any]] = {
        "queue_length.png": _plot_queues,
        "workers.png": _plot_workers,
        "throughput.png": _plot_throughput,
        "blocked.png": _plot_blocked,
        "latency_path.png": lambda v: _plot_latency(v, "path"),
        "latency_service.png": lambda v: _plot_latency(v, "service"),
        "latency_queue_wait.png": lambda v: _plot_latency(v, "queue_wait"),
        "cpu.png": _plot_cpu,
        "memory.png": _plot_memory,
    }
    for file, _ in PLOTS:
        fig = drawers[file](view)
        _save(fig, out_dir / file)
    metrics_link = _relative_link(metrics_path, out_dir)
    (out_dir / "summary.md").write_text(_markdown(totals, metrics_path, metrics_link), encoding="utf-8")
    index = out_dir / "index.html"
    index.write_text(_html(totals, metrics_path, metrics_link), encoding="utf-8")
    return index


# --- reading values -------------------------------------------------------------------


def _is_number(x: Any) -> bool:
    """A number that can be plotted: not inf or NaN."""
    return is_number(x) and math.isfinite(x)


def _num(x: Any) -> float:
    """A plottable value: unknown (None, missing, not a number) is NaN, a gap."""
    return float(x) if _is_number(x) else math.nan


def _int(x: Any) -> int:
    return int(x) if _is_number(x) else 0


def _str(x: Any) -> str | None:
    return x if isinstance(x, str) else None


def _stage_names(records: Iterable[dict[str, Any]]) -> list[str]:
    """Every stage named in any record, in the order first seen (stages may appear late)."""
    names: dict[str, None] = {}
    for r in records:
        for name, st in r["stages"].items():
            if isinstance(st, dict):
                names.setdefault(str(name), None)
    return list(names)


def _last_count(seen: Sequence[dict[str, Any]], key: str) -> int:
    """The last known value of a cumulative count (a null in the last record is unknown, not 0)."""
    for s in reversed(seen):
        if _is_number(s.get(key)):
            return int(s[key])
    return 0


def _last_measured(seen: Sequence[dict[str, Any]], which: str) -> float | None:
    for s in reversed(seen):
        v = dig(s, "latency_ms", which, "p90")
        if _is_number(v):
            return float(v)
    return None


# --- the view the plots draw from ---------------------------------------------------------


@dataclass(frozen=True)
class _View:
    """The records as columns: times, and each stage's record per time (None: absent)."""

    t: list[float]
    names: list[str]
    kinds: dict[str, str | None]
    groups: dict[str, str | None]
    per_stage: dict[str, list[dict[str, Any] | None]]
    system: list[dict[str, Any]]
    bottlenecks: list[str | None]  # per time, the stage named bottleneck

    @classmethod
    def of(cls, records: Sequence[dict[str, Any]]) -> _View:
        names = _stage_names(records)
        per_stage: dict[str, list[dict[str, Any] | None]] = {n: [] for n in names}
        kinds: dict[str, str | None] = {}
        groups: dict[str, str | None] = {}
        for r in records:
            for n in names:
                st = r["stages"].get(n)
                st = st if isinstance(st, dict) else None
                per_stage[n].append(st)
                if st is not None:
                    kinds[n] = _str(st.get("kind")) or kinds.get(n)
                    groups[n] = _str(st.get("group"))
        system = [as_dict(r.get("system")) for r in records]
        return cls(
            t=[float(r["elapsed_s"]) for r in records],
            names=names,
            kinds=kinds,
            groups=groups,
            per_stage=per_stage,
            system=system,
            bottlenecks=[_str(dig(r, "bottleneck", "stage")) for r in records],
        )

    def series(self, name: str, *keys: str) -> list[float]:
        return [_num(dig(s, *keys)) for s in self.per_stage[name]]

    def share(self, name: str, key: str) -> list[float]:
        """Per time, a stage's seconds per second `key` as the share of the mean one of
        its processes (`metrics.fraction_of`), in %; NaN where unknown."""
        out = []
        for s in self.per_stage[name]:
            value = s.get(key) if s is not None else None
            detail = s.get("worker_detail") if s is not None else None
            share = fraction_of(value, len(detail) if isinstance(detail, list) else 0) if _is_number(value) else None
            out.append(math.nan if share is None else 100 * share)
        return out

    def worker_sum(self, name: str, field: str, no_worker: float = 0.0) -> list[float]:
        """Per time, the sum of `field` over the stage's workers; NaN where unknown, and
        `no_worker` where the pool had none (before its workers start, after they exit):
        zero CPU is true then, while a memory of zero would only look like a drop."""
        out = []
        for s in self.per_stage[name]:
            detail = s.get("worker_detail") if s is not None else None
            if not isinstance(detail, list):
                out.append(math.nan)
                continue
            values = [float(w[field]) for w in detail if isinstance(w, dict) and _is_number(w.get(field))]
            # workers that all failed to report are unknown
            out.append(sum(values) if values else no_worker if not detail else math.nan)
        return out

    def path_label(self, name: str) -> str:
        """The name a stage's source-to-sink latency goes by: the sink's. A group's
        samples were filed under its first stage by runs before they were filed under
        the sink; its sink is then named, with the group."""
        group = self.groups.get(name)
        if self.kinds.get(name) == "sink" or group is None:
            return name
        sinks = [n for n in self.names if self.groups.get(n) == group and self.kinds.get(n) == "sink"]
        return f"{sinks[-1]} (group {group})" if sinks else name

    def pools(self) -> list[tuple[str, list[str]]]:
        """(label, member stages) of each worker pool: every handler and sink, a group once."""
        out: list[tuple[str, list[str]]] = []
        seen_groups: dict[str, list[str]] = {}
        for n in self.names:
            if self.kinds.get(n) == "source":
                continue
            group = self.groups.get(n)
            if group is None:
                out.append((n, [n]))
            elif group in seen_groups:
                seen_groups[group].append(n)
            else:
                seen_groups[group] = [n]
                out.append((f"group {group}", seen_groups[group]))
        return [(f"{label} ({', '.join(m)})" if label.startswith("group ") else label, m) for label, m in out]

    def pool_head(self, members: list[str]) -> str:
        """The member whose record carries the pool's workers (the one with worker_detail)."""
        for n in members:
            if any(s is not None and s.get("worker_detail") for s in self.per_stage[n]):
                return n
        return members[0]

    def pool_colors(self) -> dict[str, Any]:
        """Each pool's colour: that of its first stage, so a stage has one colour in every plot."""
        colors = _colors(self.names)
        return {label: colors[members[0]] for label, members in self.pools()}

    def sinks(self) -> list[str]:
        return [n for n in self.names if self.kinds.get(n) == "sink"]


# --- drawing --------------------------------------------------------------------------


def _colors(names: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _axes(title: str, ylabel: str, nrows: int = 1, height_in: float | None = None) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    size = (FIGSIZE_IN[0], height_in or FIGSIZE_IN[1])
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    axes = [fig.add_subplot(nrows, 1, i + 1) for i in range(nrows)]
    for ax in axes:
        ax.spines["top"].set_visible(False)
        ax.spines["right"].set_visible(False)
        ax.grid(True, color="0.88", linewidth=0.8)
        ax.set_axisbelow(True)
        ax.margins(x=0.01)
    fig.suptitle(title, x=0.01, ha="left", fontsize=12, fontweight="bold")
    axes[0].set_ylabel(ylabel)
    axes[-1].set_xlabel("time since the run started (s)")
    for ax in axes[1:]:
        ax.sharex(axes[0])
    return fig, axes


def _legend(ax: Any, handles: list[Any] | None = None) -> None:
    kwargs: dict[str, Any] = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "frameon": False, "fontsize": 9}
    if handles is not None:
        kwargs["handles"] = handles
    if handles or ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _no_data(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, what, transform=ax.transAxes, ha="center", va="center", color="0.4", fontsize=11)


def _note(ax: Any, text: str) -> None:
    ax.set_title(text, loc="left", fontsize=8.5, color="0.4")


def _save(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=DPI, facecolor="white")
    tmp.replace(path)


def _has_values(ys: Sequence[float]) -> bool:
    return any(not math.isnan(y) for y in ys)


def _peak(ys: Sequence[float]) -> float:
    return max((y for y in ys if not math.isnan(y)), default=math.nan)


Lines = Sequence[tuple[str, Sequence[float]]]  # (label, one value per record)


def overlaps(lines: Lines) -> dict[str, tuple[str, bool]]:
    """The lines drawn on top of an earlier one: within OVERLAP_TOLERANCE of the plot's
    height of it at OVERLAP_SHARE or more of the times both have a value (the earlier
    one it is closest to most often). Each with that line, and whether the two are
    equal all along (to 1e-9). Drawn plainly, such a line would hide the earlier."""
    values = [y for _, ys in lines for y in ys if not math.isnan(y)]
    tol = max(OVERLAP_TOLERANCE * (max([0.0, *values]) - min([0.0, *values])), 1e-9)
    out: dict[str, tuple[str, bool]] = {}
    for i, (label, ys) in enumerate(lines):
        best: tuple[float, str, bool] | None = None
        for other, earlier in lines[:i]:
            both = [(a, b) for a, b in zip(ys, earlier, strict=True) if not (math.isnan(a) or math.isnan(b))]
            share = sum(1 for a, b in both if abs(a - b) <= tol) / len(both) if both else 0.0
            if share >= OVERLAP_SHARE and (best is None or share > best[0]):
                exact = all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) for a, b in both)
                best = (share, other, exact)
        if best is not None:
            out[label] = (best[1], best[2])
    return out


def _draw_lines(ax: Any, t: Sequence[float], lines: Lines, colors: dict[str, Any]) -> None:
    """Draw each (label, ys) in its colour. A line on top of an earlier one (`overlaps`)
    is dashed, each in its own pattern, and narrower than the lines under it, which are
    drawn wider: every colour shows. One equal to another all along says so."""
    over = overlaps(lines)
    under = {other for other, _ in over.values()}
    k = 0
    for label, ys in lines:
        if label not in over:
            ax.plot(t, ys, color=colors[label], linewidth=3.0 if label in under else 1.6, label=label)
            continue
        other, exact = over[label]
        dashes = DASHES[k % len(DASHES)]
        width = max(1.0, 2.0 - 0.3 * k)
        k += 1
        name = f"{label} (= {other})" if exact else label
        ax.plot(t, ys, color=colors[label], linewidth=width, linestyle=(0, dashes), label=name)


def _plot_queues(v: _View) -> Any:
    fig, (ax,) = _axes("Queue length per stage", "events waiting in the queue")
    colors = v.pool_colors()
    caps: dict[str, float] = {}
    filled: list[str] = []  # pools whose capacity is drawn
    heads: dict[str, str] = {}
    lines = []
    for label, members in v.pools():  # a group has one queue, at its entry, which every member reports
        n = heads[label] = v.pool_head(members)
        ys = v.series(n, "queue", "length")
        if not _has_values(ys):
            continue
        lines.append((label, ys))
        cap = _peak(v.series(n, "queue", "capacity"))
        if math.isnan(cap):
            continue
        caps[label] = cap
        if cap > 0 and _peak(ys) >= CAPACITY_SHOWN_FROM * cap:
            filled.append(label)
    _draw_lines(ax, v.t, lines, colors)
    if filled and len({caps[label] for label in filled}) == 1:
        ax.axhline(caps[filled[0]], color="0.45", linestyle="--", linewidth=1.0, label="capacity")
    else:
        for label in filled:
            ax.plot(
                v.t, v.series(heads[label], "queue", "capacity"), color=colors[label], linestyle="--", linewidth=1.0
            )
    if not caps:
        _no_data(ax, "no stage reported a queue")
    else:
        ax.set_ylim(bottom=0)
        if len(set(caps.values())) == 1:
            text = f"capacity {next(iter(caps.values())):,.0f} events per queue"
        else:
            text = "capacity: " + ", ".join(f"{n} {c:,.0f}" for n, c in caps.items())
        _note(ax, text + f"; dashed where a queue filled past {CAPACITY_SHOWN_FROM:.0%}")
    _legend(ax)
    return fig


def _plot_workers(v: _View) -> Any:
    from matplotlib.ticker import MaxNLocator

    fig, (ax,) = _axes("Workers per pool", "worker processes")
    pools = v.pools()
    colors = v.pool_colors()
    top = 0.0
    drawn = 0
    for i, (label, members) in enumerate(pools):
        ys = v.series(v.pool_head(members), "workers")
        if not _has_values(ys):
            continue
        # equal sizes would hide each other: the earlier pools are drawn wider, underneath
        width = 1.5 + 3.0 * (len(pools) - 1 - i) / max(1, len(pools) - 1)
        ax.step(v.t, ys, where="post", color=colors[label], linewidth=width, label=label)
        top = max(top, _peak(ys))
        drawn += 1
    if not drawn:
        _no_data(ax, "no worker pool in this run")
    else:
        ax.set_ylim(0, top + 0.5)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _legend(ax)
    return fig


def plot_pools(records: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """One PNG of `records` (a metrics stream, e.g. `sedamp simulate --plot`): each
    pool's workers over time above its queue length. Needs matplotlib."""
    from matplotlib.ticker import MaxNLocator

    v = _View.of(records)
    fig, (top, bottom) = _axes(title, "workers", nrows=2, height_in=6.4)
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    colors = v.pool_colors()
    for label, members in v.pools():
        head = v.pool_head(members)
        workers = v.series(head, "workers")
        if _has_values(workers):
            top.step(v.t, workers, where="post", color=colors[label], linewidth=1.8, label=label)
        queue = v.series(head, "queue", "length")
        if _has_values(queue):
            bottom.plot(v.t, queue, color=colors[label], linewidth=1.6)
    top.set_ylim(bottom=0)
    bottom.set_ylim(bottom=0)
    bottom.set_ylabel("events waiting in the queue")
    _note(top, "worker processes per pool (a step: the controller resized it)")
    _legend(top)
    _save(fig, path)


def throughput_panels(v: _View) -> list[tuple[str, list[tuple[str, list[float]]]]]:
    """The panels of the throughput plot: one per stage that reported a rate, each on
    its own scale (a source reading thousands a second would flatten a stage doing ten
    to a line along zero), and one with the sinks' total when there are several; each
    panel is (title, [(line label, rates)])."""
    panels: list[tuple[str, list[tuple[str, list[float]]]]] = []
    for n in v.names:
        ys = v.series(n, "completions_per_s")
        if _has_values(ys):
            panels.append((f"{n} (read)" if v.kinds.get(n) == "source" else n, [(n, ys)]))
    sinks = v.sinks()
    if len(sinks) > 1:
        per_sink = [v.series(n, "completions_per_s") for n in sinks]
        total = [math.fsum(y for y in ys if not math.isnan(y)) for ys in zip(*per_sink, strict=True)]
        panels.append(("all sinks", [("all sinks", total)]))
    return panels


def _plot_throughput(v: _View) -> Any:
    panels = throughput_panels(v)
    height = max(FIGSIZE_IN[1], PANEL_MARGIN_IN + PANEL_IN * len(panels))
    fig, axes = _axes("Throughput", "", nrows=max(1, len(panels)), height_in=height)
    fig.supylabel("events completed per second", fontsize=10)
    colors = {**_colors(v.names), "all sinks": "black"}
    for ax, (title, lines) in zip(axes, panels, strict=False):
        for label, ys in lines:
            ax.plot(v.t, ys, color=colors[label], linewidth=2.4 if label == "all sinks" else 1.6)
        ax.set_ylim(bottom=0)
        ax.set_title(title, loc="right", fontsize=9.5, color=colors[lines[0][0]], fontweight="bold")
        if ax is not axes[-1]:
            ax.tick_params(labelbottom=False)  # the time axis is shared: labelled once, below
    if not panels:
        _no_data(axes[0], "no stage reported its rate")
    else:
        _note(axes[0], "per period, one panel per stage on its own scale; a source's is the rate it read")
    return fig


_LATENCY_TITLES = {
    "path": ("Latency from the source to each sink", "sinks measured no event"),
    "service": ("Service time per event (handler)", "no stage measured a handler call"),
    "queue_wait": ("Queue wait per event", "no stage measured a queue wait"),
}


def _plot_blocked(v: _View) -> Any:
    fig, (top, bottom) = _axes("Blocked and waiting", "blocked\n(% of the time)", nrows=2, height_in=6.4)
    colors = _colors(v.names)
    drawn = 0
    for n in v.names:  # the sources and each pool's first stage: their processes' time
        blocked, waiting = v.share(n, "blocked_s_per_s"), v.share(n, "waiting_s_per_s")
        if not _has_values(blocked) and not _has_values(waiting):
            continue
        group = v.groups.get(n)
        label = f"{n} (source)" if v.kinds.get(n) == "source" else f"group {group}" if group else n
        top.plot(v.t, blocked, color=colors[n], linewidth=1.6, label=label)
        bottom.plot(v.t, waiting, color=colors[n], linewidth=1.6)
        held = [104.0 if b == n else math.nan for b in v.bottlenecks]  # along the top
        top.plot(v.t, held, color=colors[n], linestyle="none", marker="v", markersize=6)
        drawn += 1
    bottom.set_ylabel("waiting for input\n(% of the time)")
    top.set_ylim(-2, 108)
    bottom.set_ylim(-2, 105)
    if not drawn:
        _no_data(top, "no stage reported its blocked time")
    else:
        _note(top, "per period, the mean process of each stage; ▼ along the top: the bottleneck of the period")
    _legend(top)
    return fig


def _plot_latency(v: _View, which: str) -> Any:
    from matplotlib.lines import Line2D

    title, empty = _LATENCY_TITLES[which]
    fig, (ax,) = _axes(title, "milliseconds")
    colors = _colors(v.names)
    styles: dict[str, Any] = {"p50": "-", "p90": "--", "p99": ":"}
    handles: list[Any] = []
    values: list[float] = []
    for n in v.names:
        lines = {p: v.series(n, "latency_ms", which, p) for p in PERCENTILES}
        if not any(_has_values(ys) for ys in lines.values()):
            continue  # this stage never measured it (a source; a non-sink for "path")
        marker = MARKERS[len(handles) % len(MARKERS)]  # stages that overlap stay apart
        for p, ys in lines.items():
            ax.plot(v.t, ys, color=colors[n], linestyle=styles[p], linewidth=1.5, marker=marker, markersize=3.2)
            values += [y for y in ys if not math.isnan(y)]
        label = v.path_label(n) if which == "path" else n
        handles.append(Line2D([], [], color=colors[n], linewidth=2, marker=marker, label=label))
    if not handles:
        _no_data(ax, empty)
        _legend(ax)
        return fig
    handles += [Line2D([], [], color="0.3", linestyle=s, linewidth=1.5, label=p) for p, s in styles.items()]
    positive = [y for y in values if y > 0]
    if positive and max(positive) / min(positive) > LOG_SCALE_RATIO:
        ax.set_yscale("log")
        _note(ax, "per period; log scale")
    else:
        ax.set_ylim(bottom=0)
        _note(ax, "per period")
    _legend(ax, handles)
    return fig


def _plot_cpu(v: _View) -> Any:
    fig, (top, bottom) = _axes("CPU", "machine CPU\n(% of all cores)", nrows=2, height_in=6.4)
    machine = [_num(s.get("cpu_percent")) for s in v.system]
    top.plot(v.t, machine, color="0.2", linewidth=1.8, label="machine")
    top.set_ylim(0, 105)
    _legend(top)
    pools = v.pools()
    colors = v.pool_colors()
    lines = []
    for label, members in pools:
        ys = [c / 100 for c in v.worker_sum(v.pool_head(members), "cpu_percent")]
        if _has_values(ys):
            lines.append((label, ys))
    _draw_lines(bottom, v.t, lines, colors)
    drawn = len(lines)
    budget = [_num(s.get("cores")) for s in v.system]
    if _has_values(budget):
        bottom.step(v.t, budget, where="post", color="0.5", linestyle="--", linewidth=1.0, label="core budget")
    bottom.set_ylabel("pool CPU (cores,\nsum over its workers)")
    bottom.set_ylim(bottom=0)
    if not drawn:
        _no_data(bottom, "no worker reported its CPU")
    _legend(bottom)
    return fig


def _plot_memory(v: _View) -> Any:
    fig, (ax,) = _axes("Memory", "resident memory (MiB, sum over the pool's workers)")
    pools = v.pools()
    colors = v.pool_colors()
    lines = []
    for label, members in pools:
        ys = v.worker_sum(v.pool_head(members), "rss_mb", no_worker=math.nan)
        if _has_values(ys):
            lines.append((label, ys))
    _draw_lines(ax, v.t, lines, colors)
    if not lines:
        _no_data(ax, "no worker reported its memory")
    else:
        ax.set_ylim(0, 1.1 * max(_peak(ys) for _, ys in lines) or 1.0)  # room above the top line
    _legend(ax)
    return fig


# --- pages ----------------------------------------------------------------------------


def _relative_link(target: Path, base: Path) -> str | None:
    try:
        return target.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return None


def _ms(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:,.1f}" if x >= 10 else f"{x:.2f}" if x >= 0.1 else f"{x:.2g}"


def _table_rows(totals: RunTotals) -> tuple[list[str], list[list[str]]]:
    shed = any(s.dropped or s.rejected for s in totals.stages)
    head = ["stage", "kind", "events in", "events out", "failed"]
    head += ["dropped", "rejected"] if shed else []
    head += ["peak workers", "service p90 (ms)", "path p90 (ms)"]
    rows = []
    for s in totals.stages:
        kind = s.kind or "?"
        row = [s.name, kind if s.group is None else f"{kind} (group {s.group})"]
        row += [f"{s.events_in:,}", f"{s.events_out:,}", f"{s.failed:,}"]
        row += [f"{s.dropped:,}", f"{s.rejected:,}"] if shed else []
        row += [str(s.peak_workers), _ms(s.service_p90_ms), _ms(s.path_p90_ms)]
        rows.append(row)
    return head, rows


def _headline(totals: RunTotals, metrics_path: Path) -> list[str]:
    started = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(totals.started_at)) if totals.started_at is not None else "?"
    )
    rate = f"{totals.events_per_s:,.1f} events/s" if totals.events_per_s is not None else "– events/s"
    state = "finished" if totals.finished else "did not finish (no final record: the run was stopped)"
    lines = [
        f"metrics: {metrics_path} ({plural(totals.records, 'record')})",
        f"started {started}; {totals.duration_s:,.2f} s; the run {state}",
        f"sources read {plural(totals.events_read, 'event')}: {rate}",
    ]
    if totals.bottleneck is not None:
        stage, n = totals.bottleneck
        lines.append(
            f"bottleneck: {stage}, in {n} of {plural(totals.records, 'record')} (the stages feeding it were blocked)"
        )
    return lines


def _decision_rows(totals: RunTotals) -> list[list[str]]:
    rows = []
    for d in totals.decisions[:MAX_DECISIONS_LISTED]:
        rows.append(
            [f"{d['elapsed_s']:.2f}", str(d.get("stage", "?")), f"{d.get('from', '?')} → {d.get('to', '?')}"]
            + [str(d.get("reason", ""))]
        )
    return rows


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.3em 0.8em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; } .muted { color: #666; }
"""


def _html(totals: RunTotals, metrics_path: Path, metrics_link: str | None) -> str:
    e = html.escape
    head, rows = _table_rows(totals)
    lines = _headline(totals, metrics_path)
    source = f'<a href="{e(metrics_link)}">{e(str(metrics_path))}</a>' if metrics_link else e(str(metrics_path))
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>sedamp run report: {e(metrics_path.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>sedamp run report</h1>",
        f'<p class="muted">metrics: {source} ({plural(totals.records, "record")})<br>'
        + "<br>".join(e(line) for line in lines[1:])
        + "</p>",
        "<h2>Stages</h2>",
        "<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>",
    ]
    for row in rows:
        cells = [f"<td>{e(row[0])}</td>", f'<td class="text">{e(row[1])}</td>']
        out.append("<tr>" + "".join(cells + [f"<td>{e(c)}</td>" for c in row[2:]]) + "</tr>")
    out.append("</tbody></table>")
    out.append(
        '<p class="muted">Counts are the last each stage reported; peak workers is the largest pool size seen in a '
        "record; the p90s are those of the last period that measured any.</p>"
    )
    out.append("<h2>Over time</h2>")
    for file, caption in PLOTS:
        out.append(
            f'<figure id="{e(file[:-4])}"><a href="{e(file)}"><img src="{e(file)}" alt="{e(caption)}"></a>'
            f"<figcaption>{e(caption)}</figcaption></figure>"
        )
    out += _html_decisions(totals)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _html_decisions(totals: RunTotals) -> list[str]:
    e = html.escape
    out = ["<h2>Pool decisions</h2>"]
    if not totals.decisions:
        return out + ['<p class="muted">The controller resized no pool.</p>']
    out.append("<table><thead><tr><th>time (s)</th><th>stage</th><th>workers</th><th>reason</th></tr></thead><tbody>")
    for row in _decision_rows(totals):
        time_s, stage, sizes, reason = (e(c) for c in row)
        out.append(
            f'<tr><td>{time_s}</td><td class="text">{stage}</td><td>{sizes}</td><td class="text">{reason}</td></tr>'
        )
    out.append("</tbody></table>")
    if len(totals.decisions) > MAX_DECISIONS_LISTED:
        more = len(totals.decisions) - MAX_DECISIONS_LISTED
        out.append(f'<p class="muted">... and {more} more in the metrics file.</p>')
    return out


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown(totals: RunTotals, metrics_path: Path, metrics_link: str | None) -> str:
    head, rows = _table_rows(totals)
    lines = _headline(totals, metrics_path)
    out = ["# sedamp run report", ""]
    if metrics_link is not None:
        lines[0] = f"metrics: [{metrics_path}]({metrics_link}) ({plural(totals.records, 'record')})"
    out += [f"- {line}" for line in lines]
    out += ["", "## Stages", ""]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|")
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    out += ["", "## Over time", ""]
    for file, caption in PLOTS:
        out += [f"![{caption}]({file})", ""]
    out += ["## Pool decisions", ""]
    if not totals.decisions:
        out.append("The controller resized no pool.")
    else:
        out += ["| time (s) | stage | workers | reason |", "|---:|---|---|---|"]
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in _decision_rows(totals)]
        if len(totals.decisions) > MAX_DECISIONS_LISTED:
            out += ["", f"... and {len(totals.decisions) - MAX_DECISIONS_LISTED} more in the metrics file."]
    return "\n".join(out) + "\n"

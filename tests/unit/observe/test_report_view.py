"""What the report's plots are drawn from, as data: a panel per stage for throughput, the
sink's name on the source-to-sink latency, memory that does not drop to zero when the
workers exit, and lines drawn on top of each other told apart."""

from __future__ import annotations

import math
from typing import Any

from sedamp.observe.report import _View, overlaps, throughput_panels
from tests.unit.observe.test_report import _lat, _stage

NAN = math.nan


def run(*periods: dict[str, dict[str, Any]]) -> _View:
    records = [{"elapsed_s": 0.5 * (i + 1), "final": i == len(periods) - 1, "system": {}, "stages": st}
               for i, st in enumerate(periods)]  # fmt: skip
    return _View.of(records)


def thumbnails_like(i: int, final: bool = False) -> dict[str, dict[str, Any]]:
    """files (a source reading thousands a second, then nothing) -> thumb + write, one
    group, doing a few dozen a second; the final record comes after the workers exited."""
    detail = [] if final else [{"index": k, "pid": 10 + k, "cpu_percent": 90.0, "rss_mb": 40.0 + k} for k in range(2)]
    return {
        "files": _stage("source", queue=None, completions_per_s=4000.0 if i == 0 else 0.0),
        "thumb": _stage("handler", group="thumb", completions_per_s=30.0 + i, worker_detail=detail),
        "write": _stage(
            "sink", group="thumb", queue=None, completions_per_s=30.0 + i, latency_ms={"path": _lat(9, 10, 11)}
        ),
    }


def test_each_stage_has_a_throughput_panel_of_its_own() -> None:
    v = run(*(thumbnails_like(i) for i in range(4)))
    panels = throughput_panels(v)
    assert [title for title, _ in panels] == ["files (read)", "thumb", "write"]
    assert panels[1][1] == [("thumb", [30.0, 31.0, 32.0, 33.0])]  # not sharing a scale with 4,000/s
    two_sinks = run({**thumbnails_like(0), "audit": _stage("sink", completions_per_s=5.0)})
    assert throughput_panels(two_sinks)[-1] == ("all sinks", [("all sinks", [35.0])])


def test_memory_ends_where_the_workers_left_it_not_at_zero() -> None:
    v = run(thumbnails_like(0), thumbnails_like(1), thumbnails_like(2, final=True))
    memory = v.worker_sum("thumb", "rss_mb", no_worker=NAN)
    assert memory[:2] == [81.0, 81.0] and math.isnan(memory[2])  # a gap: the line ends at 81
    assert v.worker_sum("thumb", "cpu_percent")[2] == 0.0  # no worker uses no CPU: a true zero


def test_the_path_latency_is_named_by_its_sink() -> None:
    v = run(thumbnails_like(0))
    assert v.path_label("write") == "write"
    # metrics of runs that filed a group's path under its first stage: the sink is named
    old = run({**thumbnails_like(0), "thumb": _stage("handler", group="thumb", latency_ms={"path": _lat(1, 2, 3)})})
    assert old.path_label("thumb") == "write (group thumb)"
    assert old.path_label("files") == "files"


def test_lines_on_top_of_each_other_are_found() -> None:
    lines = [
        ("a", [0.0, 5.0, 10.0, 10.0]),
        ("b", [0.0, 5.0, 10.0, 10.0]),  # equal to a all along
        ("c", [100.0, 100.0, 100.0, 100.0]),
        ("d", [0.1, 5.05, 50.0, 60.0]),  # on a (within 1.5% of the height) half the time
        ("e", [NAN, NAN, 100.0, 99.5]),  # on c where it has values
        ("f", [30.0, 40.0, 70.0, 80.0]),  # on nothing
    ]
    assert overlaps(lines) == {"b": ("a", True), "d": ("a", False), "e": ("c", False)}
    assert overlaps([("x", [NAN, NAN]), ("y", [NAN, NAN])]) == {}


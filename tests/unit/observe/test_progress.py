"""sedamp.observe.progress: counting progress from metrics records (pure), and the two displays."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from sedamp.cli.live import TerminalProgress
from sedamp.cli.progress import LogProgress
from sedamp.observe.progress import Listening, Tracker, answered_line, count, duration, headline, stage_line


def stage(kind: str, i: int = 0, o: int = 0, **kw: Any) -> dict[str, Any]:
    return {"kind": kind, "events_in": i, "events_out": o, "workers": kw.pop("workers", 1), **kw}


def record(t: float, stages: dict[str, dict[str, Any]], final: bool = False) -> dict[str, Any]:
    return {"elapsed_s": t, "final": final, "stages": stages}


def chain(read: int, handled: int, emitted: int, written: int, total: int | None = 100, failed: int = 0):  # type: ignore[no-untyped-def]
    return {
        "list": stage("source", o=read, total=total),
        "thumb": stage("handler", handled, emitted, failed=failed, queue={"length": 3, "capacity": 64}),
        "write": stage("sink", written, 0, queue={"length": 1, "capacity": 64}),
    }


def test_one_to_one_counts_events_that_left_the_pipeline() -> None:
    # 40 read; 30 handled, of which 2 failed (28 emitted); 25 written
    done, total, counting, failed = count(record(1, chain(40, 30, 28, 25, failed=2)))
    assert (done, total, counting, failed) == (25 + 2, 100, "done", 2)


def test_a_filter_counts_what_it_dropped() -> None:
    # the handler returned nothing for 10 of its 30 events: those are done too
    done, *_ = count(record(1, chain(40, 30, 20, 20)))
    assert done == 30


def test_fan_out_falls_back_to_events_read() -> None:
    done, total, counting, _ = count(record(1, chain(40, 30, 300, 250)))
    assert (done, total, counting) == (40, 100, "read")


def test_dropped_and_rejected_events_are_done_and_rejected_ones_failed() -> None:
    stages = chain(40, 30, 30, 30)
    stages["thumb"]["dropped"] = 5
    stages["write"]["rejected"] = 2
    done, _, _, failed = count(record(1, stages))
    assert done == 30 + 5 + 2 and failed == 2


def test_no_total_gives_no_fraction_and_no_eta() -> None:
    tr = Tracker()
    tr.update(record(0, chain(0, 0, 0, 0, total=None)))
    v = tr.update(record(2, chain(20, 10, 10, 10, total=None)))
    assert v.total is None and v.fraction is None and v.eta_s is None
    assert v.rate == 5.0
    assert headline(v) == "10 done, 5.0/s, 0 failed"


def test_rate_and_eta_over_the_recent_window() -> None:
    tr = Tracker()
    v = tr.update(record(0.0, chain(0, 0, 0, 0)))
    assert v.rate is None and v.eta_s is None  # not yet measured
    for k in range(1, 33):  # every 0.5 s: 2 events/s for 10 s, then 10 events/s
        n = k if k <= 20 else 20 + (k - 20) * 5
        v = tr.update(record(k * 0.5, chain(n, n, n, n)))
    # the last 5 s ran at 10 events/s only: the rate forgets the slow start
    assert v.done == 80 and v.rate == 10.0
    assert v.eta_s == 2.0
    assert headline(v) == "80/100 done (80%), 10.0/s, ETA 2s, 0 failed"


def test_stage_line_and_durations() -> None:
    v = Tracker().update(record(1, chain(40, 30, 28, 25)))
    assert stage_line(v) == "list 40 read | thumb q 3/64 w1 | write q 1/64 w1"
    assert duration(None) == "-" and duration(5.4) == "5s" and duration(125) == "2:05"
    assert duration(3723) == "1:02:03"


def test_log_progress_prints_at_its_interval_and_at_the_end() -> None:
    out = io.StringIO()
    lp = LogProgress(interval_s=3600, stream=out)
    lp(record(0.5, chain(1, 1, 1, 1)))
    assert out.getvalue() == ""  # the interval has not passed
    lp(record(1.0, chain(100, 100, 100, 100), final=True))
    line = out.getvalue()
    assert line.startswith("sedamp: progress [1s] 100/100 done (100%)")
    assert "| list 100 read | thumb q 3/64 w1 | write q 1/64 w1" in line


def test_terminal_progress_draws_a_bar() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120, color_system=None)
    tp = TerminalProgress(console)
    tp(record(0.0, chain(0, 0, 0, 0)))
    tp(record(2.0, chain(50, 50, 47, 40, failed=3)))
    tp.close()
    text = buf.getvalue()
    assert "43/100 done (43%)" in text and "3 failed" in text
    assert "list 50 read | thumb q 3/64 w1" in text
    assert "━" in text  # the bar itself


def test_a_total_of_zero_is_complete_not_an_error() -> None:
    v = Tracker().update(record(1, chain(0, 0, 0, 0, total=0), final=True))
    assert v.fraction == 1.0
    assert headline(v) == "0/0 done (100%), -/s, ETA -, 0 failed"


def test_an_edge_to_several_stages_counts_events_read() -> None:
    """Every event goes to two sinks: their counts add up to twice the source's."""
    from pathlib import Path

    from sedamp.observe.progress import copies_events
    from sedamp.spec import parse_topology

    yaml_text = (
        "name: two\nstages:\n"
        "  src: {source: stages.burn:Seeds, params: {count: 100}, to: [a, b]}\n"
        "  a: {sink: stages.burn:Collect, params: {out: a.json}}\n"
        "  b: {sink: stages.burn:Collect, params: {out: b.json}}\n"
    )
    top = parse_topology(yaml_text, file="two.yaml", base_dir=Path("."), check_handlers=False)
    assert copies_events(top)
    stages = {"src": stage("source", o=50, total=100), "a": stage("sink", 50), "b": stage("sink", 50)}
    assert count(record(1, stages)) == (100, 100, "done", 0)  # wrong without knowing the edges
    assert count(record(1, stages), copies=True) == (50, 100, "read", 0)
    assert Tracker(copies=True).update(record(1, stages)).fraction == 0.5


def test_a_run_shorter_than_the_rate_window_ends_with_its_average_rate_and_no_eta_left() -> None:
    t = Tracker()
    t.update(record(0.1, chain(10, 5, 5, 0)))
    v = t.update(record(0.5, chain(100, 100, 100, 100), final=True))
    assert v.rate == 200.0  # 100 events in 0.5 s, the whole run
    assert v.eta_s == 0.0
    assert headline(v) == "100/100 done (100%), 200.0/s, ETA 0s, 0 failed"


def test_where_a_stage_listens_is_told_once() -> None:
    listening = Listening()
    serving = {"stages": {"http": {"kind": "source", "stats": {"listening": "http://127.0.0.1:8080"}}, "b": {}}}
    assert listening({"stages": {"http": {"kind": "source"}}}) == []  # not up yet
    assert listening(serving) == ["sedamp: listening on http://127.0.0.1:8080 (stage http)"]
    assert listening(serving) == []
    assert listening({"stages": {"http": {"stats": {"listening": "http://127.0.0.1:9090"}}}}) == [
        "sedamp: listening on http://127.0.0.1:9090 (stage http)"
    ]


def test_what_a_stage_answered() -> None:
    assert answered_line("http", {"answered": {"503": 30, "200": 1200, "504": 4}}) == (
        "http: answered 1,234 requests (200: 1,200, 503: 30, 504: 4)"
    )
    assert answered_line("http", {"answered": {"200": 1}}) == "http: answered 1 request (200: 1)"
    assert answered_line("http", {"answered": {}}) == "http: answered 0 requests"
    assert answered_line("src", None) is None and answered_line("src", {"other": 1}) is None

"""Building the Chrome trace-event document from synthetic records, and summarising it."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from sedamp.observe.trace import (
    HeldBack,
    ProcRecords,
    SlowEvent,
    chrome_trace,
    held_back,
    lane_tid,
    percentiles,
    render,
    summarize,
)
from sedamp.runtime.tracing import call_slices
from tests.trace_format import check_chrome_trace

MS = 1_000_000  # ns


def _records(host_b: str = "h", offset_b: int = 0) -> list[ProcRecords]:
    """src -> a -> b (a sink). Events 0 and 5 are read together; a fans 5 out into
    5.0 and 5.1; b takes 0, 5.0 and 5.1 in one batch. Times in ms."""
    src = ProcRecords("source", "src", 0, 10, "h", 0)
    src.calls = [["src", 0, 1 * MS, 2 * MS, 2, [0, 5]]]
    src.hops = [[hop, "src", [0, 5], t * MS, None] for hop, t in (("read", 1), ("sent", 2))]
    qa = ProcRecords("queue", "a", 0, 20, "h", 0)
    qa.hops = [["queued", "a", [0, 5], 3 * MS, None]]
    wa = ProcRecords("worker", "a", 0, 30, "h", 0)
    wa.calls = [["a", 1, 6 * MS, 9 * MS, 2, [0, 5]]]
    steps_a = (("leased", 5), ("start", 6), ("end", 9), ("put", 9.5), ("acked", 12))
    wa.hops = [[hop, "a", [0, 5], int(t * MS), 1] for hop, t in steps_a]
    qb = ProcRecords("queue", "b", 0, 40, host_b, offset_b)
    qb.hops = [["queued", "b", [0, "5.0", "5.1"], 10 * MS, None]]
    wb = ProcRecords("worker", "b", 1, 50, host_b, offset_b)
    wb.calls = [["b", 7, 12 * MS, 20 * MS, 3, [0, "5.0", "5.1"]]]
    steps_b = (("leased", 11), ("start", 12), ("end", 20), ("sink", 20), ("acked", 20.1))
    wb.hops = [[hop, "b", [0, "5.0", "5.1"], int(t * MS), 7] for hop, t in steps_b]
    return [src, qa, wa, qb, wb]


def _doc() -> dict[str, Any]:
    return chrome_trace(_records(), ["src", "a", "b"], "demo")


def _arrows(doc: dict[str, Any]) -> dict[int, tuple[list[str], list[dict[str, Any]]]]:
    """Per flow id, the events its first step names and its steps in order."""
    arrows: dict[int, tuple[list[str], list[dict[str, Any]]]] = {}
    for e in doc["traceEvents"]:
        if e["ph"] == "s":
            assert e["id"] not in arrows
            arrows[e["id"]] = (e["args"]["events"], [e])
        elif e["ph"] in ("t", "f"):
            arrows[e["id"]][1].append(e)  # a step after its start
    return arrows


def test_the_document_is_valid_chrome_trace_json() -> None:
    doc = _doc()
    check_chrome_trace(doc)
    assert doc["displayTimeUnit"] == "ms"
    names = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"}
    assert names == {10: "src:src", 20: "q:a", 30: "sdw:a:0", 40: "q:b", 50: "sdw:b:1"}


def test_a_slice_per_call_and_per_queue_wait() -> None:
    slices = [e for e in _doc()["traceEvents"] if e["ph"] == "X"]
    calls = {(e["pid"], e["name"]): (e["ts"], e["dur"], e["args"]["events"]) for e in slices if e["cat"] != "queue"}
    # times in us on the processes' one clock
    assert calls == {(10, "read"): (1000.0, 1000.0, 2), (30, "a"): (6000.0, 3000.0, 2), (50, "b"): (12000.0, 8000.0, 3)}
    waits = [(e["pid"], e["tid"], e["ts"], e["dur"], e["args"]["events"]) for e in slices if e["cat"] == "queue"]
    assert sorted(waits, key=str) == sorted(
        [
            (20, lane_tid(20, 0), 3000.0, 2000.0, ["0", "5"]),
            (40, lane_tid(40, 0), 10000.0, 1000.0, ["0", "5.0", "5.1"]),
        ],
        key=str,
    )


def test_flows_follow_each_event_from_stage_to_stage() -> None:
    arrows = _arrows(_doc())
    flows = {fid: [(e["ph"], e["pid"], e["ts"]) for e in steps] for fid, (_, steps) in arrows.items()}
    events = {fid: eids for fid, (eids, _) in arrows.items()}
    flow_of = {eid: fid for fid, eids in events.items() for eid in eids}
    assert sorted(flow_of) == ["0", "5", "5.0", "5.1"]  # each traced event on one flow
    assert sum(len(eids) for eids in events.values()) == 4
    # 5 itself ends at a; its children carry its path on through b, the path 0 took:
    # events that took one path share its arrow
    assert flow_of["0"] == flow_of["5.0"] == flow_of["5.1"] != flow_of["5"]
    assert events[flow_of["0"]] == ["0", "5.0", "5.1"]
    assert [p for _, p, _ in flows[flow_of["0"]]] == [10, 20, 30, 40, 50]
    assert [ph for ph, _, _ in flows[flow_of["0"]]] == ["s", "t", "t", "t", "f"]
    assert [p for _, p, _ in flows[flow_of["5"]]] == [10, 20, 30]
    assert all(b[2] >= a[2] for f in flows.values() for a, b in zip(f, f[1:], strict=False))


def test_events_that_part_ways_get_arrows_of_their_own() -> None:
    procs = _records()
    # 0 and 5 were read and queued together, but a leased them in two batches
    procs[2].hops = [[hop, "a", [0], int(t * MS), 1] for hop, t in (("leased", 5), ("start", 6), ("end", 9))]
    procs[2].hops += [[hop, "a", [5], int(t * MS), 2] for hop, t in (("leased", 6), ("start", 9), ("end", 10))]
    procs[2].calls = [["a", 1, 6 * MS, 9 * MS, 1, [0]], ["a", 2, 9 * MS, 10 * MS, 1, [5]]]
    procs[3].hops = procs[4].hops = procs[4].calls = []
    doc = chrome_trace(procs, ["src", "a", "b"], "demo")
    check_chrome_trace(doc)
    flows = {",".join(eids): [e["ts"] for e in steps] for eids, steps in _arrows(doc).values()}
    # each from the shared read and wait to its own call
    assert flows == {"0": [1000.0, 3000.0, 6000.0], "5": [1000.0, 3000.0, 9000.0]}


def test_overlapping_waits_go_on_separate_lanes() -> None:
    procs = _records()
    procs[1].hops.append(["queued", "a", [9], int(3.5 * MS), None])
    procs[2].hops.append(["leased", "a", [9], int(7 * MS), 2])
    doc = chrome_trace(procs, ["src", "a", "b"], "demo")
    check_chrome_trace(doc)
    lanes = {e["tid"] for e in doc["traceEvents"] if e["ph"] == "X" and e["pid"] == 20}
    assert lanes == {lane_tid(20, 0), lane_tid(20, 1)}


def test_hosts_are_put_on_one_clock_and_the_document_says_how() -> None:
    one = _doc()
    assert one["sedamp"]["clock"] == "monotonic clock of one host (exact)"
    # b ran on a host whose monotonic clock started 1 s later (offset 1 s smaller)
    doc = chrome_trace(_records("other", -1000 * MS), ["src", "a", "b"], "demo")
    assert "wall clock of 2 hosts" in doc["sedamp"]["clock"]
    shifted = {e["pid"]: e["ts"] for e in doc["traceEvents"] if e["ph"] == "X" and e["cat"] != "queue"}
    assert shifted[50] - shifted[30] == pytest.approx(6000.0 - 1_000_000.0)


def test_slices_a_process_formatted_are_moved_to_the_one_clock_too() -> None:
    """As a run writes them: each process formats its calls itself (`call_slices`, on
    its own clock); with several hosts the merge moves them by their host's offset."""
    procs = _records("other", -1000 * MS)
    for p in procs:
        p.slices, p.calls = [call_slices(p.pid, p.role, p.stage, p.calls)] if p.calls else [], []
    doc = chrome_trace(procs, ["src", "a", "b"], "demo")
    calls = {e["pid"]: (e["ts"], e["dur"]) for e in doc["traceEvents"] if e["ph"] == "X" and e["cat"] != "queue"}
    assert calls == {10: (1000.0, 1000.0), 30: (6000.0, 3000.0), 50: (12000.0 - 1_000_000.0, 8000.0)}
    one = chrome_trace(_records(), ["src", "a", "b"], "demo")  # one host: the text as the process wrote it
    same = _records()
    for p in same:
        p.slices, p.calls = [call_slices(p.pid, p.role, p.stage, p.calls)] if p.calls else [], []
    assert chrome_trace(same, ["src", "a", "b"], "demo") == one


def test_a_hop_record_of_no_event_adds_nothing() -> None:
    """Sources once wrote the hops of reads that held no traced event, with no ids."""
    src = ProcRecords("source", "src", 0, 10, "h", 0)
    src.calls = [["src", 0, 0, 1 * MS, 2, []], ["src", 2, 1 * MS, 2 * MS, 1, [5]]]
    src.hops = [[hop, "src", [], 0, None] for hop in ("read", "sent")]
    src.hops += [[hop, "src", [5], t * MS, None] for hop, t in (("read", 1), ("sent", 2))]
    qa = ProcRecords("queue", "a", 0, 20, "h", 0)
    qa.hops = [["queued", "a", [5], 3 * MS, None]]
    wa = ProcRecords("worker", "a", 0, 30, "h", 0)
    wa.calls = [["a", 1, 6 * MS, 9 * MS, 1, [5]]]
    wa.hops = [[hop, "a", [5], t * MS, 1] for hop, t in (("leased", 5), ("start", 6), ("end", 9))]
    doc = chrome_trace([src, qa, wa], ["src", "a"], "demo")
    check_chrome_trace(doc)
    assert [(eids, len(steps)) for eids, steps in _arrows(doc).values()] == [(["5"], 3)]


def test_summary_per_stage() -> None:
    s = summarize(_doc())
    assert (s.name, s.events) == ("demo", 4)
    by = {st.stage: st for st in s.stages}
    assert list(by) == ["src", "a", "b"]
    assert by["src"].events == 2 and by["src"].service_ms == (1.0, 1.0) and by["src"].queue_ms is None
    a = by["a"]
    assert (a.events, a.queue_ms, a.service_ms, a.transit_ms, a.blocked_ms) == (
        2,
        (2.0, 2.0),
        (3.0, 3.0),
        (2.0, 2.0),  # sent -> queued 1 ms, leased -> start 1 ms
        (3.0, 3.0),  # end -> acked
    )
    b = by["b"]
    assert b.events == 3 and b.queue_ms == (1.0, 1.0) and b.service_ms == (8.0, 8.0)
    assert b.transit_ms == pytest.approx((1.5, 1.5)) and b.blocked_ms == pytest.approx((0.1, 0.1))


def test_critical_path_of_the_slowest_events() -> None:
    s = summarize(_doc(), slowest=2)
    assert len(s.slowest) == 2 and {ev.eid for ev in s.slowest} <= {"0", "5.0", "5.1"}
    ev = s.slowest[0]
    assert ev.total_ms == 19.0  # read at 1 ms, b's call ends at 20 ms
    assert [(what, stage) for what, stage, _ in ev.segments] == [
        ("read", "src"),
        ("transit", "a"),
        ("queue", "a"),
        ("inbox", "a"),
        ("service", "a"),
        ("emit", "a"),
        ("transit", "b"),
        ("queue", "b"),
        ("inbox", "b"),
        ("service", "b"),
    ]
    assert sum(ms for _, _, ms in ev.segments) == pytest.approx(19.0)
    lines = render(s)
    assert lines[0] == "trace of demo: 4 sampled events; clock: monotonic clock of one host (exact)"
    assert any(line.split()[:2] == ["a", "2"] and "2.000 / 2.000" in line for line in lines)
    assert any(line.startswith(f"  event {ev.eid}: 19.000 (most: service b): read src 1.000 > ") for line in lines)
    # the slowest tenth (one event of three): 10.5 of its 19 ms at b, 8 of them its service
    assert s.held_back == HeldBack("b", pytest.approx(10.5 / 19), "service", 1)
    assert "slowest stage: b: 55% of the time of the slowest 1 sampled event, most of it service" in lines


def test_the_slowest_stage_is_where_the_slowest_tenth_spent_its_time() -> None:
    fast = [SlowEvent(str(i), 3.0, (("queue", "a", 1.0), ("service", "b", 2.0))) for i in range(18)]
    slow = [SlowEvent(str(i), 12.0, (("queue", "a", 9.0), ("service", "b", 3.0))) for i in (18, 19)]
    # b has the longer service of most events, but the slowest two (a tenth of 20)
    # spent 3/4 of their time waiting in a's queue
    assert held_back(slow + fast) == HeldBack("a", 0.75, "queue", 2)
    assert held_back([]) is None and held_back([SlowEvent("0", 0.0, ())]) is None
    # a tenth rounds up: of 11 events the slowest two, whose time is mostly at b
    top = [
        SlowEvent("0", 10.0, (("service", "a", 6.0), ("service", "b", 4.0))),
        SlowEvent("1", 9.0, (("queue", "b", 9.0),)),
    ]
    rest = [SlowEvent(str(i), 1.0, (("service", "a", 1.0),)) for i in range(2, 11)]
    assert held_back(top + rest) == HeldBack("b", 13 / 19, "queue", 2)


def test_percentiles() -> None:
    assert percentiles([]) is None
    assert percentiles([5.0]) == (5.0, 5.0)
    assert percentiles([float(v) for v in range(1, 11)]) == (5.5, 9.0)


def test_not_a_sedamp_trace_is_refused() -> None:
    with pytest.raises(ValueError, match="not a trace written by `sedamp run --trace`"):
        summarize({"traceEvents": []})


def test_the_format_check_catches_what_viewers_reject() -> None:
    doc = _doc()
    bad = {"traceEvents": [*doc["traceEvents"], {"ph": "X", "name": "x", "pid": 1, "tid": 1, "ts": 0}]}
    with pytest.raises(jsonschema.ValidationError):
        check_chrome_trace(bad)  # a complete slice without its duration
    crossing = [
        {"ph": "X", "name": "x", "cat": "c", "pid": 1, "tid": 1, "ts": 0, "dur": 10},
        {"ph": "X", "name": "y", "cat": "c", "pid": 1, "tid": 1, "ts": 5, "dur": 10},
    ]
    with pytest.raises(AssertionError, match="overlap without nesting"):
        check_chrome_trace({"traceEvents": crossing})
    loose = {"ph": "s", "name": "e", "cat": "c", "pid": 2, "tid": 2, "ts": 0, "id": 1}
    with pytest.raises(AssertionError, match="binds to no slice"):
        check_chrome_trace({"traceEvents": [loose]})


def test_files_of_the_earlier_forms_are_summarised_alike() -> None:
    doc = _doc()
    meta = doc["sedamp"]
    assert meta["version"] == 3
    cohorts = meta["cohorts"]
    assert sorted(map(sorted, map(lambda c: map(str, c), cohorts))) == [["0", "5"], ["0", "5.0", "5.1"]]
    v2 = [[hop, stage, cohorts[c], ns / 1000] for hop, stage, c, ns in meta["hops"]]
    second = {**doc, "sedamp": {**meta, "version": 2, "hops": v2}}
    first = {**doc, "sedamp": {**meta, "version": 1}}
    first["sedamp"]["hops"] = [[e, stage, hop, ts] for hop, stage, ids, ts in v2 for e in ids]
    assert summarize(first) == summarize(second) == summarize(doc)
    times = [ns for _, _, _, ns in meta["hops"]]
    assert times == sorted(times) and times[0] == 0 and meta["zero_ns"] == 1 * MS


def test_events_of_one_put_leased_apart_each_step_into_their_own_wait() -> None:
    """1 and 2 arrive in one PUT and are leased in two batches: two waits, on two lanes,
    and each event's arrow steps into its own (it once stepped into the last one built)."""
    src = ProcRecords("source", "src", 0, 10, "h", 0)
    src.calls = [["src", 0, 1 * MS, 2 * MS, 2, [1, 2]]]
    src.hops = [[hop, "src", [1, 2], t * MS, None] for hop, t in (("read", 1), ("sent", 2))]
    qa = ProcRecords("queue", "a", 0, 20, "h", 0)
    qa.hops = [["queued", "a", [1, 2], 3 * MS, None]]
    wa = ProcRecords("worker", "a", 0, 30, "h", 0)
    wa.calls = [["a", 1, 6 * MS, 7 * MS, 1, [1]], ["a", 2, 9 * MS, 10 * MS, 1, [2]]]
    wa.hops = [[hop, "a", [1], t * MS, 1] for hop, t in (("leased", 5), ("start", 6), ("end", 7))]
    wa.hops += [[hop, "a", [2], t * MS, 2] for hop, t in (("leased", 8), ("start", 9), ("end", 10))]
    doc = chrome_trace([src, qa, wa], ["src", "a"], "demo")
    check_chrome_trace(doc)
    waits = {e["args"]["events"][0]: e["tid"] for e in doc["traceEvents"] if e["ph"] == "X" and e["pid"] == 20}
    assert waits == {"1": lane_tid(20, 0), "2": lane_tid(20, 1)}
    steps = {
        eids[0]: e["tid"] for eids, arrow in _arrows(doc).values() for e in arrow if e["ph"] == "t" and e["pid"] == 20
    }
    assert steps == waits

"""`sedamp run --trace FILE` and `sedamp trace FILE` on real runs: the file is valid
Chrome trace-event JSON, every sampled event's hops come in stage order with times
that never go back, and the summary names every stage."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sedamp.errors import EXIT_INVALID
from sedamp.observe.trace import hops_by_event, path_of
from sedamp.runtime.tracing import is_sampled
from tests.integration.util import TOPOLOGIES, chain_yaml, run_sedamp
from tests.trace_format import check_chrome_trace

# the hops of an event at one stage, in the order they happen (the ACK comes after
# the outputs reached the next queue, so it is checked apart)
ORDER = ("read", "sent", "queued", "leased", "start", "end", "sink", "put")


def _hops_by_event(doc: dict[str, Any]) -> dict[str, list[tuple[float, str, str]]]:
    return hops_by_event(doc["sedamp"])


def _check_paths(doc: dict[str, Any], stages: list[str]) -> None:
    own = _hops_by_event(doc)
    for eid in own:
        path = [h for h in path_of(eid, own) if h[2] != "acked"]
        steps = [(stages.index(stage), ORDER.index(hop)) for _, stage, hop in path]
        assert steps == sorted(steps), f"event {eid}: hops out of stage order: {path}"
        assert [t for t, _, _ in path] == sorted(t for t, _, _ in path)
        for ts, stage, hop in path_of(eid, own):
            if hop == "acked":
                end = [t for t, s, h in path if s == stage and h == "end"]
                assert end and ts >= end[0], f"event {eid}: acked before its call ended at {stage}"


def test_trace_a_real_run_and_summarise_it(tmp_path: Path) -> None:
    out = tmp_path / "run.trace.json"
    proc = run_sedamp(
        "run",
        str(TOPOLOGIES / "tiny.yaml"),
        "--workdir",
        str(tmp_path / "w"),
        "--trace",
        str(out),
        "--trace-sample",
        "0.05",
        "-q",
        env={"COUNT": "2000", "OUT": str(tmp_path / "result.json")},
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    check_chrome_trace(doc)
    stages = ["seeds", "a", "b", "collect"]
    own = _hops_by_event(doc)
    assert set(own) == {str(i) for i in range(2000) if is_sampled(i, 20)}  # 5% of 2000, every one of them
    for eid, hops in own.items():
        assert [(s, h) for _, s, h in hops if h in ("read", "sink")] == [("seeds", "read"), ("collect", "sink")], eid
    _check_paths(doc, stages)
    names = {e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"}
    assert {"src:seeds", "q:a", "q:b", "q:collect", "sdw:a:0", "sdw:b:0", "sdw:collect:0"} <= names
    starts = [e["args"]["events"] for e in doc["traceEvents"] if e["ph"] == "s"]
    assert sorted(eid for events in starts for eid in events) == sorted(own)  # each on one arrow
    assert len(starts) == len([e for e in doc["traceEvents"] if e["ph"] == "f"])

    summary = run_sedamp("trace", str(out), "--slowest", "2")
    assert summary.returncode == 0, summary.stderr
    lines = summary.stdout.splitlines()
    assert lines[0] == f"trace of tiny: {len(own)} sampled events; clock: monotonic clock of one host (exact)"
    rows = {line.split()[0]: line.split() for line in lines[2:8] if line.strip()}
    for stage in stages:
        assert rows[stage][1] == str(len(own)), lines
    assert rows["a"][2:5] != ["-"] * 3
    slow = [line for line in lines if line.startswith("  event ")]
    assert len(slow) == 2 and all(" > service collect " in line for line in slow), lines


def _traced_chain(tmp_path: Path, middle: str, count: int, sample: str) -> Path:
    """Run src -> mid (`middle`: its YAML lines) -> sink traced; the trace file."""
    topo = tmp_path / "chain.yaml"
    topo.write_text("name: chain\n" + chain_yaml(tmp_path / "out.jsonl", middle, count=count))
    out = tmp_path / "chain.trace.json"
    proc = run_sedamp(
        "run", str(topo), "--workdir", str(tmp_path / "w"), "--trace", str(out), "--trace-sample", sample, "-q"
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_fan_out_children_are_traced_with_their_parent(tmp_path: Path) -> None:
    out = _traced_chain(tmp_path, "    handler: tests.integration.teststages:split\n", 300, "0.1")
    doc = json.loads(out.read_text())
    check_chrome_trace(doc)
    own = _hops_by_event(doc)
    children = [e for e in own if "." in e]
    assert children and all(e.split(".")[0] in own for e in children)
    assert all(("sink", "sink") in {(s, h) for _, s, h in own[e]} for e in children)
    _check_paths(doc, ["src", "mid", "sink"])


def test_a_trace_of_the_thumbnails_example_follows_every_image(tmp_path: Path) -> None:
    """Every sample image is traced (--trace-sample 1) and named on one arrow, which
    goes from the source's read through the wait in the thumb stage's queue into the
    handler call that made its thumbnail."""
    out = tmp_path / "thumbs.trace.json"
    proc = run_sedamp(
        "run", str(TOPOLOGIES / "thumbnails.yaml"), "--workdir", str(tmp_path / "w"),
        "--trace", str(out), "--trace-sample", "1", "-q",
        env={"OUT": str(tmp_path / "thumbs")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    images = len([p for p in (TOPOLOGIES / "data" / "images").rglob("*") if p.suffix in (".jpg", ".png")])
    assert len(list((tmp_path / "thumbs").rglob("*.jpg"))) == images
    doc = json.loads(out.read_text())
    check_chrome_trace(doc)
    tracks = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"}
    named: list[str] = []
    for e in doc["traceEvents"]:
        if e["ph"] != "s":
            continue
        named += e["args"]["events"]
        steps = [s for s in doc["traceEvents"] if s["ph"] in ("s", "t", "f") and s["id"] == e["id"]]
        assert [tracks[s["pid"]].split(":")[0] for s in steps] == ["src", "q", "sdw"], steps
    assert sorted(named, key=int) == [str(i) for i in range(images)]  # each image on one arrow
    assert set(_hops_by_event(doc)) == set(named)
    _check_paths(doc, ["files", "thumb"])


def test_trace_names_the_slow_stage(tmp_path: Path) -> None:
    """src -> mid (20 ms an event) -> sink: the summary's slowest events spend the most
    of their time at mid, and mid has the longest service."""
    middle = "    handler: tests.integration.teststages:pause\n    params: {delay_s: 0.02}\n    workers: 1"
    out = _traced_chain(tmp_path, middle, 60, "1")
    summary = run_sedamp("trace", str(out), "--slowest", "3")
    assert summary.returncode == 0, summary.stderr
    lines = summary.stdout.splitlines()
    slow = [line for line in lines if line.startswith("  event ")]
    assert len(slow) == 3 and all(re.search(r"\(most: (service|queue) mid\)", line) for line in slow), lines
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[4:7]]  # stage, events, queue, service, ...
    service = {row[0]: float(row[3].split(" / ")[0]) for row in rows if row[3] != "-"}  # p50, ms
    assert max(service, key=lambda s: service[s]) == "mid" and service["mid"] >= 20, lines
    assert any(line.startswith("slowest stage: mid: ") for line in lines), lines


def test_an_untraced_run_writes_no_trace_records(tmp_path: Path) -> None:
    proc = run_sedamp(
        "run",
        str(TOPOLOGIES / "tiny.yaml"),
        "--workdir",
        str(tmp_path / "w"),
        "-q",
        env={"COUNT": "200", "OUT": str(tmp_path / "result.json")},
    )
    assert proc.returncode == 0, proc.stderr
    assert not list((tmp_path / "w").glob("runs/*/traces"))


def test_trace_refuses_a_file_that_is_not_a_trace(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"traceEvents": []}')
    proc = run_sedamp("trace", str(bad))
    assert proc.returncode == EXIT_INVALID
    assert proc.stderr.splitlines() == [
        f"error: {bad}: not a trace written by `sedamp run --trace` (no 'sedamp' section this sedamp reads)"
    ]
    proc = run_sedamp("trace", str(tmp_path / "missing.json"))
    assert proc.returncode == EXIT_INVALID and "Traceback" not in proc.stderr

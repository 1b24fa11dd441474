"""Stage domains: consecutive stages declared with one `group:` run in one pool of
processes, calling each other directly, with per-stage counters and dead letters."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sedamp.runtime.deadletter import read_dead_letters
from tests.integration.teststages import read_records
from tests.integration.util import TOPOLOGIES, run_sedamp, stage_of, summary_of

T = "tests.integration.teststages"


def test_group_runs_a_chain_with_fan_out_and_failures(tmp_path: Path, workdir: Path) -> None:
    out = tmp_path / "out.jsonl"
    topo = tmp_path / "g.yaml"
    topo.write_text(
        f"""
name: g
stages:
  src:
    source: {T}:Numbers
    params: {{count: 300}}
    to: fail
  fail:
    handler: {T}:fail_on
    params: {{modulo: 10}}
    group: work
    workers: 2
    to: split
  split:
    handler: {T}:split
    group: work
    to: sink
  sink:
    sink: {T}:Record
    params: {{out: "{out}"}}
"""
    )
    proc = run_sedamp("run", str(topo), "--workdir", str(workdir), "--json")
    assert proc.returncode == 1, proc.stderr
    s = summary_of(proc)
    kept = [n for n in range(300) if n % 10]
    assert sorted((e["n"], e["half"]) for e in read_records(out)) == [(n, h) for n in kept for h in (0, 1)]
    fail, split = stage_of(s, "fail"), stage_of(s, "split")
    assert (fail["events_in"], fail["events_out"], fail["failed"]) == (300, 270, 30)
    assert (split["events_in"], split["events_out"]) == (270, 540)
    assert fail["workers"] == split["workers"] == 2
    dead = read_dead_letters(s["dead_letters"])
    assert len(dead) == 30 and {d["stage"] for d in dead} == {"fail"}
    # one process pool: no queue for the second stage of the group
    assert stage_of(s, "sink")["events_in"] == 540


def test_group_with_finish_feeding_a_sink(tmp_path: Path, workdir: Path) -> None:
    """wordcount with count and write in one group: Count's finish() outputs go straight
    to the sink in the same process."""
    text = (TOPOLOGIES / "wordcount.yaml").read_text()
    text = text.replace("    workers: 2\n    to: write", "    workers: 1\n    group: tail\n    to: write")
    text = text.replace("    sink: stages.text:WriteCounts", "    sink: stages.text:WriteCounts\n    group: tail")
    topo = tmp_path / "wordcount-grouped.yaml"
    topo.write_text(text)
    out = tmp_path / "counts.tsv"
    root = f"files.params.root={TOPOLOGIES / 'data' / 'texts'}"
    proc = run_sedamp("run", str(topo), "--set", root, "--workdir", str(workdir), "--json", env={"OUT": str(out)})
    assert proc.returncode == 0, proc.stderr
    from tests.integration.test_examples import serial_wordcount

    expected: Counter[str] = serial_wordcount()
    got = {w: int(n) for w, n in (line.split("\t") for line in out.read_text().splitlines())}
    assert got == dict(expected)
    s = summary_of(proc)
    assert stage_of(s, "write")["events_in"] == len(expected)
    assert stage_of(s, "count")["events_out"] == len(expected)

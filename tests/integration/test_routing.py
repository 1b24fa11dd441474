"""Conditional edges (`when:`) and sources that say IDLE, through the real CLI."""

from __future__ import annotations

from pathlib import Path

from sedamp.runtime.deadletter import read_dead_letters
from tests.integration.teststages import read_records
from tests.integration.util import run_sedamp, stage_of, summary_of

T = "tests.integration.teststages"


def test_when_sends_each_event_down_the_matching_edges_only(tmp_path: Path) -> None:
    topo = tmp_path / "t.yaml"
    topo.write_text(
        f"""name: t
stages:
  src:
    source: {T}:Numbers
    params: {{count: 1000}}
    to: split
  split:
    handler: {T}:parity
    workers: 2
    to:
      - {{stage: evens, when: {{route: even}}}}
      - {{stage: odds, when: {{route: odd}}}}
      - all
  evens: {{sink: "{T}:Append", params: {{out: "{tmp_path / "evens.jsonl"}"}}}}
  odds: {{sink: "{T}:Append", params: {{out: "{tmp_path / "odds.jsonl"}"}}}}
  all: {{sink: "{T}:Append", params: {{out: "{tmp_path / "all.jsonl"}"}}}}
"""
    )
    r = run_sedamp("run", str(topo), "--workdir", str(tmp_path / "w"), "--json")
    assert r.returncode == 0, r.stderr
    rest = [n for n in range(1000) if n % 50 != 49]
    assert sorted(e["n"] for e in read_records(tmp_path / "evens.jsonl")) == [n for n in rest if n % 2 == 0]
    assert sorted(e["n"] for e in read_records(tmp_path / "odds.jsonl")) == [n for n in rest if n % 2]
    assert sorted(e["n"] for e in read_records(tmp_path / "all.jsonl")) == list(range(1000))
    graph = run_sedamp("graph", str(topo))
    assert "when route=even" in graph.stdout


def test_an_event_no_edge_takes_is_dead_lettered(tmp_path: Path) -> None:
    topo = tmp_path / "t.yaml"
    topo.write_text(
        f"""name: t
stages:
  src: {{source: "{T}:Numbers", params: {{count: 200}}, to: split}}
  split:
    handler: {T}:parity
    to: [{{stage: evens, when: {{route: even}}}}, {{stage: odds, when: {{route: odd}}}}]
  evens: {{sink: "{T}:Append", params: {{out: "{tmp_path / "evens.jsonl"}"}}}}
  odds: {{sink: "{T}:Append", params: {{out: "{tmp_path / "odds.jsonl"}"}}}}
"""
    )
    r = run_sedamp("run", str(topo), "--workdir", str(tmp_path / "w"), "--json")
    assert r.returncode == 1
    s = summary_of(r)
    letters = read_dead_letters(s["dead_letters"])
    assert sorted(d["event_id"] for d in letters) == [49, 99, 149, 199]
    assert all("matches the when: of no edge" in d["message"] and d["stage"] == "split" for d in letters)
    assert stage_of(s, "split")["failed"] == 4


def test_a_source_that_says_idle_sends_what_it_has_at_once(tmp_path: Path) -> None:
    marker = tmp_path / "seen"
    out = tmp_path / "out.jsonl"
    topo = tmp_path / "t.yaml"
    topo.write_text(
        f"""name: t
stages:
  src: {{source: "{T}:Trickle", params: {{marker: "{marker}"}}, to: sink}}
  sink: {{sink: "{T}:Touch", params: {{marker: "{marker}", out: "{out}"}}}}
"""
    )
    r = run_sedamp("run", str(topo), "--workdir", str(tmp_path / "w"), "--json", timeout=60)
    assert r.returncode == 0, r.stderr
    assert read_records(out) == [{"n": 0}, {"n": 1, "saw_marker": True}]

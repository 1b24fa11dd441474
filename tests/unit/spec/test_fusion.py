"""sedamp.spec.fusion: which chains the runtime fuses, and the reason for each boundary."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sedamp.spec import fusion
from sedamp.spec.load import load_topology


def planned(tmp_path: Path, stages: str, controller: str = "") -> tuple[dict[str, str | None], dict[str, str]]:
    """Each stage's group after planning, and each boundary's action and reason."""
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\n{controller}stages:\n{stages}")
    top, decisions = fusion.plan(load_topology(path, check_handlers=False))
    groups = {name: s.group for name, s in top.stages.items()}
    return groups, {f"{d.upstream}->{d.downstream}": f"{d.action}: {d.reason}" for d in decisions}


CHAIN = """\
  src: {source: m:s, to: a}
  a: {handler: m:a, to: b}
  b: {handler: m:b, to: c}
  c: {handler: m:c, to: out}
  out: {sink: m:o}
"""


def test_a_chain_without_pools_of_its_own_is_fused_and_the_sink_kept_apart(tmp_path: Path) -> None:
    groups, why = planned(tmp_path, CHAIN)
    assert groups == {"src": None, "a": "fused:a+b+c", "b": "fused:a+b+c", "c": "fused:a+b+c", "out": None}
    assert why["a->b"].startswith("fuse: 'a' sends only to 'b', which only it feeds")
    assert why["c->out"] == "apart: 'out' is a sink, which keeps its own pool (one worker unless it says otherwise)"
    assert "src->a" not in why  # a source always runs alone: nothing to decide


def test_the_fused_run_is_in_chain_order_whatever_the_file_order(tmp_path: Path) -> None:
    stages = "  c: {handler: m:c, to: out}\n  b: {handler: m:b, to: c}\n  a: {handler: m:a, to: b}\n"
    stages += "  src: {source: m:s, to: a}\n  out: {sink: m:o}\n"
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\nstages:\n{stages}")
    top, _ = fusion.plan(load_topology(path, check_handlers=False))
    assert [s.name for s in top.chain_of("a")] == ["a", "b", "c"]
    assert top.head_of("c") == "a" and top.is_member("b")


@pytest.mark.parametrize(
    ("change", "boundary", "reason"),
    [
        ("b: {handler: m:b, to: c, workers: 2}", "a->b", "'b' sets workers for its own pool"),
        ("b: {handler: m:b, to: c, timeout_s: 5}", "b->c", "'b' sets timeout_s for its own pool"),
        ("b: {handler: m:b, to: c, fuse: never}", "a->b", "'b' says fuse: never"),
        ("b: {handler: m:b, to: {stage: c, key: k}}", "b->c", "the edge b -> c is keyed"),
        ("b: {handler: m:b, to: {stage: c, when: {x: 1}}}", "b->c", "the edge b -> c is conditional"),
        ("b: {handler: m:b, to: c, group: g}", "a->b", "'b' is in group 'g'"),
    ],
)
def test_what_keeps_two_stages_apart(tmp_path: Path, change: str, boundary: str, reason: str) -> None:
    stages = CHAIN.replace("b: {handler: m:b, to: c}", change)
    if "key: k" in change:
        stages = stages.replace("c: {handler: m:c, to: out}", "c: {handler: m:c, to: out, workers: 2}")
    _, why = planned(tmp_path, stages)
    assert why[boundary] == f"apart: {reason}"


def test_the_first_stage_of_a_run_may_set_its_queue_and_batch(tmp_path: Path) -> None:
    stages = CHAIN.replace("a: {handler: m:a, to: b}", "a: {handler: m:a, to: b, queue: {capacity: 64}, batch: 8}")
    groups, _ = planned(tmp_path, stages)
    assert groups["a"] == groups["b"] == "fused:a+b+c"


def test_fan_in_and_fan_out_stay_apart(tmp_path: Path) -> None:
    stages = """\
  s1: {source: m:s, to: a}
  s2: {source: m:s, to: b}
  a: {handler: m:a, to: b}
  b: {handler: m:b, to: [c, d]}
  c: {handler: m:c, to: out}
  d: {handler: m:d, to: out}
  out: {sink: m:o}
"""
    groups, why = planned(tmp_path, stages)
    assert set(groups.values()) == {None}
    assert why["a->b"] == "apart: 'b' also receives from 's2'"
    assert "b->c" not in why  # b has two edges: not a chain


def test_a_static_policy_runs_the_topology_as_written(tmp_path: Path) -> None:
    groups, why = planned(tmp_path, CHAIN, controller="controller: {policy: static}\n")
    assert set(groups.values()) == {None} and why == {}


def test_fuse_takes_auto_or_never(tmp_path: Path) -> None:
    from sedamp.errors import TopologyError

    path = tmp_path / "t.yaml"
    path.write_text(
        "name: t\nstages:\n" + CHAIN.replace("a: {handler: m:a, to: b}", "a: {handler: m:a, to: b, fuse: no}")
    )
    with pytest.raises(TopologyError, match=re.escape("fuse: must be one of auto | never, got ")):
        load_topology(path, check_handlers=False)

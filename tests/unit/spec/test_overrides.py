"""Tests of sedamp.spec.overrides: --set PATH=VALUE applied to a parsed tree."""

from __future__ import annotations

from typing import Any

from sedamp.spec.overrides import apply_overrides
from sedamp.spec.problems import OVERRIDE_FILE, Problems
from sedamp.spec.variables import expand_vars


def apply(tree: dict[Any, Any], *overrides: str) -> Problems:
    p = Problems("t.yaml")
    apply_overrides(tree, overrides, lambda s: expand_vars(s, {"N": "6"}), p)
    return p


def test_a_stage_name_gains_its_stages_prefix_and_values_are_typed_yaml() -> None:
    tree: dict[Any, Any] = {"stages": {"a": {"handler": "m:f"}}}
    p = apply(tree, "a.workers=4", "stages.a.params.size=${N}", "controller.policy=static", "name=x")
    assert p.problems == []
    assert tree == {
        "stages": {"a": {"handler": "m:f", "workers": 4, "params": {"size": 6}}},
        "controller": {"policy": "static"},
        "name": "x",
    }
    assert p.overridden == {
        ("stages", "a", "workers"),
        ("stages", "a", "params", "size"),
        ("controller", "policy"),
        ("name",),
    }


def test_each_bad_override_gives_one_problem_and_changes_nothing() -> None:
    tree: dict[Any, Any] = {"stages": {"a": {"handler": "m:f", "params": 3}}}
    p = apply(tree, "a.workers", "b.workers=1", "name.x=1", "a.params.size=1", "a.workers=[1")
    assert all(x.file == OVERRIDE_FILE and x.line is None for x in p.problems)
    assert [(x.field, x.message) for x in p.problems] == [
        ("a.workers", "malformed override 'a.workers': expected PATH=VALUE"),
        ("b.workers", "unknown stage 'b'"),
        ("name.x", "name is a plain string"),
        ("a.params.size", "cannot set a.params.size: stages.a.params is an integer (3), not a mapping"),
        ("a.workers", "cannot parse the value '[1': " + p.problems[4].message.split(": ", 1)[1]),
    ]
    assert tree == {"stages": {"a": {"handler": "m:f", "params": 3}}}
    assert p.overridden == set()


def test_an_unknown_stage_suggests_the_closest_name() -> None:
    p = apply({"stages": {"resize": {}}}, "resiz.workers=2")
    assert p.problems[0].hint == "did you mean 'resize'?"

"""Tests of sedamp.spec.problems: the recorder the checks share, and its typed readers."""

from __future__ import annotations

from sedamp.errors import Problem
from sedamp.spec import yamlmap
from sedamp.spec.model import WorkersSpec
from sedamp.spec.problems import OVERRIDE_FILE, Problems, bounds_text, describe, field_name


def recorder() -> Problems:
    p = Problems("t.yaml")
    p.lines = yamlmap.load("stages:\n  a:\n    workers: 0\n  b:\n    to: a\n", lambda s: s).lines
    return p


def test_a_problem_is_placed_on_the_line_of_its_field() -> None:
    p = recorder()
    p.add(("stages", "a", "workers"), "must be >= 1, got 0", "e.g. workers: 1")
    assert p.problems == [Problem("t.yaml", 3, "stages.a.workers", "must be >= 1, got 0", "e.g. workers: 1")]
    assert p.bad_stages == {"a"}


def test_a_problem_inside_an_overridden_value_names_the_override() -> None:
    p = recorder()
    p.overridden.add(("stages", "a"))
    p.add(("stages", "a", "workers"), "must be >= 1, got 0")
    assert p.problems == [Problem(OVERRIDE_FILE, None, "stages.a.workers", "must be >= 1, got 0", None)]


def test_a_poisoned_value_gives_one_problem() -> None:
    p = recorder()
    p.issue(yamlmap.YamlIssue(("stages", "b", "to"), 5, "environment variable 'X' is not set", None, poisoned=True))
    p.add(("stages", "b", "to"), "unknown stage ''")
    assert [x.message for x in p.problems] == ["environment variable 'X' is not set"]
    assert p.bad_stages == {"b"}


def test_file_problems_sort_by_line_and_override_problems_keep_their_order() -> None:
    p = recorder()
    p.add_raw(OVERRIDE_FILE, None, "z", "second override", None)
    p.add(("stages", "b", "to"), "line 5")
    p.add_raw(OVERRIDE_FILE, None, "y", "third override", None)
    p.add(("stages", "a"), "line 2")
    assert [x.message for x in p.sorted_problems()] == ["line 2", "line 5", "second override", "third override"]


def test_the_typed_readers_return_none_and_record_what_is_wrong() -> None:
    p = recorder()
    assert p.integer(("stages", "a", "workers"), 3) == 3
    assert p.integer(("stages", "a", "workers"), True) is None
    assert p.integer(("stages", "a", "workers"), 0) is None
    assert p.integer(("stages", "a", "workers"), 9, maximum=8) is None
    assert p.positive_float(("x",), float("nan"), "h") is None
    assert p.choice(("x",), "blok", ("block", "drop")) is None
    assert p.string(("x",), 3, "a string") is None
    assert [(x.message, x.hint) for x in p.problems] == [
        ("must be an integer, got a boolean (true)", "e.g. workers: 1"),
        ("must be >= 1, got 0", None),
        ("must be <= 8, got 9", None),
        ("must be > 0, got nan", "h"),
        ("must be one of block | drop, got 'blok'", "did you mean 'block'?"),
        ("must be a string, got an integer (3)", "quote it"),
    ]


def test_unknown_keys_suggest_the_closest_allowed_key() -> None:
    p = recorder()
    p.unknown_keys(("stages", "a"), {"workrs": 1, "handler": "m:f"}, ("handler", "workers"), "stage 'a'")
    assert [(x.field, x.message, x.hint) for x in p.problems] == [
        ("stages.a.workrs", "unknown key 'workrs' in stage 'a'", "did you mean 'workers'?")
    ]


def test_the_words_of_the_messages() -> None:
    assert field_name(("stages", "a", "to", 1, "key")) == "stages.a.to[1].key"
    assert describe(None) == "null"
    assert describe("x" * 50) == f"a string ({'x' * 37 + '...'!r})"
    assert describe([1]) == "a list"
    assert bounds_text(WorkersSpec(2, 2)) == "2"
    assert bounds_text(WorkersSpec(1, None)) == "min 1, max auto"

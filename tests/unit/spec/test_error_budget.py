"""The error budget key of a stage (`on_error.budget`): its default, and what the
loader and the JSON Schema accept."""

from __future__ import annotations

from pathlib import Path

import yaml

from sedamp.spec import parse_topology
from sedamp.spec.model import DEFAULT_ERROR_BUDGET
from tests.unit.spec.test_schema import loader_accepts, schema_errors, with_middle


def test_the_error_budget_defaults_and_is_a_fraction() -> None:
    top = parse_topology(with_middle(""), file="t.yaml", base_dir=Path("."), env={}, check_handlers=False)
    assert top.stages["mid"].on_error.budget == DEFAULT_ERROR_BUDGET == 0.9
    text = with_middle("on_error: {budget: 0.5}")
    top = parse_topology(text, file="t.yaml", base_dir=Path("."), env={}, check_handlers=False)
    assert top.stages["mid"].on_error.budget == 0.5
    assert schema_errors(yaml.safe_load(text)) == []
    for bad in ("1.5", "-0.1", "true", "lots"):
        text = with_middle(f"on_error: {{budget: {bad}}}")
        assert not loader_accepts(text)
        assert schema_errors(yaml.safe_load(text)) != []

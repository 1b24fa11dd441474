"""The JSON Schema of topology files (sedamp.spec.schema) against the loader (sedamp.spec.load)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sedamp.cli import templates
from sedamp.errors import TopologyError
from sedamp.spec import load_topology, parse_topology
from sedamp.spec.keys import CONTROLLER_KEYS, EDGE_KEYS, ON_ERROR_KEYS, QUEUE_KEYS, STAGE_KEYS, TOP_KEYS, WORKERS_KEYS
from sedamp.spec.model import KINDS
from sedamp.spec.schema import topology_schema
from tests.integration.util import REPO, TOPOLOGIES, run_sedamp

SCHEMA = topology_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
BAD = REPO / "tests" / "data" / "bad"
GOOD = sorted(TOPOLOGIES.glob("*.yaml")) + sorted((REPO / "tests" / "data" / "good").glob("*.yaml"))

# Files of the bad corpus that the loader refuses for their structure (an unknown key, a
# wrong type, a value out of bounds, a missing or doubled stage kind): the schema must
# refuse them too. The rest of the corpus is about the graph, the handlers, variables or
# YAML syntax, which a schema cannot see.
STRUCTURAL = [
    "unknown_top_key.yaml",
    "unknown_stage_key.yaml",
    "unknown_controller_key.yaml",
    "unknown_queue_key.yaml",
    "unknown_workers_key.yaml",
    "unknown_edge_key.yaml",
    "top_list.yaml",
    "stages_list.yaml",
    "stage_scalar.yaml",
    "controller_list.yaml",
    "name_not_string.yaml",
    "params_list.yaml",
    "params_bad_name.yaml",
    "workers_string.yaml",
    "workers_float.yaml",
    "workers_zero.yaml",
    "capacity_bool.yaml",
    "batch_float.yaml",
    "batch_too_big.yaml",
    "max_events_text.yaml",
    "max_event_bytes_huge.yaml",
    "cores_string.yaml",
    "on_full_bad.yaml",
    "policy_bad.yaml",
    "on_error_bad_then.yaml",
    "to_wrong_type.yaml",
    "when_not_mapping.yaml",
    "ref_not_string.yaml",
    "bad_ref_form.yaml",
    "bad_stage_name.yaml",
    "no_kind.yaml",
    "two_kinds.yaml",
    "source_workers.yaml",
    "timeout_on_source.yaml",
    "sink_with_to.yaml",
    "host_without_tcp.yaml",
    "address_without_ray.yaml",
    "executor_bad.yaml",
]


def schema_errors(doc: Any) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in VALIDATOR.iter_errors(doc)]


def object_alternative(prop: dict[str, Any]) -> dict[str, Any]:
    """The mapping form of a key whose value may be a mapping or something else."""
    if prop.get("type") == "object":
        return prop
    objects = [a for a in prop.get("anyOf", []) if a.get("type") == "object"]
    assert len(objects) == 1, prop
    return objects[0]


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_every_call_returns_a_fresh_copy() -> None:
    a = topology_schema()
    a["$defs"]["stage"]["properties"].clear()
    assert topology_schema() == SCHEMA and SCHEMA["$defs"]["stage"]["properties"]


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_every_example_topology_validates(path: Path) -> None:
    assert schema_errors(yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize("name", STRUCTURAL)
def test_structurally_bad_files_are_refused_by_both(name: str) -> None:
    path = BAD / name
    with pytest.raises(TopologyError):
        load_topology(path, check_handlers=False)
    assert schema_errors(yaml.safe_load(path.read_text())) != [], f"{name} passed the schema"


def test_the_structural_list_names_existing_files() -> None:
    assert all((BAD / name).is_file() for name in STRUCTURAL)


# -- the schema and the loader list the same keys ----------------------------------------


def test_top_level_keys_match_the_loader() -> None:
    assert set(SCHEMA["properties"]) == set(TOP_KEYS)
    assert SCHEMA["additionalProperties"] is False


def test_stage_keys_match_the_loader() -> None:
    stage = SCHEMA["$defs"]["stage"]
    assert set(stage["properties"]) == set(STAGE_KEYS)
    assert stage["additionalProperties"] is False
    assert [next(iter(alt["required"])) for alt in stage["oneOf"]] == list(KINDS)


def test_nested_keys_match_the_loader() -> None:
    stage = SCHEMA["$defs"]["stage"]["properties"]
    nested = {
        "queue": (object_alternative(stage["queue"]), QUEUE_KEYS),
        "workers": (object_alternative(stage["workers"]), WORKERS_KEYS),
        "on_error": (object_alternative(stage["on_error"]), ON_ERROR_KEYS),
        "batch": (object_alternative(stage["batch"]), ("min", "max")),
        "edge": (SCHEMA["$defs"]["edge"], EDGE_KEYS),
        "controller": (object_alternative(SCHEMA["properties"]["controller"]), CONTROLLER_KEYS),
    }
    for what, (schema, keys) in nested.items():
        assert set(schema["properties"]) == set(keys), what
        assert schema["additionalProperties"] is False, what


def test_every_key_has_a_description() -> None:
    def walk(props: dict[str, Any], where: str) -> None:
        for key, prop in props.items():
            assert prop.get("description"), f"{where}.{key} has no description"
            for alt in prop.get("anyOf", []):
                if alt.get("type") == "object" and "properties" in alt:
                    walk(alt["properties"], f"{where}.{key}")

    walk(SCHEMA["properties"], "")
    walk(SCHEMA["$defs"]["stage"]["properties"], "stage")
    walk(SCHEMA["$defs"]["edge"]["properties"], "edge")


# -- files both accept, files both refuse ---------------------------------------------------

SNIPPETS_ACCEPTED = {
    "plain-scalar variable for an integer": "workers: ${WORKERS:-4}",
    "quoted variable in params": 'params: {port: "${PORT:-8080}"}',
    "null means not given": "workers:\n    queue:\n    on_error:",
    "bounds with auto": "workers: {min: 1, max: auto}",
    "adaptive batch bounds": "batch: {min: 2, max: 64}",
    "on_error shorthand": "on_error: skip",
    "on_error mapping": "on_error: {retry: 2, backoff_s: 0.5, then: fail}",
    "worker limits": "timeout_s: 2.5\n    max_events: 1000\n    max_rss_mb: 512\n    max_event_bytes: 1024",
    "queue, a variable in block style": "queue:\n      capacity: ${CAP:-64}\n      on_full: drop",
    "group": "group: prep\n    description: free text",
}
SNIPPETS_REFUSED = {  # (the middle stage's lines, its to:)
    "a typo in a choice": ("queue: {on_full: blok}", "out"),
    "a float batch": ("batch: 2.5", "out"),
    "a string that is no variable": ("timeout_s: soon", "out"),
    "negative backoff": ("on_error: {backoff_s: -1}", "out"),
    "retry above 100": ("on_error: {retry: 101}", "out"),
    "an empty when": ("", "{stage: out, when: {}}"),
    "a when comparing a list": ("", "{stage: out, when: {kind: [a, b]}}"),
    "an edge without its stage": ("", "{key: user}"),
}


def with_middle(lines: str, to: str = "out") -> str:
    return f"""
stages:
  src:
    source: mod:numbers
    to: mid
  mid:
    handler: mod:work
    to: {to}
    {lines}
  out:
    sink: mod:save
controller:
  transport: tcp
  host: 127.0.0.1
  curve: true
"""


def loader_accepts(text: str) -> bool:
    try:
        parse_topology(text, file="t.yaml", base_dir=REPO, env={}, check_handlers=False)
    except TopologyError:
        return False
    return True


@pytest.mark.parametrize("lines", SNIPPETS_ACCEPTED.values(), ids=SNIPPETS_ACCEPTED.keys())
def test_both_accept(lines: str) -> None:
    text = with_middle(lines)
    assert loader_accepts(text)
    assert schema_errors(yaml.safe_load(text)) == []


@pytest.mark.parametrize(("lines", "to"), SNIPPETS_REFUSED.values(), ids=SNIPPETS_REFUSED.keys())
def test_both_refuse(lines: str, to: str) -> None:
    text = with_middle(lines, to=to)
    assert not loader_accepts(text)
    assert schema_errors(yaml.safe_load(text)) != []


def test_the_init_template_validates() -> None:
    assert schema_errors(yaml.safe_load(templates.topology_yaml("demo"))) == []


def test_conditional_fan_out_is_accepted() -> None:
    text = with_middle("", to="[{stage: out, when: {kind: image}}, {stage: log, key: user}]").replace(
        "  out:\n    sink: mod:save\n", "  out:\n    sink: mod:save\n  log:\n    sink: mod:save\n    workers: 2\n"
    )
    assert loader_accepts(text)
    assert schema_errors(yaml.safe_load(text)) == []


# -- the command -----------------------------------------------------------------------------


def test_sedamp_schema_prints_the_schema() -> None:
    r = run_sedamp("schema")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == SCHEMA


def test_sedamp_schema_writes_a_file(tmp_path: Path) -> None:
    out = tmp_path / "topology.schema.json"
    r = run_sedamp("schema", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"wrote {out}\n"
    assert json.loads(out.read_text()) == SCHEMA


def test_sedamp_schema_cannot_write() -> None:
    r = run_sedamp("schema", "--output", "/nonexistent/dir/schema.json")
    assert r.returncode == 1
    assert r.stderr.startswith("error: cannot write /nonexistent/dir/schema.json:")
    assert "Traceback" not in r.stderr


def test_sedamp_schema_help_documents_exit_codes_and_an_example() -> None:
    r = run_sedamp("schema", "--help", env={"COLUMNS": "200"})
    assert r.returncode == 0
    assert "Example: sedamp schema" in r.stdout
    assert "Exit codes: 0 printed or written; 1 the output file could not be written." in r.stdout


def test_the_schema_states_the_runtime_s_batch_and_queue_defaults() -> None:
    from sedamp.control.wiring import SOURCE_BATCH_EVENTS
    from sedamp.runtime.configs import MAX_BATCH_EVENTS
    from sedamp.spec import DEFAULT_CAPACITY_EVENTS

    stage = topology_schema()["$defs"]["stage"]["properties"]
    batch = stage["batch"]["description"]
    assert f"default {SOURCE_BATCH_EVENTS})" in batch and f"(1 to {MAX_BATCH_EVENTS} events)" in batch
    assert f"default {DEFAULT_CAPACITY_EVENTS} per process" in json.dumps(stage["queue"])

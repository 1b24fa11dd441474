"""The Python API (sedamp.api): topologies built in code with `Pipeline`, run with `sedamp.run`.

The runs are real (processes, sockets, files); building and validating is pure."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest

import sedamp
from sedamp import api
from sedamp.spec import QueueSpec, WorkersSpec
from sedamp.spec.keys import STAGE_KEYS
from sedamp.spec.model import KINDS
from tests.integration import teststages
from tests.integration.teststages import read_records

TS = "tests.integration.teststages"


def three_stages(out: Path, count: int = 40) -> sedamp.Pipeline:
    """Numbers -> split (2 events per event, 2 workers) -> Record, given as objects and strings."""
    p = sedamp.Pipeline("coded", description="built in code")
    p.source("numbers", teststages.Numbers, count=count, to="split")
    p.handler("split", teststages.split, workers=2, batch={"min": 1, "max": 8}, on_error="fail", to="record")
    p.sink("record", f"{TS}:Record", out=out)
    return p


def halves(count: int) -> list[dict[str, int]]:
    return [{"n": n, "half": h} for n in range(count) for h in (0, 1)]


def by_n(events: list[Any]) -> list[Any]:
    return sorted(events, key=lambda e: (e["n"], e["half"]))


def test_a_pipeline_built_in_code_runs(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    summary = sedamp.run(three_stages(out), workdir=tmp_path / "w")
    assert summary.exit_code == 0, summary.error
    assert summary.name == "coded" and summary.events == 40 and summary.failed == 0
    assert [summary.stage(s).events_in for s in ("numbers", "split", "record")] == [40, 40, 80]
    assert by_n(read_records(out)) == halves(40)


def test_overrides_apply_to_a_built_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    p = three_stages(out)
    summary = sedamp.run(p, overrides=["numbers.params.count=5", "split.workers=1"], workdir=tmp_path / "w")
    assert summary.exit_code == 0, summary.error
    assert summary.events == 5 and summary.stage("split").workers == 1
    assert by_n(read_records(out)) == halves(5)
    # the pipeline itself is unchanged by the overrides
    assert p.to_dict()["stages"]["numbers"]["params"] == {"count": 40}


def test_build_gives_the_topology_the_yaml_would() -> None:
    p = three_stages(Path("/tmp/unused.jsonl"))
    top = p.build(["split.queue.capacity=64"])
    assert top.name == "coded" and list(top.stages) == ["numbers", "split", "record"]
    split = top.stages["split"]
    assert split.ref == f"{TS}:split" and split.kind == "handler"
    assert split.workers == WorkersSpec(2, 2) and split.batch_bounds == (1, 8) and split.on_error.then == "fail"
    assert split.queue == QueueSpec(capacity=64)
    assert top.stages["numbers"].ref == f"{TS}:Numbers" and top.stages["numbers"].params == {"count": 40}
    assert top.stages["record"].params == {"out": "/tmp/unused.jsonl"}  # a Path travels as str
    assert top.path is None and top.base_dir == Path.cwd().resolve()


INVALID_YAML = f"""\
name: broken
stages:
  numbers:
    source: {TS}:Numbers
    params: {{count: 3}}
    timeout_s: 5
    to: splt
  split:
    handler: {TS}:split
    workers: {{min: 3, max: 2}}
    to: record
  record:
    sink: {TS}:Record
    params: {{out: x.jsonl, colour: red}}
controller:
  period: 1
"""


def broken_pipeline() -> sedamp.Pipeline:
    p = sedamp.Pipeline("broken")
    p.source("numbers", teststages.Numbers, count=3, timeout_s=5, to="splt")
    p.handler("split", teststages.split, workers={"min": 3, "max": 2}, to="record")
    p.sink("record", teststages.Record, out="x.jsonl", colour="red")
    return p.controller(period=1)


def test_an_invalid_pipeline_fails_with_the_messages_of_the_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(INVALID_YAML)
    with pytest.raises(sedamp.TopologyError) as from_yaml:
        sedamp.load(path)
    with pytest.raises(sedamp.TopologyError) as from_code:
        broken_pipeline().build()

    def what(exc: sedamp.TopologyError) -> list[tuple[str, str, str | None]]:
        return sorted((p.field, p.message, p.hint) for p in exc.problems)

    assert what(from_code.value) == what(from_yaml.value)
    assert len(from_code.value.problems) == 5
    assert {(p.file, p.line) for p in from_code.value.problems} == {("Pipeline('broken')", None)}
    assert "Pipeline('broken'): controller.period: unknown key 'period' in controller (did you mean 'period_s'?)" in (
        str(from_code.value).splitlines()
    )


def test_run_raises_the_topology_error_and_starts_nothing(tmp_path: Path) -> None:
    with pytest.raises(sedamp.TopologyError) as info:
        sedamp.run(three_stages(tmp_path / "out.jsonl"), overrides=["split.workers=0"], workdir=tmp_path / "w")
    assert [str(p) for p in info.value.problems] == [
        "--set: stages.split.workers: must be >= 1, got 0 (workers: N runs exactly N processes, N >= 1)"
    ]
    assert not (tmp_path / "w").exists()


def test_run_refuses_overrides_for_a_validated_topology(tmp_path: Path) -> None:
    top = three_stages(tmp_path / "out.jsonl").build()
    with pytest.raises(ValueError, match=r"pass the topology's path or its Pipeline instead"):
        sedamp.run(top, overrides=["split.workers=1"], workdir=tmp_path / "w")


def test_run_writes_metrics_and_feeds_on_tick(tmp_path: Path) -> None:
    records: list[dict[str, Any]] = []
    metrics = tmp_path / "metrics.jsonl"
    summary = sedamp.run(
        three_stages(tmp_path / "out.jsonl", count=10), workdir=tmp_path / "w", metrics_path=metrics,
        executor="local", on_tick=records.append,
    )  # fmt: skip
    assert summary.exit_code == 0, summary.error
    assert records and records[-1]["final"] is True
    assert [json.loads(line) for line in metrics.read_text().splitlines()][-1] == records[-1]


class FakeExecutor:
    """An executor that was opened and is never started on: it only records `close`."""

    remote = False

    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"executor": "cluster"}, r"^run\(executor='cluster'\): the executor is one of local, ray$"),
        ({"address": "10.0.0.5:6379"}, r"^run\(address='10\.0\.0\.5:6379'\): the address applies to the ray"),
        ({"resume": True}, r"^run\(resume=True\): sink 'record' cannot tell what it wrote"),
    ],
)
def test_run_refuses_options_that_cannot_apply_and_starts_nothing(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sedamp.run(three_stages(tmp_path / "out.jsonl"), workdir=tmp_path / "w", **kwargs)
    assert not (tmp_path / "w").exists()


def test_an_executor_given_open_is_closed_when_the_run_cannot_start(tmp_path: Path) -> None:
    executor = FakeExecutor()
    with pytest.raises(sedamp.TopologyError):
        sedamp.run(three_stages(tmp_path / "o"), ["split.workers=0"], workdir=tmp_path / "w", executor=executor)
    assert executor.closed == 1
    executor = FakeExecutor()
    with pytest.raises(ValueError, match=r"the executor is open already; give it its address"):
        sedamp.run(three_stages(tmp_path / "o"), workdir=tmp_path / "w", executor=executor, address="h:1")
    assert executor.closed == 1
    assert not (tmp_path / "w").exists()


# -- stages given as objects -------------------------------------------------------------


def module_level(event: Any) -> Any:
    return event


def test_ref_of_module_level_objects_and_strings() -> None:
    assert api.ref_of(teststages.split) == f"{TS}:split"
    assert api.ref_of(teststages.Record) == f"{TS}:Record"
    assert api.ref_of(module_level) == "tests.unit.test_api:module_level"
    assert api.ref_of("anything:at_all") == "anything:at_all"  # strings are checked by the loader


def test_a_lambda_is_refused() -> None:
    with pytest.raises(ValueError) as info:
        sedamp.Pipeline("p").handler("h", lambda e: e)
    assert str(info.value) == (
        "Pipeline('p').handler('h'): a lambda has no name worker processes can import; define a function at "
        "the top level of a module and pass it (or its 'module:function' string)"
    )


def test_a_nested_function_is_refused() -> None:
    def inner(event: Any) -> Any:
        return event

    with pytest.raises(ValueError) as info:
        sedamp.Pipeline("p").sink("s", inner)
    assert str(info.value) == (
        "Pipeline('p').sink('s'): test_a_nested_function_is_refused.<locals>.inner is defined inside a "
        "function, so worker processes cannot import it by name; define it at the top level of a module"
    )


def test_a_function_of_the_main_script_is_refused() -> None:
    def f(event: Any) -> Any:
        return event

    f.__module__ = "__main__"
    f.__qualname__ = "f"
    with pytest.raises(ValueError, match=r"^Pipeline\('p'\)\.handler\('h'\): f is defined in the __main__ script"):
        sedamp.Pipeline("p").handler("h", f)


def test_an_object_not_reachable_by_its_name_is_refused() -> None:
    def g(event: Any) -> Any:
        return event

    g.__qualname__ = "no_such_function"
    g.__module__ = __name__
    with pytest.raises(ValueError, match=r"is not reachable as tests\.unit\.test_api:no_such_function"):
        api.ref_of(g, "here")


@pytest.mark.parametrize("obj", [42, teststages.Record(), print, str.upper])
def test_other_callables_are_refused(obj: Any) -> None:
    with pytest.raises(TypeError, match=r"^here: got .*give a function or class defined at the top level"):
        api.ref_of(obj, "here")


# -- params and options ------------------------------------------------------------------------


def test_params_become_plain_data() -> None:
    p = sedamp.Pipeline("p").source("s", "m:f", to="k", pair=(1, 2), where=Path("/x"), nested={"a": [(3,)]})
    assert p.to_dict()["stages"]["s"] == {
        "source": "m:f",
        "params": {"pair": [1, 2], "where": "/x", "nested": {"a": [[3]]}},
        "to": "k",
    }


def test_a_param_that_cannot_travel_is_refused() -> None:
    with pytest.raises(TypeError, match=r"^Pipeline\('p'\)\.handler\('h'\) params\.ids: set \{1\} cannot travel"):
        sedamp.Pipeline("p").handler("h", "m:f", ids={1})
    with pytest.raises(TypeError, match=r"params\.table: key 1 is not a string; use string keys$"):
        sedamp.Pipeline("p").handler("h", "m:f", table={1: "a"})


def test_a_param_named_like_an_option_goes_in_params() -> None:
    p = sedamp.Pipeline("p").handler("h", "m:f", params={"timeout_s": 3, "to": "x"}, timeout_s=10, to="next")
    assert p.to_dict()["stages"]["h"] == {
        "handler": "m:f",
        "params": {"timeout_s": 3, "to": "x"},
        "to": "next",
        "timeout_s": 10,
    }
    with pytest.raises(ValueError, match=r"param 'size' is given twice, in params= and as a keyword"):
        sedamp.Pipeline("p").handler("h", "m:f", params={"size": 1}, size=2)


def test_a_stage_name_is_used_once() -> None:
    p = sedamp.Pipeline("p").source("a", "m:f", to="b")
    with pytest.raises(ValueError, match=r"^Pipeline\('p'\)\.sink\('a'\): stage 'a' is defined already"):
        p.sink("a", "m:g")


def test_the_stage_options_are_the_yaml_stage_keys() -> None:
    keys = set(STAGE_KEYS) - {*KINDS, "params"}
    assert set(api.STAGE_OPTIONS) == keys
    for method in (sedamp.Pipeline.source, sedamp.Pipeline.handler, sedamp.Pipeline.sink):
        kw_only = [n for n, q in inspect.signature(method).parameters.items() if q.kind is q.KEYWORD_ONLY]
        assert set(kw_only) == keys | {"params"}, method.__name__


def test_the_package_exports_pipeline() -> None:
    assert "Pipeline" in sedamp.__all__
    assert sedamp.Pipeline is api.Pipeline

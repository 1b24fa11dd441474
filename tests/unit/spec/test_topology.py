"""Tests of sedamp.spec: loading, validation, overrides, env substitution, diagrams."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from sedamp.errors import Problem, TopologyError
from sedamp.spec import (
    DEFAULT_CAPACITY_EVENTS,
    ControllerSpec,
    Edge,
    QueueSpec,
    Topology,
    WorkersSpec,
    load_topology,
    parse_topology,
    to_dot,
    to_mermaid,
)

DATA = Path(__file__).resolve().parents[2] / "data"
GOOD = DATA / "good"
BAD = DATA / "bad"
BAD_FILES = sorted(BAD.glob("*.yaml"))
EXPECT = re.compile(r"# expect: (\d+): (.+)")


def parse(text: str, **kwargs: object) -> Topology:
    """Parse an inline topology whose modules live in tests/data/good."""
    kwargs.setdefault("env", {})
    return parse_topology(textwrap.dedent(text), file="t.yaml", base_dir=GOOD, **kwargs)  # type: ignore[arg-type]


def problems(text: str, **kwargs: object) -> list[Problem]:
    with pytest.raises(TopologyError) as info:
        parse(text, **kwargs)
    return info.value.problems


MINIMAL = """\
stages:
  src:
    source: goodstages:list_files
    to: work
  work:
    handler: goodstages:resize
    to: out
  out:
    sink: json:dumps
"""


# -- good topologies ----------------------------------------------------------------------


def test_thumbnails_parses_into_the_expected_specs() -> None:
    top = load_topology(GOOD / "thumbnails.yaml", env={"OUT_DIR": "/tmp/out"})
    assert top.name == "thumbnails"
    assert top.path == GOOD / "thumbnails.yaml"
    assert top.base_dir == GOOD.resolve()
    assert list(top.stages) == ["files", "decode", "resize", "stats", "save"]
    files, decode, resize, stats, save = top.stages.values()

    assert files.kind == "source" and files.ref == "goodstages:list_files"
    assert files.params == {"root": f"{GOOD.resolve()}/photos", "pattern": "*.jpg"}
    assert files.workers == WorkersSpec(1, 1)
    assert files.to == (Edge("decode"),)
    assert (files.line, files.ref_line) == (4, 5)

    assert decode.kind == "handler"
    assert decode.workers == WorkersSpec(1, 8) and not decode.workers.fixed
    assert decode.queue == QueueSpec(capacity=256, on_full="drop")
    assert decode.batch == 32
    assert decode.to == (Edge("resize"), Edge("stats", key="user"))

    assert resize.workers == WorkersSpec(1, None)  # handler default: up to the core budget
    assert resize.queue == QueueSpec(per_producer=True)  # capacity left out: the default per producer
    per = DEFAULT_CAPACITY_EVENTS
    assert (resize.queue.bound(1), resize.queue.bound(3), decode.queue.bound(3)) == (per, 3 * per, 256)
    assert resize.params == {"size": 128}  # ${SIZE:-128} in a plain scalar -> int
    assert resize.batch is None

    assert stats.workers == WorkersSpec(2, 2) and stats.workers.fixed
    assert top.route_key("stats") == "user"
    assert top.route_key("resize") is None
    assert top.upstream("save") == ["resize", "stats"]

    assert save.kind == "sink" and save.to == ()
    assert save.workers == WorkersSpec(1, 1)  # sink default
    assert save.params == {"out": "${HOME} costs $5 and /tmp/out"}

    assert top.controller == ControllerSpec(cores=4, period_s=0.25, policy="static", drain_timeout_s=3.0)
    assert [s.name for s in top.sources()] == ["files"]


def test_defaults_and_name_from_file_stem() -> None:
    top = load_topology(GOOD / "minimal.yaml", env={})
    assert top.name == "minimal"
    assert top.controller == ControllerSpec()
    assert top.controller.cores is None
    work = top.stages["work"]
    assert work.params == {} and isinstance(work.params, dict)
    assert work.queue.capacity == DEFAULT_CAPACITY_EVENTS == 16384 and work.queue.on_full == "block"
    assert isinstance(top.stages["src"].to, tuple)


def test_parse_topology_labels_and_defaults() -> None:
    top = parse(MINIMAL)
    assert top.name == "t"
    assert top.path is None
    assert top.base_dir == GOOD.resolve()


def test_workers_mapping_defaults() -> None:
    top = parse(MINIMAL.replace("    to: out\n", "    workers: {min: 3}\n    to: out\n"))
    assert top.stages["work"].workers == WorkersSpec(3, 3)
    top = parse(MINIMAL.replace("    to: out\n", "    workers: {max: 5}\n    to: out\n"))
    assert top.stages["work"].workers == WorkersSpec(1, 5)
    top = parse(MINIMAL.replace("    to: out\n", "    workers: 6\n    to: out\n"))
    assert top.stages["work"].workers == WorkersSpec(6, 6)
    top = parse(MINIMAL.replace("    to: out\n", "    workers: {min: 2, max: auto}\n    to: out\n"))
    assert top.stages["work"].workers == WorkersSpec(2, None)


def test_fan_out_and_keyed_edges() -> None:
    top = parse("""\
        stages:
          src:
            source: goodstages:list_files
            to: [a, {stage: count, key: user}]
          a:
            handler: goodstages:explode
            to: {stage: count, key: user}
          count:
            handler: goodstages:Counter
            params: {field: user}
            workers: 3
            to: out
          out:
            sink: goodstages:write_files
        """)
    assert top.stages["src"].to == (Edge("a"), Edge("count", "user"))
    assert top.stages["a"].to == (Edge("count", "user"),)
    assert top.route_key("count") == "user"
    assert top.upstream("count") == ["src", "a"]


def test_controller_settings() -> None:
    top = parse(MINIMAL + "controller: {cores: auto, period_s: 2, policy: adaptive}\n")
    assert top.controller == ControllerSpec(cores=None, period_s=2.0, policy="adaptive")
    assert isinstance(top.controller.period_s, float)
    top = parse(MINIMAL + "controller:\n  cores: 3\n  drain_timeout_s: 0.5\n")
    assert top.controller.cores == 3 and top.controller.drain_timeout_s == 0.5


def test_ray_executor_settings() -> None:
    top = parse(MINIMAL + "controller: {executor: ray, address: '10.0.0.5:6379', host: 0.0.0.0, advertise: 10.0.0.7}\n")
    c = top.controller
    assert (c.executor, c.address, c.host, c.advertise, c.curve) == (
        "ray",
        "10.0.0.5:6379",
        "0.0.0.0",
        "10.0.0.7",
        True,
    )
    assert c.transport == "ipc"  # as written; the controller uses tcp for a remote executor
    assert parse(MINIMAL).controller.executor == "local"
    with pytest.raises(TopologyError, match="requires CURVE"):
        parse(MINIMAL + "controller: {executor: ray, host: 0.0.0.0, curve: false}\n")


def test_null_optional_fields_mean_default() -> None:
    top = parse(MINIMAL.replace("    to: out\n", "    params:\n    workers:\n    to: out\n") + "controller:\n")
    assert top.stages["work"].params == {}
    assert top.stages["work"].workers == WorkersSpec(1, None)
    assert top.controller == ControllerSpec()


def test_merge_keys_and_anchors() -> None:
    top = parse("""\
        stages:
          src:
            source: goodstages:list_files
            to: [a, b]
          a: &common
            handler: goodstages:resize
            params: {size: 8}
            workers: 2
            to: out
          b:
            <<: *common
            params: {size: 16}
          out:
            sink: json:dumps
        """)
    assert top.stages["b"].params == {"size": 16}
    assert top.stages["b"].workers == WorkersSpec(2, 2)
    assert top.stages["b"].to == (Edge("out"),)


# -- env substitution --------------------------------------------------------------------


def test_env_substitution_everywhere() -> None:
    top = parse(
        """\
        name: ${NAME}
        description: "cost: $$${PRICE:-3} for ${WHO:-nobody}"
        stages:
          src:
            source: goodstages:list_files
            params:
              root: ${ROOT}/in/${SUB:-x}
              pattern: "${N:-4}"
            to: work
          work:
            handler: goodstages:resize
            params: {size: "${SIZE}"}
            workers: ${W:-2}
            queue:
              capacity: ${CAP:-9}
            to: out
          out:
            sink: json:dumps
        controller: {cores: "${CORES:-auto}"}
        """,
        env={"NAME": "pipe", "ROOT": "/data", "SUB": "", "SIZE": "12", "W": "5"},
    )
    assert top.name == "pipe"
    src, work, _ = top.stages.values()
    assert src.params == {"root": "/data/in/x", "pattern": "4"}  # quoted stays a string
    assert work.params == {"size": "12"}
    assert work.workers == WorkersSpec(5, 5)  # a plain scalar is re-typed after substitution
    assert work.queue.capacity == 9
    assert top.controller.cores is None


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEDAMP_TEST_SIZE", "77")
    text = MINIMAL.replace("    to: out\n", "    params:\n      size: ${SEDAMP_TEST_SIZE}\n    to: out\n")
    top = parse_topology(text, file="t.yaml", base_dir=GOOD)
    assert top.stages["work"].params == {"size": 77}


def test_topology_dir_is_builtin_and_not_overridable(tmp_path: Path) -> None:
    f = tmp_path / "sub" / "p.yaml"
    f.parent.mkdir()
    f.write_text(
        MINIMAL.replace("    to: work\n", "    params:\n      root: ${TOPOLOGY_DIR}/x\n    to: work\n")
        .replace("goodstages:list_files", "json:dumps")
        .replace("goodstages:resize", "json:dumps")
    )
    top = load_topology(f, env={"TOPOLOGY_DIR": "/elsewhere"}, check_handlers=False)
    assert top.stages["src"].params == {"root": f"{f.parent.resolve()}/x"}
    assert top.base_dir == f.parent.resolve()


def test_missing_variables_are_all_reported() -> None:
    found = problems("""\
        description: ${A} and ${B}
        stages:
          src:
            source: goodstages:list_files
            params: {root: "${C}"}
            to: out
          out:
            sink: json:dumps
        """)
    assert [(p.line, p.field) for p in found] == [(1, "description"), (5, "stages.src.params.root")]
    assert "'A', 'B'" in found[0].message and "'C'" in found[1].message
    assert found[1].hint is not None and "${C:-" in found[1].hint


# -- overrides -----------------------------------------------------------------------------


def test_overrides_are_applied_before_validation() -> None:
    top = parse(
        MINIMAL,
        overrides=[
            "work.workers=4",
            "work.params.size=128",
            "work.queue.capacity=64",
            "controller.cores=2",
            "name=renamed",
            "description=a b c",
            "src.params={root: /r, pattern: '*.png'}",
            "stages.out.workers={min: 1, max: 1}",
        ],
    )
    assert top.name == "renamed"
    assert top.stages["work"].workers == WorkersSpec(4, 4)
    assert top.stages["work"].params == {"size": 128}
    assert top.stages["work"].queue.capacity == 64
    assert top.controller.cores == 2
    assert top.stages["src"].params == {"root": "/r", "pattern": "*.png"}


def test_override_values_see_env() -> None:
    top = parse(MINIMAL, overrides=["work.params.size=${S:-3}"], env={})
    assert top.stages["work"].params == {"size": 3}


@pytest.mark.parametrize(
    ("override", "field", "fragment"),
    [
        ("work.workers", "work.workers", "expected PATH=VALUE"),
        ("=4", "=4", "expected PATH=VALUE"),
        ("wrk.workers=4", "wrk.workers", "unknown stage 'wrk' (did you mean 'work'?)"),
        ("work..workers=4", "work..workers", "expected PATH=VALUE"),
        ("work.workers={min: 1", "work.workers", "cannot parse the value"),
        ("work.workers.max=3", "work.workers.max", None),  # fine: creates the mapping
    ],
)
def test_malformed_overrides(override: str, field: str, fragment: str | None) -> None:
    if fragment is None:
        assert parse(MINIMAL, overrides=[override]).stages["work"].workers == WorkersSpec(1, 3)
        return
    [problem] = problems(MINIMAL, overrides=[override])
    assert (problem.file, problem.line, problem.field) == ("--set", None, field)
    assert fragment in str(problem)


def test_problems_in_overridden_values_point_at_set() -> None:
    found = problems(MINIMAL, overrides=["work.workers={min: 3, max: 2}", "work.wrokers=1", "controller.cores=0"])
    assert {(p.file, p.line) for p in found} == {("--set", None)}
    assert sorted(p.field for p in found) == ["controller.cores", "stages.work.workers.max", "stages.work.wrokers"]
    assert any("must be >= min (3), got 2" in p.message for p in found)


def test_override_into_a_non_mapping() -> None:
    found = problems(
        MINIMAL.replace("    to: out\n", "    workers: 2\n    to: out\n"), overrides=["work.workers.max=3"]
    )
    assert [(p.file, p.field) for p in found] == [("--set", "work.workers.max")]
    assert "not a mapping" in found[0].message


# -- several problems at once ------------------------------------------------------------


def test_every_problem_is_reported_in_file_order() -> None:
    found = problems("""\
        stages:
          src:
            source: goodstages:list_files
            workers: 2
            to: work
          work:
            handler: goodstages:resize
            workers: {min: 4, max: 2}
            batch: 1.5
            queue: {capacity: 0, on_full: later}
            to: [out, nowhere]
          out:
            sink: json:dumps
        controller: {cores: true, period_s: -1, policy: fast}
        """)
    assert [(p.line, p.field) for p in found] == [
        (4, "stages.src.workers"),
        (8, "stages.work.workers.max"),
        (9, "stages.work.batch"),
        (10, "stages.work.queue.capacity"),
        (10, "stages.work.queue.on_full"),
        (11, "stages.work.to[1]"),
        (14, "controller.cores"),
        (14, "controller.period_s"),
        (14, "controller.policy"),
    ]
    assert all(p.file == "t.yaml" and p.hint for p in found)


def test_handler_checks_can_be_skipped() -> None:
    text = MINIMAL.replace("goodstages:resize", "no_such_module_xyz:f")
    assert problems(text)[0].field == "stages.work.handler"
    top = parse(text, check_handlers=False)
    assert top.stages["work"].ref == "no_such_module_xyz:f"


def test_refs_are_not_checked_on_broken_stages() -> None:
    found = problems(
        MINIMAL.replace("goodstages:resize", "no_such_module_xyz:f").replace(
            "    to: out\n", "    workers: many\n    to: out\n"
        )
    )
    assert [p.field for p in found] == ["stages.work.workers"]


def test_unknown_target_does_not_also_make_its_match_unreachable() -> None:
    found = problems(MINIMAL.replace("    to: work\n", "    to: wrk\n"))
    assert len(found) == 1 and "did you mean 'work'" in str(found[0])


def test_python_tags_are_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    tag = f'!!python/object/apply:os.system ["touch {marker}"]'
    text = MINIMAL.replace("    to: work\n", f"    params: {{x: {tag}}}\n    to: work\n")
    found = problems(text)
    assert "unsupported YAML tag" in found[0].message
    assert not marker.exists()


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError) as info:
        load_topology(tmp_path / "missing.yaml")
    [problem] = info.value.problems
    assert problem.line is None and "cannot read" in problem.message


def test_error_text_lists_every_problem() -> None:
    with pytest.raises(TopologyError) as info:
        parse(MINIMAL + "controller: {cores: 0, policy: x}\n")
    assert str(info.value).splitlines() == [str(p) for p in info.value.problems]
    assert str(info.value).startswith("t.yaml:10: controller.cores: must be >= 1, got 0 (")


# -- the corpus of malformed files -------------------------------------------------------


def test_bad_corpus_is_large_enough() -> None:
    assert len(BAD_FILES) >= 35


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.name for p in BAD_FILES])
def test_bad_topology(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    m = EXPECT.fullmatch(first)
    assert m, f"{path.name}: the first line must be '# expect: LINE: FRAGMENT'"
    line, fragment = int(m.group(1)), m.group(2)
    with pytest.raises(TopologyError) as info:
        load_topology(path, env={})
    found = info.value.problems
    assert len(found) == 1, "\n".join(str(p) for p in found)
    text = str(found[0])
    assert text.startswith(f"{path}:{line}:"), text
    assert fragment in text, text
    assert found[0].hint, text


# -- diagrams ------------------------------------------------------------------------------


KEYED = """\
stages:
  src:
    source: goodstages:list_files
    to: [work, {stage: count, key: user}]
  work:
    handler: goodstages:resize
    workers: {min: 2, max: 6}
    to: out
  count:
    handler: goodstages:Counter
    workers: 4
    to: out
  out:
    sink: json:dumps
"""


def test_to_mermaid() -> None:
    text = to_mermaid(parse(KEYED))
    assert text.startswith("flowchart LR\n")
    assert 's0(["src<br/>source: goodstages:list_files<br/>workers: 1"])' in text
    assert 's1["work<br/>handler: goodstages:resize<br/>workers: 2..6"]' in text
    assert "workers: 4" in text
    assert 's3[("out<br/>sink: json:dumps<br/>workers: 1")]' in text
    assert "s0 --> s1" in text
    assert 's0 -->|"key: user"| s2' in text
    assert "s1 --> s3" in text and "s2 --> s3" in text


def test_to_dot() -> None:
    text = to_dot(parse(KEYED))
    assert text.startswith('digraph "t" {')
    assert text.rstrip().endswith("}")
    assert '"src" [shape=invhouse' in text
    assert '"work" [shape=box, label="work\\nhandler: goodstages:resize\\nworkers: 2..6"]' in text
    assert '"out" [shape=cylinder' in text
    assert '"src" -> "work";' in text
    assert '"src" -> "count" [label="key: user"];' in text
    assert '"count" -> "out";' in text


def test_diagram_of_unbounded_handler() -> None:
    top = parse(MINIMAL)
    assert "workers: 1..auto" in to_mermaid(top)
    assert "workers: 1..auto" in to_dot(top)


def test_defaults_may_use_variables() -> None:
    from sedamp.spec import expand_vars

    env = {"TOPOLOGY_DIR": "/t", "B": "b"}
    assert expand_vars("${INPUT:-${TOPOLOGY_DIR}/input.txt}", env) == "/t/input.txt"
    assert expand_vars("${INPUT:-${B:-x}-${C:-c}}!", env) == "b-c!"
    assert expand_vars("${INPUT:-${TOPOLOGY_DIR}/in}", {**env, "INPUT": "/given"}) == "/given"


MINIMAL_STAGES = (GOOD / "minimal.yaml").read_text()


@pytest.mark.parametrize(
    "name",
    ["/tmp/victim", "..", ".", "a/b", "../w", "-rf", "x" * 101, "nul\0byte", "${NM}"],
)
def test_a_topology_name_that_is_not_a_plain_file_name_is_refused(tmp_path: Path, name: str) -> None:
    """The name becomes <workdir>/journal/NAME, which a run empties: '/tmp/victim' or '..'
    once removed a directory outside the run's own (directly, or through ${VAR})."""
    text = f"name: {json.dumps(name)}\n" + MINIMAL_STAGES
    with pytest.raises(TopologyError) as err:
        parse_topology(text, file="t.yaml", base_dir=GOOD, env={"NM": "/tmp/victim"})
    (problem,) = err.value.problems
    assert problem.field == "name" and problem.line == 1
    assert "cannot name the run's directories" in problem.message


def test_a_file_name_that_cannot_be_a_topology_name_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "..yaml"  # its stem is '.'
    f.write_text(MINIMAL_STAGES)
    with pytest.raises(TopologyError) as err:
        load_topology(f, env={})
    assert "the file name gives the topology name '.'" in str(err.value)
    assert "add name:" in str(err.value)


@pytest.mark.parametrize("name", ["wordcount", "http-service", "v1.2_final", "x" * 100, "3d"])
def test_plain_names_are_kept(name: str) -> None:
    top = parse_topology(f"name: {name}\n" + MINIMAL_STAGES, file="t.yaml", base_dir=GOOD, env={})
    assert top.name == name


def test_the_journal_never_names_a_directory_outside_its_own() -> None:
    from sedamp.runtime.journal import journal_dir

    assert journal_dir(Path("w"), "ok-name") == Path("w/journal/ok-name")
    for bad in ("..", ".", "/etc", "a/b", ""):
        with pytest.raises(ValueError):
            journal_dir(Path("w"), bad)


def _alias_bomb() -> str:
    rows = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    rows += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "name: bomb\nstages:\n  s:\n    source: m:s\n    params:\n      " + "\n      ".join(rows) + "\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (_alias_bomb(), "more than 200,000 values once its aliases are expanded"),  # ~9^9 values in 700 bytes
        ("stages: " + "[" * 5000 + "]" * 5000 + "\n", "the nesting is too deep to read"),
        ("# " + "x" * (300 * 1024) + "\nstages: {}\n", "may hold at most 262,144"),
        (
            "stages:\n" + "".join(f"  h{i}: {{handler: m:h, to: h{i + 1}}}\n" for i in range(501)),
            "501 stages; a topology may have at most 500",
        ),
    ],
    ids=["alias-bomb", "deep", "huge", "too-many-stages"],
)
def test_a_file_past_the_loader_limits_is_one_clear_problem(text: str, fragment: str) -> None:
    """Before, a 700-byte alias bomb took gigabytes, deep nesting and long chains a
    RecursionError traceback, a 5 MB file most of a minute."""
    with pytest.raises(TopologyError) as err:
        parse_topology(text, file="t.yaml", base_dir=GOOD, env={})
    assert len(err.value.problems) == 1 and fragment in str(err.value)


def test_paths_are_counted_from_every_source_up_to_two() -> None:
    from sedamp.spec.model import count_paths

    edges = {"s": ["a", "b"], "a": ["j"], "b": ["j"], "j": ["k"], "k": [], "t": ["k"]}
    assert count_paths(edges, ["s"]) == {"s": 1, "a": 1, "b": 1, "j": 2, "k": 2}
    assert count_paths({"s": ["a"], "a": ["z"], "z": []}, ["s"]) == {"s": 1, "a": 1, "z": 1}
    assert count_paths(edges, ["s", "t"])["k"] == 2


def test_resume_refuses_a_sink_reached_along_two_paths() -> None:
    from sedamp.runtime.journal import resume_problem

    text = """
stages:
  src: {source: stages.burn:Seeds, params: {count: 3}, to: [a, b]}
  a: {handler: stages.burn:tiny, to: out}
  b: {handler: stages.burn:tiny, to: out}
  out: {sink: stages.files:WriteFiles, params: {out: /tmp/x}}
"""
    top = parse_topology(text, file="t.yaml", base_dir=GOOD, env={})
    problem = resume_problem(top)
    assert problem is not None and "'out' is reached along more than one path" in problem
    line_of_b = "  b: {handler: stages.burn:tiny, to: out}\n"
    single = parse_topology(text.replace("to: [a, b]", "to: a").replace(line_of_b, ""), file="t.yaml", base_dir=GOOD, env={})
    assert resume_problem(single) is None

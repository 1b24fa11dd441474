"""Topology YAML -> validated, frozen spec objects. Pure: starts no process.

SPEC SECTION (the dataclasses below are the contract the runtime uses; loading and
validation are implemented further down).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sedamp.errors import Problem, TopologyError
from sedamp.runtime import security, wire
from sedamp.runtime import stage as stage_mod
from sedamp.spec import yamlmap

__all__ = [
    "DEFAULT_CAPACITY_EVENTS",
    "ControllerSpec",
    "Edge",
    "QueueSpec",
    "StageSpec",
    "Topology",
    "WorkersSpec",
    "build_topology",
    "expand_vars",
    "load_topology",
    "parse_topology",
    "to_dot",
    "to_mermaid",
]

StageKind = Literal["source", "handler", "sink"]
OnFull = Literal["block", "reject", "drop"]
PolicyName = Literal["adaptive", "static"]
OnErrorThen = Literal["dead_letter", "skip", "fail"]
Transport = Literal["ipc", "tcp"]
ExecutorName = Literal["local", "ray"]
EXECUTOR_CHOICES = ("local", "ray")

# Default bound of a stage queue, in events. Large enough to keep every worker of a
# cheap stage busy across a scheduling hiccup, small enough that a slow stage holds
# little memory: 1024 events of a few KiB each is a few MiB per stage.
DEFAULT_CAPACITY_EVENTS = 1024


@dataclass(frozen=True)
class WorkersSpec:
    """Pool size bounds. A fixed integer N in YAML gives min == max == N."""

    min: int = 1
    max: int | None = 1  # None = as many as the controller's core budget allows

    @property
    def fixed(self) -> bool:
        return self.min == self.max


@dataclass(frozen=True)
class QueueSpec:
    capacity: int = DEFAULT_CAPACITY_EVENTS
    on_full: OnFull = "block"


@dataclass(frozen=True)
class OnErrorSpec:
    """What a worker does when the handler raises on an event (or the event killed a
    worker twice): try again up to `retry` times, `backoff_s` apart (doubling), then
    dead-letter it, skip it (counted), or fail the run."""

    retry: int = 0
    backoff_s: float = 0.0
    then: OnErrorThen = "dead_letter"


@dataclass(frozen=True)
class Edge:
    """An edge to `stage`; with `key`, events are routed by `event[key]` so that equal
    keys always reach the same worker of that stage."""

    stage: str
    key: str | None = None
    # with `when`, only events whose fields equal all of these go along this edge
    when: tuple[tuple[str, Any], ...] | None = None


@dataclass(frozen=True, eq=False)
class StageSpec:
    name: str
    kind: StageKind
    ref: str  # "module:attribute"
    params: Mapping[str, Any] = field(default_factory=dict)
    workers: WorkersSpec = WorkersSpec()
    queue: QueueSpec = QueueSpec()
    batch: int | None = None  # fixed events per batch; None = adaptive
    batch_bounds: tuple[int, int] | None = None  # floor and ceiling of the adaptive batch
    to: tuple[Edge, ...] = ()
    line: int | None = None  # line of the stage's key in the topology file
    ref_line: int | None = None  # line of its source:/handler:/sink: value
    group: str | None = None  # consecutive stages of one group share one process pool
    on_error: OnErrorSpec = OnErrorSpec()
    timeout_s: float | None = None  # a handler call running longer gets its worker killed
    max_events: int | None = None  # a worker that handled this many is replaced
    max_rss_mb: int | None = None  # a worker whose memory grew past this is replaced
    dedupe: bool = False  # sinks: handle each event id once, even when redelivered
    max_event_bytes: int | None = None  # outputs larger than this are dead-lettered


@dataclass(frozen=True)
class ControllerSpec:
    cores: int | None = None  # None = "auto": the number of usable cores
    period_s: float = 0.5
    policy: PolicyName = "adaptive"
    drain_timeout_s: float = 10.0  # how long Ctrl-C/SIGTERM lets in-flight work finish
    transport: Transport = "ipc"  # ipc:// in the private run directory, or tcp://
    host: str = "127.0.0.1"  # tcp: the address sockets bind to
    advertise: str | None = None  # tcp: the address peers connect to (default: host)
    curve: bool = True  # tcp: CURVE encryption and authentication (required off loopback)
    keys: str | None = None  # tcp: a directory made by `sedamp keys` (default: fresh keys per run)
    executor: ExecutorName = "local"  # where workers run: local processes, or Ray actors (implies tcp)
    address: str | None = None  # ray: the cluster's address (default: RAY_ADDRESS, else the local cluster)


@dataclass(frozen=True, eq=False)
class Topology:
    name: str
    stages: Mapping[str, StageSpec]  # in file order
    controller: ControllerSpec = ControllerSpec()
    path: Path | None = None  # the YAML file, if loaded from one
    base_dir: Path = Path(".")  # directory added to sys.path for user modules

    def upstream(self, name: str) -> list[str]:
        """Names of the stages with an edge to `name`, in file order."""
        return [s.name for s in self.stages.values() if any(e.stage == name for e in s.to)]

    def route_key(self, name: str) -> str | None:
        """The key `name` is routed by (all edges into a stage agree), or None."""
        for s in self.stages.values():
            for e in s.to:
                if e.stage == name and e.key is not None:
                    return e.key
        return None

    def sources(self) -> list[StageSpec]:
        return [s for s in self.stages.values() if s.kind == "source"]

    def chain_of(self, name: str) -> list[StageSpec]:
        """The stages a worker of `name` runs, in order: its group (validated to be a
        chain starting at `name`), or just `name`."""
        head = self.stages[name]
        if head.group is None:
            return [head]
        return [s for s in self.stages.values() if s.group == head.group]

    def head_of(self, name: str) -> str:
        """The first stage of `name`'s group (whose queue and pool serve the group)."""
        s = self.stages[name]
        if s.group is None:
            return name
        return next(x.name for x in self.stages.values() if x.group == s.group)

    def is_member(self, name: str) -> bool:
        """True for a grouped stage other than the first: it has no queue or pool."""
        return self.head_of(name) != name


# ---------------------------------------------------------------------------------------
# Loading and validation
#
# The YAML is parsed by sedamp.spec.yamlmap into plain values plus line numbers, ${VAR}s are
# expanded while parsing (a plain scalar that held ${...} is re-typed, so `workers: ${N}`
# gives an int; a quoted one stays a string), --set overrides are applied to that tree,
# then _Checker walks it once, collecting every problem. A value whose expansion failed
# is "poisoned": later checks of it stay quiet so one mistake gives one problem. Null
# optional fields mean "not given". Problems inside an overridden value are reported with
# file "--set" and no line.
# ---------------------------------------------------------------------------------------

TOP_KEYS = ("name", "description", "stages", "controller")
STAGE_KEYS = (
    "source", "handler", "sink", "params", "workers", "queue", "batch", "to", "group", "description",
    "on_error", "timeout_s", "max_events", "max_rss_mb", "dedupe", "max_event_bytes",
)  # fmt: skip
ON_ERROR_KEYS = ("retry", "backoff_s", "then")
ON_ERROR_THEN: tuple[OnErrorThen, ...] = ("dead_letter", "skip", "fail")
# set on a group's first stage only: they act on the worker process the group shares
POOL_KEYS = ("workers", "queue", "batch", "timeout_s", "max_events", "max_rss_mb")
KINDS: tuple[StageKind, ...] = ("source", "handler", "sink")
QUEUE_KEYS = ("capacity", "on_full")
WORKERS_KEYS = ("min", "max")
CONTROLLER_KEYS = (
    "cores",
    "period_s",
    "policy",
    "drain_timeout_s",
    "transport",
    "host",
    "advertise",
    "curve",
    "keys",
    "executor",
    "address",
)
TCP_KEYS = ("host", "advertise", "curve", "keys")
EDGE_KEYS = ("stage", "key", "when")
ON_FULL_CHOICES: tuple[OnFull, ...] = ("block", "reject", "drop")
POLICY_CHOICES: tuple[PolicyName, ...] = ("adaptive", "static")
MAX_BATCH = 65536
OVERRIDE_FILE = "--set"  # the `file` of problems caused by a command-line override
BUILTIN_VARS = ("TOPOLOGY_DIR",)

_STAGE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_REF = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*\Z")
_VAR_NAME = re.compile(rf"{_IDENT}\Z")


def load_topology(
    path: str | Path,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    check_handlers: bool = True,
) -> Topology:
    """Read, validate and freeze the topology in `path`.

    `overrides` are ``--set`` strings (``resize.workers=4``), applied before validation.
    `env` (default `os.environ`) provides the ``${VAR}`` values. With `check_handlers`,
    every ``module:attribute`` is imported and checked against its params.

    Raises `TopologyError` listing every problem found."""
    label = str(path)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise TopologyError(
            [Problem(label, None, "", f"cannot read the topology file: {reason}", "check the path")]
        ) from None
    except UnicodeDecodeError as exc:
        raise TopologyError(
            [Problem(label, None, "", f"the file is not UTF-8 text: {exc.reason}", "save it as UTF-8")]
        ) from None
    top = parse_topology(
        text, file=label, base_dir=p.resolve().parent, overrides=overrides, env=env, check_handlers=check_handlers
    )
    return dataclasses.replace(top, path=p)


def parse_topology(
    text: str,
    *,
    file: str,
    base_dir: Path,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    check_handlers: bool = True,
) -> Topology:
    """Validate topology YAML `text`; `file` labels problems, `base_dir` is the directory
    user modules are imported from and the value of ``${TOPOLOGY_DIR}``.

    Raises `TopologyError` listing every problem found, in file order."""
    base_dir = Path(base_dir).resolve()
    substitute = _substituter(base_dir, env)
    checker = _Checker(file)
    try:
        loaded = yamlmap.load(text, substitute)
    except yamlmap.YamlSyntaxError as exc:
        checker.problems.append(Problem(file, exc.line, "", exc.message, exc.hint))
        raise TopologyError(checker.problems) from None
    checker.lines = loaded.lines
    for issue in loaded.issues:
        checker.issue(issue)
    return _check_tree(checker, loaded.value, base_dir, overrides, substitute, check_handlers)


def build_topology(
    tree: Mapping[str, Any],
    *,
    file: str,
    base_dir: Path,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    check_handlers: bool = True,
) -> Topology:
    """Validate a topology given as the plain values its YAML would hold (``name``,
    ``stages``, ``controller``, ...): the entry point for topologies built in code, with
    the same rules and messages as a file. `file` labels the problems, which have no
    line; `base_dir` is as for `parse_topology`. ``${VAR}`` is expanded in `overrides`
    only: values given in code are taken as they are.

    Raises `TopologyError` listing every problem found."""
    base_dir = Path(base_dir).resolve()
    tree_copy = copy.deepcopy(dict(tree))  # overrides are applied in place
    return _check_tree(_Checker(file), tree_copy, base_dir, overrides, _substituter(base_dir, env), check_handlers)


def _substituter(base_dir: Path, env: Mapping[str, str] | None) -> Callable[[str], str]:
    """``${VAR}`` expansion from `env` (default `os.environ`) plus ``${TOPOLOGY_DIR}``."""
    variables = dict(os.environ if env is None else env)
    variables["TOPOLOGY_DIR"] = str(base_dir)

    def substitute(value: str) -> str:
        return expand_vars(value, variables)

    return substitute


def _check_tree(
    checker: _Checker,
    tree: Any,
    base_dir: Path,
    overrides: Sequence[str],
    substitute: Callable[[str], str],
    check_handlers: bool,
) -> Topology:
    """Apply `overrides` to the parsed `tree`, then validate it into a `Topology`."""
    if isinstance(tree, dict):
        _apply_overrides(tree, overrides, substitute, checker)
    top = checker.topology(tree, default_name=Path(checker.file).stem, base_dir=base_dir, check_handlers=check_handlers)
    if checker.problems or top is None:
        raise TopologyError(checker.sorted_problems())
    return top


def expand_vars(value: str, env: Mapping[str, str]) -> str:
    """Expand ``${VAR}``, ``${VAR:-default}`` (used when VAR is unset or empty) and ``$$``
    (a literal ``$``) in `value`. Any other ``$`` is kept as is.

    Raises `sedamp.yamlmap.SubstitutionError` naming every variable that is missing."""
    out: list[str] = []
    missing: list[str] = []
    i = 0
    while True:
        j = value.find("$", i)
        if j < 0:
            out.append(value[i:])
            break
        out.append(value[i:j])
        if value.startswith("$$", j):
            out.append("$")
            i = j + 2
        elif value.startswith("${", j):
            k = _closing_brace(value, j + 2)
            if k < 0:
                raise yamlmap.SubstitutionError(
                    f"unterminated '${{' in {value!r}", "close it with '}', or write $$ for a literal $"
                )
            body = value[j + 2 : k]
            name, sep, default = body.partition(":-")
            if not _VAR_NAME.match(name):
                raise yamlmap.SubstitutionError(
                    f"invalid variable reference '${{{body}}}' in {value!r}",
                    "write ${NAME} or ${NAME:-default}, or $$ for a literal $",
                )
            got = env.get(name)
            if got is None or (sep and got == ""):
                if sep:
                    got = expand_vars(default, env)  # a default may use variables too
                else:
                    missing.append(name)
                    got = ""
            out.append(got)
            i = k + 1
        else:
            out.append("$")
            i = j + 1
    if missing:
        names = ", ".join(repr(n) for n in dict.fromkeys(missing))
        verb = "is" if len(missing) == 1 else "are"
        plural = "" if len(missing) == 1 else "s"
        raise yamlmap.SubstitutionError(
            f"environment variable{plural} {names} {verb} not set",
            f"set {missing[0]} in the environment, or give a default: ${{{missing[0]}:-value}}",
        )
    return "".join(out)


def _closing_brace(value: str, start: int) -> int:
    """Index of the ``}`` closing a ``${`` whose body starts at `start` (nested
    ``${...}`` in a default are skipped), or -1."""
    depth = 0
    i = start
    while i < len(value):
        if value.startswith("${", i):
            depth += 1
            i += 2
            continue
        if value[i] == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return -1


def _apply_overrides(
    tree: dict[Any, Any],
    overrides: Sequence[str],
    substitute: Callable[[str], str],
    checker: _Checker,
) -> None:
    """Apply ``--set path=value`` strings to the parsed tree, in order."""
    for text in overrides:
        path_text, sep, value_text = text.partition("=")
        path_text = path_text.strip()
        segments = path_text.split(".")
        if not sep or not path_text or any(not s.strip() for s in segments):
            checker.add_raw(
                OVERRIDE_FILE,
                None,
                path_text or text,
                f"malformed override {text!r}: expected PATH=VALUE",
                "e.g. --set resize.workers=4 or --set decode.params.size=128",
            )
            continue
        segments = [s.strip() for s in segments]
        stages = tree.get("stages")
        stage_names = [str(k) for k in stages] if isinstance(stages, dict) else []
        first = segments[0]
        path: tuple[Any, ...]
        if first in ("name", "description", "controller"):
            path = tuple(segments)
        elif first in stage_names:
            path = ("stages", *segments)
        elif first == "stages" and len(segments) >= 2 and segments[1] in stage_names:
            path = tuple(segments)
        else:
            shown = segments[1] if first == "stages" and len(segments) >= 2 else first
            checker.add_raw(
                OVERRIDE_FILE,
                None,
                path_text,
                f"unknown stage {shown!r}",
                _did_you_mean(
                    shown,
                    stage_names + ["name", "description", "controller"],
                    "the first part of PATH is name, description, controller or a stage name",
                ),
            )
            continue
        if first in ("name", "description") and len(segments) > 1:
            checker.add_raw(OVERRIDE_FILE, None, path_text, f"{first} is a plain string", f"use --set {first}=VALUE")
            continue
        try:
            loaded = yamlmap.load(value_text, substitute)
        except yamlmap.YamlSyntaxError as exc:
            checker.add_raw(
                OVERRIDE_FILE,
                None,
                path_text,
                f"cannot parse the value {value_text!r}: {exc.message}",
                "quote the value, e.g. --set 'name=\"a: b\"'",
            )
            continue
        for issue in loaded.issues:
            checker.issue(dataclasses.replace(issue, path=path + issue.path, line=None), override=True)
        node: Any = tree
        ok = True
        for i, seg in enumerate(path[:-1]):
            child = node.get(seg)
            if child is None:
                child = {}
                node[seg] = child
            elif not isinstance(child, dict):
                checker.add_raw(
                    OVERRIDE_FILE,
                    None,
                    path_text,
                    f"cannot set {path_text}: {_field(path[: i + 1])} is {_describe(child)}, not a mapping",
                    f"set {_field(path[: i + 1])} as a whole instead",
                )
                ok = False
                break
            node = child
        if ok:
            node[path[-1]] = loaded.value
            checker.overridden.add(path)


@dataclass
class _Draft:
    """A stage as far as it could be parsed, with what the graph checks need."""

    name: str
    kind: StageKind | None
    ref: str
    params: dict[str, Any]
    workers: WorkersSpec
    workers_ok: bool
    queue: QueueSpec
    batch: int | None
    edges: list[tuple[Edge, tuple[Any, ...]]]  # each edge with the path of its stage name
    to_ok: bool
    line: int | None
    ref_line: int | None
    batch_bounds: tuple[int, int] | None = None
    group: str | None = None
    given: frozenset[str] = frozenset()  # the keys the stage set explicitly
    on_error: OnErrorSpec = OnErrorSpec()
    timeout_s: float | None = None
    max_events: int | None = None
    max_rss_mb: int | None = None
    dedupe: bool = False
    max_event_bytes: int | None = None


class _Checker:
    """Walks the parsed tree, collecting problems and building the spec objects."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines = yamlmap.LineMap()
        self.problems: list[Problem] = []
        self.overridden: set[tuple[Any, ...]] = set()
        self.poisoned: set[tuple[Any, ...]] = set()
        self.bad_stages: set[str] = set()

    # -- recording -------------------------------------------------------------------

    def _is_overridden(self, path: tuple[Any, ...]) -> bool:
        return any(path[:i] in self.overridden for i in range(1, len(path) + 1))

    def add(self, path: tuple[Any, ...], message: str, hint: str | None = None, line: int | None = None) -> None:
        """Record a problem at `path` (its line is looked up unless `line` is given)."""
        if len(path) >= 2 and path[0] == "stages":
            self.bad_stages.add(str(path[1]))
        if any(path[:i] in self.poisoned for i in range(len(path) + 1)):
            return  # the value is unusable because of a problem already reported
        if self._is_overridden(path):
            file, where = OVERRIDE_FILE, None
        else:
            file, where = self.file, (line if line is not None else self.lines.nearest(path))
        self.problems.append(Problem(file, where, _field(path), message, hint))

    def add_raw(self, file: str, line: int | None, field_: str, message: str, hint: str | None) -> None:
        self.problems.append(Problem(file, line, field_, message, hint))

    def issue(self, issue: yamlmap.YamlIssue, override: bool = False) -> None:
        """Record a problem the YAML walker found."""
        file = OVERRIDE_FILE if override else self.file
        self.problems.append(Problem(file, issue.line, _field(issue.path), issue.message, issue.hint))
        if issue.poisoned:
            self.poisoned.add(issue.path)
            if len(issue.path) >= 2 and issue.path[0] == "stages":
                self.bad_stages.add(str(issue.path[1]))

    def sorted_problems(self) -> list[Problem]:
        """File problems by line, then override problems in the order found."""

        def key(p: Problem) -> tuple[int, int]:
            return (0 if p.file == self.file else 1, p.line or 0)

        return sorted(self.problems, key=key)

    # -- typed field readers -----------------------------------------------------------

    def unknown_keys(self, path: tuple[Any, ...], mapping: dict[Any, Any], allowed: Sequence[str], what: str) -> None:
        for k in mapping:
            if k not in allowed:
                hint = _did_you_mean(str(k), allowed, f"allowed keys: {', '.join(allowed)}")
                self.add((*path, k), f"unknown key {k!r} in {what}", hint)

    def integer(
        self,
        path: tuple[Any, ...],
        value: Any,
        *,
        minimum: int = 1,
        maximum: int | None = None,
        hint: str | None = None,
    ) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(
                path,
                f"must be an integer, got {_describe(value)}",
                hint or f"e.g. {_field(path[-1:])}: {max(minimum, 1)}",
            )
            return None
        if value < minimum:
            self.add(path, f"must be >= {minimum}, got {value}", hint)
            return None
        if maximum is not None and value > maximum:
            self.add(path, f"must be <= {maximum}, got {value}", hint)
            return None
        return value

    def positive_float(self, path: tuple[Any, ...], value: Any, hint: str) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add(path, f"must be a number of seconds, got {_describe(value)}", hint)
            return None
        if not value > 0 or value != value or value == float("inf"):
            self.add(path, f"must be > 0, got {value}", hint)
            return None
        return float(value)

    def choice(self, path: tuple[Any, ...], value: Any, choices: Sequence[str]) -> str | None:
        if not isinstance(value, str) or value not in choices:
            shown = repr(value) if isinstance(value, str) else _describe(value)
            alts = " | ".join(choices)
            self.add(
                path,
                f"must be one of {alts}, got {shown}",
                _did_you_mean(str(value), choices, f"use one of {alts}")
                if isinstance(value, str)
                else f"use one of {alts}",
            )
            return None
        return value

    def string(self, path: tuple[Any, ...], value: Any, what: str) -> str | None:
        if not isinstance(value, str):
            self.add(path, f"must be {what}, got {_describe(value)}", "quote it")
            return None
        return value

    # -- the whole file ------------------------------------------------------------------

    def topology(self, tree: Any, *, default_name: str, base_dir: Path, check_handlers: bool) -> Topology | None:
        if tree is None:
            self.add_raw(
                self.file, 1, "", "the file is empty", "a topology is a mapping with at least a stages: section"
            )
            return None
        if not isinstance(tree, dict):
            self.add(
                (),
                f"the top level must be a mapping, got {_describe(tree)}",
                "start the file with name:, description: and stages:",
            )
            return None
        self.unknown_keys((), tree, TOP_KEYS, "the topology")
        name = default_name
        if tree.get("name") is not None:
            got = self.string(("name",), tree["name"], "a string")
            if got is not None and not got.strip():
                self.add(("name",), "must not be empty", "remove name: to use the file name")
            elif got is not None:
                name = got
        if tree.get("description") is not None:
            self.string(("description",), tree["description"], "a string")
        controller = self.controller(tree.get("controller"))
        stages_raw = tree.get("stages")
        drafts: dict[str, _Draft] = {}
        if stages_raw is None:
            where = ("stages",) if "stages" in tree else ()
            self.add(
                where,
                "no stages" if "stages" in tree else "no stages: section",
                "add stages: with at least a source and a sink",
            )
        elif not isinstance(stages_raw, dict):
            self.add(
                ("stages",),
                f"must be a mapping of stage names to stages, got {_describe(stages_raw)}",
                "write each stage as `name:` under stages:",
            )
        elif not stages_raw:
            self.add(("stages",), "no stages", "add at least a source and a sink")
        else:
            for key, raw in stages_raw.items():
                drafts[str(key)] = self.stage(key, raw)
            self.graph(drafts)
            if not self.problems:
                self.groups(drafts)
                self.dedupe(drafts)
            if check_handlers:
                self.handlers(drafts, base_dir)
        if self.problems:
            return None
        # a draft holds every field of its spec under the same name, except `kind` (None
        # until known) and `to` (edges with the paths the checks report them at)
        copied = [f.name for f in dataclasses.fields(StageSpec) if f.name not in ("kind", "to")]
        stages = {
            d.name: StageSpec(
                kind=d.kind or "handler",
                to=tuple(e for e, _ in d.edges),
                **{name: getattr(d, name) for name in copied},
            )
            for d in drafts.values()
        }
        return Topology(name=name, stages=stages, controller=controller, base_dir=base_dir)

    def groups(self, drafts: dict[str, _Draft]) -> None:
        """Stages sharing a group run in one process pool, calling each other directly:
        they must form a chain (each sends only to the next, unkeyed, and receives only
        from the previous), hold no source, and set workers/queue/batch only on the
        first stage, whose queue and pool serve the whole group."""
        by_group: dict[str, list[_Draft]] = {}
        for d in drafts.values():
            if d.group is not None:
                by_group.setdefault(d.group, []).append(d)
        for group, members in by_group.items():
            for i, d in enumerate(members):
                path: tuple[Any, ...] = ("stages", d.name)
                if d.kind == "source":
                    self.add(
                        (*path, "group"),
                        f"a source cannot join group {group!r}: it runs in its own process",
                        "remove group: from the source",
                    )
                    continue
                if i + 1 < len(members):
                    nxt = members[i + 1].name
                    e0 = d.edges[0][0] if d.edges else None
                    if len(d.edges) != 1 or e0 is None or e0.stage != nxt or e0.key is not None or e0.when:
                        self.add(
                            (*path, "to"),
                            f"stages of group {group!r} must form a chain: {d.name!r} must send only to "
                            f"{nxt!r}, the next stage of the group, without a key",
                            f"write to: {nxt}, or leave {d.name!r} out of the group",
                        )
                if i > 0:
                    prev = members[i - 1].name
                    senders = [x.name for x in drafts.values() if any(e.stage == d.name for e, _ in x.edges)]
                    if senders != [prev]:
                        self.add(
                            (*path, "group"),
                            f"{d.name!r} is inside group {group!r}, so only {prev!r} may send to it, "
                            f"but {', '.join(repr(x) for x in senders if x != prev) or 'nothing'} does",
                            "send to the group's first stage, or leave this stage out of the group",
                        )
                    for key in POOL_KEYS:
                        if key in d.given:
                            self.add(
                                (*path, key),
                                f"{d.name!r} is inside group {group!r}, whose pool is set on its first stage",
                                f"move {key}: to stage {members[0].name!r}",
                            )

    def dedupe(self, drafts: dict[str, _Draft]) -> None:
        """A sink that dedupes remembers the ids it handled in its worker, so every
        copy of an event must reach the same worker: one worker, or keyed edges."""
        for d in drafts.values():
            if not d.dedupe:
                continue
            pool = d
            if d.group is not None:
                pool = next(x for x in drafts.values() if x.group == d.group)
            if pool.max_events is not None or pool.max_rss_mb is not None:
                self.add(
                    ("stages", d.name, "dedupe"),
                    f"{d.name!r} dedupes in its worker, which max_events / max_rss_mb would replace, "
                    "forgetting what it had handled",
                    f"drop max_events and max_rss_mb from {pool.name!r}, or dedupe: false",
                )
                continue
            keyed = all(e.key is not None for x in drafts.values() for e, _ in x.edges if e.stage == pool.name)
            senders = [x for x in drafts.values() if any(e.stage == pool.name for e, _ in x.edges)]
            if pool.workers.max != 1 and not (senders and keyed):
                self.add(
                    ("stages", d.name, "dedupe"),
                    f"{d.name!r} dedupes in its worker, so its copies of an event must all reach one worker, "
                    f"but {pool.name!r} may run {_bounds(pool.workers)} workers on unkeyed edges",
                    f"give {pool.name!r} workers: 1, or route to it by a key (to: {{stage: {pool.name}, key: id}})",
                )

    def controller(self, raw: Any) -> ControllerSpec:
        path: tuple[Any, ...] = ("controller",)
        if raw is None:
            return ControllerSpec()
        if not isinstance(raw, dict):
            self.add(
                path, f"must be a mapping, got {_describe(raw)}", "e.g. controller: {cores: auto, policy: adaptive}"
            )
            return ControllerSpec()
        self.unknown_keys(path, raw, CONTROLLER_KEYS, "controller")
        default = ControllerSpec()
        cores: int | None = default.cores
        if raw.get("cores") is not None and raw["cores"] != "auto":
            cores = self.integer((*path, "cores"), raw["cores"], hint="use cores: auto or a number of cores >= 1")
        period = default.period_s
        if raw.get("period_s") is not None:
            period = self.positive_float((*path, "period_s"), raw["period_s"], "e.g. period_s: 0.5") or period
        policy: Any = default.policy
        if raw.get("policy") is not None:
            policy = self.choice((*path, "policy"), raw["policy"], POLICY_CHOICES) or policy
        drain = default.drain_timeout_s
        if raw.get("drain_timeout_s") is not None:
            drain = (
                self.positive_float((*path, "drain_timeout_s"), raw["drain_timeout_s"], "e.g. drain_timeout_s: 10")
                or drain
            )
        transport: Any = "ipc"
        if raw.get("transport") is not None:
            transport = self.choice((*path, "transport"), raw["transport"], ("ipc", "tcp")) or "ipc"
        executor: Any = "local"
        if raw.get("executor") is not None:
            executor = self.choice((*path, "executor"), raw["executor"], EXECUTOR_CHOICES) or "local"
        net: dict[str, Any] = {"executor": executor}
        if raw.get("address") is not None:
            if executor != "ray":
                self.add((*path, "address"), "address applies to executor: ray", "add executor: ray, or remove it")
            else:
                value = self.string((*path, "address"), raw["address"], "e.g. address: 10.0.0.5:6379")
                if value:
                    net["address"] = value
        tcp = transport == "tcp" or executor == "ray"  # Ray's workers reach the queues over tcp
        for key in TCP_KEYS:
            if raw.get(key) is None:
                continue
            if not tcp:
                self.add((*path, key), f"{key} applies to transport: tcp", "add transport: tcp, or remove it")
                continue
            if key == "curve":
                if not isinstance(raw[key], bool):
                    self.add((*path, key), f"must be true or false, got {_describe(raw[key])}", "e.g. curve: true")
                    continue
                net[key] = raw[key]
            else:
                value = self.string((*path, key), raw[key], "a string")
                if value:
                    net[key] = value
        if tcp and net.get("curve") is False:
            for key in ("host", "advertise"):
                host = net.get(key, "127.0.0.1")
                if not security.is_loopback(host):
                    self.add(
                        (*path, "curve"),
                        f"a non-loopback {key} ({host}) requires CURVE authentication",
                        "remove curve: false (keys are made for each run, or given with keys:)",
                    )
                    break
        return ControllerSpec(
            cores=cores, period_s=period, policy=policy, drain_timeout_s=drain, transport=transport, **net
        )

    # -- one stage -----------------------------------------------------------------------

    def stage(self, key: Any, raw: Any) -> _Draft:
        name = str(key)
        path: tuple[Any, ...] = ("stages", key)
        draft = _Draft(
            name=name,
            kind=None,
            ref="",
            params={},
            workers=WorkersSpec(1, None),
            workers_ok=False,
            queue=QueueSpec(),
            batch=None,
            edges=[],
            to_ok=False,
            line=self.lines.line(path),
            ref_line=None,
        )
        if not isinstance(key, str) or not _STAGE_NAME.match(key):
            self.add(
                path,
                f"invalid stage name {key!r}",
                "a stage name starts with a letter or _ and holds only letters, digits, _ and -",
            )
        if raw is None:
            self.add(path, f"stage {name!r} is empty", "give it one of source:, handler: or sink: (a module:function)")
            return draft
        if not isinstance(raw, dict):
            self.add(
                path,
                f"a stage must be a mapping, got {_describe(raw)}",
                f"e.g. {name}: {{handler: module:function, to: next_stage}}",
            )
            return draft
        self.unknown_keys(path, raw, STAGE_KEYS, f"stage {name!r}")
        draft.given = frozenset(k for k in raw if raw[k] is not None)
        if raw.get("group") is not None:
            g = raw["group"]
            if isinstance(g, str) and _STAGE_NAME.match(g):
                draft.group = g
            else:
                self.add(
                    (*path, "group"),
                    f"must be a group name, got {_describe(g)}",
                    "e.g. group: parse (the same name on consecutive stages)",
                )
        kinds = [k for k in KINDS if k in raw]
        if not kinds:
            self.add(
                path,
                "a stage needs one of source:, handler: or sink:",
                "add handler: module:function (or source:/sink:)",
            )
        elif len(kinds) > 1:
            self.add(
                (*path, kinds[1]),
                f"a stage has exactly one of source:/handler:/sink:, got {' and '.join(kinds)}",
                "split it into two stages joined by to:",
            )
        else:
            kind = kinds[0]
            draft.kind = kind
            kpath = (*path, kind)
            draft.ref_line = self.lines.value_line(kpath)
            ref = raw[kind]
            if not isinstance(ref, str):
                self.add(
                    kpath,
                    f"must be a 'module:attribute' string, got {_describe(ref)}",
                    f"e.g. {kind}: mymodule:my_function",
                )
            elif not _REF.match(ref.strip()):
                self.add(kpath, f"{ref!r} is not of the form module:attribute", f"e.g. {kind}: {_suggest_ref(ref)}")
            else:
                draft.ref = ref.strip()
        draft.params = self.params((*path, "params"), raw.get("params"))
        draft.workers, draft.workers_ok = self.workers((*path, "workers"), raw.get("workers"), draft.kind)
        draft.queue = self.queue((*path, "queue"), raw.get("queue"))
        if isinstance(raw.get("batch"), dict):
            bpath = (*path, "batch")
            braw = raw["batch"]
            self.unknown_keys(bpath, braw, ("min", "max"), "batch")
            hint = f"batch: {{min: 8, max: 128}} bounds the adaptive batch size, 1..{MAX_BATCH}"
            lo = self.integer((*bpath, "min"), braw.get("min", 1), minimum=1, maximum=MAX_BATCH, hint=hint)
            hi = self.integer((*bpath, "max"), braw.get("max", MAX_BATCH), minimum=1, maximum=MAX_BATCH, hint=hint)
            if lo is not None and hi is not None:
                if hi < lo:
                    self.add(
                        (*bpath, "max"), f"must be >= min ({lo}), got {hi}", f"e.g. batch: {{min: {lo}, max: {lo * 8}}}"
                    )
                else:
                    draft.batch_bounds = (lo, hi)
        elif raw.get("batch") is not None:
            draft.batch = self.integer(
                (*path, "batch"),
                raw["batch"],
                minimum=1,
                maximum=MAX_BATCH,
                hint=f"batch is events per batch (1..{MAX_BATCH}), or {{min, max}} to bound the adaptive size",
            )
        if raw.get("description") is not None:
            self.string((*path, "description"), raw["description"], "a string")
        draft.edges, draft.to_ok = self.edges((*path, "to"), raw.get("to"))
        self.reliability(path, raw, draft)
        return draft

    def reliability(self, path: tuple[Any, ...], raw: dict[Any, Any], draft: _Draft) -> None:
        """on_error, timeout_s, max_events, max_rss_mb, dedupe, max_event_bytes."""
        for key in ("on_error", "timeout_s", "max_events", "max_rss_mb") if draft.kind == "source" else ():
            if raw.get(key) is not None:
                self.add(
                    (*path, key),
                    f"{key} applies to handlers and sinks, not to source {draft.name!r}",
                    "a source that raises stops the run; move the work into a handler",
                )
        if raw.get("on_error") is not None and draft.kind != "source":
            draft.on_error = self.on_error((*path, "on_error"), raw["on_error"])
        if raw.get("timeout_s") is not None and draft.kind != "source":
            draft.timeout_s = self.positive_float(
                (*path, "timeout_s"), raw["timeout_s"], "timeout_s is the longest one handler call may run, e.g. 30"
            )
        if raw.get("max_events") is not None and draft.kind != "source":
            draft.max_events = self.integer(
                (*path, "max_events"), raw["max_events"], hint="a worker is replaced after this many events, e.g. 10000"
            )
        if raw.get("max_rss_mb") is not None and draft.kind != "source":
            draft.max_rss_mb = self.integer(
                (*path, "max_rss_mb"), raw["max_rss_mb"], hint="a worker is replaced past this memory (MiB), e.g. 1024"
            )
        if raw.get("max_event_bytes") is not None:
            draft.max_event_bytes = self.integer(
                (*path, "max_event_bytes"),
                raw["max_event_bytes"],
                maximum=wire.MAX_EVENT_BYTES,
                hint=f"the largest output event in bytes, at most {wire.MAX_EVENT_BYTES}",
            )
        if raw.get("dedupe") is not None:
            value = raw["dedupe"]
            if not isinstance(value, bool):
                self.add((*path, "dedupe"), f"must be true or false, got {_describe(value)}", "e.g. dedupe: true")
            elif value and draft.kind != "sink":
                self.add(
                    (*path, "dedupe"),
                    f"dedupe applies to sinks, and {draft.name!r} is a {draft.kind or 'stage'}",
                    "set dedupe: true on the sink that writes the outputs",
                )
            else:
                draft.dedupe = value

    def on_error(self, path: tuple[Any, ...], raw: Any) -> OnErrorSpec:
        hint = "e.g. on_error: {retry: 2, backoff_s: 0.5, then: dead_letter} (then: dead_letter | skip | fail)"
        if isinstance(raw, str):
            only: Any = self.choice(path, raw, ON_ERROR_THEN)
            return OnErrorSpec(then=only) if only else OnErrorSpec()
        if not isinstance(raw, dict):
            self.add(path, f"must be a mapping or one of {' | '.join(ON_ERROR_THEN)}, got {_describe(raw)}", hint)
            return OnErrorSpec()
        self.unknown_keys(path, raw, ON_ERROR_KEYS, "on_error")
        retry = 0
        if raw.get("retry") is not None:
            retry = self.integer((*path, "retry"), raw["retry"], minimum=0, maximum=100, hint=hint) or 0
        backoff = 0.0
        if raw.get("backoff_s") is not None:
            b = raw["backoff_s"]
            if isinstance(b, bool) or not isinstance(b, int | float) or not 0 <= b <= 3600:
                self.add((*path, "backoff_s"), f"must be a number of seconds in 0..3600, got {_describe(b)}", hint)
            else:
                backoff = float(b)
        then: Any = "dead_letter"
        if raw.get("then") is not None:
            then = self.choice((*path, "then"), raw["then"], ON_ERROR_THEN) or "dead_letter"
        return OnErrorSpec(retry=retry, backoff_s=backoff, then=then)

    def params(self, path: tuple[Any, ...], raw: Any) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.add(
                path,
                f"must be a mapping of keyword params, got {_describe(raw)}",
                "e.g. params: {size: 128, quality: 90}",
            )
            return {}
        out: dict[str, Any] = {}
        for k, v in raw.items():
            if not isinstance(k, str) or not k.isidentifier():
                self.add(
                    (*path, k),
                    f"param name {k!r} is not a valid keyword",
                    "param names are Python identifiers (letters, digits, _)",
                )
            else:
                out[k] = v
        return out

    def workers(self, path: tuple[Any, ...], raw: Any, kind: StageKind | None) -> tuple[WorkersSpec, bool]:
        if raw is None:
            return (WorkersSpec(1, None) if kind == "handler" else WorkersSpec(1, 1)), True
        spec: WorkersSpec | None = None
        if isinstance(raw, dict):
            self.unknown_keys(path, raw, WORKERS_KEYS, "workers")
            lo: int | None = 1
            if raw.get("min") is not None:
                lo = self.integer((*path, "min"), raw["min"], hint="e.g. min: 1")
            hi: int | None = lo
            unbounded = raw.get("max") == "auto"  # up to the controller's core budget
            if raw.get("max") is not None and not unbounded:
                hi = self.integer((*path, "max"), raw["max"], hint="e.g. max: 8, or max: auto")
            if unbounded:
                spec = WorkersSpec(lo, None) if lo is not None else None
            elif lo is not None and hi is not None:
                if hi < lo:
                    self.add(
                        (*path, "max"), f"must be >= min ({lo}), got {hi}", f"raise max to at least {lo}, or lower min"
                    )
                else:
                    spec = WorkersSpec(lo, hi)
        elif isinstance(raw, int) and not isinstance(raw, bool):
            n = self.integer(path, raw, hint="workers: N runs exactly N processes, N >= 1")
            if n is not None:
                spec = WorkersSpec(n, n)
        else:
            self.add(
                path,
                f"must be an integer N or a mapping {{min: N, max: M}}, got {_describe(raw)}",
                "e.g. workers: 4 or workers: {min: 1, max: 8}",
            )
        if spec is None:
            return WorkersSpec(1, None), False
        if kind == "source" and spec != WorkersSpec(1, 1):
            self.add(
                path,
                f"a source always runs in one process, got workers {_bounds(spec)}",
                "remove workers: from the source; put the work in a handler after it",
            )
            return WorkersSpec(1, 1), False
        return spec, True

    def queue(self, path: tuple[Any, ...], raw: Any) -> QueueSpec:
        if raw is None:
            return QueueSpec()
        if not isinstance(raw, dict):
            self.add(path, f"must be a mapping, got {_describe(raw)}", "e.g. queue: {capacity: 256, on_full: block}")
            return QueueSpec()
        self.unknown_keys(path, raw, QUEUE_KEYS, "queue")
        capacity = DEFAULT_CAPACITY_EVENTS
        if raw.get("capacity") is not None:
            capacity = (
                self.integer((*path, "capacity"), raw["capacity"], hint="capacity is the queue bound in events, >= 1")
                or capacity
            )
        on_full: Any = "block"
        if raw.get("on_full") is not None:
            on_full = self.choice((*path, "on_full"), raw["on_full"], ON_FULL_CHOICES) or "block"
        return QueueSpec(capacity=capacity, on_full=on_full)

    def edges(self, path: tuple[Any, ...], raw: Any) -> tuple[list[tuple[Edge, tuple[Any, ...]]], bool]:
        if raw is None:
            return [], True
        if isinstance(raw, str):
            return [(Edge(raw), path)], True
        if isinstance(raw, dict):
            edge = self.keyed_edge(path, raw)
            return ([edge] if edge else []), edge is not None
        if isinstance(raw, list):
            out: list[tuple[Edge, tuple[Any, ...]]] = []
            ok = True
            seen: set[str] = set()
            for i, item in enumerate(raw):
                ipath = (*path, i)
                got: tuple[Edge, tuple[Any, ...]] | None
                if isinstance(item, str):
                    got = (Edge(item), ipath)
                elif isinstance(item, dict):
                    got = self.keyed_edge(ipath, item)
                else:
                    self.add(
                        ipath,
                        f"must be a stage name or {{stage: NAME, key: FIELD}}, got {_describe(item)}",
                        "e.g. to: [resize, {stage: stats, key: user}]",
                    )
                    got = None
                if got is None:
                    ok = False
                elif got[0].stage in seen:
                    self.add(ipath, f"stage {got[0].stage!r} is listed twice", "list each next stage once")
                else:
                    seen.add(got[0].stage)
                    out.append(got)
            return out, ok
        self.add(
            path,
            f"must be a stage name, a list of stage names, or {{stage: NAME, key: FIELD}}, got {_describe(raw)}",
            "e.g. to: resize",
        )
        return [], False

    def keyed_edge(self, path: tuple[Any, ...], raw: dict[Any, Any]) -> tuple[Edge, tuple[Any, ...]] | None:
        self.unknown_keys(path, raw, EDGE_KEYS, "an edge")
        stage = raw.get("stage")
        if stage is None:
            self.add(path, "an edge mapping needs stage:", "e.g. {stage: count, key: user}")
            return None
        if not isinstance(stage, str):
            self.add(
                (*path, "stage"), f"must be a stage name, got {_describe(stage)}", "e.g. {stage: count, key: user}"
            )
            return None
        key = raw.get("key")
        if key is not None and (not isinstance(key, str) or not key):
            self.add(
                (*path, "key"),
                f"must be the name of an event field, got {_describe(key)}",
                "e.g. {stage: count, key: user}",
            )
            return None
        when = None
        if raw.get("when") is not None:
            w = raw["when"]
            hint = "e.g. {stage: thumbnail, when: {route: thumbnail}}: events whose route field is 'thumbnail'"
            if not isinstance(w, dict) or not w:
                self.add((*path, "when"), f"must be a mapping of event fields to values, got {_describe(w)}", hint)
                return None
            bad = [k for k, v in w.items() if not isinstance(k, str) or isinstance(v, dict | list)]
            if bad:
                self.add((*path, "when"), f"field {bad[0]!r}: compare a string field with a plain value", hint)
                return None
            when = tuple(sorted(w.items()))
        return Edge(stage, key, when), (*path, "stage")

    # -- the graph -----------------------------------------------------------------------

    def graph(self, drafts: dict[str, _Draft]) -> None:
        names = list(drafts)
        adjacency: dict[str, list[tuple[str, tuple[Any, ...]]]] = {n: [] for n in names}
        reach: dict[str, list[str]] = {n: [] for n in names}  # typos resolved, for reachability
        for d in drafts.values():
            spath: tuple[Any, ...] = ("stages", d.name)
            if d.kind == "sink" and d.edges:
                self.add(
                    (*spath, "to"),
                    "a sink has no output, so it cannot have to:",
                    "remove to:, or make it a handler if it should pass events on",
                )
                continue
            if d.kind in ("source", "handler") and not d.edges and d.to_ok:
                self.add(
                    (*spath, "to"),
                    f"a {d.kind} must send its events somewhere, but has no to:",
                    "add to: <next stage>" + (", or make it a sink" if d.kind == "handler" else ""),
                )
            for edge, epath in d.edges:
                if edge.stage not in drafts:
                    close = difflib.get_close_matches(edge.stage, names, n=1)
                    self.add(
                        epath,
                        f"unknown stage {edge.stage!r}",
                        f"did you mean {close[0]!r}?" if close else f"the stages are: {', '.join(names)}",
                    )
                    if close:
                        reach[d.name].append(close[0])
                    continue
                target = drafts[edge.stage]
                reach[d.name].append(edge.stage)
                if target.kind == "source":
                    self.add(
                        epath,
                        f"cannot send to {edge.stage!r}: it is a source, which has no input",
                        "send to a handler or sink instead",
                    )
                    continue
                adjacency[d.name].append((edge.stage, epath))
        self.cycles(names, adjacency)
        kinds_known = all(d.kind is not None for d in drafts.values())
        if kinds_known and not any(d.kind == "source" for d in drafts.values()):
            self.add(
                ("stages",), "there is no source stage", "add a stage with source: module:function feeding the others"
            )
        elif all(d.to_ok for d in drafts.values()):
            roots = [d.name for d in drafts.values() if d.kind in ("source", None)]
            seen = set(roots)
            todo = list(roots)
            while todo:
                for nxt in reach[todo.pop()]:
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
            for d in drafts.values():
                if d.name not in seen:
                    self.add(
                        ("stages", d.name),
                        f"stage {d.name!r} is not reachable from any source",
                        "add it to the to: of an upstream stage, or remove it",
                    )
        self.key_routing(drafts)

    def cycles(self, names: list[str], adjacency: dict[str, list[tuple[str, tuple[Any, ...]]]]) -> None:
        """Report every back edge of a depth-first walk, with the cycle it closes."""
        state: dict[str, int] = {}  # 1 = on the stack, 2 = done
        stack: list[str] = []
        reported: set[frozenset[tuple[str, str]]] = set()

        def visit(node: str) -> None:
            state[node] = 1
            stack.append(node)
            for nxt, epath in adjacency[node]:
                if state.get(nxt) == 1:
                    loop = stack[stack.index(nxt) :] + [nxt]
                    sig = frozenset(zip(loop, loop[1:], strict=False))
                    if sig not in reported:
                        reported.add(sig)
                        self.add(
                            epath,
                            f"cycle: {' -> '.join(loop)}",
                            "a pipeline must be acyclic: remove one of these edges",
                        )
                elif nxt not in state:
                    visit(nxt)
            stack.pop()
            state[node] = 2

        for n in names:
            if n not in state:
                visit(n)

    def key_routing(self, drafts: dict[str, _Draft]) -> None:
        incoming: dict[str, list[tuple[str, Edge, tuple[Any, ...]]]] = {}
        for d in drafts.values():
            if d.kind == "sink":
                continue
            for edge, epath in d.edges:
                if edge.stage in drafts and drafts[edge.stage].kind != "source":
                    incoming.setdefault(edge.stage, []).append((d.name, edge, epath))
        for target, edges in incoming.items():
            first_src, first, _ = edges[0]
            for src, edge, epath in edges[1:]:
                if edge.key != first.key:
                    self.add(
                        epath[:-1] if epath[-1] == "stage" else epath,
                        f"edges into {target!r} disagree on the routing key: "
                        f"{first_src!r} routes by {_key_text(first.key)}, {src!r} by "
                        f"{_key_text(edge.key)}",
                        f"route every edge into {target!r} by the same key: field, or none",
                    )
                    break
            keyed = next((e.key for _, e, _ in edges if e.key is not None), None)
            d = drafts[target]
            if keyed is not None and d.workers_ok and not d.workers.fixed:
                self.add(
                    ("stages", target, "workers"),
                    f"stage {target!r} is reached through an edge keyed by {keyed!r}, so "
                    f"it needs a fixed worker count, got {_bounds(d.workers)}",
                    "add workers: N, or make min equal max",
                )

    def handlers(self, drafts: dict[str, _Draft], base_dir: Path) -> None:
        """Import every structurally valid stage's ref and check it against its params."""
        todo = [d for d in drafts.values() if d.kind is not None and d.ref and d.name not in self.bad_stages]
        if not todo:
            return
        stage_mod.add_import_paths([base_dir, Path.cwd()])
        for d in todo:
            assert d.kind is not None
            message = stage_mod.check_ref(d.kind, d.ref, dict(d.params))
            if message is not None:
                path = ("stages", d.name, d.kind)
                line = None if self._is_overridden(path) else d.ref_line
                self.add(path, message, _ref_hint(d.ref, message, base_dir), line=line)


# -- helpers ---------------------------------------------------------------------------


def _field(path: Sequence[Any]) -> str:
    """``("stages", "a", "to", 1, "key")`` -> ``stages.a.to[1].key``."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(value: Any) -> str:
    """A short description of a YAML value for messages: ``a string ('four')``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _did_you_mean(word: str, choices: Sequence[str], otherwise: str) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean {close[0]!r}?" if close else otherwise


def _bounds(spec: WorkersSpec) -> str:
    if spec.fixed:
        return str(spec.min)
    return f"min {spec.min}, max {spec.max if spec.max is not None else 'auto'}"


def _key_text(key: str | None) -> str:
    return repr(key) if key is not None else "no key"


def _suggest_ref(ref: str) -> str:
    ref = ref.strip()
    if ":" not in ref and "." in ref:
        module, _, attr = ref.rpartition(".")
        if module and attr:
            return f"{module}:{attr}"
    return "mymodule:my_function"


def _ref_hint(ref: str, message: str, base_dir: Path) -> str:
    """A hint for a `check_ref` message: a did-you-mean for a missing attribute, where
    modules are searched for a missing module."""
    module_name, _, attr = ref.partition(":")
    if message.startswith("cannot import module"):
        return (
            f"make sure {module_name!r} is importable: put it next to the topology "
            f"({base_dir}) or in the current directory, or install it"
        )
    if "has no attribute" in message:
        module = sys.modules.get(module_name)
        if module is not None and "." not in attr:
            names = [n for n in dir(module) if not n.startswith("_")]
            close = difflib.get_close_matches(attr, names, n=1)
            if close:
                return f"did you mean {module_name}:{close[0]}?"
        return f"check the attribute name in {module_name!r}"
    if "not a function or class" in message:
        return "point it at a function or a class"
    if "does not accept these params" in message:
        return "make params: match the function's keyword arguments"
    if "has neither handle() nor handle_batch()" in message or "__iter__" in message:
        return "see sedamp.runtime.stage for what a stage class must define"
    return "fix the error in the module, then retry"


# -- diagrams --------------------------------------------------------------------------


def _node_label(s: StageSpec, newline: str) -> str:
    return newline.join([s.name, f"{s.kind}: {s.ref}", f"workers: {_bounds_short(s.workers)}"])


def _bounds_short(spec: WorkersSpec) -> str:
    if spec.fixed:
        return str(spec.min)
    return f"{spec.min}..{spec.max if spec.max is not None else 'auto'}"


def to_mermaid(top: Topology) -> str:
    """A Mermaid flowchart of the stage graph: sources are stadiums, handlers rectangles,
    sinks cylinders; keyed edges are labelled ``key: FIELD``."""
    ids = {name: f"s{i}" for i, name in enumerate(top.stages)}
    lines = ["flowchart LR", f"    %% topology: {top.name}"]
    shapes = {"source": ('(["', '"])'), "handler": ('["', '"]'), "sink": ('[("', '")]')}
    for s in top.stages.values():
        left, right = shapes[s.kind]
        label = _node_label(s, "<br/>").replace('"', "#quot;")
        lines.append(f"    {ids[s.name]}{left}{label}{right}")
    for s in top.stages.values():
        for e in s.to:
            if e.stage not in ids:
                continue
            label = _edge_label(e).replace('"', "#quot;")
            if label:
                lines.append(f'    {ids[s.name]} -->|"{label}"| {ids[e.stage]}')
            else:
                lines.append(f"    {ids[s.name]} --> {ids[e.stage]}")
    return "\n".join(lines) + "\n"


def _edge_label(e: Edge) -> str:
    parts = [f"key: {e.key}"] if e.key is not None else []
    if e.when:
        parts.append("when " + ", ".join(f"{k}={v}" for k, v in e.when))
    return "; ".join(parts)


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(top: Topology) -> str:
    """A Graphviz digraph of the stage graph: sources are ``invhouse``, handlers boxes,
    sinks cylinders; keyed edges are labelled ``key: FIELD``."""
    shapes = {"source": "invhouse", "handler": "box", "sink": "cylinder"}
    lines = [
        f"digraph {_dot_quote(top.name)} {{",
        "    rankdir=LR;",
        '    node [fontname="Helvetica"];',
        '    edge [fontname="Helvetica"];',
    ]
    for s in top.stages.values():
        lines.append(f"    {_dot_quote(s.name)} [shape={shapes[s.kind]}, label={_dot_quote(_node_label(s, chr(10)))}];")
    for s in top.stages.values():
        for e in s.to:
            attrs = f" [label={_dot_quote(_edge_label(e))}]" if _edge_label(e) else ""
            lines.append(f"    {_dot_quote(s.name)} -> {_dot_quote(e.stage)}{attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"

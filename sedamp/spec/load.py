"""Topology YAML (or the same values built in code) -> a validated, frozen `Topology`.
Pure: starts no process; reads the topology file and, to check handler references,
imports the user's modules.

The YAML is parsed by `sedamp.spec.yamlmap` into plain values plus line numbers, ``${VAR}``s
are expanded while parsing (`sedamp.spec.variables`: a plain scalar that held ``${...}`` is
re-typed, so ``workers: ${N}`` gives an int; a quoted one stays a string), ``--set``
overrides are applied to that tree (`sedamp.spec.overrides`), then the checks walk it once
(`checks_controller`, `checks_stage`, `checks_graph`), collecting every problem in one
`Problems` recorder. Null optional fields mean "not given". Any problem raises
`TopologyError` listing them all: file problems by line, then override problems.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sedamp.errors import Problem, TopologyError
from sedamp.spec import yamlmap
from sedamp.spec.checks_controller import check_controller
from sedamp.spec.checks_graph import check_dedupe, check_graph, check_groups
from sedamp.spec.checks_stage import StageDraft, check_handlers, check_stage
from sedamp.spec.keys import TOP_KEYS
from sedamp.spec.model import StageSpec, Topology
from sedamp.spec.overrides import apply_overrides
from sedamp.spec.problems import Problems, describe
from sedamp.spec.variables import expand_vars

__all__ = ["build_topology", "load_topology", "parse_topology"]


# A topology's name names its run and journal directories (<workdir>/runs/NAME-...,
# <workdir>/journal/NAME, which a run without --resume empties): it must be a plain
# file name, never a path, "." or "..".
MAX_NAME_CHARS = 100
# Every stage runs at least one process (a queue, a worker): past this many, a topology
# is a mistake, and the graph checks' recursion would not cope.
MAX_STAGES = 500
TOPOLOGY_NAME = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{MAX_NAME_CHARS - 1}}}\Z")


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
    p = Problems(file)
    try:
        loaded = yamlmap.load(text, substitute)
    except yamlmap.YamlSyntaxError as exc:
        p.add_raw(file, exc.line, "", exc.message, exc.hint)
        raise TopologyError(p.problems) from None
    p.lines = loaded.lines
    for issue in loaded.issues:
        p.issue(issue)
    return _check_tree(p, loaded.value, base_dir, overrides, substitute, check_handlers)


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
    return _check_tree(Problems(file), tree_copy, base_dir, overrides, _substituter(base_dir, env), check_handlers)


def _substituter(base_dir: Path, env: Mapping[str, str] | None) -> Callable[[str], str]:
    """``${VAR}`` expansion from `env` (default `os.environ`) plus ``${TOPOLOGY_DIR}``."""
    variables = dict(os.environ if env is None else env)
    variables["TOPOLOGY_DIR"] = str(base_dir)

    def substitute(value: str) -> str:
        return expand_vars(value, variables)

    return substitute


def _check_tree(
    p: Problems,
    tree: Any,
    base_dir: Path,
    overrides: Sequence[str],
    substitute: Callable[[str], str],
    check_handlers: bool,
) -> Topology:
    """Apply `overrides` to the parsed `tree`, then validate it into a `Topology`."""
    if isinstance(tree, dict):
        apply_overrides(tree, overrides, substitute, p)
    top = _check_file(p, tree, default_name=Path(p.file).stem, base_dir=base_dir, check_handlers=check_handlers)
    if p.problems or top is None:
        raise TopologyError(p.sorted_problems())
    return top


def _check_file(p: Problems, tree: Any, *, default_name: str, base_dir: Path, check_handlers: bool) -> Topology | None:
    """Check the whole tree; the `Topology` it describes, or None if it has a problem."""
    if tree is None:
        p.add_raw(p.file, 1, "", "the file is empty", "a topology is a mapping with at least a stages: section")
        return None
    if not isinstance(tree, dict):
        p.add(
            (),
            f"the top level must be a mapping, got {describe(tree)}",
            "start the file with name:, description: and stages:",
        )
        return None
    p.unknown_keys((), tree, TOP_KEYS, "the topology")
    name = default_name
    if tree.get("name") is not None:
        got = p.string(("name",), tree["name"], "a string")
        if got is not None and not got.strip():
            p.add(("name",), "must not be empty", "remove name: to use the file name")
        elif got is not None:
            name = got
            _check_name(p, ("name",), name, "remove name: to use the file name, or use only those characters")
    else:
        _check_name(p, (), name, "add name: with a name made of those characters")
    if tree.get("description") is not None:
        p.string(("description",), tree["description"], "a string")
    controller = check_controller(p, tree.get("controller"))
    drafts = _check_stages(p, tree, base_dir, check_handlers)
    if p.problems:
        return None
    return Topology(name=name, stages=_freeze(drafts), controller=controller, base_dir=base_dir)


def _check_name(p: Problems, where: tuple[str, ...], name: str, hint: str) -> None:
    """The topology name becomes part of paths (the run and journal directories under
    the workdir): refuse one that could climb out of them or cannot be a file name."""
    if not TOPOLOGY_NAME.match(name):
        what = "the name" if where else "the file name gives the topology name"
        p.add(
            where,
            f"{what} {name!r} cannot name the run's directories: use letters, digits, _ . and -,"
            f" at most {MAX_NAME_CHARS} of them, starting with a letter, a digit or _",
            hint,
        )


def _check_stages(p: Problems, tree: dict[Any, Any], base_dir: Path, with_handlers: bool) -> dict[str, StageDraft]:
    """Check the stages: section, each stage and then the graph they form."""
    stages_raw = tree.get("stages")
    drafts: dict[str, StageDraft] = {}
    if stages_raw is None:
        where = ("stages",) if "stages" in tree else ()
        p.add(
            where,
            "no stages" if "stages" in tree else "no stages: section",
            "add stages: with at least a source and a sink",
        )
    elif not isinstance(stages_raw, dict):
        p.add(
            ("stages",),
            f"must be a mapping of stage names to stages, got {describe(stages_raw)}",
            "write each stage as `name:` under stages:",
        )
    elif not stages_raw:
        p.add(("stages",), "no stages", "add at least a source and a sink")
    elif len(stages_raw) > MAX_STAGES:
        p.add(
            ("stages",),
            f"{len(stages_raw):,} stages; a topology may have at most {MAX_STAGES:,}",
            "each stage runs at least one process: group cheap steps into one handler or one group:",
        )
    else:
        for key, raw in stages_raw.items():
            drafts[str(key)] = check_stage(p, key, raw)
        check_graph(p, drafts)
        if not p.problems:
            check_groups(p, drafts)
            check_dedupe(p, drafts)
        if with_handlers:
            check_handlers(p, drafts, base_dir)
    return drafts


def _freeze(drafts: dict[str, StageDraft]) -> dict[str, StageSpec]:
    """The checked drafts as `StageSpec`s, in file order."""
    # a draft holds every field of its spec under the same name, except `kind` (None
    # until known) and `to` (edges with the paths the checks report them at)
    copied = [f.name for f in dataclasses.fields(StageSpec) if f.name not in ("kind", "to")]
    return {
        d.name: StageSpec(
            kind=d.kind or "handler",
            to=tuple(e for e, _ in d.edges),
            **{name: getattr(d, name) for name in copied},
        )
        for d in drafts.values()
    }
